"""Writing a run's row in the ``runs`` table (inside the caller's transaction)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from syncd.errors import StateError
from syncd.ports import RUN_INTERRUPTED, RUN_RUNNING, RunRecord

__all__ = ["write_run"]

_INTERRUPTED_ERROR = (
    "the end of this run was never recorded (its process was killed or the machine "
    "stopped, or the state database refused its record); the audit log holds what the "
    "platform had confirmed until then"
)


def write_run(connection: sqlite3.Connection, record: RunRecord, path: Path) -> None:
    """Insert the run, or replace its ``running`` row. A run written for the first
    time holds the job's lock, so another ``running`` run of the job died; a run
    that finishes its own row may have lost the lock meanwhile, so it marks none."""
    started = connection.execute("SELECT 1 FROM runs WHERE run_id = ?", (record.run_id,)).fetchone()
    if started is None:
        _mark_interrupted(connection, record)
    written = connection.execute(
        "INSERT INTO runs (run_id, job, started_at, finished_at, status, summary) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
        "finished_at = excluded.finished_at, status = excluded.status, "
        "summary = excluded.summary WHERE runs.status IN (?, ?)",
        (
            record.run_id,
            record.job,
            record.started_at.isoformat(),
            record.finished_at.isoformat(),
            record.status,
            json.dumps(record.summary, sort_keys=True),
            # Its own end over "interrupted" too: a run that lost its job lock may
            # have been marked by the run that took the lock over.
            RUN_RUNNING,
            RUN_INTERRUPTED,
        ),
    )
    if written.rowcount != 1:
        raise StateError(
            f"state database {path}: run {record.run_id} is already recorded "
            f"(a run id is used once)"
        )


def _mark_interrupted(connection: sqlite3.Connection, record: RunRecord) -> None:
    connection.execute(
        "UPDATE runs SET status = ?, summary = CASE WHEN json_valid(summary) THEN "
        "json_set(summary, '$.status', ?, '$.error', ?) ELSE summary END "
        "WHERE job = ? AND status = ? AND run_id != ?",
        (
            RUN_INTERRUPTED,
            RUN_INTERRUPTED,
            _INTERRUPTED_ERROR,
            record.job,
            RUN_RUNNING,
            record.run_id,
        ),
    )
