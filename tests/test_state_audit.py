"""The audit log by chunks (syncd.state_audit): written a thousand entries to a row, read
back per user in order, counted and pruned by chunk, and the per-user rows of schemas
2 and 3 read as they are, then moved into chunks by migration 4."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from syncd.errors import StateError
from syncd.model import PlatformUser, make_tags
from syncd.platform.api import UsersBodyEncoder, users_of_body
from syncd.ports import SentUsers
from syncd.state import MIGRATIONS, SCHEMA_VERSION, AuditBatch, SqliteStateStore
from syncd.state_codec import UserEncoder, encode_user, stored_time
from tests.test_state import AT, batch, pragma, raw, run, tables, user


def inserts(run_id: str, names: list[str]) -> AuditBatch:
    # A one-shot iterator, as the runner hands its million inserts to the store.
    return AuditBatch(run_id, "corp", "insert", AT, iter([(n, None, user(n)) for n in names]))


def chunks(path: Path) -> list[tuple[str, str, int]]:
    with raw(path) as connection:
        return connection.execute(
            "SELECT run_id, operation, changes FROM audit_chunks ORDER BY id"
        ).fetchall()


def test_entries_are_written_by_chunks_and_read_back_per_user_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("syncd.state_audit.CHUNK_ENTRIES", 3)
    store = SqliteStateStore(tmp_path)
    names = [f"u{i}@example.com" for i in (7, 3, 9, 1, 8, 2, 6, 4)]  # source order
    store.record_run(run("r1", "corp", 0), [inserts("r1", names)])
    later = AT + timedelta(hours=1)
    moved = user("U3@Example.com", "Infra")
    store.record_run(
        run("r2", "corp", 1),
        [batch("r2", "update", later, ("u3@example.com", user("u3@example.com"), moved))],
    )
    assert chunks(store.path)[:3] == [("r1", "insert", 3), ("r1", "insert", 3), ("r1", "insert", 2)]
    assert chunks(store.path)[3:] == [("r2", "update", 1)]
    history = store.audit(["u3@example.com"])
    assert [(e.run_id, e.operation, e.before, e.after) for e in history] == [
        ("r1", "insert", None, user("u3@example.com")),
        ("r2", "update", user("u3@example.com"), moved),
    ]
    # Several names at once: each entry once, in chunk order, then entry order.
    found = store.audit(["u6@example.com", "u7@example.com", "u9@example.com", "nobody@x.com"])
    assert [e.end_user for e in found] == ["u7@example.com", "u9@example.com", "u6@example.com"]
    with raw(store.path) as connection:
        flat = connection.execute(
            "SELECT end_user, operation, before IS NULL FROM audit_log ORDER BY chunk, position"
        ).fetchall()
    assert flat == [(n, "insert", 1) for n in names] + [("u3@example.com", "update", 0)]


@pytest.mark.parametrize("as_sequence", [True, False], ids=["by slices", "one pass"])
def test_a_sequence_of_entries_is_chunked_like_an_iterator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_sequence: bool
) -> None:
    monkeypatch.setattr("syncd.state_audit.CHUNK_ENTRIES", 4)
    store = SqliteStateStore(tmp_path)
    names = [f"u{i}@example.com" for i in range(10)]
    entries = [(n, None, user(n)) for n in names]
    users = entries if as_sequence else iter(entries)
    store.record_run(run("r1", "corp", 0), [AuditBatch("r1", "corp", "insert", AT, users)])
    assert chunks(store.path) == [("r1", "insert", 4), ("r1", "insert", 4), ("r1", "insert", 2)]
    assert [e.end_user for e in store.audit(names)] == names


def test_a_lookup_of_many_names_finds_what_a_lookup_of_each_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("syncd.state_audit.CHUNK_ENTRIES", 7)
    store = SqliteStateStore(tmp_path)
    names = [f"u{i:03d}@example.com" for i in range(100)]
    store.record_run(run("r1", "corp", 0), [inserts("r1", names)])
    wanted = names[::3] + ["missing@example.com"] * 80  # over the per-name marker search
    together = store.audit(wanted)
    one_by_one = [entry for name in names for entry in store.audit([name]) if name in wanted]
    assert together == one_by_one
    assert len(together) == len(names[::3])


def test_a_lookup_returns_only_the_users_asked_for_from_a_shared_chunk(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    # Every entry starts '["<name>",'; a quote inside a value is written as an escape,
    # so the marker finds exactly the chunks holding the user (this value holds the
    # marker's text, not its bytes); everyone else in them is left out by name.
    note = PlatformUser("alice@x.com", make_tags({"note": '["bob@x.com",'}), date(2026, 1, 1))
    store.record_run(
        run("r1", "corp", 0),
        [
            batch(
                "r1",
                "insert",
                AT,
                ("alice@x.com", None, note),
                ("bob@x.com", None, user("bob@x.com")),
            )
        ],
    )
    assert [e.end_user for e in store.audit(["bob@x.com"])] == ["bob@x.com"]
    (entry,) = store.audit(["alice@x.com"])
    assert entry.after == note


def test_a_failed_audit_write_leaves_neither_chunks_nor_the_run(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    good = inserts("r1", [f"a{i}@x.com" for i in range(10)])
    bad = batch("r1", "renamed", AT, ("b@x.com", None, user("b@x.com")))
    with pytest.raises(StateError, match="CHECK constraint failed"):
        store.record_run(run("r1", "corp", 0), [good, bad])
    assert store.runs("corp") == []
    assert chunks(store.path) == []


def test_removals_are_counted_by_entry_across_chunks_and_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("syncd.state_audit.CHUNK_ENTRIES", 2)
    store = SqliteStateStore(tmp_path)
    ended = [
        (f"e{i}@x.com", user(f"e{i}@x.com"), user(f"e{i}@x.com", active_to=AT.date()))
        for i in range(5)
    ]
    store.record_run(
        run("r1", "corp", 0),
        [
            batch("r1", "end", AT, *ended),
            batch("r1", "delete", AT, ("d@x.com", user("d@x.com"), None)),
            batch("r1", "update", AT, ("u@x.com", user("u@x.com"), user("u@x.com", "Ops"))),
        ],
    )
    store.record_run(run("h1", "hr", 1), [batch("h1", "end", AT, *ended[:1], job="hr")])
    assert store.removals_since("corp", AT - timedelta(hours=1)) == 6
    assert store.removals_since("corp", AT + timedelta(seconds=1)) == 0
    assert store.removals_since("hr", AT) == 1
    assert store.prune(AT + timedelta(seconds=1)) == 2 + 5 + 1 + 1 + 1  # runs + entries


# ------------------------------------------------- schema 3 rows and migration 4


def legacy_database(tmp_path: Path) -> SqliteStateStore:
    """A schema-3 database holding audit rows as the code of schemas 2 and 3 wrote them:
    one row per user in ``audit``, one per run and kind in ``audit_ops``."""
    old = SqliteStateStore(tmp_path, migrations=MIGRATIONS[:3])
    old.record_run(run("r1", "corp", 0))
    old.record_run(run("r2", "corp", 1))
    first, later = stored_time(AT), stored_time(AT + timedelta(hours=1))
    alice, bob = user("alice@x.com"), user('bob"q"@x.com', "Sales")
    moved = user("Alice@X.com", "Infra")
    rows = [
        # (op id, run, kind, at, [(end_user, before, after)])
        (1, "r1", "insert", first, [("alice@x.com", None, alice), ('bob"q"@x.com', None, bob)]),
        (2, "r2", "update", later, [("alice@x.com", alice, moved)]),
        (3, "r2", "end", later, [('bob"q"@x.com', bob, user('bob"q"@x.com', "Sales", AT.date()))]),
    ]
    with raw(old.path) as connection:
        next_row = 1
        for op, run_id, kind, at, users in rows:
            connection.execute(
                "INSERT INTO audit_ops VALUES (?, ?, 'corp', ?, ?, ?, ?)",
                (op, run_id, kind, at, next_row, next_row + len(users) - 1),
            )
            for end_user, before, after in users:
                connection.execute(
                    "INSERT INTO audit (id, op, end_user, before, after) VALUES (?, ?, ?, ?, ?)",
                    (next_row, op, end_user, encode_user(before), encode_user(after)),
                )
                next_row += 1
    assert pragma(old.path, "user_version") == 3
    return SqliteStateStore(tmp_path)


def test_rows_of_schema_3_are_read_as_they_are_then_moved_into_chunks(tmp_path: Path) -> None:
    store = legacy_database(tmp_path)
    names = ["alice@x.com", 'bob"q"@x.com']
    before_migration = store.audit(names)
    removals = store.removals_since("corp", AT - timedelta(days=1))
    assert [(e.run_id, e.end_user, e.operation) for e in before_migration] == [
        ("r1", "alice@x.com", "insert"),
        ("r1", 'bob"q"@x.com', "insert"),
        ("r2", "alice@x.com", "update"),
        ("r2", 'bob"q"@x.com', "end"),
    ]
    assert removals == 1
    assert pragma(store.path, "user_version") == 3  # reads leave the file as it is

    store.ensure_writable()  # a write migrates it
    assert pragma(store.path, "user_version") == SCHEMA_VERSION
    assert not {"audit", "audit_ops"} & tables(store.path)
    assert chunks(store.path) == [("r1", "insert", 2), ("r2", "update", 1), ("r2", "end", 1)]
    assert store.audit(names) == before_migration
    assert store.removals_since("corp", AT - timedelta(days=1)) == removals
    with raw(store.path) as connection:
        (count,) = connection.execute("SELECT count(*) FROM audit_log").fetchone()
    assert count == 4


def test_a_failed_migration_keeps_the_rows_where_they_were(tmp_path: Path) -> None:
    store = legacy_database(tmp_path)
    with raw(store.path) as connection:
        # A row the move cannot copy (its text is no JSON) stops the migration.
        connection.execute("UPDATE audit SET after = 'not json' WHERE id = 3")
    with pytest.raises(StateError, match="migration to schema 4"):
        store.ensure_writable()
    assert pragma(store.path, "user_version") == 3
    assert {"audit", "audit_ops"} <= tables(store.path)
    assert "audit_chunks" not in tables(store.path)


def test_a_chunk_edited_into_something_else_is_a_state_error_naming_it(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    store.record_run(run("r1", "corp", 0), [inserts("r1", ["a@x.com", "b@x.com"])])
    with raw(store.path) as connection:
        connection.execute("UPDATE audit_chunks SET entries = '[[\"a@x.com\", 1' WHERE id = 1")
    with pytest.raises(StateError, match=r"audit_chunks row 1 is not a list of audit entries"):
        store.audit(["a@x.com"])
    assert store.audit(["nobody@x.com"]) == []  # a chunk without the name is not decoded


# ------------------------------------------------ runs audited as they write


def test_a_started_run_takes_audit_entries_as_they_come_and_is_replaced_by_its_record(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path)
    appender = store.start_run(run("r1", "corp", 0, status="running"))
    assert [(r.run_id, r.status) for r in store.runs("corp")] == [("r1", "running")]
    appender.append([inserts("r1", ["a@x.com", "b@x.com"])])
    # Readable at once, by other connections, while the appender keeps its own open.
    assert [e.end_user for e in store.audit(["a@x.com"])] == ["a@x.com"]
    appender.append([inserts("r1", ["c@x.com"])])
    appender.close()
    appender.close()  # idempotent
    store.record_run(run("r1", "corp", 3, status="applied"), [inserts("r1", ["d@x.com"])])
    (record,) = store.runs("corp")
    assert (record.status, record.summary) == ("applied", {"inserts": 3})
    assert record.started_at == run("r1", "corp", 0).started_at  # kept from the start
    assert chunks(store.path) == [("r1", "insert", 2), ("r1", "insert", 1), ("r1", "insert", 1)]
    found = store.audit(["a@x.com", "b@x.com", "c@x.com", "d@x.com"])
    assert [e.end_user for e in found] == ["a@x.com", "b@x.com", "c@x.com", "d@x.com"]
    assert not (tmp_path / "syncd.sqlite3-wal").exists()  # checkpointed once all closed


def test_an_append_the_store_refuses_is_a_state_error_and_writes_nothing(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    appender = store.start_run(run("r1", "corp", 0, status="running"))
    good = inserts("r1", ["a@x.com"])
    bad = batch("r1", "renamed", AT, ("b@x.com", None, user("b@x.com")))
    with pytest.raises(StateError, match="CHECK constraint failed"):
        appender.append([good, bad])
    appender.append([inserts("r1", ["c@x.com"])])  # the appender is still usable
    appender.close()
    assert [e.end_user for e in store.audit(["a@x.com", "b@x.com", "c@x.com"])] == ["c@x.com"]
    assert repr(appender) == f"SqliteAuditAppender({str(store.path)!r})"


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted_by_the_next(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path)
    dead = store.start_run(run("dead", "corp", 0, status="running"))
    dead.append([inserts("dead", ["a@x.com"])])
    dead.close()
    store.start_run(run("other-job", "hr", 1, status="running")).close()
    # The process of "dead" was killed: the next run of its job (under the job's
    # lock) finds it still running.
    store.start_run(run("next", "corp", 2, status="running")).close()
    statuses = {r.run_id: (r.status, r.summary.get("error")) for r in store.runs(None)}
    assert statuses["next"] == ("running", None)
    assert statuses["other-job"] == ("running", None)  # another job's lock, not ours
    status, error = statuses["dead"]
    assert status == "interrupted"
    assert isinstance(error, str)
    assert error.startswith("the end of this run was never recorded")
    assert [e.run_id for e in store.audit(["a@x.com"])] == ["dead"]  # what it confirmed


def test_a_run_id_is_recorded_once_and_a_held_run_also_ends_a_dead_running_one(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path)
    store.record_run(run("r1", "corp", 0))
    with pytest.raises(StateError, match="run r1 is already recorded"):
        store.record_run(run("r1", "corp", 1))
    store.start_run(run("dead", "corp", 2, status="running")).close()
    with raw(store.path) as connection:  # a summary someone broke by hand
        connection.execute("UPDATE runs SET summary = '{oops' WHERE run_id = 'dead'")
    store.record_run(run("held", "corp", 3, status="held"))  # held: never started
    # Read raw: the broken summary would not parse as a RunRecord.
    with raw(store.path) as connection:
        rows = dict(connection.execute("SELECT run_id, status FROM runs").fetchall())
    assert rows == {"r1": "applied", "dead": "interrupted", "held": "held"}


def test_a_run_marked_interrupted_by_a_run_that_took_its_lock_still_records_its_end(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path)
    store.start_run(run("a", "corp", 0, status="running")).close()
    store.start_run(run("b", "corp", 1, status="running")).close()  # A lost its lock
    store.record_run(run("a", "corp", 2, status="applied"), [inserts("a", ["x@x.com"])])
    statuses = {r.run_id: r.status for r in store.runs("corp")}
    assert statuses == {"a": "applied", "b": "running"}
    assert [e.run_id for e in store.audit(["x@x.com"])] == ["a"]


# ------------------------------------------------ inserts stored as sent (schema 5)


def sent(run_id: str, users: list[PlatformUser], operation: str = "insert") -> AuditBatch:
    """Inserts as the platform client sent them: the users of one request body."""
    body = UsersBodyEncoder().encode(users)
    return AuditBatch(run_id, "corp", operation, AT, SentUsers(users_of_body(body), len(users)))


def audit_log(path: Path) -> list[tuple[object, ...]]:
    with raw(path) as connection:
        return connection.execute(
            "SELECT position, run_id, at, job, end_user, operation, before, after "
            "FROM audit_log ORDER BY chunk, position"
        ).fetchall()


def test_inserts_as_sent_are_kept_as_they_are_and_read_back_like_entries(
    tmp_path: Path,
) -> None:
    users = [
        user("alice@x.com"),
        user("bob@x.com", "Ops", active_to=date(2026, 12, 31)),
        PlatformUser("carol@x.com", make_tags({}), date(2026, 2, 1)),
    ]
    as_sent = SqliteStateStore(tmp_path / "sent")
    as_sent.record_run(run("r1", "corp", 0), [sent("r1", users[:2]), sent("r1", users[2:])])
    as_entries = SqliteStateStore(tmp_path / "entries")
    as_entries.record_run(
        run("r1", "corp", 0),
        [AuditBatch("r1", "corp", "insert", AT, [(u.end_user, None, u) for u in users])],
    )
    with raw(as_sent.path) as connection:
        forms = connection.execute("SELECT form, changes FROM audit_chunks ORDER BY id").fetchall()
    assert forms == [("sent", 2), ("sent", 1)]
    names = [u.end_user for u in users]
    found = as_sent.audit(names)
    assert [(e.end_user, e.before, e.after) for e in found] == [
        (u.end_user, None, u) for u in users
    ]
    assert found == as_entries.audit(names)
    assert [as_sent.audit([n]) for n in names] == [as_entries.audit([n]) for n in names]
    many = [*names, *(f"nobody{i}@x.com" for i in range(80))]  # past the marker search
    assert as_sent.audit(many) == found
    # An auditor reading the file sees the stored form, active_to null when absent.
    log = audit_log(as_sent.path)
    assert [row[1:] for row in log] == [row[1:] for row in audit_log(as_entries.path)]
    assert [row[0] for row in log] == [0, 1, 0]
    assert json.loads(log[0][7]) == {
        "end_user": "alice@x.com",
        "tags": {"department": "Eng"},
        "active_from": "2026-01-01",
        "active_to": None,
    }


def test_a_lookup_in_sent_chunks_returns_only_the_users_asked_for(tmp_path: Path) -> None:
    # A sent user starts '{"end_user":"<name>",'; this tag value holds that text (its
    # quotes escaped in the JSON), so the chunk is decoded and bob left out by name.
    note = PlatformUser(
        "alice@x.com", make_tags({"n": '{"end_user":"bob@x.com",'}), date(2026, 1, 1)
    )
    store = SqliteStateStore(tmp_path)
    store.record_run(run("r1", "corp", 0), [sent("r1", [note]), sent("r1", [user("bob@x.com")])])
    assert [(e.end_user, e.after) for e in store.audit(["bob@x.com"])] == [
        ("bob@x.com", user("bob@x.com"))
    ]
    assert [e.after for e in store.audit(["alice@x.com"])] == [note]


def test_users_as_sent_are_refused_for_anything_but_inserts(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    with pytest.raises(StateError, match="CHECK constraint failed"):
        store.record_run(run("r1", "corp", 0), [sent("r1", [user("a@x.com")], "update")])
    assert store.runs("corp") == []
    assert chunks(store.path) == []


def test_a_sent_chunk_edited_into_something_else_is_a_state_error_naming_it(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path)
    store.record_run(run("r1", "corp", 0), [sent("r1", [user("a@x.com")])])
    with raw(store.path) as connection:
        connection.execute("""UPDATE audit_chunks SET entries = '[{"end_user":"a@x.com",'""")
    with pytest.raises(StateError, match=r"audit_chunks row 1 .*\(form 'sent'\)"):
        store.audit(["a@x.com"])


def test_a_file_of_schema_4_is_read_as_it_is_then_migrated_keeping_its_entries(
    tmp_path: Path,
) -> None:
    old = SqliteStateStore(tmp_path, migrations=MIGRATIONS[:4])
    old.record_run(run("r1", "corp", 0))
    entries = [("a@x.com", None, user("a@x.com")), ("b@x.com", user("b@x.com"), None)]
    with raw(old.path) as connection:  # as syncd wrote chunks at schema 4
        connection.execute(
            "INSERT INTO audit_chunks (run_id, job, operation, at, changes, entries) "
            "VALUES ('r1', 'corp', 'insert', ?, 2, CAST(? AS TEXT))",
            (stored_time(AT), UserEncoder().encode_chunk(entries)),
        )
    log = audit_log(old.path)
    store = SqliteStateStore(tmp_path)
    found = store.audit(["a@x.com", "b@x.com"])
    assert [(e.end_user, e.before, e.after) for e in found] == entries
    assert pragma(store.path, "user_version") == 4  # reads leave the file as it is
    store.ensure_writable()
    assert pragma(store.path, "user_version") == SCHEMA_VERSION == 5
    assert store.audit(["a@x.com", "b@x.com"]) == found
    assert audit_log(store.path) == log
    with raw(store.path) as connection:
        assert connection.execute("SELECT form FROM audit_chunks").fetchall() == [("entries",)]
