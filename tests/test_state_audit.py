"""The audit rows of a large run (syncd.state_audit): the end_user index is rebuilt in
the run's transaction instead of filled row by row, and nothing else changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.errors import StateError
from syncd.state import AuditBatch, SqliteStateStore
from syncd.state_audit import _index_to_rebuild
from tests.test_state import AT, batch, raw, run, user


def audit_index_sql(path: Path) -> str | None:
    with raw(path) as connection:
        row = connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'audit_by_user'"
        ).fetchone()
    return None if row is None else str(row[0])


def inserts(run_id: str, names: list[str]) -> AuditBatch:
    return batch(run_id, "insert", AT, *((name, None, user(name)) for name in names))


def test_a_large_audit_rebuilds_the_user_index_as_the_schema_defines_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The threshold is a cost trade-off, not behaviour: lowered so that a few rows
    # take the rebuild path that a first sync of a million users takes.
    monkeypatch.setattr("syncd.state_audit._REBUILD_MIN_ROWS", 5)
    store = SqliteStateStore(tmp_path)
    store.ensure_writable()
    defined = audit_index_sql(store.path)
    names = [f"u{i:03d}@example.com" for i in (7, 3, 9, 1, 8, 2, 6, 4, 5, 0)]  # unsorted
    store.record_run(run("r1", "corp", 0), [inserts("r1", names)])  # 10 new, 0 present
    store.record_run(run("r2", "corp", 1), [inserts("r2", names[:3])])  # below the minimum
    store.record_run(run("r3", "corp", 2), [inserts("r3", names[3:9])])  # fewer than present
    assert audit_index_sql(store.path) == defined
    for name in names:
        expected = ["r1"] + ["r2"] * (name in names[:3]) + ["r3"] * (name in names[3:9])
        assert [e.run_id for e in store.audit([name])] == expected
    with raw(store.path) as connection:
        plan = " ".join(
            str(row[-1])
            for row in connection.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM audit WHERE end_user = ?", ("x",)
            )
        )
        # Rows keep their order (the rowids of a batch are its range in audit_ops).
        in_order = [r[0] for r in connection.execute("SELECT end_user FROM audit ORDER BY id")]
    assert "USING COVERING INDEX audit_by_user" in plan
    assert in_order == names + names[:3] + names[3:9]


def test_the_rebuild_is_chosen_only_for_large_batches_against_a_smaller_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("syncd.state_audit._REBUILD_MIN_ROWS", 5)
    store = SqliteStateStore(tmp_path)
    store.ensure_writable()
    with raw(store.path) as connection:
        assert _index_to_rebuild(connection, 4) is None  # under the minimum
        assert _index_to_rebuild(connection, 5) == audit_index_sql(store.path)
    store.record_run(run("r1", "corp", 0), [inserts("r1", [f"a{i}@x.com" for i in range(8)])])
    with raw(store.path) as connection:
        assert _index_to_rebuild(connection, 7) is None  # fewer than the 8 present
        assert _index_to_rebuild(connection, 8) is not None


def test_a_failed_large_audit_keeps_the_user_index_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("syncd.state_audit._REBUILD_MIN_ROWS", 5)
    store = SqliteStateStore(tmp_path)
    store.ensure_writable()
    defined = audit_index_sql(store.path)
    good = inserts("r1", [f"a{i}@x.com" for i in range(10)])
    bad = batch("r1", "renamed", AT, ("b@x.com", None, user("b@x.com")))
    with pytest.raises(StateError, match="CHECK constraint failed"):
        store.record_run(run("r1", "corp", 0), [good, bad])
    assert audit_index_sql(store.path) == defined  # the DROP INDEX was rolled back
    assert store.runs("corp") == []
    assert store.audit(["a0@x.com", "b@x.com"]) == []
