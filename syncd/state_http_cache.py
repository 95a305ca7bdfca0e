"""The activation report's part of the state database: response cache and query budget.

:class:`SqliteApiLedger` is the :class:`~syncd.ports.ApiLedger` of the analytics client.
It lives beside :class:`~syncd.state.SqliteStateStore` and uses that store's migrated
connections (the tables ``http_cache`` and ``api_requests`` are in its schema), so one
state folder holds everything and reads still never create or migrate the file.

The budget is kept exact across processes: :meth:`SqliteApiLedger.reserve_request`
counts the window and inserts a *pending* row in one ``BEGIN IMMEDIATE`` transaction
before anything is sent, so two reports sharing a state folder cannot both take the
last query, and a process killed mid-request has still spent it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from syncd.ports import CachedResponse
from syncd.state import SqliteStateStore
from syncd.state_codec import stored_time
from syncd.state_sql import transaction as _transaction

__all__ = ["MIN_KEEP", "SqliteApiLedger"]

MIN_KEEP = timedelta(days=1)
"""Budget rows are kept at least this long (a window is at most a day)."""


class SqliteApiLedger:
    """Cached answers and budgeted requests of rate-limited APIs, in the state database."""

    def __init__(self, store: SqliteStateStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SqliteApiLedger({str(self._store.path)!r})"

    # ------------------------------------------------------------------ cache

    def cached_response(self, cache_key: str) -> CachedResponse | None:
        """The cached answer of ``cache_key``, or None (also without a database)."""
        # The store's own connection helpers: this module is that store's companion.
        with self._store._read("http_cache") as connection:
            if connection is None:
                return None
            row = connection.execute(
                "SELECT url, etag, body, fetched_at FROM http_cache WHERE cache_key = ?",
                (cache_key,),
            ).fetchone()
        if row is None:
            return None
        return CachedResponse(row[0], row[1], bytes(row[2]), datetime.fromisoformat(row[3]))

    def store_response(self, cache_key: str, entry: CachedResponse, *, keep: timedelta) -> None:
        """Store or replace the answer of ``cache_key``; drop entries fetched more than
        ``keep`` before it (a scheduled report asks a new range, so a new key, daily)."""
        with self._store._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                connection.execute(
                    "INSERT OR REPLACE INTO http_cache (cache_key, url, etag, body, fetched_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (cache_key, entry.url, entry.etag, entry.body, stored_time(entry.fetched_at)),
                )
                connection.execute(
                    "DELETE FROM http_cache WHERE fetched_at < ?",
                    (stored_time(entry.fetched_at - keep),),
                )

    # ----------------------------------------------------------------- budget

    def reserve_request(
        self, api: str, now: datetime, *, window: timedelta, limit: int
    ) -> int | datetime:
        """Take one of ``limit`` requests per ``window`` to ``api``, or say when one frees.

        In one write transaction: count the requests sent strictly inside
        ``(now - window, now]``; below ``limit``, insert a pending row (status NULL:
        no answer yet) and return its id for :meth:`finish_request`; otherwise return
        when the oldest counted request leaves the window. Rows older than the window
        (and than a day) are dropped on the way.
        """
        since = stored_time(now - window)
        with self._store._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                connection.execute(
                    "DELETE FROM api_requests WHERE api = ? AND sent_at < ?",
                    (api, stored_time(now - max(window, MIN_KEEP))),
                )
                sent = [
                    row[0]
                    for row in connection.execute(
                        "SELECT sent_at FROM api_requests WHERE api = ? AND sent_at > ? "
                        "ORDER BY sent_at",
                        (api, since),
                    )
                ]
                if len(sent) >= limit:
                    return datetime.fromisoformat(sent[len(sent) - limit]) + window
                cursor = connection.execute(
                    "INSERT INTO api_requests (api, sent_at, status) VALUES (?, ?, NULL)",
                    (api, stored_time(now)),
                )
                assert cursor.lastrowid is not None
                return cursor.lastrowid

    def finish_request(self, request_id: int, status: int | None) -> None:
        """Record the answer's status of a reserved request (None: no answer came)."""
        with self._store._connect(create=True) as connection:
            assert connection is not None
            with _transaction(connection):
                connection.execute(
                    "UPDATE api_requests SET status = ? WHERE rowid = ?", (status, request_id)
                )

    def api_requests_since(self, api: str, since: datetime) -> list[datetime]:
        """Send times of the budgeted requests to ``api`` strictly after ``since``,
        oldest first (pending ones included)."""
        with self._store._read("api_requests") as connection:
            if connection is None:
                return []
            rows = connection.execute(
                "SELECT sent_at FROM api_requests WHERE api = ? AND sent_at > ? ORDER BY sent_at",
                (api, stored_time(since)),
            ).fetchall()
        return [datetime.fromisoformat(row[0]) for row in rows]
