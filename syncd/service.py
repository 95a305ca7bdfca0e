"""The service layer: run a job and say how it went, for the CLI and the daemon alike.

Two lifetimes are kept apart:

* :class:`JobResources` live as long as their owner wants: the platform HTTP client
  (its connection pool) and the opened sources (later an LDAP connection, an MSAL token
  cache). The CLI opens them for one run; a daemon keeps them across runs.
* A :class:`~syncd.runner.JobRunner` lives for one run. :func:`run_job` builds one over
  the resources, binds the run's log context, plans, judges, applies, and turns every
  way a run can end into a typed :class:`JobReport`. Rendering it is the caller's job.

An apply holds the job's lock (:mod:`syncd.locking`) from before its plan until its run
is recorded, so a daemon and a manual ``syncd apply`` never apply one job at once; the
one that finds it taken does nothing and reports :attr:`RunStatus.BUSY`. The plan is
made under the lock too: a plan computed while another process writes would be stale.
After an apply, history older than ``state.retention_days`` is pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Self

import httpx
import structlog

from syncd.config import JobConfig, SyncdConfig
from syncd.errors import ConfigError, StateError, SyncdError
from syncd.exitcodes import ExitCode, RunStatus, exit_code_for
from syncd.guard import Override
from syncd.http import RequestObserver
from syncd.locking import busy_message, job_lock, process_holder
from syncd.platform.client import PlatformClient
from syncd.ports import PlatformPort, Progress, Source, StateStore, WriteFailure
from syncd.runner import JobRunner, today_utc
from syncd.runs import PlannedRun, RunResult, new_run_id
from syncd.sources import SourceContext, build_source
from syncd.state import SqliteStateStore

log = structlog.get_logger(__name__)


class JobResources:
    """What a job keeps open between runs: its platform client, sources and state store.

    A context manager: entering opens the sources, leaving closes them and the client.
    Built by :func:`open_resources` from the config, or from adapters directly (tests).
    """

    def __init__(
        self,
        job: JobConfig,
        *,
        platform: PlatformPort,
        sources: list[Source],
        state: StateStore,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.job = job
        self.platform = platform
        self.sources = sources
        self.state = state
        self._close = close
        self._stack = ExitStack()

    def __repr__(self) -> str:
        labels = ", ".join(source.label for source in self.sources)
        return f"JobResources(job={self.job.name!r}, sources=[{labels}])"

    def __enter__(self) -> Self:
        with ExitStack() as stack:
            if self._close is not None:
                stack.callback(self._close)
            for source in self.sources:
                stack.enter_context(source)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def runner(
        self, *, progress: Progress | None = None, today: Callable[[], date] = today_utc
    ) -> JobRunner:
        """A runner for one run over these resources."""
        return JobRunner(
            self.job,
            sources=self.sources,
            platform=self.platform,
            state=self.state,
            today=today,
            progress=progress,
        )


def open_resources(
    config: SyncdConfig,
    job: JobConfig,
    *,
    transport: httpx.BaseTransport | None = None,
    observer: RequestObserver | None = None,
    state: StateStore | None = None,
) -> JobResources:
    """Build (unopened) resources for ``job``; use the result as a context manager.

    ``transport`` replaces the HTTP transport of the platform client (tests);
    ``observer`` sees every HTTP attempt (the daemon's metrics); ``state`` shares one
    store between jobs (the daemon) instead of opening the config's.
    """
    target = job.target
    client = PlatformClient(
        base_url=target.url,
        api_key=target.secret(),
        flavour=target.api,
        batch_size=target.batch_size,
        timeout_s=target.timeout_s,
        max_retries=target.max_retries,
        concurrency=target.concurrency,
        transport=transport,
        observer=observer,
        # No ETag cache of the full list: it would keep the last list (about 240 MB at
        # a million users) resident between runs of a daemon, for every job, to save
        # one GET per unchanged cycle; steady memory matters more (container limits),
        # and a project with any churn answers 200 anyway.
        cache_list=False,
    )
    context = SourceContext(lowercase=job.identity.lowercase)
    try:
        sources = [build_source(source, context) for source in job.sources]
    except BaseException:
        client.close()
        raise
    return JobResources(
        job,
        platform=client,
        sources=sources,
        state=state if state is not None else SqliteStateStore(config.state_dir),
        close=client.close,
    )


@contextmanager
def open_job(
    config: SyncdConfig,
    job: JobConfig,
    *,
    progress: Progress | None = None,
    today: Callable[[], date] = today_utc,
    transport: httpx.BaseTransport | None = None,
) -> Iterator[JobRunner]:
    """A runner for one run of ``job``, over resources closed when the block ends."""
    with open_resources(config, job, transport=transport) as resources:
        yield resources.runner(progress=progress, today=today)


@dataclass(frozen=True, slots=True)
class JobReport:
    """How one job's run ended, whatever happened: the value the CLI and daemon render.

    ``planned`` and ``result`` are there when the run got that far (for detailed
    rendering); the other fields are always set.
    """

    job: str
    status: RunStatus
    exit_code: ExitCode
    run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    write_calls: int = 0
    failures: tuple[WriteFailure, ...] = ()
    guard_reasons: tuple[str, ...] = ()
    error: str | None = None
    unexpected: bool = False
    """True when ``error`` is a bug (an exception syncd did not raise on purpose)."""
    timings: dict[str, float] = field(default_factory=dict)
    planned: PlannedRun | None = None
    result: RunResult | None = None

    @property
    def held(self) -> bool:
        """True if the guard held the plan."""
        return self.status is RunStatus.HELD


def run_job(
    config: SyncdConfig,
    job: JobConfig,
    *,
    apply: bool,
    override: Override | None = None,
    resources: JobResources | None = None,
    progress: Progress | None = None,
    on_planned: Callable[[PlannedRun], None] | None = None,
    today: Callable[[], date] = today_utc,
    holder: str | None = None,
) -> JobReport:
    """Plan ``job`` and, with ``apply``, write the plan unless the guard holds it.

    Never raises for a failed run: configuration errors (exit 2), syncd errors and
    unexpected ones (exit 1) become the report. Only interruptions (Ctrl-C, SIGTERM)
    propagate, after the runner recorded the run. ``resources`` are reused when given
    (a daemon), else opened and closed around this run. ``on_planned`` sees the plan
    before anything is written (the CLI prints it there).

    An apply first takes the job's lock; when another process holds it the report is
    :attr:`RunStatus.BUSY` (exit 1) naming the holder, and nothing is read or written.
    ``holder`` describes this process in the lock (default: ``syncd <command>``).
    """
    if resources is not None and resources.job.name != job.name:
        raise ValueError(f"resources of job {resources.job.name!r} given for job {job.name!r}")
    run_id = new_run_id()
    # Every log line of the run, the write threads' too, carries job and run_id; unbound
    # afterwards, because a scheduler reuses its threads for other jobs.
    with structlog.contextvars.bound_contextvars(job=job.name, run_id=run_id):
        try:
            with ExitStack() as stack:
                owned = resources is None
                if resources is None:
                    resources = stack.enter_context(open_resources(config, job))
                # Lost to another run (this process paused past the lease): a client
                # opened for this run alone is cancelled, so writing stops at once. A
                # caller's long-lived client (the daemon's) is final once cancelled, so
                # there the loss is logged and the next cycle finds the job busy.
                on_lost = getattr(resources.platform, "cancel", None) if owned else None
                if apply:
                    held = stack.enter_context(
                        job_lock(
                            resources.state,
                            job.name,
                            run_id,
                            holder=holder or process_holder(),
                            on_lost=on_lost,
                        )
                    )
                    if held.run_id != run_id:
                        return _busy(job, run_id, busy_message(held, datetime.now(UTC)))
                runner = resources.runner(progress=progress, today=today)
                planned = runner.plan(override or Override(), run_id=run_id)
                if on_planned is not None:
                    on_planned(planned)
                if not apply:
                    status = RunStatus.HELD if planned.verdict.held else RunStatus.PLANNED
                    return _report(job, status, planned=planned)
                result = runner.apply(planned)
                _prune(resources.state, config.state.retention_days)
            return _report(job, result.status, planned=planned, result=result)
        except ConfigError as error:
            return _failed(job, run_id, error, ExitCode.CONFIG)
        except SyncdError as error:
            return _failed(job, run_id, error, ExitCode.FAILED)
        except Exception as error:
            # A bug must not stop the other jobs (or the daemon); the traceback is logged.
            log.exception("job.crashed")
            return _failed(job, run_id, error, ExitCode.FAILED, unexpected=True)


def _prune(state: StateStore, retention_days: int) -> None:
    """Delete history older than the retention (once per applied run; never fails it)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    try:
        removed = state.prune(cutoff)
    except StateError as error:
        # The run itself is recorded; old rows wait for the next run.
        log.warning("state.prune_failed", error=str(error))
        return
    if removed:
        log.info("state.pruned", rows=removed, before=cutoff.isoformat())


def _busy(job: JobConfig, run_id: str, message: str) -> JobReport:
    log.warning("job.busy", error=message)
    return JobReport(
        job=job.name,
        status=RunStatus.BUSY,
        exit_code=exit_code_for(RunStatus.BUSY),
        run_id=run_id,
        error=message,
    )


def _report(
    job: JobConfig,
    status: RunStatus,
    *,
    planned: PlannedRun,
    result: RunResult | None = None,
) -> JobReport:
    plan = planned.plan
    return JobReport(
        job=job.name,
        status=status,
        exit_code=exit_code_for(status),
        run_id=planned.run_id,
        counts=plan.counts() if plan is not None else {},
        write_calls=result.write_calls if result is not None else 0,
        failures=tuple(
            failure
            for outcome in (result.outcomes if result is not None else [])
            for failure in outcome.failures
        ),
        guard_reasons=tuple(planned.verdict.reasons),
        error=result.error if result is not None else None,
        timings=dict(planned.timings),
        planned=planned,
        result=result,
    )


def _failed(
    job: JobConfig,
    run_id: str,
    error: Exception,
    code: ExitCode,
    *,
    unexpected: bool = False,
) -> JobReport:
    message = f"{type(error).__name__}: {error}" if unexpected else str(error)
    if not unexpected:
        log.error("job.failed", error=message, configuration=code is ExitCode.CONFIG)
    return JobReport(
        job=job.name,
        status=RunStatus.FAILED,
        exit_code=code,
        run_id=run_id,
        error=message,
        unexpected=unexpected,
    )
