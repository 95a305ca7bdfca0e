"""bench/daemon_cycles.py: the real daemon's cycles read from its log, and the daemon
stopped by its PID, on a small CSV against the in-process platform emulator."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from syncd.emulator import PlatformEmulator
from tests.bench_modules import load_bench_module

CONFIG = """
state_dir: ./state
log: {{format: json, level: info}}
jobs:
  - name: bench
    target:
      base_url: {url}
      api_key: ${{BENCH_API_KEY}}
    sources:
      - {{type: csv, path: {csv}, id_column: email}}
"""


@pytest.fixture(scope="module")
def cycles_module() -> ModuleType:
    return load_bench_module("daemon_cycles")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_cycles_of_the_real_daemon_are_read_and_it_is_stopped_by_its_pid(
    cycles_module: ModuleType, emulator: PlatformEmulator, emulator_api_key: str, tmp_path: Path
) -> None:
    csv = tmp_path / "users.csv"
    csv.write_text("email\nada@example.com\nbob@example.com\n", encoding="utf-8")
    config = tmp_path / "syncd-daemon.yaml"
    config.write_text(cycles_module.with_schedule(CONFIG.format(url=emulator.url, csv=csv)))
    env = os.environ | {"BENCH_API_KEY": emulator_api_key}
    run = cycles_module.daemon_cycles(config, env, cycles=3, timeout_s=60)
    assert run.failure is None
    assert run.statuses == ["applied"] * 3
    assert len(run.seconds) == 3
    assert all(0 < seconds < 30 for seconds in run.seconds)
    assert run.warm_s == min(run.seconds[1:])
    assert run.first_s == run.seconds[0]
    assert run.peak_rss_mb > 10
    assert run.cpu_s > 0
    assert run.exit_code == 0  # SIGTERM is a clean stop for the daemon
    assert _gone(run.pid)
    # The first cycle inserted both users; the others found nothing to change.
    assert sorted(emulator.users()) == ["ada@example.com", "bob@example.com"]


def test_a_daemon_that_cannot_start_is_a_failure_at_once(
    cycles_module: ModuleType, tmp_path: Path
) -> None:
    config = tmp_path / "syncd-daemon.yaml"
    config.write_text("jobs: [}\n")  # not YAML: the daemon exits with a configuration error
    run = cycles_module.daemon_cycles(config, dict(os.environ), cycles=3, timeout_s=60)
    assert run.failure == "the daemon exited after 0 cycles"
    assert run.seconds == []
    assert run.exit_code == 2
    assert _gone(run.pid)


def test_the_schedule_goes_to_the_bench_job_and_the_endpoints_to_a_loopback_port(
    cycles_module: ModuleType, tmp_path: Path
) -> None:
    text = cycles_module.with_schedule(CONFIG.format(url="http://127.0.0.1:1", csv="u.csv"))
    parsed = yaml.safe_load(text)
    assert parsed["jobs"][0]["schedule"] == {"every": "1s"}
    host, _, port = parsed["server"]["listen"].rpartition(":")
    assert host == "127.0.0.1"
    assert 0 < int(port) < 65536
    with pytest.raises(ValueError, match="no job named bench"):
        cycles_module.with_schedule(CONFIG.replace("name: bench", "name: other"))
