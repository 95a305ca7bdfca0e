"""JobRunner against the emulator over HTTP: crash safety, ownership, failed reads."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.errors import SourceError, StateError
from syncd.guard import Override
from syncd.mapping import RecordMapper, unusable_character
from syncd.model import Origin, RecordProblem, SourceUser, make_tags
from syncd.planfile import FingerprintingPlatform
from syncd.platform.api import Operation, WireUser
from syncd.runner import JobRunner, RunStatus
from syncd.service import open_job
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
      api: API
    sources:
      - {type: csv, path: users.csv, id_column: email, tags: {department: Department}}
    policy: {scope: SCOPE, EXTRA}
    guard: {max_removal_ratio: null}
"""


def make_config(
    tmp_path: Path,
    emulator: PlatformEmulator,
    key: str,
    scope: str = "all",
    *,
    api: str = "platform-users",
    policy: str = "on_missing: end_date",
) -> SyncdConfig:
    return parse_config(
        CONFIG.replace("SCOPE", scope).replace("EXTRA", policy).replace("API", api),
        origin="test",
        base_dir=tmp_path,
        environ={"URL": emulator.url, "KEY": key},
    )


def write_users(tmp_path: Path, names: list[str], dept: str = "Eng") -> None:
    lines = "".join(f"{name},{dept}\n" for name in names)
    (tmp_path / "users.csv").write_text("email,Department\n" + lines)


class FaultAfterFirstBatch:
    """A progress sink that takes the platform down once the first batch is confirmed."""

    def __init__(self, emulator: PlatformEmulator) -> None:
        self.emulator = emulator
        self.batches = 0

    def start(self, operation: Operation, total: int) -> Callable[[int], None]:
        def advance(count: int) -> None:
            self.batches += 1
            if self.batches == 1:
                self.emulator.set_faults(operation, EndpointFaults(fail_next=100))

        return advance

    def finish(self, operation: Operation) -> None:
        pass


def names(count: int) -> list[str]:
    return [f"user{i:02d}@example.com" for i in range(count)]


def test_run_killed_by_platform_outage_converges_on_the_next_run(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(20))
    progress = FaultAfterFirstBatch(emulator)
    with open_job(config, config.jobs[0], progress=progress, today=lambda: TODAY) as runner:
        result = runner.apply(runner.plan())
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "insert" in result.error
    (outcome,) = result.outcomes
    assert len(outcome.confirmed) == 5
    assert set(outcome.confirmed) == set(emulator.users())
    (record,) = SqliteStateStore(tmp_path / "state").runs("corp")
    assert record.status == "failed"

    emulator.clear_faults()
    emulator.reset_counters()
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
        assert planned.plan is not None
        assert len(planned.plan.inserts) == 15
        assert runner.apply(planned).status is RunStatus.APPLIED
    assert set(emulator.users()) == set(names(20))
    assert emulator.calls()["insert"] == 3
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        final = runner.plan()
    assert final.plan is not None
    assert final.plan.is_empty


def test_scope_owned_adopts_sourced_users_and_spares_hand_made_ones(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users(
        [
            WireUser("user00@example.com", {"department": "Eng"}, "2024-01-01"),
            WireUser("handmade@example.com", {}, "2024-01-01"),
        ]
    )
    config = make_config(tmp_path, emulator, emulator_api_key, scope="owned")
    write_users(tmp_path, names(3))
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        assert runner.apply(runner.plan()).status is RunStatus.APPLIED
    owned = SqliteStateStore(tmp_path / "state").owned_users("corp")
    # user00 was already there, unchanged: adopted all the same.
    assert owned == frozenset(names(3))
    write_users(tmp_path, names(3)[1:])
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
        assert planned.plan is not None
        assert [c.user.end_user for c in planned.plan.ends] == ["user00@example.com"]
        assert planned.plan.untouched_missing == 1
        runner.apply(planned)
    users = emulator.users()
    assert users["user00@example.com"].active_to == TODAY.isoformat()
    assert users["handmade@example.com"].active_to is None


class BrokenSource:
    """A source that fails half-way, as a directory dropping the connection would."""

    label = "ldap"

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        yield SourceUser.from_origin("user00@example.com", make_tags({}), Origin("ldap"))
        raise SourceError("connection reset by peer after 1 entries")


def test_failed_read_is_held_and_the_platform_is_not_even_listed(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users([WireUser(name, {}, "2024-01-01") for name in names(4)])
    config = make_config(tmp_path, emulator, emulator_api_key)
    with open_job(config, config.jobs[0]) as real:
        platform = real._platform  # the real HTTP client, with a broken source in front
        runner = JobRunner(
            config.jobs[0],
            sources=[BrokenSource()],
            platform=platform,
            state=SqliteStateStore(tmp_path / "state"),
        )
        planned = runner.plan(Override(force=True))
        result = runner.apply(planned)
    assert planned.plan is None
    assert result.status is RunStatus.HELD
    assert planned.verdict.reasons == (
        "source ldap could not be read: connection reset by peer after 1 entries",
    )
    assert emulator.calls()["list"] == 0
    assert all(user.active_to is None for user in emulator.users().values())


@pytest.mark.parametrize("api", ["platform-users", "eligible-users"])
def test_both_flavours_sync_the_same_state(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str, api: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key, api=api)
    write_users(tmp_path, names(6))
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        assert runner.apply(runner.plan()).status is RunStatus.APPLIED
    write_users(tmp_path, names(6), dept="Sales")
    emulator.reset_counters()
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        result = runner.apply(runner.plan())
    assert result.status is RunStatus.APPLIED
    assert {u.tags["department"] for u in emulator.users().values()} == {"Sales"}
    update_verb, insert_verb = ("PUT", "POST") if api == "eligible-users" else ("POST", "PUT")
    calls = emulator.calls()
    assert (calls[update_verb], calls[insert_verb], calls["update"]) == (2, 0, 2)


class InterruptAfterFirstBatch:
    """A progress sink that presses Ctrl-C once the first batch is confirmed."""

    def start(self, operation: Operation, total: int) -> Callable[[int], None]:
        def advance(count: int) -> None:
            raise KeyboardInterrupt

        return advance

    def finish(self, operation: Operation) -> None:
        pass


def test_an_interrupted_apply_is_recorded_as_failed_not_applied(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key, scope="owned")
    write_users(tmp_path, names(20))
    with open_job(
        config, config.jobs[0], progress=InterruptAfterFirstBatch(), today=lambda: TODAY
    ) as runner:
        planned = runner.plan()
        with pytest.raises(KeyboardInterrupt):
            runner.apply(planned)
    (record,) = SqliteStateStore(tmp_path / "state").runs("corp")
    assert record.status == "failed"
    assert record.summary["error"] == "interrupted by KeyboardInterrupt"
    # Owned: the users whose insert the platform confirmed before the interruption,
    # not every source user as after a finished run, nor those never written.
    owned = SqliteStateStore(tmp_path / "state").owned_users("corp")
    assert 0 < len(emulator.users()) < 20
    assert owned == frozenset(emulator.users())


def test_a_broken_state_database_stops_the_run_before_any_write(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(3))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "syncd.sqlite3").write_bytes(b"this is not a database" * 100)
    # The plan reads the job's identity rules from the store, so it fails there.
    with (
        open_job(config, config.jobs[0], today=lambda: TODAY) as runner,
        pytest.raises(StateError, match=r"syncd\.sqlite3: file is not a database"),
    ):
        runner.apply(runner.plan())
    assert emulator.users() == {}
    assert emulator.calls()["insert"] == 0


def test_owned_users_are_matched_and_forgotten_whatever_the_platform_spelling(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users([WireUser("User00@Example.com", {"department": "Eng"}, "2024-01-01")])
    config = make_config(
        tmp_path, emulator, emulator_api_key, scope="owned", policy="on_missing: delete"
    )
    write_users(tmp_path, names(2))
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
        assert planned.plan is not None
        assert [c.user.end_user for c in planned.plan.inserts] == ["user01@example.com"]
        runner.apply(planned)
    store = SqliteStateStore(tmp_path / "state")
    assert store.owned_users("corp") == frozenset(names(2))
    write_users(tmp_path, names(2)[1:])
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        result = runner.apply(runner.plan())
    assert result.status is RunStatus.APPLIED
    assert "User00@Example.com" not in emulator.users()
    assert store.owned_users("corp") == frozenset({"user01@example.com"})


def test_purge_deletes_long_ended_users_through_the_api(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users(
        [
            WireUser("old@example.com", {}, "2020-01-01", "2025-01-01"),  # 690 days ago
            WireUser("recent@example.com", {}, "2020-01-01", "2026-10-01"),  # 52 days ago
        ]
    )
    config = make_config(tmp_path, emulator, emulator_api_key, policy="purge_after_days: 365")
    write_users(tmp_path, names(1))
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
        assert planned.plan is not None
        assert [c.reason for c in planned.plan.deletes] == [
            "purge: ended 2025-01-01, more than 365 days ago"
        ]
        assert runner.apply(planned).status is RunStatus.APPLIED
    assert sorted(emulator.users()) == ["recent@example.com", "user00@example.com"]
    assert emulator.calls()["delete"] == 1


# ------------------------------------------------------------------- audit log


def audit_ops(tmp_path: Path, name: str) -> list[str]:
    return [entry.operation for entry in SqliteStateStore(tmp_path / "state").audit([name])]


def apply_once(config: SyncdConfig) -> RunStatus:
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        return runner.apply(runner.plan()).status


def test_every_confirmed_change_is_audited_with_before_and_after(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(3))
    assert apply_once(config) is RunStatus.APPLIED
    # user00 changes department, user01 leaves.
    (tmp_path / "users.csv").write_text(
        "email,Department\nuser00@example.com,Sales\nuser02@example.com,Eng\n"
    )
    assert apply_once(config) is RunStatus.APPLIED
    # user01 comes back.
    (tmp_path / "users.csv").write_text(
        "email,Department\nuser00@example.com,Sales\nuser01@example.com,Eng\n"
        "user02@example.com,Eng\n"
    )
    assert apply_once(config) is RunStatus.APPLIED
    # user02 goes, and this job deletes leavers.
    deleting = make_config(tmp_path, emulator, emulator_api_key, policy="on_missing: delete")
    (tmp_path / "users.csv").write_text(
        "email,Department\nuser00@example.com,Sales\nuser01@example.com,Eng\n"
    )
    assert apply_once(deleting) is RunStatus.APPLIED

    store = SqliteStateStore(tmp_path / "state")
    assert audit_ops(tmp_path, "user00@example.com") == ["insert", "update"]
    assert audit_ops(tmp_path, "user01@example.com") == ["insert", "end", "reactivate"]
    assert audit_ops(tmp_path, "user02@example.com") == ["insert", "delete"]
    inserted, moved = store.audit(["user00@example.com"])
    assert inserted.before is None
    assert inserted.after is not None
    assert dict(inserted.after.tags) == {"department": "Eng"}
    assert moved.before == inserted.after  # one row for the change, before and after
    assert moved.after is not None
    assert dict(moved.after.tags) == {"department": "Sales"}
    _, ended, back = store.audit(["user01@example.com"])
    assert ended.after is not None
    assert ended.after.active_to == TODAY
    assert back.before == ended.after
    assert back.after is not None
    assert back.after.active_to is None
    runs = {record.run_id for record in store.runs("corp")}
    assert {entry.run_id for entry in store.audit(names(3))} <= runs
    deleted = store.audit(["user02@example.com"])[-1]
    assert (deleted.before is not None, deleted.after) == (True, None)


def test_users_the_platform_refused_are_not_audited(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(4))
    emulator.set_faults(
        Operation.INSERT, EndpointFaults(refuse_users=frozenset({"user01@example.com"}))
    )
    assert apply_once(config) is RunStatus.PARTIAL
    assert audit_ops(tmp_path, "user01@example.com") == []
    assert audit_ops(tmp_path, "user00@example.com") == ["insert"]
    store = SqliteStateStore(tmp_path / "state")
    assert len(store.audit(names(4))) == 3


def test_the_confirmed_part_of_a_failed_apply_is_audited(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(20))
    with open_job(
        config, config.jobs[0], progress=FaultAfterFirstBatch(emulator), today=lambda: TODAY
    ) as runner:
        result = runner.apply(runner.plan())
    assert result.status is RunStatus.FAILED
    store = SqliteStateStore(tmp_path / "state")
    audited = store.audit(names(20))
    assert {entry.end_user for entry in audited} == set(emulator.users())
    assert len(audited) == 5
    (record,) = store.runs("corp")
    assert {entry.run_id for entry in audited} == {record.run_id}


def test_the_confirmed_part_of_an_interrupted_apply_is_audited(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(20))
    with open_job(
        config, config.jobs[0], progress=InterruptAfterFirstBatch(), today=lambda: TODAY
    ) as runner:
        planned = runner.plan()
        with pytest.raises(KeyboardInterrupt):
            runner.apply(planned)
    audited = SqliteStateStore(tmp_path / "state").audit(names(20))
    assert {entry.end_user for entry in audited} == set(emulator.users())
    assert 0 < len(audited) < 20


# ------------------------------------------- the state is an optimisation and a record


def test_a_deleted_database_between_runs_still_converges_without_wrong_end_dates(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(6))
    assert apply_once(config) is RunStatus.APPLIED
    write_users(tmp_path, names(5))  # user05 leaves
    assert apply_once(config) is RunStatus.APPLIED
    before = emulator.users()
    (tmp_path / "state" / "syncd.sqlite3").unlink()
    emulator.reset_counters()
    assert apply_once(config) is RunStatus.APPLIED
    assert emulator.users() == before
    assert emulator.calls()["update"] == emulator.calls()["insert"] == 0
    ended = {name for name, u in emulator.users().items() if u.active_to is not None}
    assert ended == {"user05@example.com"}
    # The new database starts a new history, and the next change is audited again.
    write_users(tmp_path, names(4))
    assert apply_once(config) is RunStatus.APPLIED
    assert audit_ops(tmp_path, "user04@example.com") == ["end"]


def test_scope_owned_forgets_what_it_owns_with_its_database_and_removes_less(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users([WireUser("handmade@example.com", {}, "2024-01-01")])
    config = make_config(tmp_path, emulator, emulator_api_key, scope="owned")
    write_users(tmp_path, names(3))
    assert apply_once(config) is RunStatus.APPLIED
    (tmp_path / "state" / "syncd.sqlite3").unlink()
    write_users(tmp_path, names(3)[1:])  # user00 leaves while the job remembers nothing
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
        assert planned.plan is not None
        assert planned.plan.removals == 0  # fewer removals, never more
        assert runner.apply(planned).status is RunStatus.APPLIED
    users = emulator.users()
    assert users["user00@example.com"].active_to is None
    assert users["handmade@example.com"].active_to is None
    # It adopted what its source lists again, and manages those from now on.
    owned = SqliteStateStore(tmp_path / "state").owned_users("corp")
    assert owned == frozenset(names(3)[1:])


def test_a_locked_database_stops_the_run_before_any_write_naming_the_file(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = make_config(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(3))
    store = SqliteStateStore(tmp_path / "state", busy_timeout=0.2)
    store.ensure_writable()
    with open_job(config, config.jobs[0], today=lambda: TODAY) as real:
        runner = JobRunner(
            config.jobs[0], sources=real._sources, platform=real._platform, state=store
        )
        planned = runner.plan()
        with sqlite3.connect(store.path, isolation_level=None) as holder:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StateError, match=r"syncd\.sqlite3 is locked by another process"):
                runner.apply(planned)
            holder.execute("ROLLBACK")
        holder.close()
    assert emulator.users() == {}
    assert emulator.calls()["insert"] == 0


# ------------------------------------------------ plan side: the guard's history


CSV_SOURCE = "{type: csv, path: users.csv, id_column: email, tags: {department: Department}}"


def config_with(
    tmp_path: Path,
    emulator: PlatformEmulator,
    key: str,
    *,
    guard: str = "{max_removal_ratio: null}",
    identity: str = "{lowercase: true}",
    source: str = CSV_SOURCE,
) -> SyncdConfig:
    text = (
        CONFIG.replace("SCOPE", "all")
        .replace("EXTRA", "on_missing: end_date")
        .replace("API", "platform-users")
        .replace(
            "    guard: {max_removal_ratio: null}", f"    guard: {guard}\n    identity: {identity}"
        )
        .replace(f"      - {CSV_SOURCE}", f"      - {source}")
    )
    return parse_config(
        text, origin="test", base_dir=tmp_path, environ={"URL": emulator.url, "KEY": key}
    )


def apply_and_remember(config: SyncdConfig, override: Override | None = None) -> RunStatus:
    """An apply, whose identity rules become the job's reference when it writes."""
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        return runner.apply(runner.plan(override)).status


def test_a_first_run_records_the_identity_rules_without_holding(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = config_with(tmp_path, emulator, emulator_api_key)
    write_users(tmp_path, names(3))
    assert SqliteStateStore(tmp_path / "state").job_rules("corp") is None
    assert apply_and_remember(config) is RunStatus.APPLIED
    assert SqliteStateStore(tmp_path / "state").job_rules("corp") == {
        "lowercase": True,
        "normalisation": "trim+nfc+printable",
        "sources": {"users.csv": {"type": "csv", "id_column": "email"}},
    }


@pytest.mark.parametrize(
    ("identity", "source", "change"),
    [
        (
            "{lowercase: false}",
            None,
            "identity.lowercase: true -> false",
        ),
        (
            "{lowercase: true}",
            "{type: csv, path: users.csv, id_column: upn, tags: {department: Department}}",
            "source users.csv id_column: 'email' -> 'upn'",
        ),
    ],
)
def test_changed_identity_rules_are_held_instead_of_renaming_everyone(
    tmp_path: Path,
    emulator: PlatformEmulator,
    emulator_api_key: str,
    identity: str,
    source: str | None,
    change: str,
) -> None:
    config = config_with(tmp_path, emulator, emulator_api_key)
    people = [f"User{i:02d}@Example.com" for i in range(6)]
    (tmp_path / "users.csv").write_text(
        "email,upn,Department\n"
        + "".join(f"{name},{name.split('@')[0]}@corp.example,Eng\n" for name in people)
    )
    assert apply_and_remember(config) is RunStatus.APPLIED
    before = emulator.users()
    emulator.reset_counters()
    changed = config_with(
        tmp_path,
        emulator,
        emulator_api_key,
        identity=identity,
        **({"source": source} if source else {}),
    )
    with open_job(changed, changed.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
        assert planned.plan is not None
        # Applied as it is, this would end 6 users and insert the same 6 people again.
        assert (len(planned.plan.ends), len(planned.plan.inserts)) == (6, 6)
        assert planned.verdict.held
        assert planned.verdict.reasons[0] == (
            "the identity rules changed since the last applied run, so the same people "
            f"would get other end_users (ended, then inserted again): {change}; the plan "
            "ends or deletes 6 and inserts 6 users: "
        ) + "; ".join(planned.plan.inserts[i].user.end_user for i in range(5)) + (
            "; ... and 1 more"
        )
        assert "--accept-identity-rules" in planned.verdict.options
        result = runner.apply(planned)
    assert result.status is RunStatus.HELD
    assert emulator.users() == before
    assert sum(emulator.calls()[name] for name in ("insert", "update", "delete")) == 0
    # Held runs leave the reference alone; an accepted one makes the new rules it.
    accepted = Override(accept_identity_rules=True)
    assert apply_and_remember(changed, accepted) is RunStatus.APPLIED
    with open_job(changed, changed.jobs[0], today=lambda: TODAY) as runner:
        assert not runner.plan().verdict.held


def test_removals_of_the_last_24_hours_count_against_the_daily_budget(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = config_with(
        tmp_path,
        emulator,
        emulator_api_key,
        guard="{max_removal_ratio: null, max_removals_per_day: 5}",
    )
    write_users(tmp_path, names(20))
    assert apply_and_remember(config) is RunStatus.APPLIED
    write_users(tmp_path, names(17))  # 3 leave: within the budget
    assert apply_and_remember(config) is RunStatus.APPLIED
    assert (
        SqliteStateStore(tmp_path / "state").removals_since(
            "corp", datetime.now(UTC) - timedelta(days=1)
        )
        == 3
    )
    write_users(tmp_path, names(14))  # 3 more: 6 in a day
    emulator.reset_counters()
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
        result = runner.apply(planned)
    assert result.status is RunStatus.HELD
    assert planned.verdict.reasons == (
        "3 removals confirmed in the last 24 hours plus 3 in this plan exceed "
        "max_removals_per_day=5: user14@example.com; user15@example.com; user16@example.com",
    )
    assert emulator.calls()["update"] == 0
    assert apply_and_remember(config, Override(allow_removals=3)) is RunStatus.APPLIED


def test_a_start_date_years_ahead_is_a_bad_record_naming_its_line(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    config = config_with(
        tmp_path,
        emulator,
        emulator_api_key,
        source="{type: csv, path: users.csv, id_column: email, active_from_column: start}",
    )
    (tmp_path / "users.csv").write_text(
        "email,start\nsoon@example.com,2027-06-01\nlater@example.com,2028-01-01\n"
    )
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
    assert list(planned.desired.users) == ["soon@example.com"]
    (problem,) = planned.desired.problems
    assert str(problem) == (
        "users.csv:3: active_from 2028-01-01 is implausibly far in the future (after 2027-11-23, "
        "guard.max_start_days_ahead)"
    )
    assert [(s.users, s.problems) for s in planned.desired.sources] == [(1, 1)]
    assert planned.verdict.held


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    local_parts=st.lists(
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8),
        min_size=1,
        max_size=6,
    )
)
def test_no_identifier_with_an_unusable_character_is_ever_written(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str, local_parts: list[str]
) -> None:
    # Forced through, so the good rows are written next to the bad ones; users of
    # earlier examples stay (on_missing: ignore) and are checked again.
    config = make_config(tmp_path, emulator, emulator_api_key, policy="on_missing: ignore")
    with (tmp_path / "users.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "Department"])
        writer.writerows([f"{part}@example.com", "Eng"] for part in local_parts)
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        runner.apply(runner.plan(Override(force=True)))
    on_platform = emulator.users()
    for name in on_platform:
        assert unusable_character(name) is None, name
    # ... and the check is not vacuous: every good, unique row was written.
    mapper = RecordMapper(id_field="email")
    built: list[str] = []
    for part in local_parts:
        try:
            built.append(mapper.build(Origin("users.csv", 2), f"{part}@example.com").end_user)
        except ValueError:
            continue
    for name in built:
        if built.count(name) == 1:
            assert name in on_platform


def test_an_empty_secondary_source_holds_only_when_it_would_cost_someone_access(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    contractors = "{type: csv, name: contractors, path: contractors.csv, id_column: email}"
    text = (
        CONFIG.replace("SCOPE", "all")
        .replace("EXTRA", "on_missing: end_date")
        .replace("API", "platform-users")
        .replace(f"      - {CSV_SOURCE}", f"      - {CSV_SOURCE}\n      - {contractors}")
    )
    config = parse_config(
        text,
        origin="test",
        base_dir=tmp_path,
        environ={"URL": emulator.url, "KEY": emulator_api_key},
    )
    write_users(tmp_path, names(5))
    (tmp_path / "contractors.csv").write_text("email\n")  # no contractor yet: fine
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        assert runner.apply(runner.plan()).status is RunStatus.APPLIED
    assert len(emulator.users()) == 5
    write_users(tmp_path, names(4))  # user04 is gone, and the second source is empty
    with open_job(config, config.jobs[0], today=lambda: TODAY) as runner:
        planned = runner.plan()
    assert planned.verdict.reasons == (
        "source contractors returned no users and the plan removes 1 active users missing "
        "from the sources: user04@example.com",
    )


def test_listed_users_are_handed_to_the_plan_in_order_and_dropped_as_they_go() -> None:
    from datetime import date as _date

    from syncd.model import PlatformUser
    from syncd.runner import _consumed

    users = [PlatformUser(f"u{i}@x.com", (), _date(2026, 1, 1)) for i in range(5)]
    expected = list(users)
    handed = _consumed(users)
    assert next(handed) is expected[0]
    # The list no longer holds what was handed out (nor anything in front of it).
    assert expected[0] not in users
    assert len(users) == 5  # four users left, plus the sentinel
    assert [*handed] == expected[1:]
    assert users == []


def noting(
    operation: str, write: Callable[..., object], writes: list[tuple[str, int, bool]]
) -> Callable[..., object]:
    """``write``, with each call's operation, size and ``distinct`` added to ``writes``."""

    def noted(items: Sequence[object], progress: object = None, **options: object) -> object:
        writes.append((operation, len(items), bool(options.get("distinct"))))
        return write(items, progress, **options)

    return noted


def test_a_plans_writes_go_out_as_distinct_through_the_plan_file_port(
    tmp_path: Path,
    emulator: PlatformEmulator,
    emulator_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A plan names each end_user once, so the runner spares the client its check of
    # every name; the plan-file port in between passes that on.
    emulator.seed_users([WireUser(name, {"department": "Eng"}, "2024-01-01") for name in names(4)])
    config = make_config(tmp_path, emulator, emulator_api_key, policy="on_missing: delete")
    staying = names(5)[1:]  # user00 leaves, user04 joins, the rest move to Sales
    write_users(tmp_path, staying, dept="Sales")
    writes: list[tuple[str, int, bool]] = []
    with open_job(config, config.jobs[0], today=lambda: TODAY) as real:
        client = real._platform  # the real HTTP client, its writes noted on the way
        for operation in ("insert", "update", "delete"):
            monkeypatch.setattr(
                client, operation, noting(operation, getattr(client, operation), writes)
            )
        runner = JobRunner(
            config.jobs[0],
            sources=real._sources,
            platform=FingerprintingPlatform(client),
            state=SqliteStateStore(tmp_path / "state"),
            today=lambda: TODAY,
        )
        result = runner.apply(runner.plan(Override(force=True)))
    assert result.status is RunStatus.APPLIED
    assert writes == [("insert", 1, True), ("update", 3, True), ("delete", 1, True)]
    assert set(emulator.users()) == set(staying)
