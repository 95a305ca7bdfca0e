"""One run of one job: read sources -> list platform -> plan -> guard -> apply -> record.

This is the only place that wires the pure core (merge, plan, guard) to the adapters
(sources, platform client, state store). Adapters come in through the constructor, as
the ports of :mod:`syncd.ports`, so tests can run a job against the emulator, a
temporary state directory and real files. A runner lives for one run; what lives
longer (HTTP clients, open sources) belongs to :mod:`syncd.service`.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol, TypeVar

import structlog

from syncd.audit import audit_batches
from syncd.config import JobConfig
from syncd.errors import PlatformError, SourceError, StateError
from syncd.exitcodes import RunStatus
from syncd.guard import GuardLimits, Override, Verdict, check_plan
from syncd.mapping import normalize_end_user
from syncd.merge import DesiredUsers, DesiredUsersBuilder
from syncd.model import PlatformUser
from syncd.plan import Plan, PlanPolicy, plan_changes
from syncd.platform.api import Operation
from syncd.ports import (
    PlatformPort,
    Progress,
    ProgressCallback,
    RunRecord,
    Source,
    StateStore,
    WriteOutcome,
)

log = structlog.get_logger(__name__)

_Item = TypeVar("_Item", PlatformUser, str)


_Items_contra = TypeVar("_Items_contra", contravariant=True)


class _WriteCall(Protocol[_Items_contra]):
    """The shape of ``PlatformPort.insert`` / ``update`` / ``delete``."""

    def __call__(
        self,
        items: Sequence[_Items_contra],
        progress: ProgressCallback | None = None,
        /,
        *,
        outcome: WriteOutcome | None = None,
    ) -> WriteOutcome: ...


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


@dataclass(slots=True)
class RunResult:
    """How a run ended: the plan, the guard's verdict and what was written."""

    planned: PlannedRun
    status: RunStatus
    outcomes: list[WriteOutcome] = field(default_factory=list)
    error: str | None = None
    confirmed_at: dict[Operation, datetime] = field(default_factory=dict)
    """When each operation ended: the time of its audit rows."""

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
        summary: dict[str, object] = {
            "status": self.status.value,
            "source_users": len(self.planned.desired.users),
            "platform_users": self.planned.current_users,
            "write_calls": self.write_calls,
            "failures": self.failures,
        }
        if plan is not None:
            summary.update(plan.counts())
        if self.planned.verdict.reasons:
            summary["held_because"] = list(self.planned.verdict.reasons)
        if self.error is not None:
            summary["error"] = self.error
        summary["timings_s"] = {k: round(v, 3) for k, v in self.planned.timings.items()}
        return summary


def platform_identity(end_user: str, *, lowercase: bool) -> str:
    """A platform end_user, normalised like source ids so the two can be matched."""
    try:
        return normalize_end_user(end_user, lowercase=lowercase)
    except ValueError:
        return end_user  # an empty name matches no source user; it stays as it is


def today_utc() -> date:
    """Today in UTC: the date written as active_from / active_to."""
    return datetime.now(UTC).date()


class JobRunner:
    """Runs one job against its sources, the platform and the state store."""

    def __init__(
        self,
        job: JobConfig,
        *,
        sources: Sequence[Source],
        platform: PlatformPort,
        state: StateStore,
        today: Callable[[], date] = today_utc,
        progress: Progress | None = None,
    ) -> None:
        self._job = job
        self._sources = sources
        self._platform = platform
        self._state = state
        self._today = today
        self._progress = progress
        self._identity = functools.partial(platform_identity, lowercase=job.identity.lowercase)

    def plan(self, override: Override | None = None, *, run_id: str | None = None) -> PlannedRun:
        """Read every source and the platform, and compute and judge the plan.

        The caller binds the run's log context (see :func:`syncd.service.run_job`).
        """
        run_id = run_id or new_run_id()
        started_at = datetime.now(UTC)
        timings: dict[str, float] = {}

        clock = time.perf_counter()
        desired = self._read_sources()
        timings["read_sources"] = time.perf_counter() - clock
        log.info(
            "sources.read",
            users=len(desired.users),
            problems=len(desired.problems),
            conflicts=len(desired.conflicts),
            failed=[source.label for source in desired.failed_sources],
            seconds=round(timings["read_sources"], 3),
        )
        limits = GuardLimits(
            max_removals=self._job.guard.max_removals,
            max_removal_ratio=self._job.guard.max_removal_ratio,
        )
        policy = self._policy()
        if desired.failed_sources:
            # No plan from a failed read: what is missing is unknown, not gone.
            verdict = check_plan(Plan(), desired, limits=limits)
            log.warning("guard.held", reasons=list(verdict.reasons))
            return PlannedRun(
                self._job.name, run_id, started_at, desired, 0, None, verdict, policy, timings
            )

        clock = time.perf_counter()
        current = self._platform.list_users()
        timings["list_platform"] = time.perf_counter() - clock
        log.info("platform.listed", users=len(current), seconds=round(timings["list_platform"], 3))

        clock = time.perf_counter()
        plan = plan_changes(
            desired.users,
            current,
            policy,
            self._today(),
            source_complete=desired.complete,
            identity=self._identity,
        )
        timings["plan"] = time.perf_counter() - clock
        verdict = check_plan(
            plan,
            desired,
            limits=limits,
            override=override or Override(),
        )
        log.info("plan.computed", **plan.counts(), seconds=round(timings["plan"], 3))
        if verdict.overridden:
            log.warning("guard.overridden", reasons=list(verdict.overridden))
        if verdict.held:
            log.warning("guard.held", reasons=list(verdict.reasons))
        return PlannedRun(
            self._job.name,
            run_id,
            started_at,
            desired,
            len(current),
            plan,
            verdict,
            policy,
            timings,
        )

    def apply(self, planned: PlannedRun) -> RunResult:
        """Write the plan unless the guard held it; record the run."""
        if planned.verdict.held or planned.plan is None:
            result = RunResult(planned, RunStatus.HELD)
            self._record(result)
            return result
        plan = planned.plan
        self._state.ensure_writable()
        # FAILED until the writes return normally: an interrupted run must never be
        # recorded as applied.
        result = RunResult(planned, RunStatus.FAILED)
        clock = time.perf_counter()
        try:
            self._write(plan, result)
            result.status = RunStatus.PARTIAL if result.failures else RunStatus.APPLIED
        except PlatformError as error:
            # result.outcomes keeps what the platform confirmed before it failed (run
            # history, owned users); the next run re-plans from the live list.
            result.error = str(error)
            log.error("apply.failed", error=str(error))
        except BaseException as error:
            # Ctrl-C, SIGTERM, a bug: record the run as failed, then let it propagate.
            result.error = f"interrupted by {type(error).__name__}: {error}".rstrip(": ")
            log.error("apply.interrupted", error=result.error)
            planned.timings["apply"] = time.perf_counter() - clock
            try:
                self._record(result)
            except StateError as record_error:
                # Never let a failing record hide the interruption itself.
                log.error("run.record_failed", error=str(record_error))
            raise
        planned.timings["apply"] = time.perf_counter() - clock
        self._record(result)
        return result

    def _write(self, plan: Plan, result: RunResult) -> None:
        job = self._job.name
        if plan.inserts:
            if self._job.policy.scope == "owned":
                # Recorded before the call: owning a user that failed to insert is
                # harmless, while losing track of one that was inserted is not.
                self._state.add_owned(job, (change.user.end_user for change in plan.inserts))
            users = [change.user for change in plan.inserts]
            self._run(Operation.INSERT, users, self._platform.insert, result)
        updates = list(plan.update_calls_users)
        if updates:
            self._run(Operation.UPDATE, updates, self._platform.update, result)
        if plan.deletes:
            end_users = [change.user.end_user for change in plan.deletes]
            outcome = self._run(Operation.DELETE, end_users, self._platform.delete, result)
            if self._job.policy.scope == "owned":
                self._state.remove_owned(job, (self._identity(name) for name in outcome.confirmed))

    def _run(
        self,
        operation: Operation,
        items: list[_Item],
        call: _WriteCall[_Item],
        result: RunResult,
    ) -> WriteOutcome:
        # The run owns the outcome before the call starts, so whatever was confirmed
        # survives an error or an interruption half-way.
        outcome = WriteOutcome(operation=operation, requested=len(items))
        result.outcomes.append(outcome)
        advance = self._progress.start(operation, len(items)) if self._progress else None
        try:
            returned = call(items, advance, outcome=outcome)
            if returned is not outcome:
                # What it confirmed would be lost from the record and the audit log.
                raise TypeError(f"{operation}: the platform port must fill the outcome given")
        finally:
            # Also after an error: what was confirmed until then is audited.
            result.confirmed_at[operation] = datetime.now(UTC)
            if self._progress:
                self._progress.finish(operation)
        log.info(
            "platform.written",
            operation=operation.value,
            requested=outcome.requested,
            confirmed=len(outcome.confirmed),
            failed=len(outcome.failures),
            calls=outcome.calls,
        )
        for failure in outcome.failures[:20]:
            log.warning(
                "platform.user_failed",
                operation=operation.value,
                end_user=failure.end_user,
                reason=failure.reason,
            )
        return outcome

    def _policy(self) -> PlanPolicy:
        policy = self._job.policy
        lowercase = self._job.identity.lowercase
        owned = self._state.owned_users(self._job.name) if policy.scope == "owned" else frozenset()
        return PlanPolicy(
            on_missing=policy.on_missing,
            purge_after_days=policy.purge_after_days,
            scope=policy.scope,
            protected=frozenset(
                normalize_end_user(name, lowercase=lowercase) for name in policy.protected
            ),
            owned=owned,
        )

    def _read_sources(self) -> DesiredUsers:
        builder = DesiredUsersBuilder()
        for source in self._sources:
            builder.begin_source(source.label)
            try:
                for item in source.read():
                    builder.add(item)
            except SourceError as error:
                builder.end_source(error=str(error))
                log.error("source.failed", source=source.label, error=str(error))
            else:
                builder.end_source()
        return builder.build()

    def _record(self, result: RunResult) -> None:
        planned = result.planned
        if (
            self._job.policy.scope == "owned"
            and planned.plan is not None
            and (result.status in (RunStatus.APPLIED, RunStatus.PARTIAL))
        ):
            # Users in the source are managed by this job from now on: it adopts
            # matching hand-made entries, and a user whose insert was confirmed just
            # before a crash. Owning a user that is not on the platform is harmless.
            removed = {self._identity(change.user.end_user) for change in planned.plan.deletes}
            already = planned.policy.owned
            self._state.add_owned(
                self._job.name,
                (
                    end_user
                    for end_user in planned.desired.users
                    if end_user not in already and end_user not in removed
                ),
            )
        summary = result.summary()
        audit = (
            audit_batches(
                planned.plan,
                result.outcomes,
                run_id=planned.run_id,
                job=planned.job,
                confirmed_at=result.confirmed_at,
                identity=self._identity,
            )
            if planned.plan is not None
            else ()
        )
        # The run and its audit rows in one transaction: never rows without their run.
        self._state.record_run(
            RunRecord(
                run_id=planned.run_id,
                job=planned.job,
                started_at=planned.started_at,
                finished_at=datetime.now(UTC),
                status=result.status.value,
                summary=summary,
            ),
            audit,
        )
        log.info("run.finished", **summary)
