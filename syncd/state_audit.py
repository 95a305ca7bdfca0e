"""Writing a run's audit rows into the state database (inside its record transaction).

Kept apart from :mod:`syncd.state` (the store's connections, migrations and reads) because
it is the one hot write path: a first sync records a million rows. Two costs dominate
there, and each has its answer here:

* the ``audit_by_user`` index: names come in source order, random to its B-tree, so a
  large batch is appended to the table with the index dropped and the index is then
  rebuilt from one sort, in the same transaction (:func:`_index_to_rebuild` decides);
* the JSON of each user: :class:`~syncd.state_codec.UserEncoder` assembles it from
  cached pieces (tag sets and dates repeat).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from operator import length_hint

from syncd.ports import AuditBatch
from syncd.state_codec import UserEncoder, audit_rows, stored_time

__all__ = ["write_audit"]

_AUDIT_USER_INDEX = "audit_by_user"

_REBUILD_MIN_ROWS = 50_000
"""Below this many new audit rows, inserting into the end_user index costs less than
rebuilding it (and a small table's index fits the page cache anyway)."""


def _index_to_rebuild(connection: sqlite3.Connection, new_rows: int) -> str | None:
    """The SQL that recreates the end_user index, if rebuilding it after the insert is
    cheaper than filling it row by row; else None.

    Names arrive in source order, random to the B-tree, so every row of a big batch
    costs a page lookup and often a split (970,000 rows of a first sync, measured:
    5.4-6.4 s row by row, 3.5-4.6 s with the rebuild, the commit included). A
    rebuild sorts the names once, but costs in proportion to the whole table, so it is
    chosen only when the new rows are at least as many as those already there (a
    first sync, a re-import): a run never pays more than twice its own rows. The SQL
    is the index's own, from the schema, so it follows whatever the migrations made.
    """
    if new_rows < _REBUILD_MIN_ROWS:
        return None
    # An upper bound on the rows (ids only grow; pruning leaves gaps), read from the
    # ends of the rowid B-tree instead of counting a table that may hold millions.
    (present,) = connection.execute(
        "SELECT coalesce(max(id) - min(id) + 1, 0) FROM audit"
    ).fetchone()
    if new_rows < present:
        return None
    row = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (_AUDIT_USER_INDEX,)
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def write_audit(connection: sqlite3.Connection, batches: Iterable[AuditBatch]) -> None:
    """Insert the audit rows of ``batches`` (inside the caller's transaction, which
    also records their run: never rows without their run)."""
    batches = list(batches)  # the batches, not their users (those stay lazy)
    encoder = UserEncoder()
    # The end_user index takes names in source order, which is random to the
    # B-tree: with SQLite's default 2 MB page cache a million of them thrash it
    # (twice as slow). 64 MB, for this connection only and only as it fills.
    rebuild = _index_to_rebuild(connection, sum(length_hint(b.users, 0) for b in batches))
    if rebuild is None:
        connection.execute("PRAGMA cache_size = -65536")
    else:
        # In this transaction: a failure (or a kill) rolls the drop back too. The
        # rows then only append to the table, which needs no big cache. The
        # rebuild's sort runs in memory (~40 MB per million names, less than the
        # 64 MB cache the row-by-row path fills): it must not depend on a writable
        # temporary directory, which a read-only container may lack.
        connection.execute("PRAGMA temp_store = MEMORY")
        connection.execute(f"DROP INDEX {_AUDIT_USER_INDEX}")
    for batch in batches:
        # Under the write lock, rowids are assigned max + 1, max + 2, ...: the
        # batch's rows are exactly first_row..last_row.
        (last,) = connection.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()
        cursor = connection.execute(
            "INSERT INTO audit_ops (run_id, job, operation, at, first_row, last_row) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (batch.run_id, batch.job, batch.operation, stored_time(batch.at), last + 1, 0),
        )
        op = cursor.lastrowid
        assert op is not None
        connection.executemany(
            "INSERT INTO audit (op, end_user, before, after) VALUES (?, ?, ?, ?)",
            audit_rows(op, batch.users, encoder),
        )
        (final,) = connection.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()
        if final == last:  # the batch had no user after all
            connection.execute("DELETE FROM audit_ops WHERE id = ?", (op,))
        else:
            connection.execute("UPDATE audit_ops SET last_row = ? WHERE id = ?", (final, op))
    if rebuild is not None:
        connection.execute(rebuild)
