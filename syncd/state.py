"""The state store: which users each job owns, and the history of runs (SQLite).

SQLite because it is in the standard library, crash-safe (every write is a transaction)
and fast enough to record a million owned users in a second or two. The database is
created lazily, on the first write, so ``syncd plan`` never creates files.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from syncd.errors import StateError

_SCHEMA = """
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
"""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One finished run, as recorded."""

    run_id: str
    job: str
    started_at: datetime
    finished_at: datetime
    status: str
    summary: dict[str, object]


class StateStore(Protocol):
    """Where a job keeps what it must remember between runs."""

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

    def record_run(self, record: RunRecord) -> None:
        """Append a finished run to the history."""
        ...

    def runs(self, job: str, limit: int = 20) -> list[RunRecord]:
        """The most recent runs of a job, newest first."""
        ...


class SqliteStateStore:
    """A :class:`StateStore` in ``<state_dir>/syncd.sqlite3``."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / "syncd.sqlite3"

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self._path)!r})"

    @contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        if not create and not self._path.exists():
            yield None
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self._path, timeout=30)
        except (OSError, sqlite3.Error) as error:
            raise StateError(f"cannot open the state database {self._path}: {error}") from None
        try:
            with connection:
                connection.executescript(_SCHEMA)
                yield connection
        except sqlite3.Error as error:
            raise StateError(f"state database {self._path}: {error}") from None
        finally:
            connection.close()

    def ensure_writable(self) -> None:
        """Create the database if needed and prove it accepts writes (before any write
        to the platform, so a broken state store never fails a run half-way)."""
        with self._connect(create=True) as connection:
            assert connection is not None
            connection.execute("PRAGMA user_version = 1")

    def owned_users(self, job: str) -> frozenset[str]:
        """The end_users the job created or adopted (empty before the first write)."""
        with self._connect(create=False) as connection:
            if connection is None:
                return frozenset()
            rows = connection.execute("SELECT end_user FROM owned_users WHERE job = ?", (job,))
            return frozenset(row[0] for row in rows)

    def add_owned(self, job: str, end_users: Iterable[str]) -> None:
        """Remember that the job owns these end_users (idempotent)."""
        with self._connect(create=True) as connection:
            assert connection is not None
            connection.executemany(
                "INSERT OR IGNORE INTO owned_users (job, end_user) VALUES (?, ?)",
                ((job, end_user) for end_user in end_users),
            )

    def remove_owned(self, job: str, end_users: Iterable[str]) -> None:
        """Forget end_users the job deleted."""
        with self._connect(create=False) as connection:
            if connection is None:
                return
            connection.executemany(
                "DELETE FROM owned_users WHERE job = ? AND end_user = ?",
                ((job, end_user) for end_user in end_users),
            )

    def record_run(self, record: RunRecord) -> None:
        """Append a finished run to the history."""
        with self._connect(create=True) as connection:
            assert connection is not None
            connection.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.run_id,
                    record.job,
                    record.started_at.isoformat(),
                    record.finished_at.isoformat(),
                    record.status,
                    json.dumps(record.summary, sort_keys=True),
                ),
            )

    def runs(self, job: str, limit: int = 20) -> list[RunRecord]:
        """The most recent runs of a job, newest first."""
        with self._connect(create=False) as connection:
            if connection is None:
                return []
            rows = connection.execute(
                "SELECT run_id, job, started_at, finished_at, status, summary FROM runs "
                "WHERE job = ? ORDER BY started_at DESC LIMIT ?",
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
