"""The one way the state store writes to SQLite: an explicit, immediate transaction."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["transaction"]


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
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
