"""The daemon's Prometheus metrics, in a registry of their own.

Labels are bounded by the configuration (jobs, sources, targets, operations, statuses,
HTTP verbs and status codes), never by data: no user id is ever a label. Every label
set that can be known at start is created then, so a dashboard sees zeros, not gaps.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from syncd import __version__
from syncd.daemon.status import RunSummary
from syncd.platform.api import FLAVOURS, ApiFlavour, Operation

__all__ = ["CONTENT_TYPE", "DaemonMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""

_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_WRITE_OPERATIONS = (Operation.INSERT, Operation.UPDATE, Operation.DELETE)


class DaemonMetrics:
    """Every metric of ``syncd run``; thread-safe (prometheus-client's are)."""

    def __init__(self, statuses: Iterable[str]) -> None:
        # The *_created series double every counter's output and no dashboard of ours
        # reads them (process-wide, but this process is the daemon).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._statuses = tuple(statuses)
        r = self.registry
        self.runs = Counter("syncd_runs", "Runs by final status.", ["job", "status"], registry=r)
        self.duration = Histogram(
            "syncd_run_duration_seconds",
            "Wall time of a run.",
            ["job"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.last_run = Gauge(
            "syncd_last_run_timestamp_seconds", "When the last run ended.", ["job"], registry=r
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the last applied run (nothing held, nothing failed) ended.",
            ["job"],
            registry=r,
        )
        self.changes = Counter(
            "syncd_changes",
            "Changes the platform confirmed, by write operation.",
            ["job", "operation"],
            registry=r,
        )
        self.write_failures = Counter(
            "syncd_write_failures", "Users the platform did not confirm.", ["job"], registry=r
        )
        self.source_users = Gauge(
            "syncd_source_users", "Users read from a source in the last run.",
            ["job", "source"], registry=r,
        )  # fmt: skip
        self.platform_users = Gauge(
            "syncd_platform_users", "Platform users listed in the last run.", ["job"], registry=r
        )
        self.guard_held = Gauge(
            "syncd_guard_held", "1 while the job's plan is held by the guard.", ["job"], registry=r
        )
        self.api_requests = Counter(
            "syncd_api_requests",
            "HTTP requests to the platform, by verb and status code (error: no answer).",
            ["target", "method", "code"],
            registry=r,
        )
        self.credential_expiry = Gauge(
            "syncd_credential_expiry_timestamp_seconds",
            "When a source's credential (certificate, client secret) expires.",
            ["job", "source"],
            registry=r,
        )
        build = Gauge("syncd_build_info", "The running syncd version.", ["version"], registry=r)
        build.labels(version=__version__).set(1)

    def add_job(self, job: str, sources: Iterable[str], target: str, flavour: ApiFlavour) -> None:
        """Create the label sets of one job at zero."""
        for status in self._statuses:
            self.runs.labels(job=job, status=status)
        self.duration.labels(job=job)
        self.last_run.labels(job=job)
        self.last_success.labels(job=job)
        for operation in _WRITE_OPERATIONS:
            self.changes.labels(job=job, operation=operation.value)
        self.write_failures.labels(job=job)
        for source in sources:
            self.source_users.labels(job=job, source=source)
        self.platform_users.labels(job=job)
        self.guard_held.labels(job=job)
        spec = FLAVOURS[flavour]
        for operation in Operation:
            self.api_requests.labels(target=target, method=spec.method(operation), code="200")

    def observe_credentials(self, job: str, sources: Iterable[object]) -> None:
        """Set the credential expiry of each source that knows it.

        A source offers it through an optional ``credential_expiry() -> datetime | None``
        hook (Entra ID: the certificate's notAfter or ``client_secret_expires``); the
        others have no series, since an expiry of 0 would read as "expired".
        """
        for source in sources:
            hook = getattr(source, "credential_expiry", None)
            expires = hook() if callable(hook) else None
            if expires is not None:
                label = str(getattr(source, "label", ""))
                self.credential_expiry.labels(job=job, source=label).set(expires.timestamp())

    def observe_run(self, job: str, summary: RunSummary) -> None:
        """Count one finished run."""
        self.runs.labels(job=job, status=summary.status).inc()
        self.duration.labels(job=job).observe(summary.duration_s)
        ended = summary.finished_at.timestamp()
        self.last_run.labels(job=job).set(ended)
        if summary.status == "applied":
            self.last_success.labels(job=job).set(ended)
        for operation, count in summary.confirmed.items():
            self.changes.labels(job=job, operation=operation).inc(count)
        if summary.failures:
            self.write_failures.labels(job=job).inc(summary.failures)
        for source, users in summary.source_users.items():
            self.source_users.labels(job=job, source=source).set(users)
        if summary.platform_users is not None:
            self.platform_users.labels(job=job).set(summary.platform_users)
        if summary.status != "busy":
            # A run that could not take the job's lock says nothing about the plan.
            self.guard_held.labels(job=job).set(1 if summary.status == "held" else 0)

    def request_observer(self, target: str) -> RequestCounter:
        """An observer for the platform client of ``target`` (see syncd.http)."""
        return RequestCounter(self.api_requests, target)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)


class RequestCounter:
    """Counts one target's HTTP attempts (a :class:`~syncd.http.RequestObserver`)."""

    def __init__(self, counter: Counter, target: str) -> None:
        self._counter = counter
        self._target = target

    def __call__(self, method: str, status: int | None, /) -> None:
        code = "error" if status is None else str(status)
        self._counter.labels(target=self._target, method=method, code=code).inc()
