"""Run summaries, redaction and the /status document (real runs over the emulator)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from msgspec.structs import replace

from syncd.config import SyncdConfig, parse_config
from syncd.daemon.status import (
    JobState,
    RunSummary,
    apply_command,
    history_rows,
    redact,
    status_document,
)
from syncd.emulator import PlatformEmulator, make_users
from syncd.ports import RunRecord
from syncd.service import run_job
from tests.daemon.support import job_yaml

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 0, 3, tzinfo=UTC)


def _config(tmp_path: Path, url: str, csv_text: str, max_removals: int = 5) -> SyncdConfig:
    csv = tmp_path / "users.csv"
    csv.write_text(csv_text, encoding="utf-8")
    text = f"state_dir: {tmp_path / 'state'}\njobs:" + job_yaml(
        "corp", url, csv, max_removals=max_removals
    )
    return parse_config(text, origin="test.yaml", base_dir=tmp_path)


def _summary(config: SyncdConfig, config_path: Path) -> RunSummary:
    report = run_job(config, config.jobs[0], apply=True)
    return RunSummary.from_report(report, started_at=T0, finished_at=T1, config_path=config_path)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (
            "2 source record(s) could not be used: users.csv:3: empty id; users.csv:9: "
            "bad date for 'bob@x.com' (while the read is incomplete the plan ends and "
            "deletes nobody)",
            "2 source record(s) could not be used (while the read is incomplete the plan "
            "ends and deletes nobody)",
        ),
        (
            "1 duplicate end_user(s) across source records: end_user 'al@x.com' appears 2 "
            "times: a.csv:2, b.csv:4",
            "1 duplicate end_user(s) across source records",
        ),
        (
            "15 removals (end-dates + deletes) exceed max_removals=5",
            "15 removals (end-dates + deletes) exceed max_removals=5",
        ),
        (
            "list: the platform returned user 'carol@x.com' with an invalid active_from",
            "list: the platform returned user '…' with an invalid active_from",
        ),
        ("write of dave@x.com refused", "write of <user> refused"),
        (
            "entry uid=jdoe,ou=people,dc=corp,dc=example has no mail",
            "entry <dn> has no mail",
        ),
    ],
)
def test_redact_keeps_counts_and_drops_user_ids(reason: str, expected: str) -> None:
    assert redact(reason) == expected


def test_a_held_run_is_summarised_with_the_command_that_passes_it(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    emulator.seed_users(make_users(20))
    names = [f"user{i:07d}@example.com" for i in range(5)]
    rows = "".join(f"{name},eng\n" for name in names)
    config = _config(tmp_path, emulator.url, "email,department\n" + rows)
    summary = _summary(config, Path("/etc/syncd conf.yaml"))
    assert summary.status == "held"
    assert summary.exit_code == 3
    # Both holds, in one command: the 15 ends, and the 5 users losing their region tag
    # (5 of 20 is above max_destructive_update_ratio); either option alone would not pass.
    assert summary.command == (
        "syncd apply -c '/etc/syncd conf.yaml' --job corp --allow-removals 15 --allow-updates 5"
    )
    assert summary.counts["end"] == 15
    assert summary.source_users == {"users.csv": 5}
    assert summary.platform_users == 20
    assert summary.confirmed == {}
    assert summary.duration_s == 3.0
    text = str(summary.to_json())
    assert "@example.com" not in text


def test_a_partial_read_is_passed_with_force_and_names_no_user(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    config = _config(
        tmp_path, emulator.url, "email,department\nok@corp.example,eng\n,eng\nok@corp.example,x\n"
    )
    summary = _summary(config, Path("/c.yaml"))
    assert summary.status == "held"
    assert summary.command == "syncd apply -c /c.yaml --job corp --force"
    assert "corp.example" not in str(summary.to_json())


def test_a_failed_source_cannot_be_passed(tmp_path: Path, emulator: PlatformEmulator) -> None:
    config = _config(tmp_path, emulator.url, "")
    (tmp_path / "users.csv").unlink()
    summary = _summary(config, Path("/c.yaml"))
    assert summary.status == "held"
    assert summary.command is None
    assert summary.source_users == {}
    assert summary.platform_users is None


def test_an_applied_run_counts_what_was_confirmed(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    config = _config(tmp_path, emulator.url, "email,department\na@c.example,x\nb@c.example,y\n")
    summary = _summary(config, Path("/c.yaml"))
    assert summary.status == "applied"
    assert summary.confirmed == {"insert": 2}
    assert summary.command is None
    assert (
        apply_command(Path("/c.yaml"), "corp", run_job(config, config.jobs[0], apply=True)) is None
    )


def test_job_state_keeps_one_summary_and_counts_held_cycles(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    emulator.seed_users(make_users(20))
    config = _config(tmp_path, emulator.url, "email,department\n")
    state = JobState("corp", "every 1s")
    for _ in range(3):
        state.finished(_summary(config, Path("/c.yaml")))
    assert state.held_cycles == 3
    assert state.by_status == {"held": 3}
    document = status_document([state], version="9", started_at=T0, now=T1)
    assert document["jobs"][0]["held_cycles"] == 3
    assert document["jobs"][0]["last_run"]["status"] == "held"
    # The source now lists the platform's 20 users as they are (one tag, department):
    # a run that passes resets the count of held cycles.
    same = [replace(user, tags={"department": "x"}) for user in make_users(20)]
    emulator.seed_users(same)
    (tmp_path / "users.csv").write_text(
        "email,department\n" + "".join(f"{user.end_user},x\n" for user in same)
    )
    state.finished(_summary(config, Path("/c.yaml")))
    assert state.last is not None
    assert state.last.status == "applied"
    assert state.held_cycles == 0
    assert state.runs == 4


def test_history_rows_keep_counts_only() -> None:
    record = RunRecord(
        "r1", "corp", T0, T1, "held",
        {"end": 15, "insert": 0, "held_because": ["1 duplicate: 'x@y.z'"], "write_calls": 0},
    )  # fmt: skip
    rows = history_rows([record])
    assert rows == [
        {
            "run_id": "r1",
            "started_at": T0,
            "duration_s": 3.0,
            "status": "held",
            "counts": {"insert": 0, "end": 15},
            "write_calls": 0,
            "failures": 0,
        }
    ]


def test_a_busy_run_leaves_the_held_count_alone() -> None:
    def summary(status: str) -> RunSummary:
        return RunSummary(status, 3, "r", T0, T1, {}, {}, None, {}, 0, 0, (), None, None)

    state = JobState("corp", "every 1s")
    state.finished(summary("held"))
    state.finished(summary("busy"))
    assert state.held_cycles == 1
    assert state.by_status == {"held": 1, "busy": 1}
    state.finished(summary("applied"))
    assert state.held_cycles == 0


def test_a_run_that_did_not_end_has_no_duration_on_the_page() -> None:
    rows = history_rows([RunRecord("r1", "corp", T0, T1, "interrupted", {})])
    assert rows[0]["duration_s"] is None
    assert [
        row["duration_s"] for row in history_rows([RunRecord("r2", "corp", T0, T1, "applied", {})])
    ] == [3.0]
