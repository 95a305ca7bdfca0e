"""deploy/systemd/syncd.service: systemd accepts it, its sandbox scores <= 2.0, and the
daemon started exactly as its ExecStart= (credentials, state dir, notify socket as
systemd sets them up) syncs against the emulator."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from syncd.emulator import PlatformEmulator
from tests.conftest import EMULATOR_API_KEY
from tests.deploy.support import (
    DEPLOY,
    for_emulator,
    free_port,
    started,
    status_code,
    stop,
    wait_for,
    write_yaml,
)

UNIT = DEPLOY / "systemd" / "syncd.service"
CONFIG = DEPLOY / "systemd" / "config.yaml"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def service_settings() -> list[tuple[str, str]]:
    """The [Service] section's ``Key=value`` lines in order (keys may repeat)."""
    settings: list[tuple[str, str]] = []
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.append((key, value))
    return settings


def setting(key: str) -> list[str]:
    """Every value of ``key`` in [Service]."""
    return [value for name, value in service_settings() if name == key]


@needs_analyze
def test_unit_passes_systemd_analyze_verify() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(UNIT)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "syncd.service" not in result.stderr, result.stderr


@needs_analyze
def test_unit_exposure_is_at_most_2() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    match = re.search(r"Overall exposure level for syncd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_has_the_required_settings() -> None:
    expected = {
        "Type": "notify",
        "DynamicUser": "yes",
        "StateDirectory": "syncd",
        "Restart": "on-failure",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "ProtectProc": "invisible",
    }
    for key, value in expected.items():
        assert setting(key) == [value], key
    assert "@system-service" in setting("SystemCallFilter")
    assert setting("ExecStart") == ["/usr/bin/env syncd run -c /etc/syncd/config.yaml"]
    # The watchdog period leaves room for a slow cycle; the stop timeout exceeds the
    # daemon's 8 s shutdown bound.
    assert int(setting("WatchdogSec")[0]) >= 10
    assert int(setting("TimeoutStopSec")[0]) > 8
    # Sized from bench/RESULTS.md: a 1M-user no-change run peaks at ~720 MB RSS.
    assert setting("MemoryMax") == ["1G"]
    credentials = {value.split(":", 1)[0] for value in setting("LoadCredential")}
    assert {"nebuly-api-key", "ldap-bind-password"} <= credentials


def test_shipped_config_reads_its_secrets_from_the_credentials(tmp_path: Path) -> None:
    from syncd.config import load_config

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in ("nebuly-api-key", "ldap-bind-password", "status-token"):
        (credentials / name).write_text(f"{name}-value\n", encoding="utf-8")
    environ = {"CREDENTIALS_DIRECTORY": str(credentials), "STATE_DIRECTORY": str(tmp_path)}
    config = load_config(CONFIG, environ)
    assert config.state_dir == tmp_path
    rendered = repr(config)
    assert "nebuly-api-key-value" not in rendered
    assert "ldap-bind-password-value" not in rendered


def test_daemon_runs_as_execstart_would_start_it(tmp_path: Path) -> None:
    """ExecStart's argv, the unit's Environment=, and what systemd adds: the credentials
    directory (one file per LoadCredential= name), STATE_DIRECTORY and NOTIFY_SOCKET."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    state = tmp_path / "state"
    secrets = {
        "nebuly-api-key": EMULATOR_API_KEY,
        "ldap-bind-password": "unused-here",
        "status-token": "token-for-status",
    }
    for name in {value.split(":", 1)[0] for value in setting("LoadCredential")}:
        (credentials / name).write_text(secrets[name] + "\n", encoding="utf-8")
    csv = tmp_path / "users.csv"
    csv.write_text("email\nann@corp.example\nbob@corp.example\n", encoding="utf-8")
    port = free_port()
    notify_path = tmp_path / "notify"
    env = {"HOME": str(tmp_path), "LANG": "C.UTF-8"}
    for line in setting("Environment"):
        key, _, value = line.partition("=")
        env[key] = value
    # syncd is on the service's PATH; here it is this venv's bin.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env |= {
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(state),
        "NOTIFY_SOCKET": str(notify_path),
        "WATCHDOG_USEC": "1000000",  # 1 s here, so that a ping comes quickly
    }
    argv = shlex.split(setting("ExecStart")[0])
    config_path = tmp_path / "etc" / "config.yaml"
    argv = [str(config_path) if arg == "/etc/syncd/config.yaml" else arg for arg in argv]
    log = tmp_path / "daemon.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(0.5)
        with PlatformEmulator(api_key=EMULATOR_API_KEY) as emulator:
            shipped = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
            write_yaml(config_path, for_emulator(shipped, url=emulator.url, csv=csv, port=port))
            with started(argv, env=env, cwd=tmp_path, log=log) as process:
                received: list[str] = []

                def seen(message: str) -> bool:
                    with contextlib.suppress(TimeoutError):
                        received.extend(notify.recv(4096).decode().splitlines())
                    return message in received

                wait_for(lambda: seen("READY=1"), timeout_s=20, what="READY=1")
                # WatchdogSec= sets WATCHDOG_USEC; the daemon pings at half of it.
                wait_for(lambda: seen("WATCHDOG=1"), timeout_s=5, what="WATCHDOG=1")
                base = f"http://127.0.0.1:{port}"
                wait_for(lambda: len(emulator.users()) == 2, timeout_s=20, what="the first sync")
                assert set(emulator.users()) == {"ann@corp.example", "bob@corp.example"}
                for path in ("/healthz", "/readyz", "/metrics"):
                    assert status_code(base + path) == 200, path
                # The status token came from the credentials directory.
                assert status_code(base + "/status") == 401
                bearer = {"Authorization": "Bearer token-for-status"}
                assert status_code(base + "/status", headers=bearer) == 200
                assert stop(process, log) == 0
                wait_for(lambda: seen("STOPPING=1"), timeout_s=5, what="STOPPING=1")
    assert any(state.iterdir()), "the state was written under STATE_DIRECTORY"
    assert EMULATOR_API_KEY not in log.read_text(encoding="utf-8")
