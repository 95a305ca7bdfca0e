"""``syncd history`` and ``syncd audit`` as subprocesses, over runs against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.platform.api import Operation
from syncd.service import run_job

CONFIG = """
state_dir: ./state
jobs:
  - name: corp
    target: {base_url: "URL", api_key: "KEY", batch_size: 2, max_retries: 0}
    sources:
      - {type: csv, path: users.csv, id_column: email, tags: {department: dept}}
    guard: {max_removal_ratio: null}
  - name: hr
    target: {base_url: "URL", api_key: "KEY", max_retries: 0}
    sources:
      - {type: csv, path: hr.csv, id_column: email}
    policy: {scope: owned}
"""


def syncd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def setup(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> tuple[Path, SyncdConfig]:
    text = CONFIG.replace("URL", emulator.url).replace("KEY", emulator_api_key)
    (tmp_path / "syncd.yaml").write_text(text)
    (tmp_path / "users.csv").write_text("email,dept\nAlice@Example.com,Eng\nbob@example.com,Eng\n")
    (tmp_path / "hr.csv").write_text("email\ncarol@example.com\n")
    config = parse_config(text, origin="test", base_dir=tmp_path, environ={})
    return tmp_path / "syncd.yaml", config


def test_both_commands_say_so_when_nothing_was_recorded_and_create_nothing(
    setup: tuple[Path, SyncdConfig],
) -> None:
    path, config = setup
    for command in (["history"], ["audit", "--user", "alice@example.com"]):
        done = syncd(*command, "-c", str(path), cwd=path.parent)
        assert (done.returncode, done.stdout.strip()) == (0, "no runs recorded yet"), done.stderr
    done = syncd("history", "-c", str(path), "--output", "json", cwd=path.parent)
    assert json.loads(done.stdout) == {"runs": []}
    assert not config.state_dir.exists()


def test_history_lists_the_last_runs_newest_first(
    setup: tuple[Path, SyncdConfig], emulator: PlatformEmulator
) -> None:
    path, config = setup
    first = run_job(config, config.jobs[0], apply=True)
    (path.parent / "users.csv").write_text("email,dept\n")  # an empty source: held
    held = run_job(config, config.jobs[0], apply=True)
    emulator.set_faults(Operation.INSERT, EndpointFaults(fail_next=10))
    failed = run_job(config, config.jobs[1], apply=True)
    done = syncd("history", "-c", str(path), "-o", "json", cwd=path.parent)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert [(r["run_id"], r["job"], r["status"]) for r in runs] == [
        (failed.run_id, "hr", "failed"),
        (held.run_id, "corp", "held"),
        (first.run_id, "corp", "applied"),
    ]
    assert runs[2]["counts"]["insert"] == 2
    assert runs[2]["write_calls"] == 1
    assert runs[1]["guard_reasons"]
    assert "503" in runs[0]["error"] or "insert" in runs[0]["error"]
    assert runs[2]["started_at"] <= runs[2]["finished_at"]
    only = syncd(
        "history", "-c", str(path), "--job", "corp", "--limit", "1", "-o", "json", cwd=path.parent
    )
    assert [r["run_id"] for r in json.loads(only.stdout)["runs"]] == [held.run_id]
    table = syncd("history", "-c", str(path), cwd=path.parent)
    assert table.returncode == 0
    assert first.run_id in table.stdout
    assert "held" in table.stdout
    unknown = syncd("history", "-c", str(path), "--job", "nope", cwd=path.parent)
    assert unknown.returncode == 2
    assert "no job named 'nope'" in unknown.stderr


def test_audit_shows_every_change_to_a_user_oldest_first(
    setup: tuple[Path, SyncdConfig], emulator: PlatformEmulator
) -> None:
    path, config = setup
    first = run_job(config, config.jobs[0], apply=True)
    (path.parent / "users.csv").write_text("email,dept\nAlice@Example.com,Sales\n")
    second = run_job(config, config.jobs[0], apply=True)
    # The address is normalised like the job's end_users (trimmed, lower-cased).
    done = syncd(
        "audit", "-c", str(path), "--user", "  ALICE@example.com ", "-o", "json", cwd=path.parent
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["end_user"] == ["alice@example.com"]
    changes = document["changes"]
    assert [(c["run_id"], c["operation"]) for c in changes] == [
        (first.run_id, "insert"),
        (second.run_id, "update"),
    ]
    assert changes[0]["before"] is None
    assert changes[0]["after"] == {
        "end_user": "alice@example.com",
        "tags": {"department": "Eng"},
        "active_from": changes[0]["after"]["active_from"],
        "active_to": None,
    }
    assert changes[1]["before"] == changes[0]["after"]
    assert changes[1]["after"]["tags"] == {"department": "Sales"}
    table = syncd("audit", "-c", str(path), "--user", "alice@example.com", cwd=path.parent)
    assert table.returncode == 0
    assert "tags.department: Eng → Sales" in table.stdout
    nobody = syncd("audit", "-c", str(path), "--user", "zed@example.com", cwd=path.parent)
    assert (nobody.returncode, nobody.stdout.strip()) == (
        0,
        "no change recorded for zed@example.com",
    )
    assert syncd("audit", "-c", str(path), "--user", "  ", cwd=path.parent).returncode == 2


def test_a_corrupt_database_is_an_error_naming_it(setup: tuple[Path, SyncdConfig]) -> None:
    path, config = setup
    config.state_dir.mkdir()
    (config.state_dir / "syncd.sqlite3").write_bytes(b"garbage " * 1000)
    done = syncd("history", "-c", str(path), cwd=path.parent)
    assert done.returncode == 1
    assert "syncd.sqlite3: file is not a database" in done.stderr


def test_history_and_audit_need_no_platform_key(
    setup: tuple[Path, SyncdConfig], tmp_path: Path
) -> None:
    path, config = setup
    run_job(config, config.jobs[0], apply=True)
    # The targets name a key variable and a key file that this machine does not have.
    text = path.read_text().replace('api_key: "', 'api_key_file: "missing-', 1)
    text = text.replace('api_key: "', 'api_key: "${NEBULY_API_KEY_NOT_SET}', 1)
    path.write_text(text)
    done = syncd("history", "-c", str(path), "--output", "json", cwd=path.parent)
    assert done.returncode == 0, done.stderr
    assert [run["job"] for run in json.loads(done.stdout)["runs"]] == ["corp"]
    done = syncd("audit", "-c", str(path), "--user", "bob@example.com", cwd=path.parent)
    assert done.returncode == 0, done.stderr
    assert "insert" in done.stdout
