"""The SQLite state store: lazily created, versioned migrations, WAL, owned users, runs."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from syncd.errors import StateError
from syncd.model import PlatformUser, make_tags
from syncd.state import (
    MIGRATIONS,
    PAGE_SIZE,
    SCHEMA_VERSION,
    AuditBatch,
    JobLock,
    Migration,
    RunRecord,
    SqliteStateStore,
)


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


# --------------------------------------------------------------------- helpers

FIXTURES = Path(__file__).parent / "fixtures"


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the store's file (autocommit), closed afterwards."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def pragma(path: Path, name: str) -> object:
    with raw(path) as connection:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]


def tables(path: Path) -> set[str]:
    with raw(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def run(run_id: str, job: str, minute: int, status: str = "applied") -> RunRecord:
    moment = datetime(2026, 11, 22, 10, minute, tzinfo=UTC)
    return RunRecord(run_id, job, moment, moment, status, {"inserts": minute})


def database_of_the_first_releases(state_dir: Path, user_version: int) -> Path:
    """The fixture dump (schema 1 as the pre-migration code wrote it) at ``user_version``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "syncd.sqlite3"
    with raw(path) as connection:
        connection.executescript((FIXTURES / "state_schema_v1.sql").read_text())
        connection.execute(f"PRAGMA user_version = {user_version}")
    return path


def counting(calls: list[int], then: Migration = MIGRATIONS[0]) -> Migration:
    """Step 1 as a function that also counts its runs in ``calls``."""

    def step(connection: sqlite3.Connection) -> None:
        calls.append(1)
        then.apply(connection)

    return Migration(1, then.description, step)


# ------------------------------------------------------------------ migrations


def test_a_fresh_database_is_at_the_latest_version_in_wal_mode(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state")
    store.ensure_writable()
    assert store.path == tmp_path / "state" / "syncd.sqlite3"
    assert pragma(store.path, "user_version") == SCHEMA_VERSION == len(MIGRATIONS)
    assert pragma(store.path, "journal_mode") == "wal"
    assert {"owned_users", "runs"} <= tables(store.path)


def test_a_new_file_has_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    # Audit chunks are rows of ~180 kB: a new file stores them in 16 kB pages.
    store = SqliteStateStore(tmp_path / "new")
    store.ensure_writable()
    assert pragma(store.path, "page_size") == PAGE_SIZE == 16384
    # A file of the first releases (4 kB pages, no version yet) is migrated, not rewritten.
    path = database_of_the_first_releases(tmp_path / "old", 0)
    assert pragma(path, "page_size") == 4096
    old = SqliteStateStore(tmp_path / "old")
    old.record_run(run("r1", "corp", 0))
    assert pragma(path, "page_size") == 4096
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert "r1" in [record.run_id for record in old.runs("corp")]


def test_a_first_write_without_ensure_writable_also_migrates(tmp_path: Path) -> None:
    # The old code's gap: a held run is recorded without ensure_writable().
    store = SqliteStateStore(tmp_path)
    store.record_run(run("r1", "corp", 0, "held"))
    assert pragma(store.path, "user_version") == SCHEMA_VERSION
    assert pragma(store.path, "journal_mode") == "wal"


@pytest.mark.parametrize(
    ("user_version", "drop"),
    [(0, None), (1, None), (0, "runs")],
    ids=["v0-with-tables", "v1", "v0-missing-a-table"],
)
def test_a_database_of_the_first_releases_is_upgraded_keeping_its_data(
    tmp_path: Path, user_version: int, drop: str | None
) -> None:
    path = database_of_the_first_releases(tmp_path, user_version)
    if drop is not None:
        # The old code created its tables one autocommitted statement at a time, so a
        # crash could leave some of them.
        with raw(path) as connection:
            connection.execute(f"DROP TABLE {drop}")
    store = SqliteStateStore(tmp_path)
    assert store.owned_users("corp") == frozenset({"alice@example.com", "bob@example.com"})
    assert store.owned_users("hr") == frozenset({"carol@example.com"})
    # Reads never change the file: no migration, no journal-mode switch.
    assert pragma(path, "user_version") == user_version
    assert pragma(path, "journal_mode") == "delete"
    if drop is None:
        assert [r.run_id for r in store.runs("corp")] == ["run-2", "run-1"]
        last = store.last_run("hr")
        assert last is not None
        assert (last.run_id, last.status, last.summary) == (
            "run-3",
            "partial",
            {"deletes": 0, "inserts": 2},
        )
        assert last.finished_at == datetime(2026, 11, 22, 9, 1, 30, tzinfo=UTC)
    else:
        assert store.runs("corp") == []
    # The first write upgrades it, and it takes writes.
    store.ensure_writable()
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert pragma(path, "journal_mode") == "wal"
    store.add_owned("corp", ["dave@example.com"])
    store.record_run(run("run-4", "corp", 59))
    assert "dave@example.com" in SqliteStateStore(tmp_path).owned_users("corp")
    assert SqliteStateStore(tmp_path).runs("corp")[0].run_id == "run-4"


def test_a_failed_migration_of_a_fresh_database_leaves_nothing_half_applied(
    tmp_path: Path,
) -> None:
    broken = Migration(2, "audit log", "CREATE TABLE audit (x); INSERT INTO nowhere VALUES (1);")
    store = SqliteStateStore(tmp_path, migrations=(MIGRATIONS[0], broken))
    with pytest.raises(StateError, match=r"syncd\.sqlite3: migration to schema 2 \(audit log\)"):
        store.add_owned("corp", ["a"])
    # Step 1 ran in the same transaction as the failed step 2, so it is gone too.
    path = tmp_path / "syncd.sqlite3"
    assert pragma(path, "user_version") == 0
    assert tables(path) == set()
    # The code that knows only step 1 still works on that file.
    SqliteStateStore(tmp_path, migrations=MIGRATIONS[:1]).add_owned("corp", ["a"])
    assert pragma(path, "user_version") == 1


def _sql_failure(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE owned_users SET end_user = end_user || '-mangled'")
    connection.execute("INSERT INTO nowhere VALUES (1)")


def _bug(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE owned_users SET end_user = end_user || '-mangled'")
    raise RuntimeError("a bug in a migration")


@pytest.mark.parametrize(
    ("failing_step", "error"),
    [
        ("DELETE FROM runs; INSERT INTO nowhere VALUES (1)", StateError),
        (_sql_failure, StateError),
        (_bug, RuntimeError),
    ],
    ids=["sql", "function-sqlite-error", "function-bug"],
)
def test_a_failed_migration_leaves_the_database_at_its_old_version(
    tmp_path: Path,
    failing_step: str | Callable[[sqlite3.Connection], None],
    error: type[Exception],
) -> None:
    path = database_of_the_first_releases(tmp_path, 1)
    migrations = (
        MIGRATIONS[0],
        Migration(2, "audit log", "CREATE TABLE audit (at TEXT NOT NULL, what TEXT NOT NULL)"),
        Migration(3, "broken", failing_step),
    )
    with pytest.raises(error):
        SqliteStateStore(tmp_path, migrations=migrations).ensure_writable()
    assert pragma(path, "user_version") == 1
    assert "audit" not in tables(path)
    store = SqliteStateStore(tmp_path)
    assert store.owned_users("corp") == frozenset({"alice@example.com", "bob@example.com"})
    assert len(store.runs("corp")) == 2


def test_a_step_may_hold_several_statements_with_semicolons_inside(tmp_path: Path) -> None:
    audit = Migration(
        2,
        "audit log",
        """
        CREATE TABLE audit (what TEXT NOT NULL);
        INSERT INTO audit VALUES ('created; with a semicolon');
        -- a trigger body holds statements of its own; it stays one statement
        CREATE TRIGGER audit_owned AFTER INSERT ON owned_users BEGIN
            INSERT INTO audit VALUES ('owned ' || NEW.end_user);
        END;
        """,
    )
    store = SqliteStateStore(tmp_path, migrations=(MIGRATIONS[0], audit))
    store.add_owned("corp", ["a"])
    with raw(store.path) as connection:
        rows = connection.execute("SELECT what FROM audit ORDER BY rowid").fetchall()
    assert rows == [("created; with a semicolon",), ("owned a",)]
    assert pragma(store.path, "user_version") == 2


def test_migrations_run_once_but_again_after_the_file_is_deleted(tmp_path: Path) -> None:
    calls: list[int] = []
    store = SqliteStateStore(tmp_path, migrations=(counting(calls),))
    store.ensure_writable()
    store.add_owned("corp", ["a"])
    store.record_run(run("r1", "corp", 0))
    assert store.owned_users("corp") == frozenset({"a"})
    assert store.last_run("corp") is not None
    SqliteStateStore(tmp_path, migrations=(counting(calls),)).owned_users("corp")
    assert len(calls) == 1
    store.path.unlink()
    store.add_owned("corp", ["b"])
    assert len(calls) == 2
    assert store.owned_users("corp") == frozenset({"b"})


def test_two_stores_migrating_at_once_migrate_once(tmp_path: Path) -> None:
    # A daemon and a manual `syncd apply` opening a new database at the same moment.
    calls: list[int] = []
    migrating = threading.Event()

    def slow_step(connection: sqlite3.Connection) -> None:
        calls.append(1)
        migrating.set()
        time.sleep(0.3)  # the other store arrives while this step holds the write lock
        MIGRATIONS[0].apply(connection)

    steps = (Migration(1, "owned users and run history", slow_step),)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(SqliteStateStore(tmp_path, migrations=steps).add_owned, "corp", ["a"])
        assert migrating.wait(timeout=10)
        SqliteStateStore(tmp_path, migrations=steps).add_owned("corp", ["b"])
        first.result(timeout=10)
    assert len(calls) == 1
    assert SqliteStateStore(tmp_path).owned_users("corp") == frozenset({"a", "b"})


def test_a_database_of_a_newer_syncd_is_refused_not_downgraded(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    store.add_owned("corp", ["a"])
    with raw(store.path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    message = (
        rf"syncd\.sqlite3 was created by a newer syncd \(schema {SCHEMA_VERSION + 1}, this "
        rf"version knows up to {SCHEMA_VERSION}\); upgrade syncd or point state_dir elsewhere"
    )
    for fresh in (store, SqliteStateStore(tmp_path)):
        with pytest.raises(StateError, match=message):
            fresh.owned_users("corp")
        with pytest.raises(StateError, match=message):
            fresh.ensure_writable()
        with pytest.raises(StateError, match=message):
            fresh.record_run(run("r1", "corp", 0))
    assert pragma(store.path, "user_version") == SCHEMA_VERSION + 1


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "syncd.sqlite3"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    store = SqliteStateStore(tmp_path)
    calls: list[Callable[[], object]] = [
        lambda: store.owned_users("corp"),
        lambda: store.runs("corp"),
        lambda: store.last_run("corp"),
        lambda: store.remove_owned("corp", ["a"]),
        lambda: store.add_owned("corp", ["a"]),
        lambda: store.record_run(run("r1", "corp", 0)),
        store.ensure_writable,
    ]
    for call in calls:
        with pytest.raises(StateError, match="file is not a database") as raised:
            call()
        assert str(path) in str(raised.value)
    assert path.read_bytes() == garbage


def test_migrations_must_be_numbered_from_one_in_order(tmp_path: Path) -> None:
    step = MIGRATIONS[0]
    for numbered in [(), (Migration(2, "x", "SELECT 1"),), (step, step)]:
        with pytest.raises(ValueError, match=r"numbered 1, 2, 3"):
            SqliteStateStore(tmp_path, migrations=numbered)


# ------------------------------------------------------------------ concurrency


def test_a_reader_reads_while_another_connection_holds_a_write_transaction(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path, busy_timeout=0.2)
    store.add_owned("corp", ["a"])
    with raw(store.path) as writer:
        # EXCLUSIVE: without WAL this locks readers out too (they would time out).
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("INSERT INTO owned_users VALUES ('corp', 'b')")
        assert store.owned_users("corp") == frozenset({"a"})
        assert store.last_run("corp") is None
        writer.execute("COMMIT")
    assert store.owned_users("corp") == frozenset({"a", "b"})


def test_a_writer_commits_while_another_connection_holds_a_read_transaction(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path, busy_timeout=0.2)
    store.add_owned("corp", ["a"])
    with raw(store.path) as reader:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM owned_users").fetchone() == (1,)
        store.add_owned("corp", ["b"])
        store.record_run(run("r1", "corp", 0))
        # The reader keeps its snapshot until its transaction ends.
        assert reader.execute("SELECT count(*) FROM owned_users").fetchone() == (1,)
        reader.execute("COMMIT")
    assert store.owned_users("corp") == frozenset({"a", "b"})


# ----------------------------------------------------------- reads and lifecycle


def test_last_run_is_the_newest_run_and_none_before_any(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    assert store.last_run("corp") is None
    store.record_run(run("r1", "corp", 0))
    store.record_run(run("r3", "corp", 2))
    store.record_run(run("r2", "corp", 1))
    store.record_run(run("h1", "hr", 30, "held"))
    newest = store.last_run("corp")
    assert newest is not None
    assert (newest.run_id, newest.summary) == ("r3", {"inserts": 2})
    held = store.last_run("hr")
    assert held is not None
    assert held.status == "held"
    assert store.last_run("other") is None
    # Two runs started in the same instant: the one recorded last is the newer.
    store.record_run(run("r4", "corp", 2))
    newest = store.last_run("corp")
    assert newest is not None
    assert newest.run_id == "r4"


def test_plan_style_reads_in_an_empty_state_dir_create_nothing(tmp_path: Path) -> None:
    # The directory exists (a fresh install, or the database was removed): a plain
    # sqlite3.connect would create the file here.
    store = SqliteStateStore(tmp_path)
    assert store.owned_users("corp") == frozenset()
    assert store.runs("corp") == []
    assert store.last_run("corp") is None
    store.remove_owned("corp", ["a"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("remove", ["file", "directory"])
def test_the_store_survives_its_database_being_deleted(tmp_path: Path, remove: str) -> None:
    state_dir = tmp_path / "state"
    store = SqliteStateStore(state_dir)
    store.ensure_writable()
    store.add_owned("corp", ["a"])
    store.record_run(run("r1", "corp", 0))
    if remove == "file":
        store.path.unlink()
    else:
        shutil.rmtree(state_dir)
    assert store.owned_users("corp") == frozenset()
    assert store.last_run("corp") is None
    assert not store.path.exists()
    store.record_run(run("r2", "corp", 1, "held"))
    store.add_owned("corp", ["b"])
    assert store.owned_users("corp") == frozenset({"b"})
    assert [r.run_id for r in store.runs("corp")] == ["r2"]
    assert pragma(store.path, "user_version") == SCHEMA_VERSION
    assert pragma(store.path, "journal_mode") == "wal"


# -------------------------------------------- schema 2: audit, cursors, job locks

V2_TABLES = {"audit", "audit_ops", "source_cursors", "job_locks"}
LATEST_TABLES = {"audit_chunks", "source_cursors", "job_locks", "job_rules"}


def user(name: str, dept: str = "Eng", active_to: date | None = None) -> PlatformUser:
    return PlatformUser(name, make_tags({"department": dept}), date(2026, 1, 1), active_to)


def batch(
    run_id: str,
    operation: str,
    at: datetime,
    *users: tuple[str, PlatformUser | None, PlatformUser | None],
    job: str = "corp",
) -> AuditBatch:
    return AuditBatch(run_id=run_id, job=job, operation=operation, at=at, users=list(users))


AT = datetime(2026, 11, 22, 12, 0, 3, tzinfo=UTC)


def test_schema_2_upgrades_the_v1_fixture_keeping_its_data(tmp_path: Path) -> None:
    path = database_of_the_first_releases(tmp_path, 1)
    store = SqliteStateStore(tmp_path)
    assert [r.run_id for r in store.runs("corp")] == ["run-2", "run-1"]
    assert store.audit(["alice@example.com"]) == []  # read before the tables exist
    assert pragma(path, "user_version") == 1  # reads do not migrate
    store.ensure_writable()
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert tables(path) >= LATEST_TABLES
    assert store.audit(["alice@example.com"]) == []
    store.record_run(
        run("run-4", "corp", 5),
        [
            batch(
                "run-4",
                "end",
                AT,
                (
                    "alice@example.com",
                    user("alice@example.com"),
                    user("alice@example.com", active_to=date(2026, 11, 22)),
                ),
            )
        ],
    )
    (entry,) = store.audit(["alice@example.com"])
    assert (entry.run_id, entry.operation, entry.at) == ("run-4", "end", AT)


def test_schema_2_upgrades_a_database_written_by_the_schema_1_code(tmp_path: Path) -> None:
    old = SqliteStateStore(tmp_path, migrations=MIGRATIONS[:1])
    old.ensure_writable()
    old.add_owned("corp", ["a@example.com"])
    old.record_run(run("r1", "corp", 0))
    assert pragma(old.path, "user_version") == 1
    assert not V2_TABLES & tables(old.path)
    store = SqliteStateStore(tmp_path)
    assert store.owned_users("corp") == frozenset({"a@example.com"})
    assert [r.run_id for r in store.runs("corp")] == ["r1"]
    assert store.source_cursor("corp", "users.csv") is None
    assert store.current_lock("corp") is None
    assert pragma(store.path, "user_version") == 1  # reads leave an older file as it is
    store.add_owned("corp", ["b@example.com"])
    assert pragma(store.path, "user_version") == SCHEMA_VERSION == len(MIGRATIONS)
    assert tables(store.path) >= LATEST_TABLES


def test_audit_rows_are_kept_per_user_oldest_first_with_before_and_after(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    alice, bob = user("alice@example.com"), user('bob"quoted"@example.com', "Sales")
    later = AT + timedelta(hours=1)
    store.record_run(
        run("r1", "corp", 0),
        [
            batch(
                "r1",
                "insert",
                AT,
                ("alice@example.com", None, alice),
                ('bob"quoted"@example.com', None, bob),
            ),
        ],
    )
    moved = user("Alice@Example.com", "Infra")
    store.record_run(
        run("r2", "corp", 1),
        [
            batch("r2", "update", later, ("alice@example.com", alice, moved)),
            batch("r2", "delete", later, ('bob"quoted"@example.com', bob, None)),
        ],
    )
    store.record_run(
        run("h1", "hr", 2),
        [batch("h1", "insert", later, ("alice@example.com", None, alice), job="hr")],
    )
    entries = store.audit(["alice@example.com"])
    assert [(e.run_id, e.job, e.operation) for e in entries] == [
        ("r1", "corp", "insert"),
        ("r2", "corp", "update"),
        ("h1", "hr", "insert"),
    ]
    assert (entries[0].before, entries[0].after) == (None, alice)
    assert (entries[1].before, entries[1].after) == (alice, moved)
    assert [e.run_id for e in store.audit(["alice@example.com"], job="hr")] == ["h1"]
    (deleted,) = [e for e in store.audit(['bob"quoted"@example.com']) if e.after is None]
    assert deleted.before == bob
    # The flat view is there for auditors reading the file with sqlite3.
    with raw(store.path) as connection:
        rows = connection.execute(
            "SELECT run_id, job, end_user, operation FROM audit_log ORDER BY chunk, position"
        ).fetchall()
    assert len(rows) == 5
    assert rows[2] == ("r2", "corp", "alice@example.com", "update")


def test_audit_rows_are_never_recorded_without_their_run(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    store.ensure_writable()
    bad = batch("r1", "renamed", AT, ("a@example.com", None, user("a@example.com")))
    good = batch("r1", "insert", AT, ("b@example.com", None, user("b@example.com")))
    with pytest.raises(StateError, match="CHECK constraint failed"):
        store.record_run(run("r1", "corp", 0), [good, bad])
    assert store.runs("corp") == []
    assert store.audit(["a@example.com", "b@example.com"]) == []


def test_retention_deletes_old_runs_and_audit_rows_with_indexed_deletes(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    old, new = AT - timedelta(days=500), AT
    for run_id, moment in (("old", old), ("new", new)):
        store.record_run(
            RunRecord(run_id, "corp", moment, moment, "applied", {}),
            [
                batch(
                    run_id,
                    "insert",
                    moment,
                    (f"{run_id}@example.com", None, user(f"{run_id}@example.com")),
                )
            ],
        )
    assert store.prune(AT - timedelta(days=400)) == 2  # one run and one audit entry
    assert [r.run_id for r in store.runs(None)] == ["new"]
    assert store.audit(["old@example.com"]) == []
    assert len(store.audit(["new@example.com"])) == 1
    assert store.prune(AT - timedelta(days=400)) == 0
    with raw(store.path) as connection:
        plans = [
            " ".join(str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {q}", ("x",)))
            for q in (
                "DELETE FROM runs WHERE started_at < ?",
                "DELETE FROM audit_chunks WHERE at < ?",
            )
        ]
    assert "USING INDEX runs_by_start" in plans[0]
    assert "USING INDEX audit_chunks_by_time" in plans[1]
    assert SqliteStateStore(tmp_path / "missing").prune(AT) == 0
    assert not (tmp_path / "missing").exists()


def test_runs_of_every_job_newest_first(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    store.record_run(run("c1", "corp", 0))
    store.record_run(run("h1", "hr", 1))
    store.record_run(run("c2", "corp", 2))
    assert [r.run_id for r in store.runs(None, limit=2)] == ["c2", "h1"]


def test_source_cursors_are_saved_per_job_and_source(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state")
    assert store.source_cursor("corp", "ldap") is None
    assert not (tmp_path / "state").exists()
    store.set_source_cursor("corp", "ldap", "usn:1000")
    store.set_source_cursor("corp", "entra", "delta-token")
    store.set_source_cursor("hr", "ldap", "usn:5")
    store.set_source_cursor("corp", "ldap", "usn:2000")
    assert store.source_cursor("corp", "ldap") == "usn:2000"
    assert store.source_cursor("corp", "entra") == "delta-token"
    assert store.source_cursor("hr", "ldap") == "usn:5"
    store.set_source_cursor("corp", "ldap", None)
    assert store.source_cursor("corp", "ldap") is None
    with raw(store.path) as connection:
        (updated,) = connection.execute(
            "SELECT updated_at FROM source_cursors WHERE source = 'entra'"
        ).fetchone()
    assert datetime.fromisoformat(updated).tzinfo is not None


def lock(run_id: str, pid: int = 4242, host: str = "host-a") -> JobLock:
    return JobLock("corp", run_id, "syncd run", pid, host, "pid:[1]", AT, AT)


def test_the_job_lock_is_taken_once_released_by_its_holder_and_taken_over_when_stale(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path)
    assert store.current_lock("corp") is None
    first = lock("r1")
    assert store.acquire_lock(first, is_stale=lambda _: False) == first
    assert store.acquire_lock(first, is_stale=lambda _: False) == first  # re-entrant
    assert store.acquire_lock(lock("r2"), is_stale=lambda _: False) == first
    assert store.acquire_lock(replace_job(lock("h1")), is_stale=lambda _: False).run_id == "h1"
    store.release_lock("corp", "r2")  # not the holder: nothing happens
    assert store.current_lock("corp") == first
    later = AT + timedelta(seconds=30)
    assert store.refresh_lock("corp", "r1", later)
    current = store.current_lock("corp")
    assert current is not None
    assert current.heartbeat_at == later
    assert not store.refresh_lock("corp", "r2", later)
    seen: list[JobLock] = []

    def stale(held: JobLock) -> bool:
        seen.append(held)
        return True

    assert store.acquire_lock(lock("r3"), is_stale=stale).run_id == "r3"
    assert [held.run_id for held in seen] == ["r1"]
    store.release_lock("corp", "r3")
    assert store.current_lock("corp") is None
    assert store.current_lock("hr") is not None


def replace_job(held: JobLock) -> JobLock:
    return JobLock(
        "hr",
        held.run_id,
        held.holder,
        held.pid,
        held.host,
        held.namespace,
        held.since,
        held.heartbeat_at,
    )


def test_a_database_locked_by_another_writer_is_a_clear_error(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path, busy_timeout=0.2)
    store.ensure_writable()
    with raw(store.path) as writer:
        writer.execute("BEGIN IMMEDIATE")
        for call in (
            store.ensure_writable,
            lambda: store.acquire_lock(lock("r1"), is_stale=lambda _: False),
        ):
            with pytest.raises(StateError) as raised:
                call()
            assert str(raised.value).startswith(
                f"state database {store.path} is locked by another process (waited 0.2 s)"
            )
        writer.execute("ROLLBACK")
    store.ensure_writable()


@pytest.mark.parametrize("frozen", ["file", "file-and-folder"])
def test_a_read_only_database_is_a_clear_error(tmp_path: Path, frozen: str) -> None:
    store = SqliteStateStore(tmp_path / "state")
    store.record_run(run("r1", "corp", 0))
    # As root (tests run as root in CI) file modes do not stop writes; the immutable
    # attribute does, for root too.
    immutable = [store.path] if frozen == "file" else [store.path, store.path.parent]
    if subprocess.run(["chattr", "+i", *map(str, immutable)], check=False).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        calls: list[Callable[[], object]] = [
            store.ensure_writable,
            lambda: store.record_run(run("r2", "corp", 1)),
        ]
        if frozen == "file":
            # The folder still takes the WAL's shared-memory file, so reads work.
            assert [r.run_id for r in store.runs("corp")] == ["r1"]
        else:
            calls.append(lambda: store.runs("corp"))
        for call in calls:
            with pytest.raises(StateError) as raised:
                call()
            message = str(raised.value)
            assert message.startswith(f"state database {store.path} cannot be written")
            assert "check the permissions of the file and its folder" in message
    finally:
        subprocess.run(["chattr", "-i", *map(str, immutable)], check=True)


def test_a_batch_whose_users_are_all_filtered_out_leaves_no_trace(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    store.record_run(run("r1", "corp", 0), [batch("r1", "insert", AT)])
    with raw(store.path) as connection:
        assert connection.execute("SELECT count(*) FROM audit_chunks").fetchone() == (0,)
    assert [r.run_id for r in store.runs("corp")] == ["r1"]


def test_schema_3_upgrades_a_schema_2_database_adding_rules_cache_and_budget(
    tmp_path: Path,
) -> None:
    old = SqliteStateStore(tmp_path, migrations=MIGRATIONS[:2])
    old.ensure_writable()
    old.add_owned("corp", ["a@example.com"])
    assert pragma(old.path, "user_version") == 2
    assert not {"job_rules", "http_cache", "api_requests"} & tables(old.path)
    store = SqliteStateStore(tmp_path)
    store.add_owned("corp", ["b@example.com"])
    assert pragma(store.path, "user_version") == SCHEMA_VERSION
    assert tables(store.path) >= {"job_rules", "http_cache", "api_requests"}
    assert store.owned_users("corp") == frozenset({"a@example.com", "b@example.com"})
