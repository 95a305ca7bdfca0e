"""The per-job lock: staleness (pure), the message, PID checks, a holder killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from syncd import locking
from syncd.locking import (
    busy_message,
    host_name,
    job_lock,
    lock_is_stale,
    new_lock,
    pid_alive,
    pid_namespace,
    process_holder,
)
from syncd.ports import JobLock
from syncd.state import SqliteStateStore
from tests.forks import fork_and_report

NOW = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)


def held(pid: int = 4242, host: str = "host-a", beat: datetime = NOW) -> JobLock:
    return JobLock("corp", "r1", "syncd run", pid, host, "pid:[7]", NOW, beat)


def stale(lock: JobLock, *, alive: bool, host: str = "host-a", ns: str = "pid:[7]") -> bool:
    return lock_is_stale(
        lock, now=NOW, host=host, namespace=ns, alive=lambda _: alive, lease=timedelta(minutes=5)
    )


def test_a_lock_is_stale_when_its_process_is_gone_here_or_its_heartbeat_expired() -> None:
    assert not stale(held(), alive=True)
    assert stale(held(), alive=False)
    # Another host or PID namespace: the PID means nothing here, only the lease counts.
    assert not stale(held(), alive=False, host="host-b")
    assert not stale(held(), alive=False, ns="pid:[8]")
    expired = held(beat=NOW - timedelta(minutes=6))
    assert stale(expired, alive=True)
    assert stale(expired, alive=True, host="host-b")


def test_the_busy_message_names_the_holder_and_since_when() -> None:
    lock = JobLock(
        "corp", "r1", "syncd run", 4242, "host-a", "", NOW.replace(hour=12, minute=0, second=3), NOW
    )
    assert busy_message(lock, NOW) == (
        "job corp is being applied by syncd run (pid 4242 on host-a) since 12:00:03 UTC; "
        "try again when it finishes"
    )
    assert "since 2026-11-22 12:00:03 UTC" in busy_message(lock, NOW + timedelta(days=1))


def test_process_holder_names_the_command() -> None:
    assert process_holder(["/usr/bin/syncd", "run", "-c", "x"]) == "syncd run"
    assert process_holder(["/x/syncd/__main__.py", "apply"]) == "syncd apply"
    assert process_holder(["pytest", "-q"]) == "syncd"
    assert process_holder(["syncd", "--help"]) == "syncd"


def test_pid_alive_sees_a_running_process_and_not_a_killed_one() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        # Until it is reaped it is a zombie, which counts as gone.
        deadline = time.monotonic() + 10
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert not pid_alive(child.pid)


HOLDER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from syncd.locking import host_name, lock_is_stale, new_lock, pid_namespace
from syncd.state import SqliteStateStore
from tests.forks import fork_and_report
store = SqliteStateStore(Path(sys.argv[1]))
mine = new_lock("corp", "held-by-child", "syncd apply", datetime.now(UTC))
assert store.acquire_lock(mine, is_stale=lambda _: False) == mine
print("locked", flush=True)
sys.stdin.read()  # hold it until killed
"""


def test_a_lock_left_by_a_process_killed_with_sigkill_is_taken_over(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "locked"
            store = SqliteStateStore(tmp_path)
            with job_lock(store, "corp", "mine-1", holder="syncd run") as first:
                assert first.run_id == "held-by-child"
                assert first.pid == child.pid
                assert (first.host, first.namespace) == (host_name(), pid_namespace())
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            with job_lock(store, "corp", "mine-2", holder="syncd run") as second:
                assert second.run_id == "mine-2"
                current = store.current_lock("corp")
                assert current is not None
                assert (current.run_id, current.pid) == ("mine-2", os.getpid())
            assert store.current_lock("corp") is None
        finally:
            child.kill()
            child.wait(timeout=10)


def test_a_lock_row_for_a_pid_that_does_not_exist_is_taken_over(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    ghost = new_lock("corp", "ghost", "syncd run", NOW)
    ghost = JobLock(
        ghost.job,
        ghost.run_id,
        ghost.holder,
        int(dead.stdout),
        ghost.host,
        ghost.namespace,
        datetime.now(UTC),
        datetime.now(UTC),
    )
    assert store.acquire_lock(ghost, is_stale=lambda _: False) == ghost
    with job_lock(store, "corp", "mine", holder="syncd apply") as holder:
        assert holder.run_id == "mine"


def test_the_holder_refreshes_its_heartbeat_and_a_lost_lock_stops_it(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    with job_lock(store, "corp", "r1", holder="syncd run", heartbeat=timedelta(seconds=0.05)):
        first = store.current_lock("corp")
        assert first is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = store.current_lock("corp")
            assert now is not None
            if now.heartbeat_at > first.heartbeat_at:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the heartbeat never moved")
        assert now.since == first.since
    assert store.current_lock("corp") is None
    assert not [t for t in threading.enumerate() if t.name == "syncd-lock-corp"]


def test_an_expired_lease_is_taken_over_even_when_the_pid_looks_alive(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    # Our own PID: alive, but the holder stopped beating an hour ago (a reused PID, or
    # a holder in another container).
    other = JobLock("corp", "old", "syncd run", os.getpid(), "elsewhere", "", long_ago, long_ago)
    store.acquire_lock(other, is_stale=lambda _: False)
    with job_lock(store, "corp", "short", holder="syncd run", lease=timedelta(hours=2)) as got:
        assert got.run_id == "old"
    with job_lock(store, "corp", "new", holder="syncd run") as got:
        assert got.run_id == "new"


def test_a_lock_taken_over_meanwhile_calls_on_lost(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    lost = threading.Event()
    with job_lock(
        store, "corp", "r1", holder="syncd run", heartbeat=timedelta(seconds=0.05), on_lost=lost.set
    ):
        # Another run takes the job over (as after this process was paused past the lease).
        store.release_lock("corp", "r1")
        with job_lock(store, "corp", "r2", holder="syncd apply") as other:
            assert other.run_id == "r2"
            assert lost.wait(10)


def test_the_heartbeat_steps_aside_for_a_fork_and_keeps_its_schedule(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    with job_lock(store, "corp", "r1", holder="syncd apply", heartbeat=timedelta(seconds=0.2)):
        first = store.current_lock("corp")
        assert first is not None
        beats = {first.heartbeat_at}
        # Forks far more often than the interval: a heartbeat that started its wait
        # anew at each resume would never beat.
        deadline = time.monotonic() + 10
        while len(beats) < 4 and time.monotonic() < deadline:
            fork_and_report(report_after_s=0)
            time.sleep(0.02)
            now = store.current_lock("corp")
            assert now is not None
            beats.add(now.heartbeat_at)
        assert len(beats) >= 4, "the heartbeat did not keep beating between forks"
        assert [t.name for t in threading.enumerate()].count("syncd-lock-corp") == 1
    assert not [t for t in threading.enumerate() if t.name == "syncd-lock-corp"]


@pytest.mark.usefixtures("only_this_tests_threads")
def test_a_forked_child_neither_runs_nor_restarts_the_heartbeat(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    with job_lock(store, "corp", "r1", holder="syncd apply", heartbeat=timedelta(seconds=0.05)):
        # The child lives four intervals: a heartbeat resumed there would have started.
        pid, child_threads = fork_and_report(report_after_s=0.2)
        assert pid is not None
        assert child_threads == 1
    assert store.current_lock("corp") is None


def test_a_lost_lock_ends_the_heartbeat_for_good_even_across_a_pause(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    lost: list[float] = []
    with job_lock(
        store,
        "corp",
        "r1",
        holder="syncd run",
        heartbeat=timedelta(seconds=0.05),
        on_lost=lambda: lost.append(time.monotonic()),
    ):
        store.release_lock("corp", "r1")
        deadline = time.monotonic() + 10
        while not lost and time.monotonic() < deadline:
            time.sleep(0.01)
        fork_and_report(report_after_s=0)
        time.sleep(0.2)  # four intervals: a resumed heartbeat would have beaten again
        assert len(lost) == 1
        assert not [t for t in threading.enumerate() if t.name == "syncd-lock-corp"]


@pytest.mark.usefixtures("only_this_tests_threads")
def test_a_heartbeat_that_cannot_start_again_after_a_fork_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without its heartbeat the lock would expire under a run still writing: the run
    # is told the lock is lost (on_lost stops the writes), and the fork goes on.
    store = SqliteStateStore(tmp_path)
    lost: list[str] = []
    with job_lock(
        store,
        "corp",
        "r1",
        holder="syncd apply",
        heartbeat=timedelta(seconds=0.05),
        on_lost=lambda: lost.append("lost"),
    ):
        monkeypatch.setattr(locking.threading, "Thread", _ThreadThatCannotStart)
        with structlog.testing.capture_logs() as logs:
            pid, child_threads = fork_and_report(report_after_s=0)
        assert pid is not None
        assert child_threads == 1
        assert lost == ["lost"]
        assert [(entry["event"], entry["error"]) for entry in logs] == [
            ("lock.heartbeat_stopped", "can't start new thread")
        ]
        time.sleep(0.2)
        assert not [t for t in threading.enumerate() if t.name == "syncd-lock-corp"]
    assert store.current_lock("corp") is None  # released all the same


class _ThreadThatCannotStart(threading.Thread):
    def start(self) -> None:
        if self.name.startswith("syncd-lock-"):
            raise RuntimeError("can't start new thread")
        super().start()


def test_a_heartbeat_that_cannot_start_releases_the_lock_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStateStore(tmp_path)
    monkeypatch.setattr(locking.threading, "Thread", _ThreadThatCannotStart)
    with (
        pytest.raises(RuntimeError, match="can't start new thread"),
        job_lock(store, "corp", "r1", holder="syncd apply"),
    ):
        pytest.fail("the block must not run without a heartbeat")
    assert store.current_lock("corp") is None
