"""One run of one job: read sources -> list platform -> plan -> guard -> apply -> record.

This is the only place that wires the pure core (merge, plan, guard) to the adapters
(sources, platform client, state store). Adapters come in through the constructor, as
the ports of :mod:`syncd.ports`, so tests can run a job against the emulator, a
temporary state directory and real files. A runner lives for one run; what lives
longer (HTTP clients, open sources) belongs to :mod:`syncd.service`.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, TypeVar, cast

import structlog

from syncd.audit import AuditJournal
from syncd.audit_writer import AuditWriter
from syncd.config import JobConfig
from syncd.errors import PlatformError, SourceError, StateError, SyncdError
from syncd.exitcodes import RunStatus
from syncd.guard import GuardHistory, Override, check_plan
from syncd.identity import identity_rule_changes, identity_rules
from syncd.mapping import normalize_end_user
from syncd.merge import DesiredUsers, DesiredUsersBuilder
from syncd.model import PlatformUser
from syncd.plan import Plan, PlanPolicy, plan_changes
from syncd.platform.api import Operation
from syncd.platform.outcome import Settlement, Target, count_uncertain, settle, unverified
from syncd.ports import (
    RUN_RUNNING,
    PlatformPort,
    Progress,
    ProgressCallback,
    RunRecord,
    Source,
    StateStore,
    WriteOutcome,
)
from syncd.runs import PlannedRun, RunResult, new_run_id

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
        distinct: bool = False,
    ) -> WriteOutcome: ...


def platform_identity(end_user: str, *, lowercase: bool) -> str:
    """A platform end_user, normalised like source ids so the two can be matched."""
    try:
        return normalize_end_user(end_user, lowercase=lowercase)
    except ValueError:
        return end_user  # an empty name matches no source user; it stays as it is


def _unconfirmed_inserts(plan: Plan, outcomes: Sequence[WriteOutcome]) -> set[str]:
    """The plan's inserts the platform did not confirm (all of them if none was sent)."""
    for outcome in outcomes:
        if outcome.operation is Operation.INSERT:
            return {failure.end_user for failure in outcome.failures}
    return {change.user.end_user for change in plan.inserts}


def _consumed(users: list[PlatformUser]) -> Iterator[PlatformUser]:
    """``users`` in order, each dropped from the list as it is handed out.

    The plan keeps only the users it changes, so a million listed users are freed while
    its own bookkeeping grows, instead of all of them living until it ends (~25 MB less
    at the peak of a million-user run). ``list.pop`` through ``iter(callable, sentinel)``
    runs in C: no Python frame per user. The list is left empty.
    """
    users.reverse()
    cast("list[PlatformUser | None]", users).insert(0, None)  # the sentinel, popped last
    return iter(cast("Callable[[], PlatformUser | None]", users.pop), None)


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
        today = self._today()

        clock = time.perf_counter()
        desired = self._read_sources(today)
        timings["read_sources"] = time.perf_counter() - clock
        log.info(
            "sources.read",
            users=len(desired.users),
            problems=len(desired.problems),
            conflicts=len(desired.conflicts),
            failed=[source.label for source in desired.failed_sources],
            seconds=round(timings["read_sources"], 3),
        )
        limits = self._job.guard.limits()
        policy = self._policy()
        rules = identity_rules(self._job)
        if desired.failed_sources:
            # No plan from a failed read: what is missing is unknown, not gone.
            verdict = check_plan(Plan(), desired, limits=limits)
            log.warning("guard.held", reasons=list(verdict.reasons))
            return PlannedRun(
                self._job.name,
                run_id,
                started_at,
                desired,
                0,
                None,
                verdict,
                policy,
                timings,
                rules,
            )

        clock = time.perf_counter()
        # Listed names equal to a source id are kept as that id's string: held once.
        current = self._platform.list_users(known=desired.users)
        timings["list_platform"] = time.perf_counter() - clock
        platform_users = len(current)
        seconds = round(timings["list_platform"], 3)
        log.info("platform.listed", users=platform_users, seconds=seconds)

        clock = time.perf_counter()
        plan = plan_changes(
            desired.users,
            _consumed(current),
            policy,
            today,
            source_complete=desired.complete,
            identity=self._identity,
        )
        timings["plan"] = time.perf_counter() - clock
        verdict = check_plan(
            plan,
            desired,
            limits=limits,
            override=override or Override(),
            history=self._guard_history(rules, plan),
            today=today,
            identity=self._identity,
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
            platform_users,
            plan,
            verdict,
            policy,
            timings,
            rules,
        )

    def _guard_history(self, rules: dict[str, object], plan: Plan) -> GuardHistory:
        """What the guard needs from the state store: the last rules, recent removals."""
        previous = self._state.job_rules(self._job.name)
        removed = 0
        if plan.removals and self._job.guard.max_removals_per_day is not None:
            removed = self._state.removals_since(
                self._job.name, datetime.now(UTC) - timedelta(days=1)
            )
        return GuardHistory(
            removed_last_day=removed,
            # No rules recorded yet (a first run, or a database from before them): the
            # rules of this run become the reference once it is applied.
            identity_changes=identity_rule_changes(previous, rules) if previous else (),
        )

    def record_identity_rules(self, result: RunResult) -> None:
        """Remember the run's identity rules once the platform confirmed its apply.

        Called after the run is recorded: from then on, a change to the rules is held.
        Only a run that wrote with the rules (applied or partial) makes them the
        reference; a held or failed one leaves the previous rules in place.
        """
        planned = result.planned
        if not planned.identity_rules:
            return
        if result.status not in (RunStatus.APPLIED, RunStatus.PARTIAL):
            return
        if self._state.job_rules(self._job.name) != planned.identity_rules:
            self._state.set_job_rules(self._job.name, planned.identity_rules)

    def apply(self, planned: PlannedRun) -> RunResult:
        """Write the plan unless the guard held it; record the run.

        Before anything is reported, writes that may have been applied without an
        answer saying so (a timeout or a lost connection after the request was sent)
        are settled by one re-read of the platform: the status, the summary, the audit
        log and ownership follow what the platform holds.
        """
        if planned.verdict.held or planned.plan is None:
            result = RunResult(planned, RunStatus.HELD)
            self._record(result)
            return result
        plan = planned.plan
        # FAILED until the writes are settled: an interrupted run must never be
        # recorded as applied.
        result = RunResult(planned, RunStatus.FAILED)
        self._start(result)
        clock = time.perf_counter()
        failed: PlatformError | None = None
        try:
            try:
                self._write(plan, result)
            except PlatformError as error:
                # result.outcomes keeps what the platform confirmed before it failed (run
                # history, owned users); the next run re-plans from the live list.
                failed = error
                log.error("apply.failed", error=str(error))
            self._settle(plan, result)
        except BaseException as error:
            # Ctrl-C, SIGTERM, a bug: record the run as failed, then let it propagate.
            # No re-read after an interruption: it must stop at once.
            result.error = f"interrupted by {type(error).__name__}: {error}".rstrip(": ")
            log.error("apply.interrupted", error=result.error)
            planned.timings["apply"] = time.perf_counter() - clock
            try:
                self._record(result)
            except StateError as record_error:
                # Never let a failing record hide the interruption itself.
                log.error("run.record_failed", error=str(record_error))
            raise
        result.status = self._status(plan, result, failed)
        planned.timings["apply"] = time.perf_counter() - clock
        self._record(result)
        # From now on a change to these rules is held (see guard.check_identity_rules).
        self.record_identity_rules(result)
        return result

    def _start(self, result: RunResult) -> None:
        """Record the run as running before its first write (which also proves the
        state store takes writes: a broken one fails the run before the platform is
        touched), and open its audit journal."""
        planned = result.planned
        assert planned.plan is not None
        appender = self._state.start_run(
            RunRecord(
                run_id=planned.run_id,
                job=planned.job,
                started_at=planned.started_at,
                finished_at=datetime.now(UTC),
                status=RUN_RUNNING,
                summary=result.summary() | {"status": RUN_RUNNING},
            )
        )
        journal = AuditJournal(
            planned.plan, run_id=planned.run_id, job=planned.job, identity=self._identity
        )
        result.audit = AuditWriter(journal, appender)

    def _status(self, plan: Plan, result: RunResult, failed: PlatformError | None) -> RunStatus:
        """How the writes ended, once settled."""
        if failed is None:
            return RunStatus.PARTIAL if result.failures else RunStatus.APPLIED
        written = {outcome.operation for outcome in result.outcomes if outcome.ok}
        planned_ops = {
            operation
            for operation, count in (
                (Operation.INSERT, len(plan.inserts)),
                (Operation.UPDATE, len(plan.update_calls_users)),
                (Operation.DELETE, len(plan.deletes)),
            )
            if count
        }
        if planned_ops <= written:
            # The error hid writes that all went through (the re-read found every user
            # as written): the platform holds the whole plan.
            log.warning("apply.recovered", error=str(failed))
            return RunStatus.APPLIED
        result.error = str(failed)
        return RunStatus.FAILED

    def _write(self, plan: Plan, result: RunResult) -> None:
        if plan.inserts:
            users = [change.user for change in plan.inserts]
            outcome = self._outcome(Operation.INSERT, len(users), result)
            try:
                self._run(Operation.INSERT, users, self._platform.insert, result, outcome)
            finally:
                # Owned only once confirmed: a user whose insert was refused is not the
                # job's, so a hand-made user of that name later is left alone. (A crash
                # between the two loses nobody: the next run adopts its source users.)
                self._own(outcome.confirmed)
        updates = list(plan.update_calls_users)
        if updates:
            outcome = self._outcome(Operation.UPDATE, len(updates), result)
            self._run(Operation.UPDATE, updates, self._platform.update, result, outcome)
        if plan.deletes:
            end_users = [change.user.end_user for change in plan.deletes]
            outcome = self._outcome(Operation.DELETE, len(end_users), result)
            try:
                self._run(Operation.DELETE, end_users, self._platform.delete, result, outcome)
            finally:
                self._disown(outcome.confirmed)

    def _own(self, end_users: Sequence[str]) -> None:
        """With ``scope: owned``, record confirmed inserts as the job's."""
        if self._job.policy.scope == "owned" and end_users:
            self._track(lambda: self._state.add_owned(self._job.name, end_users))

    def _disown(self, end_users: Sequence[str]) -> None:
        """With ``scope: owned``, forget users whose delete was confirmed."""
        if self._job.policy.scope == "owned" and end_users:
            names = [self._identity(name) for name in end_users]
            self._track(lambda: self._state.remove_owned(self._job.name, names))

    @staticmethod
    def _track(write: Callable[[], None]) -> None:
        if sys.exc_info()[1] is None:
            write()
            return
        try:
            write()
        except StateError as error:
            # Already failing (an interruption, a platform error): never let the state
            # store hide that error; the next run adopts its source users again.
            log.error("state.owned_failed", error=str(error))

    @staticmethod
    def _outcome(operation: Operation, requested: int, result: RunResult) -> WriteOutcome:
        # The run owns the outcome before the call starts, so whatever was confirmed
        # survives an error or an interruption half-way.
        # With an audit log, an insert's bodies are its entries (stored as sent).
        outcome = WriteOutcome(
            operation=operation, requested=requested, keep_sent=result.audit is not None
        )
        result.outcomes.append(outcome)
        return outcome

    def _run(
        self,
        operation: Operation,
        items: list[_Item],
        call: _WriteCall[_Item],
        result: RunResult,
        outcome: WriteOutcome,
    ) -> None:
        advance = self._progress.start(operation, len(items)) if self._progress else None
        audit = result.audit
        if audit is not None:
            # The audit log reads what the write confirms from the outcome's own list.
            audit.follow(operation, outcome.confirmed, outcome.spans)

        def batch_done(count: int) -> None:
            # Called on this thread as each batch is answered.
            if advance is not None:
                advance(count)
            if audit is not None:
                audit.poke()

        try:
            # A plan names each end_user in one change at most (see Plan), so the
            # client need not check a million names for one given twice.
            returned = call(items, batch_done, outcome=outcome, distinct=True)
            if returned is not outcome:
                # What it confirmed would be lost from the record and the audit log.
                raise TypeError(f"{operation}: the platform port must fill the outcome given")
        finally:
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

    def _settle(self, plan: Plan, result: RunResult) -> None:
        """Re-read the platform if a write is in doubt, and sort every unconfirmed user
        into applied or not (see :mod:`syncd.platform.outcome`)."""
        doubtful = count_uncertain(result.outcomes)
        if doubtful:
            failed = {f.end_user for outcome in result.outcomes for f in outcome.failures}
            log.info("apply.settling", uncertain=doubtful, unconfirmed=len(failed))
            try:
                listed = self._platform.list_users()
            except SyncdError as error:
                # The users stay "may have been applied": neither claimed as written nor
                # as failed; the next run's plan finds out.
                result.outcomes[:] = [unverified(o, str(error)) for o in result.outcomes]
                result.settlement = Settlement(unverified=doubtful, error=str(error))
                log.error("apply.settle_failed", uncertain=doubtful, error=str(error))
            else:
                held = {user.end_user: user for user in listed if user.end_user in failed}
                del listed
                self._settle_outcomes(plan, result, failed, held)
        for outcome in result.outcomes:
            for failure in outcome.failures[:20]:
                log.warning(
                    "platform.user_failed",
                    operation=outcome.operation.value,
                    end_user=failure.end_user,
                    reason=failure.reason,
                )

    def _settle_outcomes(
        self,
        plan: Plan,
        result: RunResult,
        failed: set[str],
        held: dict[str, PlatformUser],
    ) -> None:
        targets: dict[Operation, dict[str, Target]] = {
            Operation.INSERT: {
                c.user.end_user: c.user for c in plan.inserts if c.user.end_user in failed
            },
            Operation.UPDATE: {
                u.end_user: u for u in plan.update_calls_users if u.end_user in failed
            },
            Operation.DELETE: {
                c.user.end_user: None for c in plan.deletes if c.user.end_user in failed
            },
        }
        total = Settlement()
        for index, outcome in enumerate(result.outcomes):
            if not outcome.failures:
                continue
            before = len(outcome.confirmed)
            settled, counts = settle(outcome, targets[outcome.operation], held)
            found = settled.confirmed[before:]
            if result.audit is not None:
                # Followed before the outcome says they were written: an interruption
                # in between leaves users audited and counted failed, never the reverse.
                result.audit.follow(outcome.operation, found)
            result.outcomes[index] = settled
            if outcome.operation is Operation.INSERT:
                self._own(found)
            elif outcome.operation is Operation.DELETE:
                self._disown(found)
            total = Settlement(
                checked=total.checked + counts.checked,
                applied=total.applied + counts.applied,
                not_applied=total.not_applied + counts.not_applied,
            )
        result.settlement = total
        log.info("apply.settled", **total.summary())

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

    def _read_sources(self, today: date) -> DesiredUsers:
        builder = DesiredUsersBuilder()
        for source in self._sources:
            builder.begin_source(source.label)
            try:
                builder.add_all(source.read())
            except SourceError as error:
                builder.end_source(error=str(error))
                log.error("source.failed", source=source.label, error=str(error))
            else:
                builder.end_source()
        desired = builder.build()
        # A start years ahead is a broken export, not a joiner: refused like a bad row.
        desired.refuse_starts_after(today + timedelta(days=self._job.guard.max_start_days_ahead))
        return desired

    def _record(self, result: RunResult) -> None:
        planned = result.planned
        # First, before any other state write can fail: the audit thread stops, and
        # what it did not write goes with the run's record.
        audit = result.audit.finish() if result.audit is not None else []
        owned_error: BaseException | None = None
        try:
            self._adopt(result)
        except BaseException as error:
            # A failing store, or Ctrl-C / SIGTERM right now: the run is still recorded
            # (with its audit entries), then the error goes on.
            owned_error = error
            if isinstance(error, StateError):
                log.error("state.owned_failed", error=str(error))
        summary = result.summary()
        clock = time.perf_counter()
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
        # Known only now, so in the log line and the job's report, not in the stored
        # summary (the audit's last chunk, and the WAL checkpoint at the close).
        planned.timings["record"] = time.perf_counter() - clock
        timings = {k: round(v, 3) for k, v in planned.timings.items()}
        log.info("run.finished", **(summary | {"timings_s": timings}))
        if owned_error is not None:
            raise owned_error

    def _adopt(self, result: RunResult) -> None:
        """With ``scope: owned``, after a run that wrote: the job owns its source users
        from now on. It adopts matching hand-made entries, and a user whose insert was
        confirmed just before a crash; not a user whose insert the platform did not
        confirm (a hand-made user of that name later must be left alone)."""
        planned = result.planned
        if (
            self._job.policy.scope != "owned"
            or planned.plan is None
            or result.status not in (RunStatus.APPLIED, RunStatus.PARTIAL)
        ):
            return
        removed = {self._identity(change.user.end_user) for change in planned.plan.deletes}
        removed |= _unconfirmed_inserts(planned.plan, result.outcomes)
        already = planned.policy.owned
        self._state.add_owned(
            self._job.name,
            (
                end_user
                for end_user in planned.desired.users
                if end_user not in already and end_user not in removed
            ),
        )
