"""What a run is, between the runner's steps: planned (read and planned, nothing
written yet), then its result (what was written, how it ended, its summary)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from syncd.audit_writer import AuditWriter
from syncd.exitcodes import RunStatus
from syncd.guard import Verdict
from syncd.merge import DesiredUsers
from syncd.plan import Plan, PlanPolicy
from syncd.platform.outcome import Settlement
from syncd.ports import WriteOutcome

__all__ = ["PlannedRun", "RunResult", "new_run_id"]


def new_run_id() -> str:
    """A short random id shared by every log line and record of one run."""
    return uuid.uuid4().hex[:12]


@dataclass(slots=True)
class PlannedRun:
    """The result of reading and planning, before anything is written."""

    job: str
    run_id: str
    started_at: datetime
    desired: DesiredUsers
    current_users: int
    plan: Plan | None
    verdict: Verdict
    policy: PlanPolicy
    timings: dict[str, float] = field(default_factory=dict)
    identity_rules: dict[str, object] = field(default_factory=dict)
    """The job's identity rules of this run (see :func:`identity_rules`); recorded in
    the state store once an apply with them was confirmed."""
    plan_file: str | None = None
    """The plan file applied (``apply --plan``; no source read), else None."""


@dataclass(slots=True)
class RunResult:
    """How a run ended: the plan, the guard's verdict and what was written."""

    planned: PlannedRun
    status: RunStatus
    outcomes: list[WriteOutcome] = field(default_factory=list)
    error: str | None = None
    audit: AuditWriter | None = None
    """An applying run's audit log, written as the platform confirms users."""
    settlement: Settlement | None = None
    """What re-reading the platform found for writes no answer confirmed (None: no
    write was in doubt, so the platform was not re-read)."""

    @property
    def failures(self) -> int:
        """Users the platform did not confirm."""
        return sum(len(outcome.failures) for outcome in self.outcomes)

    @property
    def write_calls(self) -> int:
        """HTTP write calls made."""
        return sum(outcome.calls for outcome in self.outcomes)

    def summary(self) -> dict[str, object]:
        """Counts for logs and the run history."""
        plan = self.planned.plan
        from_file = self.planned.plan_file
        summary: dict[str, object] = {
            "status": self.status.value,
            # A run from a plan file read no source: no count rather than a false 0.
            "source_users": len(self.planned.desired.users) if from_file is None else None,
            "platform_users": self.planned.current_users,
            "write_calls": self.write_calls,
            "failures": self.failures,
        }
        if plan is not None:
            summary.update(plan.counts())
        if self.planned.verdict.reasons:
            summary["held_because"] = list(self.planned.verdict.reasons)
        if from_file is not None:
            summary["approved_from_plan"] = from_file
        if self.planned.verdict.overridden:  # accepted: an override, or a plan file
            summary["overridden"] = list(self.planned.verdict.overridden)
        if self.error is not None:
            summary["error"] = self.error
        if self.settlement is not None:
            summary["settled"] = self.settlement.summary()
        summary["timings_s"] = {k: round(v, 3) for k, v in self.planned.timings.items()}
        return summary
