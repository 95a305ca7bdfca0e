"""The state store (SQLite): owned users, run history, audit log, cursors, job locks.

SQLite because it is in the standard library, crash-safe (every write is a transaction)
and fast enough to record a million owned users in a second or two. The database is
created lazily, on the first write, so ``syncd plan`` never creates files; a read of a
missing database answers "nothing yet".

Schema versions
---------------
The schema is the result of :data:`MIGRATIONS` (in :mod:`syncd.state_schema`), steps numbered
1, 2, 3, ... The database remembers the last step applied in ``PRAGMA user_version``.
On its first write a store reads that number and, if it is behind, applies the
missing steps and sets the new number **in one transaction**, opened with
``BEGIN IMMEDIATE``: two processes (a daemon and a manual ``syncd apply``) cannot both
migrate, the second waits and then finds nothing to do, and a step that fails leaves the
database exactly at its old version. A database numbered higher than the code knows was
written by a newer syncd and is refused (:class:`~syncd.errors.StateError`), never
downgraded.

Reads never change the file (no migration, no journal-mode switch): a newer syncd's
``plan`` or ``history`` must not upgrade a database an older daemon still uses. A read
of a table an older schema does not have yet answers "nothing recorded".

To change the schema, append one :class:`Migration` with the next number. Never edit a
step that was released: databases in the field have already run it.

Step 2 adds the audit log (one row per change the platform confirmed in ``audit``,
indexed by end_user; what a batch of them shares -- run, job, operation, time, indexed
by time -- once in ``audit_ops``; the view ``audit_log`` joins the two), per-source
cursors for incremental reads, the per-job lock table, and an index on
``runs.started_at`` so that retention is an indexed delete.

Step 3 adds each job's identity rules, the analytics response cache and its query
budget. Step 4 stores the audit log by chunks of up to a thousand entries instead of a
row per user, moving the rows of steps 2 and 3 (see :mod:`syncd.state_audit`). Step 5
lets a chunk of inserts hold the users of the request that wrote them, as sent
(``audit_chunks.form``); the chunks already there keep their form.

Step 1 is the schema of the first releases. Those created their tables with ``CREATE
TABLE IF NOT EXISTS`` on every connection and set ``user_version = 1`` only before an
apply, so such a database may hold the tables at version 0; step 1 keeps ``IF NOT
EXISTS`` so that it adopts them instead of failing.

Concurrency
-----------
The database is in WAL mode, so readers (health endpoints, a history command) never
wait for the writer, nor the writer for them; a busy timeout makes writers queue.
Every call opens its own short connection, so a store never holds a lock between calls
and survives its file being deleted (the next write creates and migrates it again).
A database locked by another process for longer than the busy timeout, or one that
cannot be written, is a :class:`~syncd.errors.StateError` naming the file.

The audit log
-------------
An applying run is recorded as ``running`` first (:meth:`SqliteStateStore.start_run`),
then its confirmed changes are appended while it writes (``SqliteAuditAppender``)
and the run's record replaces the ``running`` row at the end, with the last entries:
there are never audit entries without their run, entries exist only for users the
platform confirmed, and a process killed outright (SIGKILL, power loss) leaves its run
and what it appended. The next run of the job, under the job's lock, marks such a run
``interrupted``.

A first sync records a million entries: they are written a thousand to a row
(``audit_chunks``), which takes about a second where a row and an index entry per user
took 5-7 s; a lookup of one user scans the chunks' bytes (~0.1 s per million
entries). Inserts one request wrote whole are stored as that request's users, so they
are not encoded a second time while the HTTP workers wait for the interpreter. The
view ``audit_log`` shows one row per entry of either form (see :mod:`syncd.state_audit`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from syncd import state_audit
from syncd.errors import StateError
from syncd.ports import (
    AuditBatch,
    AuditEntry,
    JobLock,
    RunRecord,
    StateStore,
)
from syncd.state_codec import stored_time
from syncd.state_runs import write_run
from syncd.state_schema import MIGRATIONS, SCHEMA_VERSION, Migration, checked
from syncd.state_sql import transaction as _transaction

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AuditBatch",
    "AuditEntry",
    "JobLock",
    "Migration",
    "RunRecord",
    "SqliteStateStore",
    "StateStore",
]

DATABASE_NAME = "syncd.sqlite3"
"""The file name of the database inside ``state_dir``."""

PAGE_SIZE = 16384
"""Bytes per page of a new state file. An audit chunk is a row of ~180 kB, stored as a
chain of overflow pages: with SQLite's default 4 kB, writing a first sync's million
entries cost 0.74-1.13 s (0.54-0.92 s of CPU, outside the GIL but on a core the
platform needs), with 16 kB 0.40-0.44 s (0.26-0.29 s). Files made with 4 kB pages
keep them."""

_TABLE_NAMES = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"

_BUSY_TIMEOUT_SECONDS = 30.0
"""How long a connection waits for another writer (a daemon run and a manual apply)."""


def _user_version(connection: sqlite3.Connection) -> int:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    return version


class SqliteStateStore:
    """A :class:`~syncd.ports.StateStore` in ``<state_dir>/syncd.sqlite3``.

    ``migrations`` is for tests (and never needed otherwise); ``busy_timeout`` is how
    many seconds a call waits for another process's write.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout: float = _BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self._path = state_dir / DATABASE_NAME
        self._migrations = checked(migrations)
        self._latest = self._migrations[-1].version
        self._busy_timeout = busy_timeout
        # WAL is a property of the file, so it is set when a store first opens it, not
        # on every connection (switching needs a lock a reader should not have to take).
        self._journal_checked = False

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self._path)!r})"

    @property
    def path(self) -> Path:
        """The database file (which may not exist yet)."""
        return self._path

    # ----------------------------------------------------------------- connections

    def _open(self, *, create: bool) -> sqlite3.Connection | None:
        """A connection in autocommit mode, or None if ``create`` is false and the
        database does not exist."""
        try:
            if create:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                return sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
            # mode=rw: a read must never create the file, even if it is deleted between
            # a check and the open (sqlite3.connect would create it).
            return sqlite3.connect(
                f"{self._path.absolute().as_uri()}?mode=rw",
                uri=True,
                timeout=self._busy_timeout,
                isolation_level=None,
            )
        except (OSError, sqlite3.Error) as error:
            if not create and not self._path.exists():
                return None
            raise StateError(f"cannot open the state database {self._path}: {error}") from None

    @contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        """A migrated connection for one call; sqlite3 errors become StateError."""
        connection = self._open(create=create)
        if connection is None:
            yield None
            return
        try:
            self._prepare(connection)
            yield connection
        except sqlite3.Error as error:
            raise StateError(self._explain(error)) from None
        finally:
            connection.close()

    @contextmanager
    def _read(self, *tables: str) -> Iterator[sqlite3.Connection | None]:
        """A connection for a pure read, or None when there is nothing to read.

        A read never changes the file: no creation, no migration, no journal-mode
        switch (``syncd plan`` or ``history`` of a newer syncd must not upgrade a
        database an older daemon still uses). On a database from before ``tables``
        existed there is nothing recorded in them, so the answer is None too.
        """
        connection = self._open(create=False)
        if connection is None:
            yield None
            return
        try:
            self._refuse_newer(_user_version(connection))
            names = {row[0] for row in connection.execute(_TABLE_NAMES)}
            yield connection if names.issuperset(tables) else None
        except sqlite3.Error as error:
            raise StateError(self._explain(error)) from None
        finally:
            connection.close()

    def _explain(self, error: sqlite3.Error) -> str:
        """The message of a StateError for ``error``, with what to do for common cases."""
        text = str(error)
        if "database is locked" in text or "database is busy" in text:
            return (
                f"state database {self._path} is locked by another process (waited "
                f"{self._busy_timeout:g} s): {text}; try again when it finishes"
            )
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return (
                f"state database {self._path} cannot be written: {text}; check the "
                "permissions of the file and its folder"
            )
        return f"state database {self._path}: {text}"

    def _prepare(self, connection: sqlite3.Connection) -> None:
        """Bring the database to this code's schema (a no-op once it is there).

        Reading user_version is a read of the header that SQLite does anyway, and it is
        what lets a store notice that its file was deleted and recreated (version 0).
        """
        version = _user_version(connection)  # also fails first on a file that is no database
        self._refuse_newer(version)
        if version == 0:
            # Only a file with nothing in it yet takes a page size (SQLite ignores it on
            # a file that has pages, and in WAL mode): set before anything is written.
            connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        if version < self._latest or not self._journal_checked:
            # Outside any transaction: SQLite cannot change the journal mode inside one.
            # A file system without shared memory stays in its old mode; that only costs
            # concurrency, so it is not an error.
            connection.execute("PRAGMA journal_mode = WAL")
            self._journal_checked = True
        # With WAL, NORMAL cannot corrupt the database; a power cut may lose the last
        # commits, which the next run re-plans from the live platform anyway.
        connection.execute("PRAGMA synchronous = NORMAL")
        if version < self._latest:
            self._migrate(connection)

    def _refuse_newer(self, version: int) -> None:
        if version > self._latest:
            raise StateError(
                f"state database {self._path} was created by a newer syncd (schema "
                f"{version}, this version knows up to {self._latest}); upgrade syncd or "
                "point state_dir elsewhere"
            )

    def _migrate(self, connection: sqlite3.Connection) -> None:
        """Apply every missing step and the new version number, all or nothing."""
        with _transaction(connection):
            # Again under the write lock: another process may have migrated while this
            # one waited for it.
            version = _user_version(connection)
            self._refuse_newer(version)
            for migration in self._migrations[version:]:
                try:
                    migration.apply(connection)
                except sqlite3.Error as error:
                    raise StateError(
                        f"state database {self._path}: migration to schema "
                        f"{migration.version} ({migration.description}) failed: {error}"
                    ) from None
            if version < self._latest:
                # An int from our own tuple: PRAGMA takes no parameters.
                connection.execute(f"PRAGMA user_version = {self._latest}")

    # ----------------------------------------------------------------------- writes

    def ensure_writable(self) -> None:
        """Create (or migrate) the database if needed and prove it accepts writes (before
        any write to the platform, so a broken state store never fails a run half-way)."""
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                # A real write that changes nothing: rewrite the version just read under
                # the lock (never a constant, which could undo a newer process's migration).
                version = _user_version(connection)
                connection.execute(f"PRAGMA user_version = {version}")

    def add_owned(self, job: str, end_users: Iterable[str]) -> None:
        """Remember that the job owns these end_users (idempotent)."""
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                connection.executemany(
                    "INSERT OR IGNORE INTO owned_users (job, end_user) VALUES (?, ?)",
                    ((job, end_user) for end_user in end_users),
                )

    def remove_owned(self, job: str, end_users: Iterable[str]) -> None:
        """Forget end_users the job deleted (nothing to do before the first write)."""
        with self._connect(create=False) as connection:
            if connection is None:
                return
            with _transaction(connection):
                connection.executemany(
                    "DELETE FROM owned_users WHERE job = ? AND end_user = ?",
                    ((job, end_user) for end_user in end_users),
                )

    def start_run(self, record: RunRecord) -> state_audit.SqliteAuditAppender:
        """Record a run that is about to write, with the status ``running``; the
        appender returned adds what the platform confirms as it is confirmed.

        A process killed half-way so leaves its run and those entries in the history.
        Called under the job's lock, so any other ``running`` run of the job is one
        whose process died: it is marked ``interrupted``.
        """
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                write_run(connection, record, self._path)
        return state_audit.SqliteAuditAppender(
            self._path, self._connection_for_appends, self._explain
        )

    def _connection_for_appends(self) -> sqlite3.Connection:
        connection = self._open(create=True)
        assert connection is not None
        self._prepare(connection)
        return connection

    def record_run(self, record: RunRecord, audit: Iterable[AuditBatch] = ()) -> None:
        """Record a finished run in the history (replacing what :meth:`start_run`
        wrote), and its remaining confirmed changes in the audit log, in one
        transaction."""
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                state_audit.write_audit(connection, audit)
                write_run(connection, record, self._path)

    # ------------------------------------------------------------------------ reads

    def owned_users(self, job: str) -> frozenset[str]:
        """The end_users the job created or adopted (empty before the first write)."""
        with self._read("owned_users") as connection:
            if connection is None:
                return frozenset()
            rows = connection.execute("SELECT end_user FROM owned_users WHERE job = ?", (job,))
            return frozenset(row[0] for row in rows)

    def runs(self, job: str | None, limit: int = 20) -> list[RunRecord]:
        """The most recent runs of a job (every job's for None), newest first (empty
        before the first run)."""
        with self._read("runs") as connection:
            if connection is None:
                return []
            # rowid breaks ties between runs started in the same instant: the one
            # recorded last is the newer.
            columns = "SELECT run_id, job, started_at, finished_at, status, summary FROM runs"
            order = "ORDER BY started_at DESC, rowid DESC LIMIT ?"
            if job is None:
                rows = connection.execute(f"{columns} {order}", (limit,)).fetchall()
            else:
                rows = connection.execute(
                    f"{columns} WHERE job = ? {order}", (job, limit)
                ).fetchall()
        return [
            RunRecord(
                run_id=row[0],
                job=row[1],
                started_at=datetime.fromisoformat(row[2]),
                finished_at=datetime.fromisoformat(row[3]),
                status=row[4],
                summary=json.loads(row[5]),
            )
            for row in rows
        ]

    def last_run(self, job: str) -> RunRecord | None:
        """The most recent run of a job, or None before its first."""
        newest = self.runs(job, limit=1)
        return newest[0] if newest else None

    def audit(self, end_users: Collection[str], job: str | None = None) -> list[AuditEntry]:
        """Every recorded change to these normalised end_users, oldest first."""
        if not end_users:
            return []
        with self._read() as connection:
            if connection is None:
                return []
            return state_audit.find_entries(connection, end_users, job)

    def source_cursor(self, job: str, source: str) -> str | None:
        """The cursor a source of the job saved, or None (also before the first write)."""
        with self._read("source_cursors") as connection:
            if connection is None:
                return None
            row = connection.execute(
                "SELECT cursor FROM source_cursors WHERE job = ? AND source = ?", (job, source)
            ).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------- maintenance

    def prune(self, before: datetime) -> int:
        """Delete runs started and audit entries recorded before ``before`` (both
        indexed by time); how many runs and entries went."""
        with self._connect(create=False) as connection:
            if connection is None:
                return 0
            with _transaction(connection):
                runs = connection.execute(
                    "DELETE FROM runs WHERE started_at < ?", (stored_time(before),)
                )
                return runs.rowcount + state_audit.prune_audit(connection, before)

    def set_source_cursor(self, job: str, source: str, cursor: str | None) -> None:
        """Save (or, with None, forget) a source's cursor for the job's next read."""
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                if cursor is None:
                    connection.execute(
                        "DELETE FROM source_cursors WHERE job = ? AND source = ?", (job, source)
                    )
                    return
                connection.execute(
                    "INSERT INTO source_cursors (job, source, cursor, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (job, source) DO UPDATE SET "
                    "cursor = excluded.cursor, updated_at = excluded.updated_at",
                    (job, source, cursor, stored_time(datetime.now(UTC))),
                )

    # ------------------------------------------------------------------ job lock

    def acquire_lock(self, lock: JobLock, *, is_stale: Callable[[JobLock], bool]) -> JobLock:
        """Take the job's lock unless a live holder has it; return the holder after.

        Check and take happen in one IMMEDIATE transaction, so two processes cannot
        both see the lock free and both take it.
        """
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                current = _lock_of(
                    connection.execute(f"{_LOCK_SELECT} WHERE job = ?", (lock.job,)).fetchone()
                )
                if current is not None and current.run_id != lock.run_id and not is_stale(current):
                    return current
                connection.execute(
                    "INSERT OR REPLACE INTO job_locks (job, run_id, holder, pid, host, "
                    "namespace, since, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        lock.job,
                        lock.run_id,
                        lock.holder,
                        lock.pid,
                        lock.host,
                        lock.namespace,
                        stored_time(lock.since),
                        stored_time(lock.heartbeat_at),
                    ),
                )
                return lock

    def refresh_lock(self, job: str, run_id: str, at: datetime) -> bool:
        """Move the heartbeat of the run's lock; False if the run no longer holds it."""
        with self._connect(create=False) as connection:
            if connection is None:
                return False
            with _transaction(connection):
                cursor = connection.execute(
                    "UPDATE job_locks SET heartbeat_at = ? WHERE job = ? AND run_id = ?",
                    (stored_time(at), job, run_id),
                )
                return cursor.rowcount == 1

    def release_lock(self, job: str, run_id: str) -> None:
        """Release the job's lock if this run holds it (a no-op otherwise)."""
        with self._connect(create=False) as connection:
            if connection is None:
                return
            with _transaction(connection):
                connection.execute(
                    "DELETE FROM job_locks WHERE job = ? AND run_id = ?", (job, run_id)
                )

    def current_lock(self, job: str) -> JobLock | None:
        """The job's lock row, stale or not, or None."""
        with self._read("job_locks") as connection:
            if connection is None:
                return None
            row = connection.execute(f"{_LOCK_SELECT} WHERE job = ?", (job,)).fetchone()
        return _lock_of(row)

    # -- activation report (syncd.report): its response cache and query budget are
    # syncd.state_http_cache.SqliteApiLedger, which uses this store's connections --

    # -- core guard (identity rules, rolling removal budget) --

    def job_rules(self, job: str) -> dict[str, object] | None:
        """The identity rules the job last applied with, or None (also without a database)."""
        with self._read("job_rules") as connection:
            if connection is None:
                return None
            row = connection.execute("SELECT rules FROM job_rules WHERE job = ?", (job,)).fetchone()
        if row is None:
            return None
        try:
            rules = json.loads(row[0])
        except ValueError:
            raise StateError(
                f"state database {self._path}: the identity rules of job {job} are not JSON"
            ) from None
        if not isinstance(rules, dict):
            raise StateError(
                f"state database {self._path}: the identity rules of job {job} are not an object"
            )
        return rules

    def set_job_rules(self, job: str, rules: Mapping[str, object]) -> None:
        """Remember (replace) the identity rules the job applied with."""
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                connection.execute(
                    "INSERT OR REPLACE INTO job_rules (job, rules, recorded_at) VALUES (?, ?, ?)",
                    (job, json.dumps(dict(rules), sort_keys=True), stored_time(datetime.now(UTC))),
                )

    def removals_since(self, job: str, since: datetime) -> int:
        """Confirmed end-dates and deletes of the job at or after ``since`` (audit log)."""
        with self._read() as connection:
            if connection is None:
                return 0
            return state_audit.removals_since(connection, job, since)


_LOCK_SELECT = (
    "SELECT job, run_id, holder, pid, host, namespace, since, heartbeat_at FROM job_locks"
)


def _lock_of(row: tuple[object, ...] | None) -> JobLock | None:
    if row is None:
        return None
    job, run_id, holder, pid, host, namespace, since, heartbeat_at = row
    return JobLock(
        job=str(job),
        run_id=str(run_id),
        holder=str(holder),
        pid=int(str(pid)),
        host=str(host),
        namespace=str(namespace),
        since=datetime.fromisoformat(str(since)),
        heartbeat_at=datetime.fromisoformat(str(heartbeat_at)),
    )


if TYPE_CHECKING:
    # A static check that the store satisfies the port (mypy only; nothing runs).
    _conforms: StateStore = SqliteStateStore(Path())
