"""The guard: decide whether a plan may be applied (pure).

A plan is held (nothing written, exit code 3) when:

* a source read failed, was partial (bad records) or had conflicts;
* every source answered with no users at all while the platform has active users in
  scope or the plan removes anyone; or one source of several answered empty while the
  plan removes active users missing from the sources (perhaps because of it);
* its removals (end-dates + deletes) exceed ``max_removals``, or exceed
  ``max_removal_ratio`` of the platform users the job manages whose access has not
  ended (already-ended, protected and out-of-scope users do not dilute the ratio), or
  the removals confirmed in the last 24 hours plus this plan's exceed
  ``max_removals_per_day`` (a slow drip of small runs);
* its updates of active users exceed ``max_updates`` or ``max_update_ratio``; or its
  *destructive* updates (see :func:`destructive_change`: a tag emptied, a start moved
  past today, an end set in the past on a user enabled in the source) exceed the
  stricter ``max_destructive_updates`` or ``max_destructive_update_ratio``;
* the job's identity rules (what decides a person's ``end_user``) changed since its
  last applied run: applied as they are, they would end every user and insert them
  again under new names.

Limits mean "more than": a ratio of 0.29 lets exactly 29 of 100 through (compared
exactly, not in floating point).

An operator can let one run through: ``allow_removals=N`` accepts up to N removals
(the count, ratio, daily and empty-source checks); ``allow_updates=N`` up to N updates
(ordinary and destructive); ``accept_identity_rules`` the new identity rules; ``force``
all of those. A partial read can be forced through too, but the planner withholds every
removal from a partial read, so forcing it only writes inserts and updates. A failed
read has no plan to force.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction

from syncd.merge import DesiredUsers
from syncd.messages import bounded_list
from syncd.model import PlatformUser
from syncd.plan import Change, ChangeKind, Plan

EXAMPLES = 5
"""Users named as examples in a hold reason."""


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Thresholds from the job's ``guard`` config (None: no limit)."""

    max_removals: int | None = 500
    max_removal_ratio: float | None = 0.10
    max_removals_per_day: int | None = 1000
    max_updates: int | None = 1000
    max_update_ratio: float | None = None
    max_destructive_updates: int | None = 100
    max_destructive_update_ratio: float | None = 0.20


@dataclass(frozen=True, slots=True)
class GuardHistory:
    """What the state store knows that the plan does not (read before the guard runs)."""

    removed_last_day: int = 0
    """Removals (end-dates + deletes) the platform confirmed in the last 24 hours."""
    identity_changes: tuple[str, ...] = ()
    """How the job's identity rules differ from those of its last applied run."""


@dataclass(frozen=True, slots=True)
class Override:
    """What the operator allowed for this one run."""

    allow_removals: int | None = None
    allow_updates: int | None = None
    accept_identity_rules: bool = False
    force: bool = False

    def accepts(self, removals: int) -> bool:
        """True when the operator explicitly accepted this many removals."""
        if self.force:
            return True
        return self.allow_removals is not None and removals <= self.allow_removals

    def accepts_updates(self, updates: int) -> bool:
        """True when the operator explicitly accepted this many updates."""
        if self.force:
            return True
        return self.allow_updates is not None and updates <= self.allow_updates

    def accepts_rules(self) -> bool:
        """True when the operator accepted changed identity rules for this run."""
        return self.force or self.accept_identity_rules


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer: held or not, and every reason, readable by an operator."""

    held: bool
    reasons: tuple[str, ...] = ()
    overridden: tuple[str, ...] = ()
    """Reasons that would have held the plan but that the operator accepted."""
    hint: str = ""
    """What the operator can do about a hold."""
    options: tuple[str, ...] = ()
    """The ``syncd apply`` options that pass this hold for one run (empty when it
    cannot be passed, e.g. a failed read), e.g. ``("--allow-removals", "600")``."""
    destructive: dict[str, str] = field(default_factory=dict)
    """The plan's destructive updates: platform end_user -> what the change takes away
    (see :func:`destructive_change`), for reviewers and the plan table's order."""


def _listed(what: str, items: Sequence[object], *, limit: int = 10) -> str:
    """``3 things: a; b; c`` with at most ``limit`` shown (the daemon cuts at the colon)."""
    return f"{len(items)} {what}: {bounded_list(items, separator='; ', limit=limit)}"


def _examples(changes: Sequence[Change]) -> str:
    """``: a@x.com; b@x.com; ...`` -- the first users of ``changes``."""
    names = [change.user.end_user for change in changes]
    return ": " + bounded_list(names, separator="; ", limit=EXAMPLES) if names else ""


def exceeds_ratio(count: int, ratio: float | None, base: int) -> bool:
    """True when ``count`` is more than ``ratio`` of ``base``, compared exactly.

    ``Fraction(repr(ratio))`` is the decimal the operator wrote: 0.29 * 100 is
    28.999999999999996 in floating point, which would hold 29 of 100.
    """
    if ratio is None or count == 0:
        return False
    return count > Fraction(repr(ratio)) * base


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"


def _is_active(user: PlatformUser, today: date) -> bool:
    return user.active_to is None or user.active_to > today


def destructive_change(change: Change, today: date, *, enabled_in_source: bool) -> str | None:
    """Why a change takes information away or changes eligibility, or None.

    * a tag the user had is left out (it becomes empty);
    * ``active_from`` moves from on or before today to after today (an eligible user
      becomes ineligible until then);
    * ``active_to`` is set in the past on a user who is enabled in the source.
    """
    before, after = change.before, change.user
    if before is None or change.kind in (ChangeKind.INSERT, ChangeKind.DELETE):
        return None
    if change.kind is ChangeKind.END:
        if enabled_in_source and after.active_to is not None and after.active_to < today:
            return f"active_to set in the past ({after.active_to.isoformat()})"
        return None
    emptied = sorted(dict(before.tags).keys() - dict(after.tags).keys())
    if emptied:
        return f"tag {', '.join(emptied)} emptied"
    if before.active_from <= today < after.active_from:
        return f"active_from moved past today ({after.active_from.isoformat()})"
    return None


def _same(name: str) -> str:
    return name


def _distinct_options(argv: list[str]) -> tuple[str, ...]:
    """``argv`` with each option once, kept with its value (``--allow-updates 12``).

    Two checks may ask for the same option (``--force``); a value such as ``12`` may
    follow two different options, so values are never deduplicated on their own.
    """
    groups: dict[str, tuple[str, ...]] = {}
    current: list[str] = []
    for token in [*argv, "--"]:
        if token.startswith("--") and current:
            groups.setdefault(current[0], tuple(current))
            current = []
        current.append(token)
    return tuple(token for group in groups.values() for token in group)


def check_plan(
    plan: Plan,
    desired: DesiredUsers,
    *,
    limits: GuardLimits,
    override: Override = Override(),
    history: GuardHistory = GuardHistory(),
    today: date | None = None,
    identity: Callable[[str], str] = _same,
) -> Verdict:
    """Decide whether ``plan`` may be applied, and say why not.

    ``today`` is the plan's date (for which users are active and which updates are
    destructive; without it only the removal checks run); ``identity`` normalises a
    platform name to the key of ``desired.users``.
    """
    blocking: list[str] = []
    acceptable: list[str] = []
    hints: list[str] = []
    options: list[str] = []

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
            options.append("--force")

    # Changed rules matter only when people would be renamed, i.e. ended or inserted:
    # a change that gives everyone the same end_user as before passes (and is recorded).
    if history.identity_changes and (plan.inserts or plan.removals):
        reason = (
            "the identity rules changed since the last applied run, so the same people "
            "would get other end_users (ended, then inserted again): "
            + "; ".join(history.identity_changes)
            + f"; the plan ends or deletes {plan.removals} and inserts {len(plan.inserts)} "
            f"users{_examples(plan.inserts)}"
        )
        if override.accepts_rules():
            acceptable.append(reason)
        else:
            blocking.append(reason)
            hints.append(
                "Revert the change, or accept the new rules for one run with "
                "--accept-identity-rules (or --force) after reading the plan."
            )
            options.append("--accept-identity-rules")

    _check_removals(
        plan,
        desired,
        limits,
        override,
        history,
        today,
        identity,
        blocking,
        acceptable,
        hints,
        options,
    )
    destructive: dict[str, str] = {}
    if today is not None:
        destructive = _check_updates(
            plan, desired, limits, override, today, identity, blocking, acceptable, hints, options
        )

    held = bool(blocking)
    passable = held and not desired.failed_sources
    return Verdict(
        held=held,
        reasons=tuple(blocking),
        overridden=tuple(acceptable),
        hint=" ".join(hints) if held else "",
        options=_distinct_options(options) if passable else (),
        destructive=destructive,
    )


def _check_removals(
    plan: Plan,
    desired: DesiredUsers,
    limits: GuardLimits,
    override: Override,
    history: GuardHistory,
    today: date | None,
    identity: Callable[[str], str],
    blocking: list[str],
    acceptable: list[str],
    hints: list[str],
    options: list[str],
) -> None:
    reasons: list[str] = []
    # Measured against the users this job manages whose access has not ended: on a
    # long-lived project most entries are ended leavers, which would dilute the ratio.
    active = plan.active_managed
    removals = plan.removals
    removed = (*plan.ends, *plan.deletes)
    empty = [s for s in desired.sources if not s.failed and s.users == 0]
    if empty and len(empty) == len(desired.sources):
        # The job read nobody at all: held whenever that matters.
        if active > 0 or removals > 0:
            for source in empty:
                reasons.append(
                    f"source {source.label} returned no users while the platform has "
                    f"{active} active users and the plan removes {removals}"
                    f"{_examples(removed)}"
                )
    elif empty:
        # One source of several is empty, which may be right (a group with no member
        # yet). It matters only if active users missing from the sources are removed:
        # they may be the ones it used to list.
        missing = [
            change
            for change in removed
            if identity(change.user.end_user) not in desired.users
            and change.before is not None
            and (today is None or _is_active(change.before, today))
        ]
        if missing:
            for source in empty:
                reasons.append(
                    f"source {source.label} returned no users and the plan removes "
                    f"{len(missing)} active users missing from the sources"
                    f"{_examples(missing)}"
                )
    if limits.max_removals is not None and removals > limits.max_removals:
        reasons.append(
            f"{removals} removals (end-dates + deletes) exceed max_removals="
            f"{limits.max_removals}{_examples(removed)}"
        )
    # The ratio is about access taken away: purging users who left long ago is
    # bounded by max_removals only.
    taken = plan.active_removals
    if exceeds_ratio(taken, limits.max_removal_ratio, active):
        assert limits.max_removal_ratio is not None
        share = f"{taken / active:.1%}" if active else "all"
        reasons.append(
            f"{taken} removals of active users are {share} of the {active} active "
            f"platform users, above max_removal_ratio={_percent(limits.max_removal_ratio)}"
            f"{_examples(removed)}"
        )
    if (
        limits.max_removals_per_day is not None
        and removals > 0
        and history.removed_last_day + removals > limits.max_removals_per_day
    ):
        reasons.append(
            f"{history.removed_last_day} removals confirmed in the last 24 hours plus "
            f"{removals} in this plan exceed max_removals_per_day="
            f"{limits.max_removals_per_day}{_examples(removed)}"
        )
    if not reasons:
        return
    if override.accepts(removals):
        acceptable.extend(reasons)
        return
    blocking.extend(reasons)
    hints.append(
        f"Check the source; to accept these {removals} removals for one run use "
        f"--allow-removals {removals} (or --force)."
    )
    options.extend(("--allow-removals", str(removals)))


def _check_updates(
    plan: Plan,
    desired: DesiredUsers,
    limits: GuardLimits,
    override: Override,
    today: date,
    identity: Callable[[str], str],
    blocking: list[str],
    acceptable: list[str],
    hints: list[str],
    options: list[str],
) -> dict[str, str]:
    active = plan.active_managed
    updates = [c for c in plan.updates if c.before is not None and _is_active(c.before, today)]
    destructive: list[tuple[Change, str]] = []
    for change in (*updates, *plan.ends):
        source = desired.users.get(identity(change.user.end_user))
        why = destructive_change(
            change, today, enabled_in_source=source is not None and source.enabled
        )
        if why is not None:
            destructive.append((change, why))
    reasons: list[str] = []
    if limits.max_updates is not None and len(updates) > limits.max_updates:
        reasons.append(
            f"{len(updates)} updates of active users exceed max_updates="
            f"{limits.max_updates}{_examples(updates)}"
        )
    if exceeds_ratio(len(updates), limits.max_update_ratio, active):
        assert limits.max_update_ratio is not None
        # A plan built elsewhere (a plan file) may say 0 active users: never divide by it.
        share = f"{len(updates) / active:.1%}" if active else "all"
        reasons.append(
            f"{len(updates)} updates of active users are {share} of "
            f"the {active} active platform users, above max_update_ratio="
            f"{_percent(limits.max_update_ratio)}{_examples(updates)}"
        )
    count = len(destructive)
    limit = limits.max_destructive_updates
    over_count = limit is not None and count > limit
    over_ratio = exceeds_ratio(count, limits.max_destructive_update_ratio, active)
    if over_count or over_ratio:
        kinds: dict[str, int] = {}
        for _, why in destructive:
            kind = why.split(" (")[0] if "(" in why else why
            kinds[kind] = kinds.get(kind, 0) + 1
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        bound = (
            f"max_destructive_updates={limit}"
            if over_count
            else f"max_destructive_update_ratio="
            f"{_percent(limits.max_destructive_update_ratio or 0)} of {active} active users"
        )
        examples = bounded_list(
            [f"{change.user.end_user} ({why})" for change, why in destructive],
            separator="; ",
            limit=EXAMPLES,
        )
        reasons.append(
            f"{count} updates take information away or change eligibility ({detail}), "
            f"above {bound}: {examples}"
        )
    found = {change.user.end_user: why for change, why in destructive}
    if not reasons:
        return found
    needed = max(len(updates), count)
    if override.accepts_updates(needed):
        acceptable.extend(reasons)
        return found
    blocking.extend(reasons)
    hints.append(
        f"Check the mapping and the source; to accept these {needed} updates for one run "
        f"use --allow-updates {needed} (or --force)."
    )
    options.extend(("--allow-updates", str(needed)))
    return found
