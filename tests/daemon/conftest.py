"""Fixtures of the daemon tests: one daemon shared by the endpoint tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncd.emulator import PlatformEmulator
from tests.conftest import EMULATOR_API_KEY
from tests.daemon.support import DaemonProcess, free_port, job_yaml, write_config, write_csv

TOKEN = "status-token-7c1e"
IDS = [f"person{i:02d}@corp.example" for i in range(20)]


@dataclass
class HeldDaemon:
    """A daemon whose job synced 20 users, then had 15 leave (held: max_removals 5)."""

    daemon: DaemonProcess
    emulator: PlatformEmulator
    config: Path


@pytest.fixture(scope="package")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeldDaemon]:
    """One daemon for the endpoint tests (a daemon start costs a second or two)."""
    directory = tmp_path_factory.mktemp("held")
    csv = directory / "users.csv"
    write_csv(csv, IDS)
    (directory / "token").write_text(TOKEN + "\n", encoding="utf-8")
    port = free_port()
    with PlatformEmulator(api_key=EMULATOR_API_KEY) as emulator:
        config = write_config(
            directory,
            [job_yaml("corp", emulator.url, csv, max_removals=5)],
            port=port,
            server_extra=f", auth_token_file: {directory / 'token'}",
        )
        with DaemonProcess(config, port, token=TOKEN) as daemon:
            daemon.wait_ready()
            yield HeldDaemon(daemon, emulator, config)


def auth() -> dict[str, str]:
    """The header that opens /status and / of the shared daemon."""
    return {"Authorization": f"Bearer {TOKEN}"}


def move_to_held(held: HeldDaemon) -> None:
    """Move the fixture's job to "held" (idempotent)."""
    daemon = held.daemon
    daemon.wait_status(
        "corp",
        lambda job: (job["last_run"] or {}).get("status") in ("applied", "held"),
    )
    write_csv(held.config.parent / "users.csv", IDS[:5])
    daemon.wait_status("corp", lambda job: job["held_cycles"] >= 2)
