"""``syncd run`` as a real subprocess: a manual apply meanwhile, and a broken state file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.platform.api import Operation
from tests.conftest import EMULATOR_API_KEY
from tests.daemon.support import (
    DaemonProcess,
    free_port,
    job_yaml,
    wait_for,
    write_config,
    write_csv,
)


def _apply(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["NEBULY_API_KEY"] = EMULATOR_API_KEY
    return subprocess.run(
        [sys.executable, "-m", "syncd", "apply", "-c", str(config), "--job", "corp"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_a_manual_apply_while_the_daemon_applies_the_same_job_waits_its_turn(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    ids = [f"member{i:03d}@corp.example" for i in range(30)]
    csv = tmp_path / "users.csv"
    write_csv(csv, ids)
    port = free_port()
    config = write_config(
        tmp_path,
        [job_yaml("corp", emulator.url, csv, every="1h", batch_size=5, concurrency=1)],
        port=port,
    )
    # Slow inserts: the daemon's start-up run is still applying when the manual one comes.
    emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=300))
    with DaemonProcess(config, port) as daemon:
        wait_for(lambda: emulator.calls()["insert"] >= 1, what="the daemon's first batch")
        manual = _apply(config)
        assert manual.returncode == 1, manual.stderr
        assert "being applied by syncd run" in manual.stderr
        assert "try again when it finishes" in manual.stderr
        wait_for(lambda: set(emulator.users()) == set(ids), what="the daemon's run")
        daemon.wait_status("corp", lambda job: (job["last_run"] or {}).get("status") == "applied")
        # Each user was inserted once, by the daemon: the manual run wrote nothing.
        assert emulator.calls()["insert"] == 6
        code, _ = daemon.stop()
        assert code == 0
    emulator.clear_faults()
    emulator.reset_counters()
    after = _apply(config)  # with the daemon gone, the manual run gets the lock
    assert after.returncode == 0, after.stderr
    assert emulator.calls()["insert"] == emulator.calls()["update"] == 0


def test_a_deleted_or_corrupt_state_file_never_causes_a_wrong_write(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    ids = [f"member{i:03d}@corp.example" for i in range(12)]
    csv = tmp_path / "users.csv"
    write_csv(csv, ids)
    port = free_port()
    config = write_config(tmp_path, [job_yaml("corp", emulator.url, csv, every="1s")], port=port)
    database = tmp_path / "state" / "syncd.sqlite3"
    with DaemonProcess(config, port) as daemon:
        wait_for(lambda: set(emulator.users()) == set(ids), what="the first sync")
        daemon.wait_status("corp", lambda job: (job["last_run"] or {}).get("status") == "applied")

        # Deleted while the daemon runs: the next cycles recreate it and change nothing.
        for leftover in database.parent.glob("syncd.sqlite3*"):
            leftover.unlink()
        emulator.reset_counters()
        applied = daemon.status()["corp"]["runs_by_status"].get("applied", 0)
        # Two more cycles, so at least one ran wholly on the recreated file.
        daemon.wait_status(
            "corp", lambda job: job["runs_by_status"].get("applied", 0) >= applied + 2
        )
        assert database.exists()
        assert emulator.calls()["list"] >= 2  # the cycles did read the platform
        calls = emulator.calls()
        assert (calls["insert"], calls["update"], calls["delete"]) == (0, 0, 0)

        # Corrupt: every cycle fails before writing; the platform is left as it was.
        write_csv(csv, ids[:6])  # a change a wrong cycle would write (6 end-dates)
        for leftover in database.parent.glob("syncd.sqlite3*"):
            leftover.unlink()
        database.write_bytes(b"this is not a database" * 100)
        emulator.reset_counters()
        daemon.wait_status(
            "corp",
            lambda job: (
                (job["last_run"] or {}).get("status") == "failed"
                and "syncd.sqlite3" in (job["last_run"] or {}).get("error", "")
            ),
        )
        calls = emulator.calls()
        assert (calls["insert"], calls["update"], calls["delete"]) == (0, 0, 0)
        assert all(user.active_to is None for user in emulator.users().values())
        assert daemon.get("/healthz").status_code == 200  # alive, and saying what is wrong
        code, _ = daemon.stop()
        assert code == 0
