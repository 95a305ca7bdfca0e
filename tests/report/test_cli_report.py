"""``syncd report activation`` as a real subprocess, against emulators on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from syncd.emulator import PlatformEmulator
from syncd.emulator.analytics import AnalyticsEmulator
from tests.report.conftest import ANALYTICS_KEY
from tests.report.test_service import ACTIVITY, PLATFORM_KEY, PLATFORM_USERS


@pytest.fixture
def platform() -> Iterator[PlatformEmulator]:
    """A platform emulator holding the service tests' users."""
    with PlatformEmulator(api_key=PLATFORM_KEY) as emu:
        emu.seed_users(PLATFORM_USERS)
        yield emu


def _write_config(tmp: Path, platform: PlatformEmulator, analytics: AnalyticsEmulator) -> Path:
    path = tmp / "syncd.yaml"
    path.write_text(
        f"""
state_dir: ./state
log: {{format: json, level: warning}}
jobs:
  - name: corp
    target: {{base_url: "{platform.url}", api_key: {PLATFORM_KEY}}}
    sources: [{{type: csv, path: users.csv, id_column: email}}]
analytics:
  base_url: "{analytics.url}"
  service_key: ${{WINDSURF_SERVICE_KEY}}
  cache_ttl: 3h
""",
        encoding="utf-8",
    )
    return path


def _run(config: Path, *args: str, key: str = ANALYTICS_KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(WINDSURF_SERVICE_KEY=key, COLUMNS="160")
    return subprocess.run(
        [sys.executable, "-m", "syncd", "report", "activation", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


RANGE = ("--from", "2026-01-10", "--to", "2026-03-20")


def test_json_output_and_no_platform_writes(platform: PlatformEmulator, tmp_path: Path) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as analytics:
        analytics.add_activity(ACTIVITY)
        config = _write_config(tmp_path, platform, analytics)
        result = _run(config, *RANGE, "--by", "department", "--output", "json")
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert [p["activation_rate"] for p in document["periods"]] == [0.5, 0.0, 0.6667]
        assert document["never_active"] == 2
        assert "Sales" in document["total"]["by"]["department"]
        # Again: answered from the cache, nothing sent.
        table = _run(config, *RANGE)
        assert table.returncode == 0, table.stderr
        assert "total" in table.stdout
        assert "leakage" in table.stdout
        assert analytics.stats()["queries"] == 1
    calls = platform.calls()
    assert (calls["PUT"], calls["POST"], calls["DELETE"]) == (0, 0, 0)


def test_html_and_csv_files(platform: PlatformEmulator, tmp_path: Path) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as analytics:
        analytics.add_activity(ACTIVITY)
        config = _write_config(tmp_path, platform, analytics)
        page = tmp_path / "report.html"
        assert _run(config, *RANGE, "--output", "html", "--out", str(page)).returncode == 0
        sheet = _run(config, *RANGE, "--granularity", "daily", "--output", "csv")
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sheet.returncode == 0, sheet.stderr
    lines = sheet.stdout.splitlines()
    assert lines[0].startswith("period,start,end,tag,value,eligible")
    assert len(lines) == 1 + 70 + 1  # header, 70 days, total


def test_an_exhausted_budget_stops_with_the_next_allowed_time(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, rate_limit=1, rate_window_s=600) as analytics:
        config = _write_config(tmp_path, platform, analytics)
        assert _run(config, *RANGE).returncode == 0
        result = _run(config, "--from", "2025-01-01", "--to", "2025-01-31")
        assert analytics.stats()["throttled"] == 1
    assert result.returncode == 1
    assert "429" in result.stderr
    assert "the next query is allowed at" in result.stderr
    assert "Traceback" not in result.stderr


def test_wait_waits_for_the_budget_with_a_progress_display(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, rate_limit=1, rate_window_s=3) as analytics:
        analytics.add_activity([("bob@example.com", date(2025, 1, 5))])
        config = _write_config(tmp_path, platform, analytics)
        assert _run(config, *RANGE).returncode == 0
        started = time.monotonic()
        result = _run(config, "--from", "2025-01-01", "--to", "2025-01-31", "--wait", "-o", "json")
        waited = time.monotonic() - started
        assert analytics.stats()["throttled"] == 1
    assert result.returncode == 0, result.stderr
    assert "waited until" in result.stderr
    assert waited >= 1.5
    assert json.loads(result.stdout)["active_not_eligible_users"] == ["bob@example.com"]


def test_a_wrong_key_fails_without_showing_it(platform: PlatformEmulator, tmp_path: Path) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as analytics:
        config = _write_config(tmp_path, platform, analytics)
        result = _run(config, *RANGE, key="sk-not-the-key-42")
    assert result.returncode == 1
    assert "rejected the service key (HTTP 401)" in result.stderr
    assert "sk-not-the-key-42" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "2026-02-30", "--to", "2026-03-01"), "not a date"),
        (("--from", "2026-03-02", "--to", "2026-03-01"), "before --from"),
    ],
)
def test_bad_dates_are_usage_errors(
    platform: PlatformEmulator, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as analytics:
        config = _write_config(tmp_path, platform, analytics)
        result = _run(config, *args)
        assert analytics.stats()["queries"] == 0
    assert result.returncode == 2
    assert message in result.stderr


def _syncd(config: Path, *args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SYNCD_") and "SERVICE_KEY" not in k
    }
    env.update(env_extra, COLUMNS="160")
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_other_commands_load_without_the_analytics_key(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    # A daemon whose environment holds only the Nebuly key must still start: the
    # analytics key is needed by `syncd report` alone.
    (tmp_path / "users.csv").write_text("email\nann@example.com\n", encoding="utf-8")
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as analytics:
        config = _write_config(tmp_path, platform, analytics)
        plan = _syncd(config, "plan", "--output", "json", env_extra={})
        checked = _syncd(config, "check-config", env_extra={})
        report = _syncd(config, "report", "activation", *RANGE, env_extra={})
        assert analytics.stats()["queries"] == 0
    assert plan.returncode != 2, plan.stderr
    assert "configuration error" not in plan.stderr
    assert json.loads(plan.stdout)
    assert checked.returncode == 0, checked.stderr
    section = json.loads(checked.stdout)["analytics"]
    assert section["service_key"] == "**********"
    assert section["service_key_status"].startswith("does not resolve")
    assert "WINDSURF_SERVICE_KEY" in section["service_key_status"]
    assert report.returncode == 2
    assert "WINDSURF_SERVICE_KEY is not set" in " ".join(report.stderr.split())


def test_check_config_says_the_key_resolves(platform: PlatformEmulator, tmp_path: Path) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as analytics:
        config = _write_config(tmp_path, platform, analytics)
        checked = _syncd(config, "check-config", env_extra={"WINDSURF_SERVICE_KEY": ANALYTICS_KEY})
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["analytics"]["service_key_status"] == "resolves"
    assert ANALYTICS_KEY not in checked.stdout


def test_a_missing_mapping_file_is_a_config_error_of_the_report(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as analytics:
        config = _write_config(tmp_path, platform, analytics)
        config.write_text(
            config.read_text(encoding="utf-8") + "  identity: {mapping_csv: missing.csv}\n",
            encoding="utf-8",
        )
        result = _run(config, *RANGE)
        assert analytics.stats()["queries"] == 0
    assert result.returncode == 2, result.stderr
    assert "missing.csv" in result.stderr
    assert "mapping_csv" in result.stderr
