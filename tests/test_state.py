"""The SQLite state store: lazily created, owned users, run history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from syncd.state import RunRecord, SqliteStateStore


def test_reading_never_creates_the_database(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state")
    assert store.owned_users("corp") == frozenset()
    assert store.runs("corp") == []
    store.remove_owned("corp", ["a"])
    assert not (tmp_path / "state").exists()


def test_owned_users_are_per_job_and_survive_reopening(tmp_path: Path) -> None:
    SqliteStateStore(tmp_path).add_owned("corp", ["a", "b", "a"])
    SqliteStateStore(tmp_path).add_owned("hr", ["c"])
    store = SqliteStateStore(tmp_path)
    assert store.owned_users("corp") == frozenset({"a", "b"})
    store.remove_owned("corp", ["a"])
    assert SqliteStateStore(tmp_path).owned_users("corp") == frozenset({"b"})
    assert store.owned_users("hr") == frozenset({"c"})


def test_runs_are_recorded_newest_first(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    for i in range(3):
        moment = datetime(2026, 11, 22, 10, i, tzinfo=UTC)
        store.record_run(RunRecord(f"r{i}", "corp", moment, moment, "applied", {"inserts": i}))
    runs = store.runs("corp", limit=2)
    assert [(r.run_id, r.summary["inserts"]) for r in runs] == [("r2", 2), ("r1", 1)]
    assert runs[0].started_at == datetime(2026, 11, 22, 10, 2, tzinfo=UTC)
