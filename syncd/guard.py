"""The guard: decide whether a plan may be applied (pure).

A plan is held (nothing written, exit code 3) when:

* a source read failed, was partial (bad records) or had conflicts;
* a source answered with no users at all while the platform has active users in scope;
* its removals (end-dates + deletes) exceed ``max_removals``, or exceed
  ``max_removal_ratio`` of the platform users the job manages whose access has not
  ended (already-ended, protected and out-of-scope users do not dilute the ratio).

An operator can let one run through: ``allow_removals=N`` accepts up to N removals
(covering the count, ratio and empty-source checks); ``force`` accepts any number. A
partial read can be forced through too, but the planner withholds every removal from a
partial read, so forcing it only writes inserts and updates. A failed read has no plan
to force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from syncd.merge import DesiredUsers
from syncd.plan import Plan


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Thresholds from the job's ``guard`` config."""

    max_removals: int | None = 500
    max_removal_ratio: float | None = 0.10


@dataclass(frozen=True, slots=True)
class Override:
    """What the operator allowed for this one run."""

    allow_removals: int | None = None
    force: bool = False

    def accepts(self, removals: int) -> bool:
        """True when the operator explicitly accepted this many removals."""
        if self.force:
            return True
        return self.allow_removals is not None and removals <= self.allow_removals


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer: held or not, and every reason, readable by an operator."""

    held: bool
    reasons: tuple[str, ...] = ()
    overridden: tuple[str, ...] = ()
    """Reasons that would have held the plan but that the operator accepted."""
    hint: str = ""
    """What the operator can do about a hold."""


_MAX_LISTED = 10


def _listed(what: str, items: Sequence[object]) -> str:
    """``3 things: a; b; c`` with at most ``_MAX_LISTED`` shown."""
    listed = "; ".join(str(item) for item in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{len(items)} {what}: {listed}" + (f"; and {more} more" if more > 0 else "")


def check_plan(
    plan: Plan,
    desired: DesiredUsers,
    *,
    limits: GuardLimits,
    override: Override = Override(),
) -> Verdict:
    """Decide whether ``plan`` may be applied, and say why not."""
    blocking: list[str] = []
    acceptable: list[str] = []

    hints: list[str] = []
    for source in desired.failed_sources:
        blocking.append(f"source {source.label} could not be read: {source.error}")
    if desired.failed_sources:
        hints.append("A source that could not be read cannot be forced: fix it and run again.")
    source_problems: list[str] = []
    if desired.problems:
        source_problems.append(_listed("source record(s) could not be used", desired.problems))
    if desired.conflicts:
        source_problems.append(
            _listed("duplicate end_user(s) across source records", desired.conflicts)
        )
    partial_note = " (while the read is incomplete the plan ends and deletes nobody)"
    if source_problems:
        reasons = [problem + partial_note for problem in source_problems]
        (acceptable if override.force else blocking).extend(reasons)
        if not override.force:
            hints.append(
                "Fix the records above, or use --force to write the rest "
                "(nobody missing from the source is removed)."
            )

    removal_reasons: list[str] = []
    # Measured against the users this job manages whose access has not ended: on a
    # long-lived project most entries are ended leavers, which would dilute the ratio.
    active = plan.active_managed
    removals = plan.removals
    if active > 0 or removals > 0:
        for source in desired.sources:
            if not source.failed and source.users == 0:
                removal_reasons.append(
                    f"source {source.label} returned no users while the platform has "
                    f"{active} active users and the plan removes {removals}"
                )
    if limits.max_removals is not None and removals > limits.max_removals:
        removal_reasons.append(
            f"{removals} removals (end-dates + deletes) exceed max_removals={limits.max_removals}"
        )
    # The ratio is about access taken away: purging users who left long ago is
    # bounded by max_removals only.
    taken = plan.active_removals
    if (
        limits.max_removal_ratio is not None
        and taken > 0
        and taken > limits.max_removal_ratio * active
    ):
        share = f"{taken / active:.1%}" if active else "all"
        removal_reasons.append(
            f"{taken} removals of active users are {share} of the {active} active "
            f"platform users, above max_removal_ratio={limits.max_removal_ratio:.0%}"
        )
    if removal_reasons:
        (acceptable if override.accepts(removals) else blocking).extend(removal_reasons)
        if not override.accepts(removals):
            hints.append(
                f"Check the source; to accept these {removals} removals for one run use "
                f"--allow-removals {removals} (or --force)."
            )

    return Verdict(
        held=bool(blocking),
        reasons=tuple(blocking),
        overridden=tuple(acceptable),
        hint=" ".join(hints) if blocking else "",
    )
