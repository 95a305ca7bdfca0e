"""The fault campaign's world and invariants (see bench/fault_campaign.py).

The checks are plain functions of what a run reported and what the platform and the
state store hold afterwards; each returns ``(invariant, detail)`` pairs, empty when the
invariant holds. They never trust the run's own view: the platform is read from the
emulator, the audit log from the state database.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path

from syncd.model import PlatformUser, parse_api_date
from syncd.platform.api import Operation, WireUser
from syncd.platform.outcome import is_uncertain
from syncd.ports import AuditEntry
from syncd.runner import RunStatus
from syncd.service import JobReport

DEPARTMENTS = ("Eng", "Sales", "Ops", "Legal", "Support")

Problem = tuple[str, str]
"""One broken invariant: its name and what broke it."""

# The emulator's fired-fault counter that shows each kind of injected fault was met.
FIRED_BY_KIND = {
    "5xx_burst": "fail",
    "random_5xx": "random_error",
    "429": "throttle",
    "413": "batch_too_large",
    "timeout_before": "stall",
    "timeout_after": "stall_after_apply",
    "reset_before": "drop",
    "reset_after": "drop_after_apply",
    "partial": "refused_user",
    "permanent": "status",
}


class Directory:
    """The source directory of a schedule, and what the platform should hold."""

    def __init__(self, rng: random.Random, csv: Path, on_missing: str) -> None:
        self.rng = rng
        self.csv = csv
        self.on_missing = on_missing
        self.users: dict[str, str] = {}
        self.left: set[str] = set()
        self.ever: set[str] = set()
        self._next = 0

    def join(self, count: int) -> None:
        """Add ``count`` new users, each in a random department."""
        for _ in range(count):
            name = f"user{self._next:04d}@example.com"
            self._next += 1
            self.users[name] = self.rng.choice(DEPARTMENTS)
            self.ever.add(name)

    def churn(self) -> None:
        """Joiners, leavers, department changes and returners, a few of each."""
        rng = self.rng
        for name in rng.sample(sorted(self.users), min(len(self.users), rng.randint(0, 4))):
            del self.users[name]
            self.left.add(name)
        for name in rng.sample(sorted(self.users), min(len(self.users), rng.randint(0, 5))):
            self.users[name] = rng.choice(DEPARTMENTS)
        for name in rng.sample(sorted(self.left), min(len(self.left), rng.randint(0, 2))):
            self.left.discard(name)
            self.users[name] = rng.choice(DEPARTMENTS)
        self.join(rng.randint(0, 5))

    def write(self) -> None:
        """Write the CSV atomically (temp file + rename): a run reads old or new."""
        tmp = self.csv.with_suffix(".tmp")
        lines = "".join(f"{name},{dept}\n" for name, dept in sorted(self.users.items()))
        tmp.write_text("email,Department\n" + lines, encoding="utf-8")
        tmp.replace(self.csv)

    def convergence_problems(self, platform: Mapping[str, WireUser]) -> list[str]:
        """How the platform differs from the desired state (empty: converged)."""
        problems: list[str] = []
        for name, dept in sorted(self.users.items()):
            held = platform.get(name)
            if held is None:
                problems.append(f"{name} missing")
            elif held.tags != {"department": dept} or held.active_to is not None:
                problems.append(f"{name} is {held.tags} to {held.active_to}, want {dept}")
        for name, held in sorted(platform.items()):
            if name in self.users:
                continue
            if name not in self.ever:
                problems.append(f"{name} was never in the directory")
            elif self.on_missing == "delete":
                problems.append(f"{name} left but was not deleted")
            elif held.active_to is None:
                problems.append(f"{name} left but has no active_to")
        return problems


def holds(held: WireUser | None, target: PlatformUser | None) -> bool:
    """True if the platform holds ``target`` (None: the user is gone)."""
    if target is None:
        return held is None
    if held is None:
        return False
    active_to = parse_api_date(held.active_to) if held.active_to is not None else None
    return (
        held.tags == dict(target.tags)
        and parse_api_date(held.active_from or "1900-01-01") == target.active_from
        and active_to == target.active_to
    )


def wrongful_removals(
    source: Mapping[str, str],
    before: Mapping[str, WireUser],
    after: Mapping[str, WireUser],
    report: JobReport | None,
) -> list[Problem]:
    """Invariant 1: nobody in the source and active before the run was ended or deleted
    by it, and no plan ends or deletes a source user."""
    problems: list[Problem] = []
    for name in source:
        was = before.get(name)
        now = after.get(name)
        if was is not None and was.active_to is None and (now is None or now.active_to):
            gone = "deleted" if now is None else f"ended ({now.active_to})"
            problems.append(("wrongful removal", f"{name} is in the source but was {gone}"))
    plan = report.planned.plan if report is not None and report.planned else None
    if plan is not None:
        removed = {c.user.end_user for c in (*plan.ends, *plan.deletes)}
        wrong = sorted(removed & set(source))
        if wrong:
            problems.append(("wrongful removal planned", ", ".join(wrong[:5])))
    return problems


def _targets(report: JobReport) -> dict[Operation, dict[str, PlatformUser | None]]:
    plan = report.planned.plan if report.planned is not None else None
    assert plan is not None
    return {
        Operation.INSERT: {c.user.end_user: c.user for c in plan.inserts},
        Operation.UPDATE: {u.end_user: u for u in plan.update_calls_users},
        Operation.DELETE: {c.user.end_user: None for c in plan.deletes},
    }


def report_lies(report: JobReport, after: Mapping[str, WireUser]) -> list[Problem]:
    """Invariant 2: the report tells the truth about what the platform holds.

    * no user reported applied that the platform does not hold as written;
    * none reported failed (for certain) that it does hold;
    * once the platform was re-read (or nothing was in doubt), no "may have been
      applied" is left: the re-read sorts every one into applied or not;
    * an ``applied`` run holds its whole plan; a ``failed`` or ``partial`` one does
      not (unless the re-read failed, so that the run could not know).
    """
    result, planned = report.result, report.planned
    if result is None or planned is None or planned.plan is None:
        return []
    problems: list[Problem] = []
    targets = _targets(report)
    settlement = result.settlement
    reread_ok = settlement is None or settlement.error is None
    for outcome in result.outcomes:
        wanted = targets[outcome.operation]
        for name in outcome.confirmed:
            if not holds(after.get(name), wanted[name]):
                problems.append(
                    (
                        "reported applied, not held",
                        f"{outcome.operation} {name}: platform has {after.get(name)}",
                    )
                )
        for failure in outcome.failures:
            name = failure.end_user
            if is_uncertain(failure):
                if reread_ok:
                    problems.append(
                        (
                            "doubt left after the re-read",
                            f"{outcome.operation} {name} ({failure.reason}); "
                            f"re-read: {settlement.summary() if settlement else 'not done'}",
                        )
                    )
            elif holds(after.get(name), wanted[name]):
                problems.append(
                    ("reported failed, but held", f"{outcome.operation} {name} ({failure.reason})")
                )
    missing = [
        f"{operation} {name}"
        for operation, wanted in targets.items()
        for name, target in wanted.items()
        if not holds(after.get(name), target)
    ]
    if report.status is RunStatus.APPLIED:
        problems.extend(("applied run does not hold its plan", item) for item in missing)
    elif report.status in (RunStatus.FAILED, RunStatus.PARTIAL) and reread_ok and not missing:
        problems.append(
            (
                f"{report.status.value} run holds its whole plan",
                f"error: {result.error}; failures: {result.failures}",
            )
        )
    return problems


_OPERATION_OF_KIND = {
    "insert": Operation.INSERT,
    "update": Operation.UPDATE,
    "end": Operation.UPDATE,
    "reactivate": Operation.UPDATE,
    "delete": Operation.DELETE,
}


def audit_lies(report: JobReport, audit: Iterable[AuditEntry]) -> list[Problem]:
    """The audit rows of the run are exactly the users the platform confirmed to it
    (after the re-read), one per user and operation."""
    result, planned = report.result, report.planned
    if result is None or planned is None:
        return []
    rows = [
        (_OPERATION_OF_KIND[entry.operation], entry.end_user)
        for entry in audit
        if entry.run_id == planned.run_id
    ]
    confirmed = {
        (outcome.operation, name) for outcome in result.outcomes for name in outcome.confirmed
    }
    problems: list[Problem] = []
    if len(rows) != len(set(rows)):
        problems.append(("audit row twice", f"{len(rows) - len(set(rows))} duplicate row(s)"))
    for operation, name in sorted(set(rows) - confirmed):
        problems.append(("audited, not confirmed", f"{operation} {name}"))
    for operation, name in sorted(confirmed - set(rows)):
        problems.append(("confirmed, not audited", f"{operation} {name}"))
    return problems
