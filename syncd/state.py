"""The state store: which users each job owns, and the history of runs (SQLite).

SQLite because it is in the standard library, crash-safe (every write is a transaction)
and fast enough to record a million owned users in a second or two. The database is
created lazily, on the first write, so ``syncd plan`` never creates files; a read of a
missing database answers "nothing yet".

Schema versions
---------------
The schema is the result of :data:`MIGRATIONS`, an ordered tuple of steps numbered
1, 2, 3, ... The database remembers the last step applied in ``PRAGMA user_version``.
On its first connection a store reads that number and, if it is behind, applies the
missing steps and sets the new number **in one transaction**, opened with
``BEGIN IMMEDIATE``: two processes (a daemon and a manual ``syncd apply``) cannot both
migrate, the second waits and then finds nothing to do, and a step that fails leaves the
database exactly at its old version. A database numbered higher than the code knows was
written by a newer syncd and is refused (:class:`~syncd.errors.StateError`), never
downgraded.

To change the schema, append one :class:`Migration` with the next number. Never edit a
step that was released: databases in the field have already run it.

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
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import StateError
from syncd.ports import RunRecord, StateStore

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "RunRecord",
    "SqliteStateStore",
    "StateStore",
]

DATABASE_NAME = "syncd.sqlite3"
"""The file name of the database inside ``state_dir``."""

_BUSY_TIMEOUT_SECONDS = 30.0
"""How long a connection waits for another writer (a daemon run and a manual apply)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema history.

    ``step`` is SQL (one or more statements separated by ``;``) or a function that gets
    the connection, for changes SQL alone cannot express (rewriting data in Python).
    Either runs inside the migration transaction and must not commit: no ``BEGIN``,
    ``COMMIT``, ``VACUUM`` or ``PRAGMA journal_mode`` in a step.
    """

    version: int
    description: str
    step: str | Callable[[sqlite3.Connection], None]

    def apply(self, connection: sqlite3.Connection) -> None:
        """Run the step on ``connection`` (inside the caller's transaction)."""
        if isinstance(self.step, str):
            # Not executescript(): it commits the pending transaction first, which
            # would make a multi-step migration non-atomic.
            for statement in _statements(self.step):
                connection.execute(statement)
        else:
            self.step(connection)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "owned users and run history",
        # IF NOT EXISTS: databases of the first releases may already hold these tables
        # (all or, after a crash between statements, some) at user_version 0.
        """
        CREATE TABLE IF NOT EXISTS owned_users (
            job TEXT NOT NULL,
            end_user TEXT NOT NULL,
            PRIMARY KEY (job, end_user)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY,
            job TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            status TEXT NOT NULL,
            summary TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started_at);
        """,
    ),
)
"""Every schema step, in order; append to add one (see the module docstring)."""

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this code creates and expects."""


def _statements(script: str) -> Iterator[str]:
    """Split SQL into statements, keeping a ``;`` inside a literal, a comment or a
    trigger body with its statement (execute() runs one statement at a time)."""
    *pieces, tail = script.split(";")
    pending = ""
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    # What follows the last complete statement (whitespace, a comment, or an incomplete
    # statement that execute() then reports as an error).
    if (pending + tail).strip():
        yield (pending + tail).strip()


def _checked(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The migrations as a tuple, if numbered 1, 2, 3, ... (a programming error if not)."""
    steps = tuple(migrations)
    versions = [migration.version for migration in steps]
    if not steps or versions != list(range(1, len(steps) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, ... in order, got {versions}")
    return steps


def _user_version(connection: sqlite3.Connection) -> int:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    return version


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """An explicit write transaction (the connection is in autocommit mode).

    IMMEDIATE takes the write lock at once, so a busy database is waited for by the busy
    timeout; a deferred transaction that upgrades from read to write can fail with
    "database is locked" without waiting.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            # A failed ROLLBACK must not hide the error that caused it; closing the
            # connection rolls back anyway.
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise


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
        self._migrations = _checked(migrations)
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
            raise StateError(f"state database {self._path}: {error}") from None
        finally:
            connection.close()

    def _prepare(self, connection: sqlite3.Connection) -> None:
        """Bring the database to this code's schema (a no-op once it is there).

        Reading user_version is a read of the header that SQLite does anyway, and it is
        what lets a store notice that its file was deleted and recreated (version 0).
        """
        version = _user_version(connection)  # also fails first on a file that is no database
        self._refuse_newer(version)
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

    def record_run(self, record: RunRecord) -> None:
        """Append a finished run to the history."""
        with self._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                connection.execute(
                    "INSERT INTO runs (run_id, job, started_at, finished_at, status, summary) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.run_id,
                        record.job,
                        record.started_at.isoformat(),
                        record.finished_at.isoformat(),
                        record.status,
                        json.dumps(record.summary, sort_keys=True),
                    ),
                )

    # ------------------------------------------------------------------------ reads

    def owned_users(self, job: str) -> frozenset[str]:
        """The end_users the job created or adopted (empty before the first write)."""
        with self._connect(create=False) as connection:
            if connection is None:
                return frozenset()
            rows = connection.execute("SELECT end_user FROM owned_users WHERE job = ?", (job,))
            return frozenset(row[0] for row in rows)

    def runs(self, job: str, limit: int = 20) -> list[RunRecord]:
        """The most recent runs of a job, newest first (empty before the first run)."""
        with self._connect(create=False) as connection:
            if connection is None:
                return []
            # rowid breaks ties between runs started in the same instant: the one
            # recorded last is the newer.
            rows = connection.execute(
                "SELECT run_id, job, started_at, finished_at, status, summary FROM runs "
                "WHERE job = ? ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (job, limit),
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


if TYPE_CHECKING:
    # A static check that the store satisfies the port (mypy only; nothing runs).
    _conforms: StateStore = SqliteStateStore(Path())
