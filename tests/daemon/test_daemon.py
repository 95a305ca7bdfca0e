"""``syncd run`` as a real subprocess against the platform emulator on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.platform.api import Operation
from syncd.state import SqliteStateStore
from tests.conftest import EMULATOR_API_KEY
from tests.daemon.conftest import IDS, HeldDaemon, auth, move_to_held
from tests.daemon.support import (
    SHUTDOWN_BOUND_S,
    DaemonProcess,
    free_port,
    job_yaml,
    metric,
    wait_for,
    write_config,
    write_csv,
)


def test_first_runs_apply_and_the_endpoints_show_them(held: HeldDaemon) -> None:
    daemon = held.daemon
    wait_for(lambda: len(held.emulator.users()) == 20, what="the first sync")
    job = daemon.wait_status("corp", lambda job: job["runs_by_status"].get("applied", 0) >= 2)
    assert job["schedule"] == "every 1s"
    assert job["next_run"] is not None
    text = daemon.get("/metrics").text
    assert metric(text, "syncd_changes_total", job="corp", operation="insert") == 20
    assert metric(text, "syncd_changes_total", job="corp", operation="delete") == 0
    assert (metric(text, "syncd_runs_total", job="corp", status="applied") or 0) >= 2
    assert metric(text, "syncd_runs_total", job="corp", status="failed") == 0
    assert metric(text, "syncd_source_users", job="corp", source="users.csv") == 20
    assert metric(text, "syncd_platform_users", job="corp") == 20
    assert metric(text, "syncd_guard_held", job="corp") == 0
    assert metric(text, "syncd_write_failures_total", job="corp") == 0
    assert metric(text, "syncd_build_info", version="0.1.0") == 1
    url = held.emulator.url
    assert (
        metric(text, "syncd_api_requests_total", target=url, method="GET", code="200") or 0
    ) >= 2
    assert metric(text, "syncd_api_requests_total", target=url, method="PUT", code="200") == 1
    assert (metric(text, "syncd_last_success_timestamp_seconds", job="corp") or 0) > 0
    assert daemon.get("/healthz").status_code == 200
    assert daemon.get("/readyz").status_code == 200


def test_a_held_plan_stays_held_every_cycle_and_shows_how_to_pass_it(held: HeldDaemon) -> None:
    move_to_held(held)
    daemon = held.daemon
    job = daemon.status()["corp"]
    last = job["last_run"]
    assert last["status"] == "held"
    assert last["exit_code"] == 3
    assert any("15 removals" in reason for reason in last["reasons"])
    assert last["apply_command"] == (f"syncd apply -c {held.config} --job corp --allow-removals 15")
    assert len(held.emulator.users()) == 20  # nothing was written
    text = daemon.get("/metrics").text
    assert metric(text, "syncd_guard_held", job="corp") == 1
    assert (metric(text, "syncd_runs_total", job="corp", status="held") or 0) >= 2
    page = daemon.get("/", headers=auth()).text
    assert "--allow-removals 15" in page
    assert "held" in page


def test_no_user_id_anywhere_on_the_http_side(held: HeldDaemon) -> None:
    move_to_held(held)
    daemon = held.daemon
    bodies = [
        daemon.get("/metrics").text,
        daemon.get("/status", headers=auth()).text,
        daemon.get("/", headers=auth()).text,
    ]
    for body in bodies:
        for user in IDS:
            assert user not in body
        assert "corp.example" not in body


def test_status_and_page_need_the_token_and_the_probes_do_not(held: HeldDaemon) -> None:
    daemon = held.daemon
    for path in ("/status", "/"):
        assert daemon.get(path).status_code == 401
        assert daemon.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert daemon.get(path, headers=auth()).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert daemon.get(path).status_code == 200
    assert daemon.get("/nope").status_code == 404


def test_healthcheck_command_against_the_running_daemon(held: HeldDaemon) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "healthcheck", "--url", held.daemon.url],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "healthcheck", "-c", str(held.config)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_sigterm_during_a_hanging_apply_exits_0_in_time_and_the_next_start_converges(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    ids = [f"member{i:03d}@corp.example" for i in range(40)]
    csv = tmp_path / "users.csv"
    write_csv(csv, ids)
    port = free_port()
    config = write_config(
        tmp_path,
        [job_yaml("corp", emulator.url, csv, every="1h", batch_size=5, concurrency=1)],
        port=port,
    )
    emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=150))
    with DaemonProcess(config, port) as daemon:
        wait_for(lambda: len(emulator.users()) >= 10, what="some confirmed batches")
        # From now on a request hangs longer than the shutdown bound (the client's own
        # timeout is 30 s).
        emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=12_000))
        calls = emulator.calls()["insert"]
        wait_for(lambda: emulator.calls()["insert"] > calls, what="a hanging batch")
        code, seconds = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.log()
        assert seconds < SHUTDOWN_BOUND_S
    record = SqliteStateStore(tmp_path / "state").last_run("corp")
    assert record is not None
    assert record.status == "failed"
    assert "cancelled" in str(record.summary["error"])
    # The run records every user it did not get confirmed; the platform holds the rest.
    confirmed = 40 - int(record.summary["failures"])  # type: ignore[call-overload]
    assert 10 <= confirmed < 40
    assert len(emulator.users()) == confirmed

    emulator.clear_faults()
    with DaemonProcess(config, port) as daemon:
        wait_for(lambda: set(emulator.users()) == set(ids), what="convergence after restart")
        daemon.wait_status("corp", lambda job: (job["last_run"] or {}).get("status") == "applied")
        code, seconds = daemon.stop(signal.SIGINT)
        assert code == 0
        assert seconds < SHUTDOWN_BOUND_S


def test_jobs_are_independent_a_failing_and_a_hanging_job_do_not_stop_the_others(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    good = tmp_path / "good.csv"
    write_csv(good, ["a@corp.example", "b@corp.example"])
    with PlatformEmulator(api_key=EMULATOR_API_KEY) as slow:
        slow.set_faults(Operation.LIST, EndpointFaults(latency_ms=12_000))
        port = free_port()
        config = write_config(
            tmp_path,
            [
                job_yaml("good", emulator.url, good),
                job_yaml("broken", emulator.url, tmp_path / "missing.csv"),
                job_yaml("hanging", slow.url, good),
            ],
            port=port,
        )
        with DaemonProcess(config, port) as daemon:
            daemon.wait_ready()
            daemon.wait_status("good", lambda job: job["runs_by_status"].get("applied", 0) >= 2)
            write_csv(good, ["a@corp.example", "b@corp.example", "c@corp.example"])
            wait_for(lambda: "c@corp.example" in emulator.users(), what="the next change")
            status = daemon.wait_status("broken", lambda job: job["runs"] >= 2)
            assert status["last_run"]["status"] == "held"
            assert "could not be read" in status["last_run"]["reasons"][0]
            assert status["last_run"]["apply_command"] is None  # a failed read cannot pass
            hanging = daemon.status()["hanging"]
            assert hanging["running"]
            assert hanging["runs"] == 0
            text = daemon.get("/metrics").text
            assert (metric(text, "syncd_runs_total", job="broken", status="held") or 0) >= 2
            # The hanging job's fires are skipped, and said so in the daemon's own format.
            wait_for(lambda: '"daemon.fire_skipped"' in daemon.log(), what="a skipped fire")
            assert "maximum number of running instances" not in daemon.log()
            code, seconds = daemon.stop()
            assert code == 0, daemon.log()
            assert seconds < SHUTDOWN_BOUND_S


def test_a_job_without_a_schedule_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "users.csv"
    write_csv(csv, ["a@corp.example"])
    config = write_config(
        tmp_path,
        [
            job_yaml("scheduled", "http://127.0.0.1:9", csv),
            job_yaml("manual", "http://127.0.0.1:9", csv, every=None),
        ],
        port=free_port(),
    )
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "manual" in done.stderr
    assert "scheduled" not in done.stderr.split("none for:")[1]


def test_a_cycle_that_finds_the_job_locked_elsewhere_is_busy_and_keeps_the_hold(
    held: HeldDaemon,
) -> None:
    from syncd.locking import job_lock

    move_to_held(held)
    daemon = held.daemon
    store = SqliteStateStore(held.config.parent / "state")
    # What a manual `syncd apply` of the same job holds while it runs.
    with job_lock(store, "corp", "manual-run", holder="syncd apply") as lock:
        assert lock.run_id == "manual-run"
        job = daemon.wait_status("corp", lambda job: job["runs_by_status"].get("busy", 0) >= 2)
        assert job["last_run"]["status"] == "busy"
        assert "being applied by" in job["last_run"]["error"]
        assert job["held_cycles"] >= 2  # a busy cycle says nothing about the hold
        text = daemon.get("/metrics").text
        assert (metric(text, "syncd_runs_total", job="corp", status="busy") or 0) >= 2
        assert metric(text, "syncd_guard_held", job="corp") == 1
    daemon.wait_status("corp", lambda job: job["last_run"]["status"] == "held")


def test_credential_expiry_is_a_metric_from_start_up_even_while_every_run_fails(
    tmp_path: Path,
) -> None:
    # Nothing listens on the login or Graph URL: every run fails, the gauge still shows
    # when the secret expires (the alert must not depend on a run succeeding).
    expires = (datetime.now(UTC) + timedelta(days=12)).date()
    entra = f"""
  - name: cloud
    schedule: {{every: 1h}}
    target: {{base_url: "http://127.0.0.1:9", api_key: {EMULATOR_API_KEY}}}
    sources:
      - type: entra
        name: corp-entra
        tenant_id: 00000000-0000-0000-0000-000000000000
        client_id: 11111111-1111-1111-1111-111111111111
        client_secret: not-a-real-secret
        client_secret_expires: {expires.isoformat()}
        authority_url: https://127.0.0.1:9
        graph_url: https://127.0.0.1:9
"""
    port = free_port()
    config = write_config(tmp_path, [entra], port=port)
    with DaemonProcess(config, port) as daemon:
        daemon.wait_ready()
        text = daemon.get("/metrics").text
        value = metric(
            text, "syncd_credential_expiry_timestamp_seconds", job="cloud", source="corp-entra"
        )
        midnight = datetime.combine(expires, datetime.min.time(), tzinfo=UTC)
        assert value == midnight.timestamp()
        assert "not-a-real-secret" not in text
        code, _ = daemon.stop()
        assert code == 0
