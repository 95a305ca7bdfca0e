"""JobRunner.apply when answers do not say what happened, over real HTTP.

The emulator applies a batch and then drops the connection or holds its answer past
the client's timeout; it answers a permanent error; it refuses a user. The run's
status, exit code, summary, audit log and owned users must follow what the platform
holds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from datetime import date
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.errors import StateError
from syncd.exitcodes import ExitCode
from syncd.guard import Override
from syncd.platform.api import Operation, WireUser
from syncd.platform.outcome import Settlement, is_uncertain
from syncd.runner import RunStatus
from syncd.service import JobReport, run_job
from syncd.state import SqliteStateStore

TODAY = date(2026, 11, 22)

CONFIG = """
state_dir: ./state
jobs:
  - name: corp
    target:
      base_url: ${URL}
      api_key: ${KEY}
      batch_size: 5
      concurrency: 1
      max_retries: 1
      timeout_s: 0.5
    sources:
      - {type: csv, path: users.csv, id_column: email, tags: {department: Department}}
    policy: {scope: SCOPE}
    guard: {max_removal_ratio: null}
"""


def make_config(
    tmp_path: Path, emulator: PlatformEmulator, key: str, scope: str = "all"
) -> SyncdConfig:
    return parse_config(
        CONFIG.replace("SCOPE", scope),
        origin="test",
        base_dir=tmp_path,
        environ={"URL": emulator.url, "KEY": key},
    )


def names(count: int, start: int = 0) -> list[str]:
    return [f"user{i:02d}@example.com" for i in range(start, start + count)]


def write_users(tmp_path: Path, users: list[str], dept: str = "Eng") -> None:
    lines = "".join(f"{name},{dept}\n" for name in users)
    (tmp_path / "users.csv").write_text("email,Department\n" + lines)


def apply(config: SyncdConfig, *, force: bool = False, progress: object = None) -> JobReport:
    return run_job(
        config,
        config.jobs[0],
        apply=True,
        override=Override(force=force),
        today=lambda: TODAY,
        progress=progress,  # type: ignore[arg-type]
    )


def audited(tmp_path: Path, users: list[str]) -> list[tuple[str, str]]:
    store = SqliteStateStore(tmp_path / "state")
    return sorted((entry.end_user, entry.operation) for entry in store.audit(users))


# --------------------------------------------------------------- ambiguous writes


def test_an_insert_applied_before_the_connection_dropped_is_reported_as_applied(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(20))
    emulator.set_faults(Operation.INSERT, EndpointFaults(drop_after_apply_next=1))

    report = apply(config)

    # The retry found the first batch's users there and left them out: only the
    # re-read can tell that they were written, not refused.
    assert report.status is RunStatus.APPLIED
    assert report.exit_code is ExitCode.OK
    assert report.failures == ()
    assert report.result is not None
    assert report.result.settlement == Settlement(checked=5, applied=5, not_applied=0)
    assert set(emulator.users()) == set(names(20))
    assert emulator.calls()["list"] == 2  # the plan's list and the one re-read
    assert audited(tmp_path, names(20)) == [(name, "insert") for name in names(20)]
    (record,) = SqliteStateStore(tmp_path / "state").runs("corp")
    assert record.status == "applied"
    assert record.summary["failures"] == 0
    assert record.summary["settled"] == {
        "checked": 5,
        "applied": 5,
        "not_applied": 0,
        "unverified": 0,
    }


def test_a_write_that_timed_out_after_it_was_applied_does_not_fail_the_run(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(5))
    # Both attempts are applied, and both answers come after the client's 0.5 s.
    emulator.set_faults(Operation.INSERT, EndpointFaults(stall_after_apply_next=2, stall_s=1.5))

    report = apply(config)

    assert report.status is RunStatus.APPLIED
    assert report.exit_code is ExitCode.OK
    assert report.error is None
    assert report.failures == ()
    assert set(emulator.users()) == set(names(5))
    assert audited(tmp_path, names(5)) == [(name, "insert") for name in names(5)]


def test_a_timeout_that_stops_the_run_reports_exactly_what_the_platform_holds(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(10))
    emulator.set_faults(Operation.INSERT, EndpointFaults(stall_after_apply_next=2, stall_s=1.5))

    report = apply(config)

    # Batch 1 was applied (its answers came too late); batch 2 was never sent.
    assert report.status is RunStatus.FAILED
    assert report.exit_code is ExitCode.FAILED
    assert report.error is not None
    assert "insert" in report.error
    assert sorted(f.end_user for f in report.failures) == names(5, start=5)
    assert not any(is_uncertain(f) for f in report.failures)
    assert report.failures[0].reason.endswith("not on the platform when re-read")
    assert set(emulator.users()) == set(names(5))
    assert audited(tmp_path, names(10)) == [(name, "insert") for name in names(5)]
    (record,) = SqliteStateStore(tmp_path / "state").runs("corp")
    assert record.summary["failures"] == 5
    assert record.summary["settled"] == {
        "checked": 10,
        "applied": 5,
        "not_applied": 5,
        "unverified": 0,
    }

    emulator.clear_faults()
    emulator.reset_counters()
    assert apply(config).status is RunStatus.APPLIED
    assert emulator.calls()["insert"] == 1  # only the 5 that were missing
    assert set(emulator.users()) == set(names(10))


def test_an_update_that_timed_out_after_it_was_applied_is_audited_as_applied(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(5))
    assert apply(config).status is RunStatus.APPLIED
    write_users(tmp_path, names(5), dept="Sales")
    emulator.set_faults(Operation.UPDATE, EndpointFaults(stall_after_apply_next=2, stall_s=1.5))

    report = apply(config, force=True)  # every user changes: past any update guard

    assert report.status is RunStatus.APPLIED
    assert {user.tags["department"] for user in emulator.users().values()} == {"Sales"}
    assert audited(tmp_path, names(1)) == [(names(1)[0], "insert"), (names(1)[0], "update")]


class BreakListingAfterFirstBatch:
    """A progress sink that takes the list endpoint down once writing has started."""

    def __init__(self, emulator: PlatformEmulator) -> None:
        self.emulator = emulator

    def start(self, operation: Operation, total: int) -> Callable[[int], None]:
        def advance(count: int) -> None:
            self.emulator.set_faults(Operation.LIST, EndpointFaults(fail_next=100))

        return advance

    def finish(self, operation: Operation) -> None:
        pass


def test_users_stay_in_doubt_when_the_platform_cannot_be_re_read(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(10))
    emulator.set_faults(Operation.INSERT, EndpointFaults(drop_after_apply_next=1))

    report = apply(config, progress=BreakListingAfterFirstBatch(emulator))

    # Neither claimed as written nor as failed: the run says it could not tell.
    assert report.status is RunStatus.PARTIAL
    assert report.exit_code is ExitCode.PARTIAL
    assert sorted(f.end_user for f in report.failures) == names(5)
    assert all(is_uncertain(f) for f in report.failures)
    assert "it may have been applied; could not re-read: list:" in report.failures[0].reason
    assert report.result is not None
    settlement = report.result.settlement
    assert settlement is not None
    assert (settlement.unverified, settlement.applied) == (5, 0)
    assert settlement.error is not None
    # Only what was confirmed is audited; the next run's plan finds the rest there.
    assert audited(tmp_path, names(10)) == [(name, "insert") for name in names(5, start=5)]
    emulator.clear_faults()
    emulator.reset_counters()
    assert apply(config).status is RunStatus.APPLIED
    assert emulator.calls()["insert"] == 0


# --------------------------------------------------------------- permanent errors


@pytest.mark.parametrize("status", [400, 404, 405])
def test_a_permanent_error_stops_the_run_at_once_with_one_error(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str, status: int
) -> None:
    emulator.seed_users([WireUser(name, {"department": "Old"}, "2026-01-01") for name in names(3)])
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(23))  # 20 inserts (4 batches) and 3 updates
    emulator.set_faults(Operation.INSERT, EndpointFaults(status_next=100, status_code=status))

    report = apply(config, force=True)

    assert report.status is RunStatus.FAILED
    assert report.exit_code is ExitCode.FAILED
    assert report.error is not None
    assert f"answered HTTP {status}" in report.error
    assert "stopped at once, the remaining batches were not sent" in report.error
    calls = emulator.calls()
    assert (calls["insert"], calls["update"], calls["delete"]) == (1, 0, 0)
    assert len(report.failures) == 20
    assert set(emulator.users()) == set(names(3))
    assert {user.tags["department"] for user in emulator.users().values()} == {"Old"}
    assert audited(tmp_path, names(23)) == []


# ---------------------------------------------------------------------- ownership


def test_a_user_whose_insert_was_refused_is_not_owned(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key, scope="owned")
    write_users(tmp_path, names(3))
    refused = names(3)[1]
    emulator.set_faults(Operation.INSERT, EndpointFaults(refuse_users=frozenset({refused})))

    report = apply(config)

    assert report.status is RunStatus.PARTIAL
    store = SqliteStateStore(tmp_path / "state")
    assert store.owned_users("corp") == frozenset(names(3)) - {refused}

    # The user leaves the directory; someone makes a user of that name by hand.
    emulator.clear_faults()
    emulator.seed_users([WireUser(refused, {"department": "Hand-made"}, "2025-06-01")])
    write_users(tmp_path, [name for name in names(3) if name != refused])

    assert apply(config).status is RunStatus.APPLIED
    hand_made = emulator.users()[refused]
    assert hand_made.active_to is None
    assert hand_made.tags == {"department": "Hand-made"}
    assert refused not in store.owned_users("corp")


def test_an_insert_found_applied_by_the_re_read_is_owned(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key, scope="owned")
    write_users(tmp_path, names(5))
    emulator.set_faults(Operation.INSERT, EndpointFaults(stall_after_apply_next=2, stall_s=1.5))
    assert apply(config).status is RunStatus.APPLIED
    assert SqliteStateStore(tmp_path / "state").owned_users("corp") == frozenset(names(5))
    # Owned, so it is ended when it leaves (a hand-made user would not be).
    write_users(tmp_path, names(4))
    assert apply(config).status is RunStatus.APPLIED
    assert emulator.users()[names(5)[4]].active_to == TODAY.isoformat()


def test_a_confirmed_delete_is_forgotten_even_when_the_run_fails_later(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    deleting = parse_config(
        CONFIG.replace("SCOPE", "owned, on_missing: delete"),
        origin="test",
        base_dir=tmp_path,
        environ={"URL": emulator.url, "KEY": emulator_api_key},
    )
    write_users(tmp_path, names(10))
    assert apply(deleting).status is RunStatus.APPLIED
    write_users(tmp_path, [])  # everyone goes (10 deletes, 2 batches)
    (tmp_path / "users.csv").write_text("email,Department\n")
    emulator.set_faults(Operation.DELETE, EndpointFaults(latency_ms=1))

    class FailSecondBatch:
        def start(self, operation: Operation, total: int) -> Callable[[int], None]:
            def advance(count: int) -> None:
                emulator.set_faults(
                    Operation.DELETE, EndpointFaults(status_next=10, status_code=404)
                )

            return advance

        def finish(self, operation: Operation) -> None:
            pass

    report = apply(deleting, force=True, progress=FailSecondBatch())
    assert report.status is RunStatus.FAILED
    owned = SqliteStateStore(tmp_path / "state").owned_users("corp")
    assert owned == frozenset(emulator.users())
    assert len(owned) == 5


# ------------------------------------------------------------------------ recording


def test_the_record_of_a_run_is_timed_in_its_report_and_last_log_line(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(12))
    with capture_logs() as logs:
        report = apply(config)
    assert report.status is RunStatus.APPLIED
    # The audit of a first sync is a phase of its own: it shows, next to the others.
    assert set(report.timings) >= {"read_sources", "plan", "apply", "record"}
    (finished,) = [line for line in logs if line["event"] == "run.finished"]
    assert finished["timings_s"]["record"] == round(report.timings["record"], 3)
    assert audited(tmp_path, names(12)) == [(name, "insert") for name in names(12)]
    # The stored summary is the one written in the record, before its own time was known.
    (recorded,) = SqliteStateStore(tmp_path / "state").runs("corp")
    assert "record" not in recorded.summary["timings_s"]  # type: ignore[operator]


# ------------------------------------------------------ the audit log while writing


def audit_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "syncd-audit"]


class InterruptAtBatch:
    """A progress sink that raises KeyboardInterrupt (as SIGINT's handler does) once
    ``at`` batches were answered."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.batches = 0

    def start(self, operation: Operation, total: int) -> Callable[[int], None]:
        def advance(count: int) -> None:
            self.batches += 1
            if self.batches == self.at:
                raise KeyboardInterrupt

        return advance

    def finish(self, operation: Operation) -> None:
        pass


@pytest.mark.parametrize("at", [1, 2, 3])
def test_an_interrupted_apply_audits_each_confirmed_user_once(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str, at: int
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(20))
    with pytest.raises(KeyboardInterrupt):
        apply(config, progress=InterruptAtBatch(at))
    entries = audited(tmp_path, names(20))
    assert len(entries) == len(set(entries))  # nobody twice
    assert {name for name, _ in entries} == set(emulator.users())  # nobody missing
    assert len(entries) >= 5 * at
    (record,) = SqliteStateStore(tmp_path / "state").runs("corp")
    assert record.status == "failed"
    assert not audit_threads()


def test_a_failing_owned_users_write_still_records_the_run_and_its_audit(
    tmp_path: Path,
    emulator: PlatformEmulator,
    emulator_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key, scope="owned")
    write_users(tmp_path, names(20))
    calls = 0
    add_owned = SqliteStateStore.add_owned

    def failing_at_the_record(self: SqliteStateStore, job: str, users: object) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # the first adds confirmed inserts; the second is the record's
            raise StateError("state database x: disk I/O error")
        add_owned(self, job, users)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteStateStore, "add_owned", failing_at_the_record)
    report = apply(config)
    assert report.exit_code is ExitCode.FAILED
    assert "disk I/O error" in str(report.error)
    (record,) = SqliteStateStore(tmp_path / "state").runs("corp")
    assert record.status == "applied"
    assert len(audited(tmp_path, names(20))) == 20
    assert not audit_threads()


def test_inserts_are_audited_as_the_platform_was_sent_them(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(12))
    refused = names(12)[7]  # its batch (users 5-9) is confirmed only in part
    emulator.set_faults(Operation.INSERT, EndpointFaults(refuse_users=frozenset({refused})))

    assert apply(config).status is RunStatus.PARTIAL

    store = SqliteStateStore(tmp_path / "state")
    with closing(sqlite3.connect(store.path)) as connection:
        forms = connection.execute(
            "SELECT form, changes FROM audit_chunks ORDER BY at, id"
        ).fetchall()
    # The two batches written whole are stored as their bodies; the other from the plan.
    assert sorted(forms) == [("entries", 4), ("sent", 2), ("sent", 5)]
    held = emulator.users()
    entries = store.audit(names(12))
    assert sorted(entry.end_user for entry in entries) == sorted(set(names(12)) - {refused})
    for entry in entries:
        assert entry.before is None
        assert entry.after is not None
        platform = held[entry.end_user]
        assert (dict(entry.after.tags), entry.after.active_from.isoformat()) == (
            platform.tags,
            platform.active_from,
        )
