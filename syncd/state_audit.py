"""The audit log inside the state database: written by chunks, read back per user.

Kept apart from :mod:`syncd.state` (the store's connections, migrations and other
tables) because it is the one hot write path: a first sync records a million changes.

From schema 4 on, the confirmed changes of one kind in one run are stored in
``audit_chunks``, up to :data:`CHUNK_ENTRIES` to a row: what they share (run, job,
operation, time) once, the entries as one JSON array of ``[end_user, before, after]``
(``end_user`` normalised, before and after in the stored form of
:mod:`syncd.state_codec`, null when absent). A million inserts are ~1,000 rows
encoded by ~1,000 calls to msgspec, where one row per user cost a B-tree insert per
user into the table and into a name index (5-7 s for a first sync, measured; ~1 s
now). A lookup by user reads every chunk as bytes and decodes only those that contain
the user's entry marker (:func:`~syncd.state_codec.chunk_marker`): ~0.1 s per
million entries, for a command an operator runs by hand. The view ``audit_log``
shows one row per entry for auditors reading the file with ``sqlite3``.

From schema 5 on, a chunk has a ``form``. ``entries`` is the form above. ``sent`` holds
inserts as the platform client sent them: the JSON array of users of the one request
that wrote them and got them all confirmed, ``{"end_user", "tags", "active_from",
"active_to"?}`` each (``active_to`` absent when there is none), kept as the bytes that
went on the wire. A first sync's million inserts then cost the audit log no encoding
at all, where encoding them again held the GIL for about a second while the HTTP
workers waited (:class:`~syncd.ports.SentUsers`). Lookups and the view read both forms
alike; a ``sent`` user is shown with ``active_to`` null when it had none.

Databases of schemas 2 and 3 kept one row per user in ``audit`` (and what a batch
shares in ``audit_ops``). Migration 4 moves those rows into chunks
(see :mod:`syncd.state_schema`); until a write migrates it, a newer syncd reads such a
file as it is (:func:`audit_format` says which tables it has), because reads never
change the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Literal

import msgspec

from syncd.errors import StateError, StateReplacedError
from syncd.ports import AuditBatch, AuditedUser, AuditEntry, SentUsers
from syncd.state_codec import (
    UserEncoder,
    chunk_marker,
    decode_chunk,
    decode_sent_chunk,
    decode_user,
    sent_chunk_marker,
    stored_time,
)
from syncd.state_sql import transaction

__all__ = [
    "CHUNK_ENTRIES",
    "audit_format",
    "find_entries",
    "prune_audit",
    "removals_since",
    "write_audit",
]

CHUNK_ENTRIES = 1000
"""Entries per ``audit_chunks`` row: ~80 kB of JSON for a typical user, so a row is a
few overflow pages and a first sync of a million users ~1,000 rows."""

_MARKED_NAMES = 64
"""Up to this many names, a lookup searches each chunk's bytes for each name's marker;
for more it decodes every chunk once and looks the names up in a set."""

_INSERT_CHUNK = (
    "INSERT INTO audit_chunks (run_id, job, operation, at, changes, entries, form) "
    # CAST: the encoder's bytes stored as TEXT (what json_each reads), without
    # decoding a million users' JSON into a Python str first.
    "VALUES (?, ?, ?, ?, ?, CAST(? AS TEXT), ?)"
)

AuditFormat = Literal["chunks", "rows"]


def audit_format(connection: sqlite3.Connection) -> AuditFormat | None:
    """Which audit tables the database has: ``chunks`` (schema 4 on), ``rows`` (schemas 2
    and 3, not migrated yet), or None (schema 1: nothing was ever audited)."""
    names = {
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('audit_chunks', 'audit', 'audit_ops')"
        )
    }
    if "audit_chunks" in names:
        return "chunks"
    return "rows" if {"audit", "audit_ops"} <= names else None


def write_audit(connection: sqlite3.Connection, batches: Iterable[AuditBatch]) -> None:
    """Insert the confirmed changes of ``batches`` as chunks (inside the caller's
    transaction, which also records their run: never entries without their run)."""
    encoder = UserEncoder()
    for batch in batches:
        at = stored_time(batch.at)
        users = batch.users
        if isinstance(users, SentUsers):
            # Inserts as sent: the request's users are the chunk, as they are (the
            # table's CHECK refuses them for any other operation).
            row = (batch.run_id, batch.job, batch.operation, at, users.count, users.users)
            connection.execute(_INSERT_CHUNK, (*row, "sent"))
            continue
        for chunk in _chunks(users):
            connection.execute(
                _INSERT_CHUNK,
                (
                    batch.run_id,
                    batch.job,
                    batch.operation,
                    at,
                    len(chunk),
                    encoder.encode_chunk(chunk),
                    "entries",
                ),
            )


def _chunks(users: Iterable[AuditedUser]) -> Iterator[Sequence[AuditedUser]]:
    """``users`` by chunks of :data:`CHUNK_ENTRIES`: by slices of a sequence (one
    comprehension each for the journal's entries), else in one pass of an iterator."""
    if isinstance(users, Sequence):
        for start in range(0, len(users), CHUNK_ENTRIES):
            yield users[start : start + CHUNK_ENTRIES]
        return
    entries = iter(users)  # one pass: it may be a one-shot iterator
    while chunk := list(islice(entries, CHUNK_ENTRIES)):
        yield chunk


@contextlib.contextmanager
def _snapshot(connection: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: which tables exist and what they hold, seen at one moment
    (another process's migration 4 may commit between two autocommit statements)."""
    connection.execute("BEGIN")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # never hide the error that got here
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def find_entries(
    connection: sqlite3.Connection, end_users: Collection[str], job: str | None
) -> list[AuditEntry]:
    """Every entry of these normalised end_users (of ``job``, or every job's for None),
    oldest first; in the order of the chunks, then of the entries within one."""
    with _snapshot(connection):
        return _find_entries(connection, end_users, job)


def _find_entries(
    connection: sqlite3.Connection, end_users: Collection[str], job: str | None
) -> list[AuditEntry]:
    stored = audit_format(connection)
    if stored is None:
        return []
    if stored == "rows":
        return _find_rows(connection, end_users, job)
    wanted = set(end_users)
    marked = len(wanted) <= _MARKED_NAMES
    markers = {
        "entries": [chunk_marker(name) for name in wanted] if marked else None,
        "sent": [sent_chunk_marker(name) for name in wanted] if marked else None,
    }
    # Schema 4 (a file no write migrated yet) has entries only.
    form = "form" if _has_form(connection) else "'entries'"
    found: list[AuditEntry] = []
    rows: Iterator[tuple[int, str, str, str, str, bytes, str]] = connection.execute(
        "SELECT id, run_id, at, job, operation, CAST(entries AS BLOB), "  # noqa: S608 - a constant
        f"{form} FROM audit_chunks WHERE (? IS NULL OR job = ?) ORDER BY at, id",
        (job, job),
    )
    for chunk_id, run_id, at, chunk_job, operation, entries, chunk_form in rows:
        searched = markers.get(chunk_form)
        if searched is not None and not any(marker in entries for marker in searched):
            continue
        try:
            decoded = _DECODERS[chunk_form](entries)
        except (KeyError, msgspec.DecodeError, ValueError) as error:
            # Only a hand-edited file gets here; the store reports it as a StateError.
            raise sqlite3.DatabaseError(
                f"audit_chunks row {chunk_id} is not a list of audit entries "
                f"(form {chunk_form!r}): {error}"
            ) from None
        moment = datetime.fromisoformat(at)
        found.extend(
            AuditEntry(run_id, moment, chunk_job, end_user, operation, before, after)
            for end_user, before, after in decoded
            if end_user in wanted
        )
    return found


_DECODERS: dict[str, Callable[[bytes], list[AuditedUser]]] = {
    "entries": decode_chunk,
    "sent": decode_sent_chunk,
}
"""How each ``form`` of chunk decodes into entries."""


def _has_form(connection: sqlite3.Connection) -> bool:
    """Whether ``audit_chunks`` has its ``form`` column (schema 5 on)."""
    return any(row[1] == "form" for row in connection.execute("PRAGMA table_info(audit_chunks)"))


def removals_since(connection: sqlite3.Connection, job: str, since: datetime) -> int:
    """Confirmed end-dates and deletes of ``job`` at or after ``since``."""
    with _snapshot(connection):
        return _removals_since(connection, job, since)


def _removals_since(connection: sqlite3.Connection, job: str, since: datetime) -> int:
    stored = audit_format(connection)
    if stored is None:
        return 0
    if stored == "rows":
        # Counted in the rows themselves (each op's rows are one id range), so a pruned
        # or empty op can never be miscounted.
        query = (
            "SELECT count(*) FROM audit_ops JOIN audit "
            "ON audit.id BETWEEN audit_ops.first_row AND audit_ops.last_row "
            "WHERE audit_ops.job = ? AND audit_ops.operation IN ('end', 'delete') "
            "AND audit_ops.at >= ?"
        )
    else:
        query = (
            "SELECT coalesce(sum(changes), 0) FROM audit_chunks WHERE job = ? "
            "AND operation IN ('end', 'delete') AND at >= ?"
        )
    (count,) = connection.execute(query, (job, stored_time(since))).fetchone()
    return int(count)


def prune_audit(connection: sqlite3.Connection, before: datetime) -> int:
    """Delete the entries recorded before ``before`` (a migrated database, inside the
    caller's transaction); how many entries went."""
    cutoff = stored_time(before)
    (removed,) = connection.execute(
        "SELECT coalesce(sum(changes), 0) FROM audit_chunks WHERE at < ?", (cutoff,)
    ).fetchone()
    connection.execute("DELETE FROM audit_chunks WHERE at < ?", (cutoff,))
    return int(removed)


def _find_rows(
    connection: sqlite3.Connection, end_users: Collection[str], job: str | None
) -> list[AuditEntry]:
    """:func:`find_entries` on a database of schema 2 or 3 that no write migrated yet."""
    # json_each keeps the statement static whatever the number of names; the
    # IN (subquery) still looks each name up in the audit_by_user index.
    rows: list[tuple[str, str, str, str, str, str | None, str | None]] = connection.execute(
        "SELECT audit_ops.run_id, audit_ops.at, audit_ops.job, audit.end_user, "
        "audit_ops.operation, audit.before, audit.after "
        "FROM audit JOIN audit_ops ON audit_ops.id = audit.op "
        "WHERE audit.end_user IN (SELECT value FROM json_each(?)) "
        "AND (? IS NULL OR audit_ops.job = ?) ORDER BY audit_ops.at, audit.id",
        (msgspec.json.encode(sorted(set(end_users))).decode(), job, job),
    ).fetchall()
    return [
        AuditEntry(
            run_id=row[0],
            at=datetime.fromisoformat(row[1]),
            job=row[2],
            end_user=row[3],
            operation=row[4],
            before=decode_user(row[5]),
            after=decode_user(row[6]),
        )
        for row in rows
    ]


class SqliteAuditAppender:
    """Adds a started run's confirmed changes to the audit log, one transaction per call
    (:meth:`~syncd.state.SqliteStateStore.start_run` makes one).

    It keeps one connection open until :meth:`close`: SQLite checkpoints the WAL into
    the database when the last connection to it closes, and a connection per append
    made a first sync of a million users pay that ~500 times (3.3 s instead of 1.4 s,
    measured). Used from one thread. Before each append it checks that the file is
    still the one it opened: a database deleted or replaced meanwhile (the store
    survives that) would take the entries with it unseen.
    """

    def __init__(
        self,
        path: Path,
        connect: Callable[[], sqlite3.Connection],
        explain: Callable[[sqlite3.Error], str],
    ) -> None:
        self._path = path
        self._connect = connect
        self._explain = explain
        self._connection: sqlite3.Connection | None = None
        # The file start_run has just written the run into.
        self._file = self._identity()

    def __repr__(self) -> str:
        return f"SqliteAuditAppender({str(self._path)!r})"

    def append(self, audit: Iterable[AuditBatch]) -> None:
        """Write these entries now (a StateError if the store refuses them, a
        StateReplacedError if its file is no longer the one written so far)."""
        try:
            if self._identity() != self._file:
                raise StateReplacedError(
                    f"state database {self._path} was deleted or replaced while this run "
                    "wrote its audit log; the run's record writes all its entries again"
                )
            if self._connection is None:
                self._connection = self._connect()
            with transaction(self._connection):
                write_audit(self._connection, audit)
        except sqlite3.Error as error:
            raise StateError(self._explain(error)) from None

    def close(self) -> None:
        """Let go of the connection (the run's record writes the rest)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def _identity(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self._path)
        except OSError:
            return None
        return (status.st_dev, status.st_ino)
