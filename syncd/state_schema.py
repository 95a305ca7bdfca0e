"""The schema of the state database: the ordered migration steps (see :mod:`syncd.state`).

To change the schema, append one :class:`Migration` with the next number. Never edit a
step that was released: databases in the field have already run it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import msgspec

from syncd.state_codec import decode_user

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "checked"]


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


_AUDIT_CHUNKS = """
-- The audit log from schema 4 on: up to a thousand confirmed changes of one kind in
-- one run to a row. entries is a JSON array of [end_user, before, after]: end_user
-- normalised, before and after the user in its stored JSON form, null when absent.
CREATE TABLE audit_chunks (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    operation TEXT NOT NULL
        CHECK (operation IN ('insert', 'update', 'end', 'reactivate', 'delete')),
    at TEXT NOT NULL,
    changes INTEGER NOT NULL CHECK (changes > 0),
    entries TEXT NOT NULL
);
CREATE INDEX audit_chunks_by_time ON audit_chunks (at);
CREATE INDEX audit_chunks_by_run ON audit_chunks (run_id);
-- One row per entry, for auditors reading the file with sqlite3.
CREATE VIEW audit_log AS
    SELECT chunk.id AS chunk, entry.key AS position, chunk.run_id, chunk.at, chunk.job,
           json_extract(entry.value, '$[0]') AS end_user, chunk.operation,
           json_extract(entry.value, '$[1]') AS before,
           json_extract(entry.value, '$[2]') AS after
    FROM audit_chunks AS chunk, json_each(chunk.entries) AS entry;
"""

_MOVED_PER_CHUNK = 1000
"""Old rows per chunk in migration 4 (the writer's own chunk size may change later)."""


def _audit_by_chunks(connection: sqlite3.Connection) -> None:
    """Migration 4: the per-user rows of schemas 2 and 3 become chunks, in their order,
    and the old tables, index and view go.

    Self-contained (its own SQL, its own insert): a later change to the writer in
    :mod:`syncd.state_audit` must not change what this released step does.
    """
    connection.execute("DROP VIEW IF EXISTS audit_log")
    for statement in _statements(_AUDIT_CHUNKS):
        connection.execute(statement)
    ops = connection.execute(
        "SELECT id, run_id, job, operation, at, first_row, last_row FROM audit_ops ORDER BY id"
    ).fetchall()
    for op, run_id, job, operation, at, first, last in ops:
        rows = connection.execute(
            "SELECT id, end_user, before, after FROM audit "
            "WHERE id BETWEEN ? AND ? AND op = ? ORDER BY id",
            (first, last, op),
        )
        while chunk := rows.fetchmany(_MOVED_PER_CHUNK):
            # The old rows hold the same stored JSON per user: copied as it is, once
            # checked (a chunk that does not decode would hide every entry in it).
            entries = msgspec.json.encode(
                [
                    (end_user, _checked(row, end_user, before), _checked(row, end_user, after))
                    for row, end_user, before, after in chunk
                ]
            )
            connection.execute(
                "INSERT INTO audit_chunks (run_id, job, operation, at, changes, entries) "
                "VALUES (?, ?, ?, ?, ?, CAST(? AS TEXT))",
                (run_id, job, operation, at, len(chunk), entries),
            )
    connection.execute("DROP TABLE audit")  # its index audit_by_user goes with it
    connection.execute("DROP TABLE audit_ops")


def _checked(row: int, end_user: str, text: str | None) -> msgspec.Raw | None:
    """The stored JSON of a user in an old audit row, as a piece of a chunk."""
    if text is None:
        return None
    try:
        decode_user(text)
    except (msgspec.DecodeError, ValueError) as error:
        # Raised as an sqlite3 error so that the migration fails as a StateError that
        # names the row; the transaction leaves the old tables as they were.
        raise sqlite3.DatabaseError(
            f"audit row {row} ({end_user!r}) does not hold a user's stored JSON: {error}; "
            "correct or delete that row, then run again"
        ) from None
    return msgspec.Raw(text.encode())


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
    Migration(
        2,
        "audit log, source cursors, job locks",
        """
        -- One row per confirmed change kind of a run: what is the same for all its
        -- users (run, job, kind, time) is stored once, so a first sync of a million
        -- users writes a million small rows. first_row..last_row is the rowid range of
        -- its users in audit, which retention deletes by range, without an index.
        CREATE TABLE audit_ops (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            job TEXT NOT NULL,
            operation TEXT NOT NULL
                CHECK (operation IN ('insert', 'update', 'end', 'reactivate', 'delete')),
            at TEXT NOT NULL,
            first_row INTEGER NOT NULL,
            last_row INTEGER NOT NULL
        );
        CREATE INDEX audit_ops_by_time ON audit_ops (at);
        CREATE INDEX audit_ops_by_run ON audit_ops (run_id);
        -- One row per user changed: before and after in the wire form (JSON).
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            op INTEGER NOT NULL REFERENCES audit_ops (id),
            end_user TEXT NOT NULL,
            before TEXT,
            after TEXT
        );
        CREATE INDEX audit_by_user ON audit (end_user);
        -- The log as one flat table, for auditors reading the file with sqlite3.
        CREATE VIEW audit_log AS
            SELECT audit.id, audit_ops.run_id, audit_ops.at, audit_ops.job, audit.end_user,
                   audit_ops.operation, audit.before, audit.after
            FROM audit JOIN audit_ops ON audit_ops.id = audit.op;
        -- Retention deletes runs by start time across jobs; runs_by_job cannot serve it.
        CREATE INDEX runs_by_start ON runs (started_at);
        CREATE TABLE source_cursors (
            job TEXT NOT NULL,
            source TEXT NOT NULL,
            cursor TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (job, source)
        ) WITHOUT ROWID;
        CREATE TABLE job_locks (
            job TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            holder TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            namespace TEXT NOT NULL,
            since TEXT NOT NULL,
            heartbeat_at TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        3,
        "job identity rules, analytics response cache and query budget",
        """
        -- The identity rules (id attribute, normalisation) a job last applied with, as
        -- JSON: a change to them must be held, not turned into ends plus inserts of the
        -- same people under new ids.
        CREATE TABLE job_rules (
            job TEXT PRIMARY KEY,
            rules TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        ) WITHOUT ROWID;
        -- Responses of rate-limited read APIs (the analytics active-users API), keyed
        -- by a digest of the request without its credentials; etag for If-None-Match.
        CREATE TABLE http_cache (
            cache_key TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            etag TEXT,
            body BLOB NOT NULL,
            fetched_at TEXT NOT NULL
        );
        -- One row per budgeted request sent to such an API (cursor follows are free
        -- and not recorded), so repeated reports never exceed the budget knowingly.
        CREATE TABLE api_requests (
            api TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            status INTEGER
        );
        CREATE INDEX api_requests_by_api ON api_requests (api, sent_at);
        """,
    ),
    Migration(
        4,
        "audit log by chunks of a thousand entries",
        # One row per user cost a first sync of a million users 5-7 s in B-tree inserts
        # (table and name index); see syncd.state_audit for the format and the lookup.
        _audit_by_chunks,
    ),
    Migration(
        5,
        "audit chunks of inserts as sent",
        # Encoding a first sync's million inserts again for the audit log held the GIL
        # for about a second while the HTTP workers waited; the bodies already sent are
        # those entries. Existing chunks keep their form.
        """
        -- form 'entries': a JSON array of [end_user, before, after] (schema 4).
        -- form 'sent' (inserts only): the JSON array of users of the insert request
        -- that wrote them, as sent: {"end_user", "tags", "active_from", "active_to"?}.
        ALTER TABLE audit_chunks ADD COLUMN form TEXT NOT NULL DEFAULT 'entries'
            CHECK (form = 'entries' OR (form = 'sent' AND operation = 'insert'));
        DROP VIEW audit_log;
        -- One row per entry, for auditors reading the file with sqlite3; a sent user
        -- is shown in the stored form, with active_to null when it had none.
        CREATE VIEW audit_log AS
            SELECT chunk.id AS chunk, entry.key AS position, chunk.run_id, chunk.at,
                   chunk.job,
                   CASE chunk.form WHEN 'sent' THEN json_extract(entry.value, '$.end_user')
                        ELSE json_extract(entry.value, '$[0]') END AS end_user,
                   chunk.operation,
                   CASE chunk.form WHEN 'sent' THEN NULL
                        ELSE json_extract(entry.value, '$[1]') END AS before,
                   CASE chunk.form
                        WHEN 'sent' THEN json_set(entry.value, '$.active_to',
                                                  json_extract(entry.value, '$.active_to'))
                        ELSE json_extract(entry.value, '$[2]') END AS after
            FROM audit_chunks AS chunk, json_each(chunk.entries) AS entry;
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


def checked(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The migrations as a tuple, if numbered 1, 2, 3, ... (a programming error if not)."""
    steps = tuple(migrations)
    versions = [migration.version for migration in steps]
    if not steps or versions != list(range(1, len(steps) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, ... in order, got {versions}")
    return steps
