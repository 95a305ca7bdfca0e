"""``syncd run``: every job on its schedule, until a signal stops the process.

Lifetimes: the daemon opens each job's :class:`~syncd.service.JobResources` (platform
client, sources, state store) once, and every scheduled run is exactly ``syncd apply``
for that job over them: ``run_job(config, job, apply=True, resources=...)``. A held plan
stays held on every cycle until an operator accepts it by hand with ``syncd apply``.

Threads: APScheduler's loop; one executor thread per job (so a hanging job never
delays another, and ``max_instances=1`` means a job never overlaps itself); one more
executor for the heartbeat that proves the loop alive (``/healthz``, the systemd
watchdog) even while every job is busy; the HTTP endpoints.

Shutdown (:meth:`Daemon.shutdown`): stop scheduling, cancel every platform client (no
new batch starts, requests on the wire are cut, see ``PlatformClient.cancel``), wait
for the runs to record themselves as failed with what the platform confirmed, stop
the endpoints, close the resources: well inside the 10 s before Docker and Kubernetes
send SIGKILL.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

from syncd import __version__
from syncd.config import JobConfig, SyncdConfig
from syncd.config_base import read_secret_file
from syncd.daemon.memory import release_memory
from syncd.daemon.metrics import DaemonMetrics
from syncd.daemon.notify import Notifier
from syncd.daemon.page import render_page
from syncd.daemon.schedule import JobTiming, check_schedules, describe, timing_for
from syncd.daemon.server import StatusServer
from syncd.daemon.status import JobState, RunSummary, history_rows, status_document
from syncd.errors import StateError
from syncd.exitcodes import RunStatus
from syncd.platform.client import PlatformClient
from syncd.service import JobResources, open_resources, run_job
from syncd.state import SqliteStateStore

__all__ = ["SHUTDOWN_BUDGET_S", "Daemon"]

log = structlog.get_logger(__name__)

SHUTDOWN_BUDGET_S = 6.0
"""How long shutdown waits for runs in progress: inside Docker's and Kubernetes' 10 s."""

_HISTORY = 20


@dataclass(slots=True)
class _Job:
    config: JobConfig
    client: PlatformClient
    resources: JobResources
    timing: JobTiming
    state: JobState
    idle: threading.Event


class Daemon:
    """The scheduler, the jobs' long-lived resources and the endpoints of ``syncd run``."""

    def __init__(
        self,
        config: SyncdConfig,
        config_path: Path,
        *,
        notifier: Notifier | None = None,
        tick_s: float = 1.0,
    ) -> None:
        check_schedules(config.jobs)
        self._config = config
        self._config_path = config_path
        self._notifier = notifier if notifier is not None else Notifier()
        watchdog = self._notifier.watchdog_s
        # The heartbeat ticks at least twice per watchdog period, as systemd asks.
        self._tick_s = min(tick_s, watchdog / 2) if watchdog else tick_s
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._jobs: dict[str, _Job] = {}
        self._stopping = threading.Event()
        self._started_at = datetime.now(UTC)
        self._last_tick = 0.0
        self._last_watchdog = 0.0
        statuses = [status.value for status in RunStatus if status is not RunStatus.PLANNED]
        self.metrics = DaemonMetrics(statuses)
        self._state = SqliteStateStore(config.state_dir)
        self._scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max(1, len(config.jobs))),
                "heartbeat": ThreadPoolExecutor(1),
            },
            timezone=None,
        )
        self._server: StatusServer | None = None
        # APScheduler logs skipped fires through the standard library, as plain text
        # lines among our JSON ones; the listener logs them in our format instead.
        logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
        self._scheduler.add_listener(
            self._on_scheduler_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open every job's resources and the state store, serve, schedule, notify.

        Raises ConfigError (a token file, a source's config) or SyncdError / OSError
        (the state store, the listen address); what was opened is closed again.
        """
        try:
            token = None
            if self._config.server.auth_token_file is not None:
                secret = read_secret_file(self._config.server.auth_token_file, token=True)
                token = secret.get_secret_value()
            self._state.ensure_writable()
            now = datetime.now(UTC)
            for job in self._config.jobs:
                self._jobs[job.name] = self._open_job(job, now)
            self._server = StatusServer(self._config.server.address, self, token)
            self._stack.callback(self._server.stop)
        except BaseException:
            self._stack.close()
            raise
        self._server.start()
        self._schedule(now)
        self._scheduler.start()
        host, port = self._server.address
        log.info(
            "daemon.started",
            version=__version__,
            jobs=[f"{name} ({job.state.schedule})" for name, job in self._jobs.items()],
            listen=f"{host}:{port}",
        )
        self._notifier.ready()
        self._notifier.status("started; first runs under way")

    def _open_job(self, job: JobConfig, now: datetime) -> _Job:
        assert job.schedule is not None  # check_schedules ran in __init__
        target = job.target
        resources = open_resources(
            self._config,
            job,
            observer=self.metrics.request_observer(target.url),
            state=self._state,
        )
        client = resources.platform
        assert isinstance(client, PlatformClient)  # cancel() on shutdown needs the client
        self._stack.enter_context(resources)
        self.metrics.add_job(
            job.name, [source.label for source in job.sources], target.url, target.api
        )
        # Known at load (a certificate's notAfter, client_secret_expires): exposed before
        # the first run, so an alert fires even while every run fails.
        self.metrics.observe_credentials(job.name, resources.sources)
        idle = threading.Event()
        idle.set()
        return _Job(
            job, client, resources, timing_for(job.schedule, now=now),
            JobState(job.name, describe(job.schedule)), idle,
        )  # fmt: skip

    def _schedule(self, now: datetime) -> None:
        for name, job in self._jobs.items():
            self._scheduler.add_job(
                self._run,
                trigger=job.timing.trigger,
                args=(name,),
                id=name,
                name=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=job.timing.misfire_grace_s,
                next_run_time=now,  # one run at start-up, then on the schedule
            )
        self._tick()
        self._scheduler.add_job(
            self._tick,
            "interval",
            seconds=self._tick_s,
            id="heartbeat",
            executor="heartbeat",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    def shutdown(self, budget_s: float = SHUTDOWN_BUDGET_S) -> bool:
        """Stop at the next safe point; True if every run in progress ended in time."""
        deadline = time.monotonic() + budget_s
        self._notifier.stopping()
        with self._lock:
            self._stopping.set()
        log.info(
            "daemon.stopping", running=[n for n, j in self._jobs.items() if not j.idle.is_set()]
        )
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for job in self._jobs.values():
            # Final for the client: a run that starts now is refused at once too.
            job.client.cancel()
        ended = all(
            job.idle.wait(max(0.0, deadline - time.monotonic())) for job in self._jobs.values()
        )
        if ended:
            self._stack.close()
        else:
            if self._server is not None:
                self._server.stop()
            log.error("daemon.stop_timeout", budget_s=budget_s)
        log.info("daemon.stopped", clean=ended)
        return ended

    # ----------------------------------------------------------------------- runs

    def _run(self, name: str) -> None:
        job = self._jobs[name]
        started = datetime.now(UTC)
        with self._lock:
            # Checked under the lock that shutdown() sets it under: a run either starts
            # before the flag (and shutdown waits for it) or not at all.
            if self._stopping.is_set():
                return
            job.state.running_since = started
            job.idle.clear()
        try:
            report = run_job(self._config, job.config, apply=True, resources=job.resources)
            # Only the summary is kept: the report holds the plan and the desired users.
            summary = RunSummary.from_report(
                report,
                started_at=started,
                finished_at=datetime.now(UTC),
                config_path=self._config_path,
            )
            del report
            release_memory()
            with self._lock:
                job.state.finished(summary)
            self.metrics.observe_run(name, summary)
            self._log_run(job, summary)
            self._notifier.status(self._status_line())
        finally:
            with self._lock:
                job.state.running_since = None
            job.idle.set()

    def _log_run(self, job: _Job, summary: RunSummary) -> None:
        fields: dict[str, Any] = {
            "job": job.config.name,
            "status": summary.status,
            "seconds": round(summary.duration_s, 3),
        }
        if summary.status == RunStatus.HELD.value:
            log.warning(
                "daemon.held",
                **fields,
                cycles=job.state.held_cycles,
                accept_with=summary.command,
            )
        elif summary.status == "busy":
            log.warning("daemon.busy", **fields, note="the job is running elsewhere; skipped")
        else:
            log.info("daemon.run", **fields)

    def _on_scheduler_event(self, event: JobEvent) -> None:
        if event.job_id == "heartbeat":
            return
        if event.code == EVENT_JOB_MAX_INSTANCES:
            # The previous run is still going: this fire is skipped, by design.
            log.info("daemon.fire_skipped", job=event.job_id, reason="previous run still going")
        elif event.code == EVENT_JOB_MISSED:
            log.warning(
                "daemon.fire_missed",
                job=event.job_id,
                scheduled=str(event.scheduled_run_time),
                reason="more than one period late (suspended, or the host was busy)",
            )
        else:
            error = getattr(event, "exception", None)
            log.error("daemon.run_crashed", job=event.job_id, error=repr(error))

    def _tick(self) -> None:
        now = time.monotonic()
        self._last_tick = now
        watchdog = self._notifier.watchdog_s
        if watchdog and now - self._last_watchdog >= watchdog / 2:
            self._notifier.watchdog()
            self._last_watchdog = now

    def _status_line(self) -> str:
        with self._lock:
            parts = [
                f"{name}: {job.state.last.status if job.state.last else 'starting'}"
                for name, job in self._jobs.items()
            ]
        return "; ".join(parts)

    # ------------------------------------------------------------- the endpoints

    def healthy(self) -> bool:
        """The scheduler loop ticked within a few heartbeats."""
        if self._stopping.is_set() or not self._scheduler.running:
            return False
        return time.monotonic() - self._last_tick <= max(10.0, 5 * self._tick_s)

    def ready(self) -> bool:
        """Started, not stopping, and the state store answers."""
        if self._server is None or self._stopping.is_set() or not self._jobs:
            return False
        try:
            self._state.last_run(next(iter(self._jobs)))
        except StateError as error:
            log.warning("daemon.not_ready", error=str(error))
            return False
        return True

    def metrics_text(self) -> bytes:
        """The Prometheus exposition."""
        return self.metrics.render()

    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        with self._lock:
            for name, job in self._jobs.items():
                job.state.next_run = self._next_run(name)
            states = [job.state for job in self._jobs.values()]
            return status_document(
                states, version=__version__, started_at=self._started_at, now=datetime.now(UTC)
            )

    def page(self) -> str:
        """The HTML page: the status and each job's last recorded runs."""
        history: dict[str, list[dict[str, Any]]] = {}
        for name in self._jobs:
            try:
                history[name] = history_rows(self._state.runs(name, _HISTORY))
            except StateError as error:
                log.warning("daemon.history_unreadable", job=name, error=str(error))
                history[name] = []
        return render_page(self.status(), history)

    def _next_run(self, name: str) -> datetime | None:
        if self._stopping.is_set():
            return None
        scheduled = self._scheduler.get_job(name)
        when = getattr(scheduled, "next_run_time", None)
        return when if isinstance(when, datetime) else None

    @property
    def address(self) -> tuple[str, int]:
        """Where the endpoints listen (after :meth:`start`)."""
        assert self._server is not None
        return self._server.address
