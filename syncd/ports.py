"""The ports: every interface between the pure core and the adapters, in one place.

The data path is ``sources -> mapping -> plan -> guard -> apply -> record``. The pure
parts (mapping, merge, plan, guard) work on the values of :mod:`syncd.model`; the
runner reaches the outside world only through the protocols below, which adapters
implement and which are injected through constructors:

* :class:`Source` -- a directory (CSV, LDAP / AD, Entra ID) streaming its users;
* :class:`PlatformPort` -- the Nebuly platform-users API (list and batched writes);
* :class:`StateStore` -- what a job remembers between runs (owned users, history, the
  audit log of confirmed changes, source cursors, the per-job lock);
* :class:`Progress` -- a display of write progress (a progress bar on a terminal).

* :class:`ActivitySource` -- the analytics API of the activation report (who was
  active when), and :class:`ApiLedger` -- that report's response cache and query
  budget in the state database.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from syncd.model import PlatformUser, RecordProblem, SourceUser
from syncd.platform.api import Operation

if TYPE_CHECKING:
    # Types only: the report package imports this module, so a runtime import would cycle.
    from datetime import date, timedelta

    from syncd.report.client import Activity
    from syncd.report.compute import Granularity

# ------------------------------------------------------------------------ sources


class Source(Protocol):
    """Something that streams the users of a directory.

    Contract (checked for every source type by ``tests/sources/test_contract.py``):

    * :meth:`read` yields a :class:`SourceUser` per usable record and a
      :class:`RecordProblem` (with a location) per unusable one;
    * a source that cannot be read raises :class:`~syncd.errors.SourceError`; a read
      that fails half-way raises too, after the records already yielded, and is never
      allowed to end short as if the directory were smaller;
    * a source is a context manager: ``__enter__`` opens what a read needs
      (connections, token caches), ``__exit__`` closes it; a daemon keeps a source
      open across runs and calls :meth:`read` once per run;
    * no secret appears in its ``repr`` or in any error it raises.
    """

    @property
    def label(self) -> str:
        """A short name for messages (the file name, or the configured source name)."""
        ...

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        """Stream every user, and a problem for every record that could not be used."""
        ...

    def __enter__(self) -> Self:
        """Open the resources a read needs; returns the source."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close what :meth:`__enter__` opened."""
        ...


# ----------------------------------------------------------------------- platform


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """A user the platform did not confirm, and why."""

    end_user: str
    reason: str


class SentBody:
    """The body of the one request that wrote a batch, kept until its reader lets it go.

    An insert's audit entries are the users as sent: the audit log stores the body's
    users as they are instead of encoding a million users a second time. The reader
    (the audit journal) calls :meth:`release` once they are stored, so that a run never
    holds every body it sent.
    """

    __slots__ = ("_content",)

    def __init__(self, content: bytes) -> None:
        self._content: bytes | None = content

    @property
    def content(self) -> bytes | None:
        """The body's bytes; None once released."""
        return self._content

    def release(self) -> None:
        """Let go of the bytes (a reader that then needs the users encodes them again)."""
        self._content = None

    def __repr__(self) -> str:
        # Never the body: it is a list of the directory's users.
        content = self._content
        return "SentBody(released)" if content is None else f"SentBody({len(content)} bytes)"


@dataclass(frozen=True, slots=True)
class ConfirmedSpan:
    """``count`` names of an outcome's ``confirmed`` list, from position ``at`` on, are
    the requested items ``start`` to ``start + count - 1``, in their order.

    A writer notes one when a whole batch is confirmed, so that a reader of the
    confirmed names (the audit journal) can find their items by position instead of by
    name in a dictionary of every requested user. A span is a hint: a reader checks it
    against the names before it relies on it. ``sent``, when the outcome asked for it
    (:attr:`WriteOutcome.keep_sent`), is the body of the single request that wrote the
    span's items.
    """

    at: int
    start: int
    count: int
    sent: SentBody | None = None


@dataclass(slots=True)
class WriteOutcome:
    """What one insert / update / delete did.

    ``confirmed`` holds the end_users the platform confirmed (for delete: every user of
    a batch answered with 2xx); ``failures`` the rest, with a reason. ``calls`` counts
    every HTTP write call, retries and 413 splits included. ``spans`` may say where
    runs of ``confirmed`` sit among the requested items (:class:`ConfirmedSpan`); a
    writer notes a span before it appends the names it covers.

    The caller owns the outcome: it passes one into the write and keeps it whatever
    happens, so what was confirmed before an error or an interruption is never lost.
    """

    operation: Operation
    requested: int
    confirmed: list[str] = field(default_factory=list)
    failures: list[WriteFailure] = field(default_factory=list)
    calls: int = 0
    spans: list[ConfirmedSpan] = field(default_factory=list)
    keep_sent: bool = False
    """Set by the caller: an insert's spans then carry the body that wrote them
    (:attr:`ConfirmedSpan.sent`), for an audit log that stores the users as sent."""

    @property
    def ok(self) -> bool:
        """True if every requested user was confirmed."""
        return not self.failures and len(self.confirmed) == self.requested


ProgressCallback = Callable[[int], None]
"""Called from the calling thread with the number of users of each finished batch."""


class PlatformPort(Protocol):
    """What a run needs from the platform (:class:`~syncd.platform.client.PlatformClient`).

    Each write fills ``outcome`` when one is given (else a new one) and returns it. On
    an error it raises after the batches in flight finished, and ``outcome`` then says
    what was confirmed and lists every other user as failed. A write refuses an
    end_user given twice (a ValueError, before any request) unless the caller says the
    names are ``distinct`` by construction (a plan's changes: see
    :class:`~syncd.plan.Plan`), which spares checking a million names.
    """

    def list_users(self, *, known: Mapping[str, SourceUser] | None = None) -> list[PlatformUser]:
        """Every user of the project, each end_user once (of a name listed twice, the
        last entry).

        ``known``: the desired users keyed by normalised end_user; a listed name equal
        to a key may be returned as that user's ``end_user`` string (the same text,
        held once), so the caller's million names are not held twice.
        """
        ...

    def insert(
        self,
        users: Sequence[PlatformUser],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Insert users in batches."""
        ...

    def update(
        self,
        users: Sequence[PlatformUser],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Update (replace) users in batches."""
        ...

    def delete(
        self,
        end_users: Sequence[str],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Delete users in batches."""
        ...


class Progress(Protocol):
    """Receives progress while a plan is applied (a rich progress bar on a TTY)."""

    def start(self, operation: Operation, total: int) -> ProgressCallback:
        """Begin an operation of ``total`` users; return the per-batch advance callback."""
        ...

    def finish(self, operation: Operation) -> None:
        """The operation is done."""
        ...


# -------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One finished run, as recorded."""

    run_id: str
    job: str
    started_at: datetime
    finished_at: datetime
    status: str
    summary: dict[str, object]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change the platform confirmed, as the audit log keeps it.

    ``end_user`` is the normalised name (what ``syncd audit --user`` looks up); the
    platform's own spelling is in ``before`` / ``after``. ``operation`` is a
    :class:`~syncd.plan.ChangeKind` value: insert, update, end, reactivate or delete.
    ``before`` is None for an insert, ``after`` None for a delete.
    """

    run_id: str
    at: datetime
    job: str
    end_user: str
    operation: str
    before: PlatformUser | None
    after: PlatformUser | None


AuditedUser = tuple[str, PlatformUser | None, PlatformUser | None]
"""One user of an :class:`AuditBatch`: ``(normalised end_user, before, after)``."""


RUN_RUNNING = "running"
"""The recorded status of a run while it writes (:meth:`StateStore.start_run`), until
its record says how it ended."""

RUN_INTERRUPTED = "interrupted"
"""The recorded status of a run whose process died before it recorded its end."""


@dataclass(frozen=True, slots=True)
class SentUsers:
    """Confirmed inserts as the platform was sent them: ``users`` is the JSON array of
    one request's users (``{"end_user", "tags", "active_from", "active_to"?}`` each, as
    the insert body holds them; ``end_user`` is normalised), ``count`` of them."""

    users: bytes
    count: int

    def __repr__(self) -> str:
        return f"SentUsers({self.count} users, {len(self.users)} bytes)"


@dataclass(frozen=True, slots=True)
class AuditBatch:
    """The confirmed changes of one kind in one run: what a run hands the audit log.

    Batched, not one object per user, because a first sync confirms a million inserts;
    ``users`` may be a one-shot iterator, consumed once by the store, or inserts as
    they were sent (:class:`SentUsers`), which the store keeps as they are.
    """

    run_id: str
    job: str
    operation: str
    at: datetime
    users: Iterable[AuditedUser] | SentUsers


@dataclass(frozen=True, slots=True)
class JobLock:
    """Who holds a job's lock: one apply of a job at a time, across processes.

    ``holder`` says what holds it (``syncd run``, ``syncd apply``); ``pid``, ``host``
    and ``namespace`` (the PID namespace, so containers sharing a host are told apart)
    let another process on the same machine see that the holder is gone;
    ``heartbeat_at`` is refreshed while the apply runs, so a lock whose holder cannot be
    checked still expires.
    """

    job: str
    run_id: str
    holder: str
    pid: int
    host: str
    namespace: str
    since: datetime
    heartbeat_at: datetime

    def describe(self) -> str:
        """``syncd run (pid 4242 on host-a)``."""
        return f"{self.holder} (pid {self.pid} on {self.host})"


class AuditAppender(Protocol):
    """Adds the confirmed changes of a started run to the audit log while it writes."""

    def append(self, audit: Iterable[AuditBatch]) -> None:
        """Write these entries now, in one transaction (a StateError if refused)."""
        ...

    def close(self) -> None:
        """Release what the appender holds (its run's record writes the rest)."""
        ...


class StateStore(Protocol):
    """Where a job keeps what it must remember between runs.

    The store is an optimisation and a record, never the truth: losing it costs
    history and (with ``scope: owned``) makes a job forget what it owns, which only
    makes it remove fewer users. Every write raises :class:`~syncd.errors.StateError`
    when the store cannot take it.
    """

    def ensure_writable(self) -> None:
        """Fail now, with a StateError, if the store cannot record this run."""
        ...

    def owned_users(self, job: str) -> frozenset[str]:
        """The end_users the job created or adopted."""
        ...

    def add_owned(self, job: str, end_users: Iterable[str]) -> None:
        """Remember that the job owns these end_users."""
        ...

    def remove_owned(self, job: str, end_users: Iterable[str]) -> None:
        """Forget end_users the job deleted."""
        ...

    def start_run(self, record: RunRecord) -> AuditAppender:
        """Record a run about to write, as ``running`` (under the job's lock: another
        ``running`` run of the job died, and is marked ``interrupted``); what is
        returned adds the run's confirmed changes to the audit log as they come."""
        ...

    def record_run(self, record: RunRecord, audit: Iterable[AuditBatch] = ()) -> None:
        """Record a finished run in the history (replacing a started one), with the
        confirmed changes not appended yet, all in one transaction."""
        ...

    def runs(self, job: str | None, limit: int = 20) -> list[RunRecord]:
        """The most recent runs of a job (of every job for None), newest first."""
        ...

    def last_run(self, job: str) -> RunRecord | None:
        """The most recent run of a job, or None before its first."""
        ...

    def audit(self, end_users: Collection[str], job: str | None = None) -> list[AuditEntry]:
        """Every recorded change to these (normalised) end_users, oldest first; only the
        job's when ``job`` is given."""
        ...

    def prune(self, before: datetime) -> int:
        """Delete runs started and audit rows written before ``before``; return how many
        rows went (retention)."""
        ...

    def source_cursor(self, job: str, source: str) -> str | None:
        """The cursor a source of the job saved for its next incremental read, or None."""
        ...

    def set_source_cursor(self, job: str, source: str, cursor: str | None) -> None:
        """Save a source's cursor (None forgets it, forcing a full read next time)."""
        ...

    def acquire_lock(self, lock: JobLock, *, is_stale: Callable[[JobLock], bool]) -> JobLock:
        """Take the job's lock for ``lock`` unless someone else holds it.

        Returns the holder after the attempt: ``lock`` itself when taken, else the
        current holder. A lock for which ``is_stale`` is true (its process is gone, or
        its heartbeat expired) is taken over.
        """
        ...

    def refresh_lock(self, job: str, run_id: str, at: datetime) -> bool:
        """Move the heartbeat of the run's lock to ``at``; False if it no longer holds it."""
        ...

    def release_lock(self, job: str, run_id: str) -> None:
        """Release the job's lock if this run holds it (never another run's)."""
        ...

    def current_lock(self, job: str) -> JobLock | None:
        """Who holds the job's lock now, or None (a stale row is reported as it is)."""
        ...

    # -- core guard (identity rules, rolling removal budget) --

    def job_rules(self, job: str) -> dict[str, object] | None:
        """The identity rules the job last applied with (JSON data), or None before any."""
        ...

    def set_job_rules(self, job: str, rules: Mapping[str, object]) -> None:
        """Remember the identity rules the job applied with (after a confirmed apply)."""
        ...

    def removals_since(self, job: str, since: datetime) -> int:
        """End-dates and deletes the platform confirmed for the job at or after ``since``
        (from the audit log: exact, confirmed changes only)."""
        ...


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A rate-limited API's answer as the state store caches it (activation report).

    ``url`` is the request without credentials, for people reading the table; ``body``
    is whatever the client chose to keep (the decoded activity, compressed).
    """

    url: str
    etag: str | None
    body: bytes
    fetched_at: datetime


# ------------------------------------------------------------ activation report


class ActivitySource(Protocol):
    """Who was active when (:class:`~syncd.report.client.AnalyticsClient`)."""

    def fetch(self, start: date, end: date, granularity: Granularity) -> Activity:
        """The activity of ``[start, end]`` in buckets of ``granularity``, by raw user_id."""
        ...


class ApiLedger(Protocol):
    """Cached answers and the query budget of a rate-limited read API, kept in the state
    folder so that every report (and every process) sharing it shares the budget."""

    def cached_response(self, cache_key: str) -> CachedResponse | None:
        """The cached answer stored under ``cache_key``, or None (also without a database)."""
        ...

    def store_response(self, cache_key: str, entry: CachedResponse, *, keep: timedelta) -> None:
        """Store (or replace) the answer of ``cache_key``; entries fetched more than
        ``keep`` before it are dropped."""
        ...

    def reserve_request(
        self, api: str, now: datetime, *, window: timedelta, limit: int
    ) -> int | datetime:
        """Atomically count the requests to ``api`` inside ``(now - window, now]`` and,
        below ``limit``, record a pending one: its id; else when the next is allowed."""
        ...

    def finish_request(self, request_id: int, status: int | None) -> None:
        """Fill in the status of a reserved request (None: no answer came)."""
        ...

    def api_requests_since(self, api: str, since: datetime) -> list[datetime]:
        """When each budgeted request to ``api`` was sent after ``since``, oldest first."""
        ...
