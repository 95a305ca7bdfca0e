"""The console script's start-up without the garbage collector (:mod:`syncd.startup`).

Each command runs as ``syncd`` does (``syncd.startup.main``) in a fresh interpreter
that records every collection the collector starts and how many objects were frozen at
that moment. ``plan`` / ``apply`` must run no collection before their config is loaded,
freeze what start-up built, and collect again afterwards; every other command keeps the
collector on throughout.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from syncd import startup
from syncd.emulator import PlatformEmulator
from tests.test_startup import CONFIG  # the same one-CSV job

# Appends one JSON line per collection to the file named by the first argument, then
# runs the console script's entry point with the other arguments (a "started" line
# marks the call: what ran before it is this script's own set-up). The file is written
# as each collection starts: plan and apply end with os._exit.
CHILD = """
import atexit, gc, json, sys
out = sys.argv.pop(1)
def record(**fields):
    with open(out, "a", encoding="utf-8") as file:
        file.write(json.dumps(fields) + "\\n")
def watch(phase, info):
    if phase == "start":
        record(
            generation=info["generation"],
            frozen=gc.get_freeze_count(),
        )
gc.callbacks.append(watch)
atexit.register(lambda: record(at_exit=True, enabled=gc.isenabled()))
sys.argv[0] = "syncd"
from syncd.startup import main  # as the console script does
record(started=True, enabled=gc.isenabled())
main()
"""


def run(args: list[str], folder: Path, env: dict[str, str]) -> tuple[str, list[dict[str, object]]]:
    """``syncd ARGS`` through the console script (it must succeed): stdout, and what the
    child recorded from the call on (its first entry is the "started" line)."""
    out = folder / "collections.jsonl"
    out.unlink(missing_ok=True)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), *args],
        capture_output=True,
        text=True,
        env=child_env | env,
        cwd=folder,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    recorded = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return result.stdout, recorded[recorded.index({"started": True, "enabled": True}) :]


@pytest.fixture
def workspace(tmp_path: Path, emulator: PlatformEmulator) -> Path:
    """A config with one CSV source of 2,000 users (enough to collect), and an emulator."""
    users = "".join(f"user{i}@example.com\n" for i in range(2000))
    (tmp_path / "users.csv").write_text("email\n" + users, encoding="utf-8")
    (tmp_path / "syncd.yaml").write_text(
        CONFIG.format(url=emulator.url, schedule=""), encoding="utf-8"
    )
    return tmp_path


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_sync_collects_only_after_start_up_and_skips_the_frozen_start_up_heap(
    workspace: Path, emulator: PlatformEmulator, emulator_api_key: str, command: str
) -> None:
    args = [command, "-c", "syncd.yaml", "--output", "json"]
    stdout, recorded = run(args, workspace, {"NEBULY_API_KEY": emulator_api_key})

    assert json.loads(stdout)["jobs"][0]["job"] == "corp"  # the command did run
    if command == "apply":
        assert len(emulator.users()) == 2000
    collections = [entry for entry in recorded if "generation" in entry]
    # The collector is on again for the run itself ...
    assert collections, recorded
    # ... and ran none before the config was loaded: every collection skips the start-up
    # heap, frozen by then (typer, pydantic, the config models: well over 10,000 objects).
    assert min(int(str(entry["frozen"])) for entry in collections) > 10_000, collections


def test_any_other_command_keeps_the_collector_on(tmp_path: Path) -> None:
    stdout, recorded = run(["version"], tmp_path, {})

    assert stdout.strip()  # the version
    assert {"at_exit": True, "enabled": True} in recorded
    collections = [entry for entry in recorded if "generation" in entry]
    assert collections  # it collected while it ran (the typer app alone is enough) ...
    assert all(entry["frozen"] == 0 for entry in collections)  # ... and froze nothing


def test_start_up_without_the_console_script_changes_nothing() -> None:
    # A library caller (the daemon, a test) never paused the collector: started(), as
    # syncd.cli_sync.load calls it, must neither freeze this process's heap nor touch
    # the collector.
    frozen = gc.get_freeze_count()
    try:
        startup.started()
        assert gc.get_freeze_count() == frozen
        assert gc.isenabled()
    finally:
        if gc.get_freeze_count() != frozen:
            gc.unfreeze()


def test_the_console_script_and_python_m_syncd_start_through_the_pause() -> None:
    # Pointing either back at syncd.cli:main would silently lose the paused start-up.
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["syncd"] == "syncd.startup:main"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "syncd", "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "syncd.startup" in imported
    assert imported.index("syncd.startup") < imported.index("syncd.cli")
