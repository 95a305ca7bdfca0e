"""End-to-end: the ``syncd`` command as a subprocess, against the emulator over HTTP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.platform.api import Operation, WireUser
from syncd.sources.csv.parts import usable_cpus
from syncd.state import SqliteStateStore

HEADER = "email,Department,Country,start_date,end_date,enabled\n"
CONFIG = """
state_dir: ./state
log: {{format: json, level: info}}
jobs:
  - name: corp
    target:
      base_url: {url}
      api: {api}
      api_key: ${{NEBULY_API_KEY}}
      batch_size: {batch}
      max_retries: 1
      timeout_s: 5
    sources:
      - type: csv
        path: users.csv
        id_column: email
        tags: {{department: Department, region: Country}}
        active_from_column: start_date
        active_to_column: end_date
        enabled_column: enabled
    policy:
      on_missing: {on_missing}
      scope: {scope}
    guard:
      max_removals: {max_removals}
      max_removal_ratio: null
"""


def rows(count: int, *, start: int = 0, dept: str = "Eng") -> str:
    return "".join(
        f"user{i}@example.com,{dept},DE,2024-01-{1 + i % 28:02d},,true\n"
        for i in range(start, start + count)
    )


class Workspace:
    """A config file, a users.csv and an API key, next to a running emulator."""

    def __init__(self, path: Path, emulator: PlatformEmulator, api_key: str) -> None:
        self.path = path
        self.emulator = emulator
        self.api_key = api_key
        self.csv = path / "users.csv"
        self.config = path / "syncd.yaml"
        self.write_config()

    def write_config(
        self,
        *,
        api: str = "platform-users",
        batch: int = 5,
        on_missing: str = "end_date",
        scope: str = "all",
        max_removals: int = 100,
        url: str | None = None,
    ) -> None:
        self.config.write_text(
            CONFIG.format(
                url=url or self.emulator.url,
                api=api,
                batch=batch,
                on_missing=on_missing,
                scope=scope,
                max_removals=max_removals,
            )
        )

    def write_users(self, text: str) -> None:
        self.csv.write_text(HEADER + text, encoding="utf-8")

    def run(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
        env["NEBULY_API_KEY"] = key if key is not None else self.api_key
        env["COLUMNS"] = "200"
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.path,
            timeout=60,
            check=False,
        )

    def apply(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-c", str(self.config), *args)

    def start_apply(self, **popen: object) -> subprocess.Popen[str]:
        """``syncd apply`` as a child that the test stops (a signal, a kill)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
        env["NEBULY_API_KEY"] = self.api_key
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            [sys.executable, "-m", "syncd", "apply", "-c", str(self.config)],
            text=True,
            env=env,
            **popen,
        )

    def writes(self) -> dict[str, int]:
        calls = self.emulator.calls()
        return {name: calls[name] for name in ("insert", "update", "delete")}


@pytest.fixture
def workspace(tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str) -> Workspace:
    return Workspace(tmp_path, emulator, emulator_api_key)


def test_apply_then_reapply_makes_zero_writes(workspace: Workspace) -> None:
    workspace.write_users(rows(12))
    first = workspace.apply()
    assert first.returncode == 0, first.stderr
    assert len(workspace.emulator.users()) == 12
    assert workspace.writes() == {"insert": 3, "update": 0, "delete": 0}  # ceil(12/5)
    workspace.emulator.reset_counters()
    second = workspace.apply()
    assert second.returncode == 0, second.stderr
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    assert "nothing to change" in second.stdout


@pytest.mark.parametrize("api", ["platform-users", "eligible-users"])
@pytest.mark.parametrize("batch", [1, 4, 7])
def test_write_calls_are_ceil_of_changes_over_batch_size(
    workspace: Workspace, api: str, batch: int
) -> None:
    workspace.write_config(api=api, batch=batch, on_missing="delete")
    workspace.write_users(rows(20))
    assert workspace.apply().returncode == 0
    # 6 change department, 3 end by date, 4 vanish (deleted), 2 join.
    changed = rows(6, dept="Sales")
    ended = "".join(
        f"user{i}@example.com,Eng,DE,2024-01-{1 + i % 28:02d},2026-01-31,true\n"
        for i in range(6, 9)
    )
    workspace.write_users(changed + ended + rows(7, start=9) + rows(2, start=100))
    workspace.emulator.reset_counters()
    result = workspace.apply("--allow-removals", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    assert workspace.writes() == {
        "insert": math.ceil(2 / batch),
        "update": math.ceil((6 + 3) / batch),
        "delete": math.ceil(4 / batch),
    }
    users = workspace.emulator.users()
    assert users["user0@example.com"].tags == {"department": "Sales", "region": "DE"}
    assert users["user7@example.com"].active_to == "2026-01-31"
    assert "user19@example.com" not in users
    assert "user100@example.com" in users


def test_plan_writes_nothing_and_prints_json(workspace: Workspace) -> None:
    workspace.emulator.seed_users(
        [WireUser("old@example.com", {"department": "Eng"}, "2023-01-01")]
    )
    workspace.write_users(rows(3))
    result = workspace.run("plan", "-c", str(workspace.config), "--output", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (job,) = document["jobs"]
    assert job["counts"]["insert"] == 3
    assert job["counts"]["end"] == 1
    inserted = {c["end_user"]: c["user"] for c in job["changes"] if c["kind"] == "insert"}
    assert inserted["user0@example.com"] == {
        "end_user": "user0@example.com",
        "tags": {"department": "Eng", "region": "DE"},
        "active_from": "2024-01-01",
    }
    ended = [c for c in job["changes"] if c["kind"] == "end"]
    assert ended[0]["end_user"] == "old@example.com"
    assert ended[0]["fields"][0]["field"] == "active_to"
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    assert len(workspace.emulator.users()) == 1


def test_mass_removal_is_held_with_exit_3_and_can_be_allowed(workspace: Workspace) -> None:
    workspace.write_config(max_removals=3)
    workspace.write_users(rows(10))
    assert workspace.apply().returncode == 0
    workspace.write_users(rows(5))
    workspace.emulator.reset_counters()
    held = workspace.apply()
    assert held.returncode == 3
    assert "HELD by the guard" in held.stdout
    assert "5 removals (end-dates + deletes) exceed max_removals=3" in held.stdout
    assert "--allow-removals 5" in held.stdout
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    assert workspace.run("plan", "-c", str(workspace.config)).returncode == 3
    too_few = workspace.apply("--allow-removals", "4")
    assert too_few.returncode == 3
    allowed = workspace.apply("--allow-removals", "5")
    assert allowed.returncode == 0, allowed.stdout
    ended = [u for u in workspace.emulator.users().values() if u.active_to]
    assert len(ended) == 5


def test_empty_source_is_held_and_nothing_is_ended(workspace: Workspace) -> None:
    workspace.write_users(rows(4))
    assert workspace.apply().returncode == 0
    workspace.write_users("")
    result = workspace.apply()
    assert result.returncode == 3
    assert "returned no users while the platform has 4" in result.stdout
    assert all(u.active_to is None for u in workspace.emulator.users().values())
    forced = workspace.apply("--force")
    assert forced.returncode == 0
    assert all(u.active_to for u in workspace.emulator.users().values())


def test_bad_rows_hold_the_run_and_forcing_never_removes(workspace: Workspace) -> None:
    workspace.write_users(rows(4))
    assert workspace.apply().returncode == 0
    # user1 has a bad date: it must not be read as "gone"; user3 changed department.
    text = (
        rows(1)
        + "user1@example.com,Eng,DE,2024-13-45,,true\n"
        + rows(1, start=2)
        + "user3@example.com,Sales,DE,2024-01-04,,true\n"
    )
    workspace.write_users(text)
    workspace.emulator.reset_counters()
    held = workspace.apply()
    assert held.returncode == 3
    assert "users.csv:3" in held.stdout
    assert "2024-13-45" in held.stdout
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    forced = workspace.apply("--force")
    assert forced.returncode == 0, forced.stdout
    users = workspace.emulator.users()
    assert users["user3@example.com"].tags["department"] == "Sales"
    assert all(u.active_to is None for u in users.values())


def test_duplicate_users_fail_the_job_naming_both_lines(workspace: Workspace) -> None:
    workspace.write_users(rows(2) + "USER0@example.com ,Ops,DE,2024-01-01,,true\n")
    result = workspace.apply()
    assert result.returncode == 3
    assert "end_user 'user0@example.com' appears 2 times: users.csv:2, users.csv:4" in result.stdout
    assert workspace.emulator.users() == {}


def test_per_user_failures_exit_4_and_are_named(workspace: Workspace) -> None:
    workspace.emulator.set_faults(
        Operation.INSERT, EndpointFaults(refuse_users=frozenset({"user2@example.com"}))
    )
    workspace.write_users(rows(4))
    result = workspace.apply()
    assert result.returncode == 4, result.stdout
    assert "user2@example.com: not confirmed by the platform" in result.stdout
    assert set(workspace.emulator.users()) == {f"user{i}@example.com" for i in (0, 1, 3)}
    workspace.emulator.clear_faults()
    assert workspace.apply().returncode == 0
    assert len(workspace.emulator.users()) == 4


def test_wrong_api_key_fails_with_exit_1_and_no_secret(workspace: Workspace) -> None:
    workspace.write_users(rows(2))
    result = workspace.run("apply", "-c", str(workspace.config), key="wrong-key-xyz")
    assert result.returncode == 1
    assert "401" in result.stderr
    assert "wrong-key-xyz" not in result.stdout + result.stderr


def test_unreachable_platform_fails_with_exit_1(workspace: Workspace, unused_port: int) -> None:
    workspace.write_config(url=f"http://127.0.0.1:{unused_port}")
    workspace.write_users(rows(2))
    result = workspace.apply()
    assert result.returncode == 1
    assert "job corp failed" in result.stderr


def test_config_errors_exit_2(workspace: Workspace) -> None:
    workspace.config.write_text("jobs: []\n")
    result = workspace.apply()
    assert result.returncode == 2
    assert "jobs: Tuple should have at least 1 item" in result.stderr
    missing_column = workspace.run("plan", "-c", str(workspace.path / "nope.yaml"))
    assert missing_column.returncode == 2
    assert "cannot read config file" in missing_column.stderr
    no_config = workspace.run("plan")
    assert no_config.returncode == 2
    assert "pass --config FILE or set SYNCD_CONFIG" in no_config.stderr


def test_unknown_column_is_a_clear_error_with_no_write(workspace: Workspace) -> None:
    workspace.csv.write_text("mail,Department\nx@example.com,Eng\n")
    result = workspace.apply()
    assert result.returncode == 3
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert (
        "mapped columns 'email', 'Country', 'start_date', 'end_date', 'enabled' "
        "not found in the header (line 1)"
    ) in out
    assert "'mail', 'Department'" in out
    assert "cannot be forced" in out
    assert workspace.emulator.calls()["list"] == 0
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}


def test_syncd_config_env_is_the_default(workspace: Workspace) -> None:
    workspace.write_users(rows(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env |= {"SYNCD_CONFIG": str(workspace.config), "NEBULY_API_KEY": workspace.api_key}
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "plan"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "insert" in result.stdout


def test_check_config_masks_the_key(workspace: Workspace) -> None:
    result = workspace.run("check-config", "-c", str(workspace.config))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["jobs"][0]["target"]["api_key"] == "**********"
    assert workspace.api_key not in result.stdout + result.stderr


def test_logs_are_json_lines_with_run_id_and_no_secret(workspace: Workspace) -> None:
    workspace.write_users(rows(2))
    result = workspace.apply()
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    finished = [line for line in lines if line["event"] == "run.finished"]
    assert finished
    assert finished[0]["status"] == "applied"
    assert all(line["event"] != "platform call" for line in lines)  # debug is off
    # Every line of the run, the write threads' included, carries the same run_id.
    assert {line.get("run_id") for line in lines} == {finished[0]["run_id"]}
    assert workspace.api_key not in result.stderr


def test_debug_lines_from_write_threads_carry_the_run_id(workspace: Workspace) -> None:
    workspace.config.write_text(workspace.config.read_text().replace("level: info", "level: debug"))
    workspace.write_users(rows(12))
    result = workspace.apply()
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    calls = [line for line in lines if line["event"] == "platform call"]
    assert len(calls) == 1 + 3  # the GET and ceil(12 / 5) inserts
    assert {line.get("run_id") for line in lines} == {calls[0]["run_id"]}


def test_an_unusable_api_key_is_a_config_error(workspace: Workspace) -> None:
    workspace.write_users(rows(1))
    for command in ("check-config", "plan"):
        result = workspace.run(command, "-c", str(workspace.config), key="sk broken\n")
        assert result.returncode == 2, result.stderr
        assert "printable ASCII" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("signum", "code", "message"),
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "interrupted (Ctrl-C)")],
)
def test_a_signal_during_apply_stops_at_once_and_records_what_was_written(
    workspace: Workspace, signum: int, code: int, message: str
) -> None:
    workspace.write_config(batch=1)
    workspace.write_users(rows(40))
    workspace.emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=50))
    with workspace.start_apply(stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        deadline = time.monotonic() + 30
        while len(workspace.emulator.users()) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        # The platform now throttles with a long Retry-After: the signal must not wait.
        workspace.emulator.set_faults(
            Operation.INSERT, EndpointFaults(throttle_next=1000, retry_after_s=15)
        )
        time.sleep(0.3)
        signalled = time.monotonic()
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
        stopped_after = time.monotonic() - signalled
    assert process.returncode == code, stderr
    assert message in stderr
    assert stopped_after < 5, stopped_after
    written = len(workspace.emulator.users())
    assert 0 < written < 40
    (record,) = SqliteStateStore(workspace.path / "state").runs("corp")
    assert record.status == "failed"
    assert "interrupted" in str(record.summary["error"])
    assert record.summary["write_calls"] >= written  # the confirmed batches were kept


def test_a_run_killed_outright_leaves_its_run_and_what_was_confirmed_in_the_audit_log(
    workspace: Workspace,
) -> None:
    workspace.write_config(batch=1)
    workspace.write_users(rows(60))
    workspace.emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=200))
    store = SqliteStateStore(workspace.path / "state")
    with workspace.start_apply(
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    ) as process:
        try:
            deadline = time.monotonic() + 30
            # Killed once the audit log holds some of the confirmed inserts (the journal
            # writes at least every second while batches are answered).
            while time.monotonic() < deadline and process.poll() is None:
                audited = store.audit([f"user{i}@example.com" for i in range(60)])
                if audited and len(workspace.emulator.users()) < 45:
                    break
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    time.sleep(0.5)  # requests the killed process had sent land meanwhile
    (killed,) = store.runs("corp")
    assert killed.status == "running"
    assert killed.summary["insert"] == 60  # its plan, recorded before the first write
    names = {e.end_user for e in store.audit([f"user{i}@example.com" for i in range(60)])}
    on_platform = set(workspace.emulator.users())
    assert names
    assert names <= on_platform  # an entry only for what the platform confirmed
    assert len(on_platform) < 60

    assert workspace.apply().returncode == 0
    latest, previous = store.runs("corp")
    assert (latest.status, previous.run_id, previous.status) == (
        "applied",
        killed.run_id,
        "interrupted",
    )
    assert "the end of this run was never recorded" in str(previous.summary["error"])
    entries = store.audit([f"user{i}@example.com" for i in range(60)])
    by_run = {e.end_user: e.run_id for e in entries}
    assert len(entries) == len(by_run)  # nobody audited twice
    assert {name for name, run in by_run.items() if run == latest.run_id} == (
        {f"user{i}@example.com" for i in range(60)} - on_platform
    )


def test_scope_owned_leaves_hand_made_users_alone(workspace: Workspace) -> None:
    workspace.write_config(scope="owned")
    workspace.emulator.seed_users([WireUser("handmade@example.com", {}, "2023-01-01")])
    workspace.write_users(rows(3))
    assert workspace.apply().returncode == 0
    workspace.write_users(rows(2))
    assert workspace.apply().returncode == 0
    users = workspace.emulator.users()
    assert users["handmade@example.com"].active_to is None
    assert users["user2@example.com"].active_to is not None


def test_demo_runs_three_times_and_ends_with_zero_writes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.pop("NEBULY_API_KEY", None)
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    runs = out.split("Run ")
    # 21 rows, one disabled and never synced: ceil(20 / 5) insert calls.
    assert "emulator saw write calls: insert=4, update=0, delete=0" in runs[1]
    assert "joan.clarke@example.com" in runs[2]
    assert "emulator saw write calls: insert=1, update=1, delete=0" in runs[2]
    assert "emulator saw write calls: insert=0, update=0, delete=0" in runs[3]
    assert "Demo done." in out
    # It ends with an activation report of its own users: one contractor is leakage.
    assert "active but never eligible (leakage): 1: contractor@example.com" in runs[3]
    assert list(tmp_path.iterdir()) == []  # the demo leaves nothing behind


def test_version_and_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for command in ("plan", "apply", "check-config", "emulator", "demo"):
        assert command in result.stdout
    # Plain click help (no rich panels), each command's summary whole: click alone would
    # cut it to the width left after the longest name ("... write...").
    assert result.stdout.startswith("Usage: python -m syncd [OPTIONS] COMMAND [ARGS]...")
    assert "╭" not in result.stdout
    summaries = " ".join(result.stdout.split())
    assert "plan Show what a sync would change on the live platform; write nothing." in summaries
    assert "(container HEALTHCHECK)." in summaries


def test_a_usage_error_names_the_option_in_plain_text() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "plan", "--xyzzy"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Usage: python -m syncd plan [OPTIONS]",
        "Try 'python -m syncd plan --help' for help.",
        "",
        "Error: No such option: --xyzzy",
    ]


def test_the_0_1_emulator_command_line_still_serves_the_platform(tmp_path: Path) -> None:
    env = {**os.environ, "SYNCD_EMULATOR_API_KEY": "sk-legacy"}
    with subprocess.Popen(
        [sys.executable, "-m", "syncd", "emulator", "--port", "0", "--users", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        cwd=tmp_path,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith("syncd emulator listening on http://127.0.0.1:"), line
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0
    assert "deprecated; use 'syncd emulator platform OPTIONS'" in stderr


def test_json_output_lists_a_job_that_failed_before_planning(
    workspace: Workspace, unused_port: int
) -> None:
    workspace.write_users(rows(2))
    workspace.write_config(url=f"http://127.0.0.1:{unused_port}")
    result = workspace.run("plan", "-c", str(workspace.config), "--output", "json")
    assert result.returncode == 1
    (job,) = json.loads(result.stdout)["jobs"]
    assert (job["job"], job["status"], job["exit_code"]) == ("corp", "failed", 1)
    assert "ConnectError" in job["error"]


# ------------------------------------------- hostile source input (core hardening)


def _source_option(workspace: Workspace, text: str) -> None:
    """Add ``text`` (YAML lines) to the CSV source of the workspace's config."""
    config = workspace.config.read_text()
    workspace.config.write_text(
        config.replace("enabled_column: enabled", f"enabled_column: enabled\n        {text}")
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_a_file_without_a_header_is_a_failed_read_that_cannot_be_forced(
    workspace: Workspace,
) -> None:
    workspace.write_users(rows(4))
    assert workspace.apply().returncode == 0
    workspace.csv.write_bytes(b"")  # an export that died before writing anything
    workspace.emulator.reset_counters()
    for args in ((), ("--force",)):
        result = workspace.apply(*args)
        assert result.returncode == 3, result.stdout + result.stderr
        out = _one_line(result.stdout)
        assert "users.csv has no header (it is empty or holds only blank lines)" in out
        assert "cannot be forced" in out
    assert workspace.emulator.calls()["list"] == 0
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    assert all(u.active_to is None for u in workspace.emulator.users().values())


def test_identifiers_with_invisible_characters_never_reach_the_platform(
    workspace: Workspace,
) -> None:
    bad = [
        "zero\u200bwidth@example.com",
        "\u202eevil@example.com",
        "nul\x00l@example.com",
        "blank\u2800@example.com",
        "edge@example.com\u2028",  # at the end, where trimming must not hide it
    ]
    text = rows(2) + "".join(f"{name},Eng,DE,2024-01-01,,true\n" for name in bad)
    workspace.write_users(text)
    held = workspace.apply()
    assert held.returncode == 3
    out = _one_line(held.stdout)
    for line, code in ((4, "U+200B"), (5, "U+202E"), (6, "U+0000"), (7, "U+2800"), (8, "U+2028")):
        assert f"users.csv:{line}: column 'email':" in out
        assert code in out
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    forced = workspace.apply("--force")
    assert forced.returncode == 0, forced.stdout
    assert set(workspace.emulator.users()) == {"user0@example.com", "user1@example.com"}


def test_implausible_dates_are_bad_rows_naming_the_line(workspace: Workspace) -> None:
    workspace.write_users(
        rows(2)
        + "old@example.com,Eng,DE,1850-01-01,,true\n"
        + "typo@example.com,Eng,DE,2024-01-01,2206-01-31,true\n"
    )
    held = workspace.apply()
    assert held.returncode == 3
    out = _one_line(held.stdout)
    assert "users.csv:4: column 'start_date': implausible date 1850-01-01" in out
    assert "users.csv:5: column 'end_date': implausible date 2206-01-31" in out
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}


def test_a_codec_that_is_not_a_text_encoding_is_a_config_error(workspace: Workspace) -> None:
    workspace.write_users(rows(2))
    _source_option(workspace, "encoding: rot13")
    result = workspace.apply()
    assert result.returncode == 2
    assert "encoding 'rot13' is not a text encoding" in _one_line(result.stderr)
    assert "Traceback" not in result.stderr
    assert workspace.emulator.calls()["list"] == 0


def test_bytes_that_do_not_fit_the_encoding_name_file_line_and_encoding(
    workspace: Workspace,
) -> None:
    _source_option(workspace, "encoding: cp1252")
    workspace.csv.write_bytes((HEADER + rows(2)).encode() + b"b\x81d@example.com,Eng,DE,,,\n")
    result = workspace.apply()
    assert result.returncode == 3
    out = _one_line(result.stdout)
    assert f"cannot read CSV file {workspace.csv}: line 4: bytes that are not valid cp1252" in out
    assert "Traceback" not in result.stderr
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}


def test_min_file_age_holds_a_file_that_is_still_being_written(workspace: Workspace) -> None:
    workspace.write_users(rows(3))
    assert workspace.apply().returncode == 0
    _source_option(workspace, "min_file_age_s: 300")
    workspace.write_users(rows(1))  # fresh: two users would be ended
    workspace.emulator.reset_counters()
    result = workspace.apply()
    assert result.returncode == 3
    assert "less than min_file_age_s=300" in _one_line(result.stdout)
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    assert all(u.active_to is None for u in workspace.emulator.users().values())


def test_a_header_of_100000_columns_gives_a_bounded_message(workspace: Workspace) -> None:
    workspace.csv.write_text(",".join(f"c{i}" for i in range(100_000)) + "\n")
    result = workspace.apply()
    assert result.returncode == 3
    assert len(result.stdout) + len(result.stderr) < 20_000
    assert "... and 99970 more" in _one_line(result.stdout)


# ------------------------------------------------------------ the update guard


def test_blanking_a_tag_for_everyone_is_held_and_can_be_allowed(workspace: Workspace) -> None:
    workspace.write_users(rows(10))
    assert workspace.apply().returncode == 0
    # The export lost its Department values: every user would lose the tag.
    workspace.write_users(rows(10).replace(",Eng,", ",,"))
    workspace.emulator.reset_counters()
    held = workspace.apply()
    assert held.returncode == 3, held.stdout
    out = _one_line(held.stdout)
    assert (
        "10 updates take information away or change eligibility (10 tag department emptied), "
        "above max_destructive_update_ratio=20% of 10 active users: "
        "user0@example.com (tag department emptied)"
    ) in out
    assert "--allow-updates 10" in out
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}
    assert workspace.apply("--allow-updates", "9").returncode == 3
    allowed = workspace.apply("--allow-updates", "10")
    assert allowed.returncode == 0, allowed.stdout
    assert all("department" not in u.tags for u in workspace.emulator.users().values())


def test_moving_every_start_past_today_is_held(workspace: Workspace) -> None:
    workspace.write_users(rows(5))
    assert workspace.apply().returncode == 0
    # A wrong column mapped as the start: in two months, so every user becomes ineligible.
    start = (datetime.now(UTC).date() + timedelta(days=60)).isoformat()
    later = "".join(f"user{i}@example.com,Eng,DE,{start},,true\n" for i in range(5))
    workspace.write_users(later)
    workspace.emulator.reset_counters()
    held = workspace.apply()
    assert held.returncode == 3
    assert "5 active_from moved past today" in _one_line(held.stdout)
    assert workspace.writes() == {"insert": 0, "update": 0, "delete": 0}


# ------------------------------------------------------------ trustworthy output


def test_the_plan_table_shows_removals_first_and_says_what_it_left_out(
    workspace: Workspace,
) -> None:
    workspace.write_config(max_removals=1000)
    workspace.write_users(rows(20))
    assert workspace.apply().returncode == 0
    # 3 leave, 1 changes department, 40 join: the removals must not hide below inserts.
    workspace.write_users(rows(1, dept="Sales") + rows(16, start=1) + rows(40, start=100))
    result = workspace.run("plan", "-c", str(workspace.config), "--limit", "5")
    out = _one_line(result.stdout)
    table = out[out.index("end_user") :]
    ends = [table.index(f"user{i}@example.com") for i in (17, 18, 19)]
    first_insert = table.index("user100@example.com")
    assert max(ends) < first_insert
    assert table.index("user0@example.com") < first_insert  # the update comes before too
    assert "… and 39 more changes: 39 inserts (--output json lists them all)" in out


def test_json_lists_every_job_held_failed_or_planned_with_status_and_exit_code(
    workspace: Workspace, unused_port: int
) -> None:
    workspace.write_users(rows(4))
    assert workspace.apply().returncode == 0
    workspace.csv.write_bytes(b"")  # job corp: a failed read, held
    config = workspace.config.read_text()
    ok_job = (
        config.split("jobs:\n", 1)[1]
        .replace("name: corp", "name: other")
        .replace("path: users.csv", "path: other.csv")
    )
    down_job = ok_job.replace("name: other", "name: down").replace(
        workspace.emulator.url, f"http://127.0.0.1:{unused_port}"
    )
    workspace.config.write_text(config + ok_job + down_job)
    (workspace.path / "other.csv").write_text(HEADER + rows(1, start=50))
    result = workspace.run("plan", "-c", str(workspace.config), "--output", "json")
    jobs = {job["job"]: job for job in json.loads(result.stdout)["jobs"]}
    assert set(jobs) == {"corp", "other", "down"}
    assert (jobs["corp"]["status"], jobs["corp"]["exit_code"]) == ("held", 3)
    assert "has no header" in jobs["corp"]["held_because"][0]
    assert (jobs["other"]["status"], jobs["other"]["exit_code"]) == ("planned", 0)
    assert jobs["other"]["error"] is None
    assert (jobs["down"]["status"], jobs["down"]["exit_code"]) == ("failed", 1)
    assert result.returncode == 1


def test_apply_reads_a_large_csv_in_two_parts_at_once_while_it_holds_the_job_lock(
    workspace: Workspace,
) -> None:
    # 4 MiB or more is read in two parts, the second by a forked child: the job lock's
    # heartbeat thread, which runs through every apply, steps aside for the fork.
    if usable_cpus() < 2:
        pytest.skip("a second CPU is needed to read in two parts")
    count = 95_000
    workspace.write_users(rows(count))
    assert workspace.csv.stat().st_size >= 4 * 1024 * 1024
    workspace.write_config(batch=1000)
    workspace.config.write_text(workspace.config.read_text().replace("level: info", "level: debug"))
    result = workspace.apply()
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    parts = [event for event in events if event.get("event") == "csv.read_in_parts"]
    assert [event["second_part"] for event in parts] == ["child"]
    users = workspace.emulator.users()
    assert len(users) == count
    assert {"user0@example.com", f"user{count - 1}@example.com"} <= set(users)
