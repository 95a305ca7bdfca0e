"""run_job and JobResources against the emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import structlog
from structlog.testing import capture_logs

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.exitcodes import ExitCode
from syncd.locking import host_name, pid_namespace
from syncd.model import Origin, PlatformUser, RecordProblem, SourceUser, make_tags
from syncd.platform.api import Operation
from syncd.ports import AuditBatch, JobLock, RunRecord
from syncd.runner import PlannedRun, RunStatus
from syncd.service import JobResources, open_resources, run_job
from syncd.state import SqliteStateStore

CONFIG = """
state_dir: ./state
jobs:
  - name: corp
    target: {base_url: "${URL}", KEY, batch_size: 2, max_retries: 0}
    sources:
      - {type: csv, path: users.csv, id_column: email}
"""


def make_config(tmp_path: Path, url: str, key: str, *, key_line: str | None = None) -> SyncdConfig:
    return parse_config(
        CONFIG.replace("KEY", key_line or 'api_key: "${API_KEY}"'),
        origin="test",
        base_dir=tmp_path,
        environ={"URL": url, "API_KEY": key},
    )


def write_users(tmp_path: Path, names: list[str]) -> None:
    (tmp_path / "users.csv").write_text("email\n" + "".join(f"{n}\n" for n in names))


@pytest.fixture
def config(tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str) -> SyncdConfig:
    write_users(tmp_path, ["a@example.com", "b@example.com", "c@example.com"])
    return make_config(tmp_path, emulator.url, emulator_api_key)


def test_plan_only_reports_the_plan_and_writes_nothing(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    seen: list[PlannedRun] = []
    report = run_job(config, config.jobs[0], apply=False, on_planned=seen.append)
    assert (report.status, report.exit_code) == (RunStatus.PLANNED, ExitCode.OK)
    assert report.counts["insert"] == 3
    assert report.write_calls == 0
    assert report.result is None
    assert seen == [report.planned]
    assert emulator.calls()["insert"] == 0
    assert not (config.state_dir).exists()  # plan creates no state


def test_apply_reports_writes_and_records_the_run(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.APPLIED, ExitCode.OK)
    assert report.write_calls == 2  # ceil(3 / 2)
    assert sorted(emulator.users()) == ["a@example.com", "b@example.com", "c@example.com"]
    assert set(report.timings) >= {"read_sources", "list_platform", "plan", "apply"}
    last = SqliteStateStore(config.state_dir).last_run("corp")
    assert last is not None
    assert last.run_id == report.run_id
    assert last.status == "applied"


def test_a_held_plan_is_reported_with_its_reasons(
    config: SyncdConfig, emulator: PlatformEmulator, tmp_path: Path
) -> None:
    assert run_job(config, config.jobs[0], apply=True).exit_code is ExitCode.OK
    write_users(tmp_path, [])
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.HELD, ExitCode.HELD)
    assert report.held
    assert report.guard_reasons
    assert all(u.active_to is None for u in emulator.users().values())


def test_a_missing_secret_file_at_run_time_is_a_config_outcome(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    write_users(tmp_path, ["a@example.com"])
    (tmp_path / "key").write_text("sk-file\n")
    config = make_config(tmp_path, emulator.url, "", key_line="api_key_file: key")
    (tmp_path / "key").unlink()
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.FAILED, ExitCode.CONFIG)
    assert report.error is not None
    assert "cannot read secret file" in report.error
    assert report.planned is None
    assert not report.unexpected


def test_an_unreachable_platform_is_a_failed_outcome(tmp_path: Path, unused_port: int) -> None:
    write_users(tmp_path, ["a@example.com"])
    config = make_config(tmp_path, f"http://127.0.0.1:{unused_port}", "k")
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.FAILED, ExitCode.FAILED)
    assert report.error is not None
    assert "ConnectError" in report.error
    assert report.run_id is not None


class ScriptedSource:
    """A source that yields given users, or raises a bug; counts how often it is opened."""

    def __init__(self, names: list[str], *, bug: bool = False) -> None:
        self.names = names
        self.bug = bug
        self.opened = 0
        self.closed = 0

    @property
    def label(self) -> str:
        return "scripted"

    def __enter__(self) -> Self:
        self.opened += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed += 1

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        if self.bug:
            raise RuntimeError("a bug in a source")
        for line, name in enumerate(self.names, start=2):
            yield SourceUser.from_origin(name, make_tags({}), Origin("scripted", line))


def _resources(config: SyncdConfig, source: ScriptedSource) -> JobResources:
    built = open_resources(config, config.jobs[0])
    return JobResources(
        config.jobs[0],
        platform=built.platform,
        sources=[source],
        state=built.state,
        close=built.platform.close,  # type: ignore[attr-defined]
    )


def test_an_unexpected_error_is_a_failed_outcome_and_logged(config: SyncdConfig) -> None:
    with _resources(config, ScriptedSource([], bug=True)) as resources, capture_logs() as logs:
        report = run_job(config, config.jobs[0], apply=True, resources=resources)
    assert (report.exit_code, report.unexpected) == (ExitCode.FAILED, True)
    assert report.error == "RuntimeError: a bug in a source"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["job.crashed"]


def test_resources_are_reused_across_runs_and_closed_once(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    source = ScriptedSource(["a@example.com", "b@example.com"])
    with _resources(config, source) as resources:
        first = run_job(config, config.jobs[0], apply=True, resources=resources)
        emulator.reset_counters()
        second = run_job(config, config.jobs[0], apply=True, resources=resources)
        assert (source.opened, source.closed) == (1, 0)
    assert (source.opened, source.closed) == (1, 1)
    assert first.write_calls == 1
    assert second.write_calls == 0
    assert emulator.calls()["insert"] == 0
    assert first.run_id != second.run_id


def test_the_log_context_is_bound_for_the_run_and_unbound_after(config: SyncdConfig) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(caller="kept")
    with capture_logs() as logs:
        run_job(config, config.jobs[0], apply=True)
    assert [e["event"] for e in logs if e["event"] in ("sources.read", "run.finished")] == [
        "sources.read",
        "run.finished",
    ]
    # The run's keys are gone; what the caller bound before is untouched.
    assert structlog.contextvars.get_contextvars() == {"caller": "kept"}
    structlog.contextvars.clear_contextvars()


def test_log_lines_of_a_run_carry_its_job_and_run_id(config: SyncdConfig) -> None:
    structlog.contextvars.clear_contextvars()
    seen: list[dict[str, object]] = []

    def keep(planned: PlannedRun) -> None:
        seen.append(dict(structlog.contextvars.get_contextvars()))

    report = run_job(config, config.jobs[0], apply=False, on_planned=keep)
    assert seen == [{"job": "corp", "run_id": report.run_id}]


class Interrupting:
    """A progress display whose first advance is a Ctrl-C, in the middle of the writes."""

    def start(self, operation: object, total: int) -> object:
        def advance(count: int) -> None:
            raise KeyboardInterrupt

        return advance

    def finish(self, operation: object) -> None:
        pass


def test_an_interruption_propagates_after_the_run_is_recorded(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_job(config, config.jobs[0], apply=True, progress=Interrupting())  # type: ignore[arg-type]
    last = SqliteStateStore(config.state_dir).last_run("corp")
    assert last is not None
    assert last.status == "failed"
    assert "interrupted" in str(last.summary["error"])
    assert structlog.contextvars.get_contextvars() == {}


# ------------------------------------------------------------------- job lock


def lock_for(pid: int, run_id: str = "theirs", since: datetime | None = None) -> JobLock:
    moment = since or datetime.now(UTC)
    return JobLock("corp", run_id, "syncd run", pid, host_name(), pid_namespace(), moment, moment)


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    """Another live process on this host (a stand-in for a daemon holding the lock)."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        try:
            yield child
        finally:
            child.kill()
            child.wait(timeout=10)


def test_an_apply_while_another_process_holds_the_lock_is_busy_and_writes_nothing(
    config: SyncdConfig, emulator: PlatformEmulator, live_process: subprocess.Popen[bytes]
) -> None:
    store = SqliteStateStore(config.state_dir)
    since = datetime.now(UTC).replace(microsecond=0)
    store.acquire_lock(lock_for(live_process.pid, since=since), is_stale=lambda _: False)
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.BUSY, ExitCode.FAILED)
    assert report.error == (
        f"job corp is being applied by syncd run (pid {live_process.pid} on {host_name()}) "
        f"since {since:%H:%M:%S} UTC; try again when it finishes"
    )
    assert report.planned is None
    assert emulator.calls()["list"] == emulator.calls()["insert"] == 0
    assert store.runs("corp") == []
    # The holder's lock is untouched, and a plan needs no lock.
    current = store.current_lock("corp")
    assert current is not None
    assert current.run_id == "theirs"
    assert run_job(config, config.jobs[0], apply=False).status is RunStatus.PLANNED


def test_a_lock_left_by_a_dead_process_does_not_block(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    store = SqliteStateStore(config.state_dir)
    store.acquire_lock(lock_for(dead.pid), is_stale=lambda _: False)
    report = run_job(config, config.jobs[0], apply=True)
    assert report.status is RunStatus.APPLIED
    assert len(emulator.users()) == 3
    assert store.current_lock("corp") is None


def test_two_applies_at_once_one_runs_and_the_other_is_busy(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=400))
    store = SqliteStateStore(config.state_dir)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(run_job, config, config.jobs[0], apply=True, holder="syncd run")
        deadline = time.monotonic() + 10
        while store.current_lock("corp") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        second = run_job(config, config.jobs[0], apply=True, holder="syncd apply")
        assert first.result(timeout=30).status is RunStatus.APPLIED
    assert second.status is RunStatus.BUSY
    assert second.error is not None
    assert f"by syncd run (pid {os.getpid()} on {host_name()})" in second.error
    assert emulator.calls()["insert"] == 2  # the first run's two batches, nothing more
    assert store.current_lock("corp") is None
    assert run_job(config, config.jobs[0], apply=True).status is RunStatus.APPLIED


def test_the_lock_is_released_after_an_interruption(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_job(config, config.jobs[0], apply=True, progress=Interrupting())  # type: ignore[arg-type]
    assert SqliteStateStore(config.state_dir).current_lock("corp") is None


# ----------------------------------------------------------- retention, bad files


def test_an_apply_prunes_history_older_than_the_retention(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    store = SqliteStateStore(config.state_dir)
    old = datetime.now(UTC) - timedelta(days=401)
    kept = datetime.now(UTC) - timedelta(days=399)
    gone = PlatformUser("gone@example.com", (), date(2025, 1, 1))
    for run_id, moment in (("old", old), ("kept", kept)):
        store.record_run(
            RunRecord(run_id, "corp", moment, moment, "applied", {}),
            [AuditBatch(run_id, "corp", "insert", moment, [(f"{run_id}@x.com", None, gone)])],
        )
    report = run_job(config, config.jobs[0], apply=True)
    assert report.status is RunStatus.APPLIED
    assert [r.run_id for r in store.runs("corp")] == [report.run_id, "kept"]
    assert store.audit(["old@x.com"]) == []
    assert len(store.audit(["kept@x.com"])) == 1
    assert len(store.audit(["a@example.com"])) == 1
    # A plan prunes nothing (it never writes the database).
    store.record_run(RunRecord("older", "corp", old, old, "applied", {}))
    run_job(config, config.jobs[0], apply=False)
    assert "older" in {r.run_id for r in store.runs("corp")}


def test_a_corrupt_database_fails_the_apply_before_any_platform_call(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    config.state_dir.mkdir()
    (config.state_dir / "syncd.sqlite3").write_bytes(b"garbage " * 1000)
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.FAILED, ExitCode.FAILED)
    assert report.error is not None
    assert "syncd.sqlite3: file is not a database" in report.error
    calls = emulator.calls()
    assert calls["insert"] == calls["update"] == calls["delete"] == 0
    assert emulator.users() == {}


def test_a_read_only_database_fails_the_apply_naming_the_file(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    store = SqliteStateStore(config.state_dir)
    store.ensure_writable()
    frozen = [str(store.path), str(config.state_dir)]
    if subprocess.run(["chattr", "+i", *frozen], check=False).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        report = run_job(config, config.jobs[0], apply=True)
    finally:
        subprocess.run(["chattr", "-i", *frozen], check=True)
    assert (report.status, report.exit_code) == (RunStatus.FAILED, ExitCode.FAILED)
    assert report.error is not None
    assert report.error.startswith(f"state database {store.path} cannot be written")
    assert emulator.calls()["insert"] == 0
    assert emulator.users() == {}


def test_a_locked_database_fails_the_apply_before_any_platform_call(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    built = open_resources(config, config.jobs[0])
    store = SqliteStateStore(config.state_dir, busy_timeout=0.2)
    store.ensure_writable()
    resources = JobResources(
        config.jobs[0],
        platform=built.platform,
        sources=built.sources,
        state=store,
        close=built.platform.close,  # type: ignore[attr-defined]
    )
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        with resources:
            report = run_job(config, config.jobs[0], apply=True, resources=resources)
    finally:
        holder.close()
    assert (report.status, report.exit_code) == (RunStatus.FAILED, ExitCode.FAILED)
    assert report.error is not None
    assert report.error.startswith(f"state database {store.path} is locked by another process")
    assert emulator.calls()["list"] == emulator.calls()["insert"] == 0


def test_resources_of_another_job_are_refused(config: SyncdConfig) -> None:
    other = config.jobs[0].model_copy(update={"name": "hr"})
    with open_resources(config, config.jobs[0]) as resources, pytest.raises(ValueError, match="hr"):
        run_job(config, other, apply=False, resources=resources)
