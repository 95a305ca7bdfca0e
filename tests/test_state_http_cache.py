"""The report's ledger in the state database: the response cache and the query budget."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.ports import CachedResponse
from syncd.state import SqliteStateStore
from syncd.state_http_cache import SqliteApiLedger

HOUR = timedelta(hours=1)


@pytest.fixture
def state(tmp_path: Path) -> SqliteStateStore:
    """An empty state store in a temp folder."""
    return SqliteStateStore(tmp_path / "state")


def test_reads_before_any_write_find_nothing_and_create_nothing(state: SqliteStateStore) -> None:
    ledger = SqliteApiLedger(state)
    assert ledger.cached_response("k") is None
    assert ledger.api_requests_since("a", datetime.now(UTC)) == []
    assert not state.path.exists()


def test_cache_round_trip_and_replace(state: SqliteStateStore) -> None:
    ledger = SqliteApiLedger(state)
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    ledger.store_response("k", CachedResponse("http://x/a?b=1", '"e1"', b"\x00body", at), keep=HOUR)
    assert ledger.cached_response("k") == CachedResponse("http://x/a?b=1", '"e1"', b"\x00body", at)
    later = at + timedelta(hours=4)
    ledger.store_response("k", CachedResponse("http://x/a?b=1", None, b"new", later), keep=HOUR)
    assert ledger.cached_response("k") == CachedResponse("http://x/a?b=1", None, b"new", later)


def test_storing_drops_cache_entries_older_than_keep(state: SqliteStateStore) -> None:
    # A scheduled "last 90 days" report asks a new range, so a new key, every day.
    ledger = SqliteApiLedger(state)
    now = datetime(2026, 5, 1, tzinfo=UTC)
    keep = timedelta(days=7)
    for age in (30, 8, 6, 0):
        entry = CachedResponse(f"http://x/{age}", None, b"b", now - timedelta(days=age))
        ledger.store_response(f"day-{age}", entry, keep=keep)
    assert ledger.cached_response("day-30") is None
    assert ledger.cached_response("day-8") is None
    assert ledger.cached_response("day-6") is not None
    assert ledger.cached_response("day-0") is not None


def test_a_reservation_counts_the_window_and_records_a_pending_row(
    state: SqliteStateStore,
) -> None:
    ledger = SqliteApiLedger(state)
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    first = ledger.reserve_request("a", now - timedelta(minutes=50), window=HOUR, limit=2)
    second = ledger.reserve_request("a", now - timedelta(minutes=20), window=HOUR, limit=2)
    assert isinstance(first, int)
    assert isinstance(second, int)
    # Full: the answer is when the oldest counted request leaves the window.
    assert ledger.reserve_request("a", now, window=HOUR, limit=2) == now + timedelta(minutes=10)
    assert isinstance(ledger.reserve_request("b", now, window=HOUR, limit=2), int)  # per api
    ledger.finish_request(first, 200)
    with sqlite3.connect(state.path) as connection:
        rows = connection.execute("SELECT status FROM api_requests WHERE api = 'a'").fetchall()
    # The second was never finished (as if its process was killed): pending, still counted.
    assert sorted(rows, key=str) == [(200,), (None,)]


def test_a_request_exactly_one_window_old_has_left_it(state: SqliteStateStore) -> None:
    ledger = SqliteApiLedger(state)
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert isinstance(ledger.reserve_request("a", now - HOUR, window=HOUR, limit=1), int)
    assert isinstance(ledger.reserve_request("a", now, window=HOUR, limit=1), int)


def test_budget_rows_are_kept_for_the_whole_window_then_dropped(state: SqliteStateStore) -> None:
    ledger = SqliteApiLedger(state)
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    day = timedelta(days=1)
    ledger.reserve_request("a", now - timedelta(hours=23), window=day, limit=5)
    ledger.reserve_request("a", now - timedelta(days=3), window=day, limit=5)  # old: kept now
    ledger.reserve_request("a", now, window=day, limit=5)  # drops the 3-day-old row
    assert ledger.api_requests_since("a", now - timedelta(days=5)) == [
        now - timedelta(hours=23),
        now,
    ]
    assert ledger.api_requests_since("a", now - day) == [now - timedelta(hours=23), now]
