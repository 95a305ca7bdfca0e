"""The state store's part of the guard: identity rules and the rolling removal count."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.errors import StateError
from syncd.model import PlatformUser, make_tags
from syncd.ports import AuditBatch, RunRecord
from syncd.state import SqliteStateStore

NOW = datetime.now(UTC)
USER = PlatformUser("a@x.com", make_tags({}), NOW.date())


def _record(store: SqliteStateStore, job: str, operation: str, count: int, at: datetime) -> None:
    users = [(f"{operation}{i}@x.com", USER, USER) for i in range(count)]
    store.record_run(
        RunRecord(f"r-{operation}-{at.timestamp()}", job, at, at, "applied", {}),
        [AuditBatch(f"r-{operation}-{at.timestamp()}", job, operation, at, users)],
    )


def test_rules_round_trip_and_are_replaced(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    assert store.job_rules("corp") is None  # no database yet: nothing created
    assert not store.path.exists()
    store.set_job_rules("corp", {"lowercase": True, "sources": {"a": {"id_column": "e"}}})
    store.set_job_rules("corp", {"lowercase": False})
    assert store.job_rules("corp") == {"lowercase": False}
    assert store.job_rules("other") is None


def test_unreadable_rules_are_a_state_error_naming_the_file(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    store.set_job_rules("corp", {"lowercase": True})
    with sqlite3.connect(store.path) as connection:
        connection.execute("UPDATE job_rules SET rules = 'not json'")
    with pytest.raises(StateError, match=r"syncd\.sqlite3: the identity rules of job corp"):
        store.job_rules("corp")


def test_removals_since_counts_confirmed_ends_and_deletes_of_the_job(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    assert store.removals_since("corp", NOW - timedelta(days=1)) == 0
    _record(store, "corp", "end", 3, NOW - timedelta(hours=2))
    _record(store, "corp", "delete", 2, NOW - timedelta(hours=1))
    _record(store, "corp", "insert", 50, NOW - timedelta(hours=1))
    _record(store, "corp", "update", 7, NOW - timedelta(hours=1))
    _record(store, "corp", "end", 10, NOW - timedelta(hours=25))  # outside the window
    _record(store, "other", "end", 4, NOW - timedelta(hours=1))
    assert store.removals_since("corp", NOW - timedelta(days=1)) == 5
    assert store.removals_since("corp", NOW - timedelta(days=2)) == 15
    assert store.removals_since("other", NOW - timedelta(days=1)) == 4
