"""Forking with background threads paused (syncd.forking): real threads, real forks."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
import structlog

from syncd import forking
from tests.forks import fork_and_report


class Ticker:
    """A real background thread that ends between ticks when paused."""

    def __init__(self) -> None:
        self.ticks = 0
        self.pauses = 0
        self.fail_resume = False
        self._halt = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self._halt.clear()
        self.thread = threading.Thread(target=self._run, name="ticker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._halt.wait(0.001):
            self.ticks += 1

    def pause(self) -> None:
        self.pauses += 1
        self._halt.set()
        assert self.thread is not None
        self.thread.join()

    def resume(self) -> None:
        if self.fail_resume:
            raise RuntimeError("can't start new thread")
        self.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


@pytest.fixture
def ticker() -> Iterator[Ticker]:
    ticker = Ticker()
    ticker.start()
    yield ticker
    if ticker.alive():
        ticker.pause()


@pytest.fixture(autouse=True)
def _only_this_tests_threads(only_this_tests_threads: None) -> None:
    """Every test here counts only its own threads (see tests/conftest.py)."""


def test_a_registered_thread_is_paused_for_the_fork_resumed_here_and_not_in_the_child(
    ticker: Ticker,
) -> None:
    assert not forking.could_fork()  # not registered: the ticker counts
    with forking.pausable(ticker):
        assert forking.could_fork()
        pid, child_threads = fork_and_report()
        assert pid is not None
        assert child_threads == 1  # the child runs the forking thread alone
        assert ticker.pauses == 1
        assert ticker.alive()
        before = ticker.ticks
        while ticker.ticks == before:  # it ticks again (bounded by the test timeout)
            threading.Event().wait(0.001)
    assert not forking.could_fork()  # unregistered when the block ended


def test_an_unregistered_thread_means_no_fork(ticker: Ticker) -> None:
    other = Ticker()
    other.start()
    try:
        with forking.pausable(ticker):
            assert not forking.could_fork()
            assert fork_and_report() == (None, 0)
            assert ticker.pauses == 1  # paused all the same, and started again
            assert ticker.alive()
    finally:
        other.pause()


def test_a_thread_the_kernel_still_lists_means_no_fork(
    ticker: Ticker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thread started from C code, or a joined one not yet gone: Python does not see it.
    monkeypatch.setattr(forking, "os_thread_count", lambda: 2)
    monkeypatch.setattr(forking, "THREAD_EXIT_WAIT_S", 0.01)
    with forking.pausable(ticker):
        assert forking.fork() is None
        assert ticker.alive()


def test_a_thread_that_cannot_start_again_is_logged_and_the_others_resume(
    ticker: Ticker,
) -> None:
    broken = Ticker()
    broken.start()
    broken.fail_resume = True
    with (
        forking.pausable(ticker),
        forking.pausable(broken),
        structlog.testing.capture_logs() as logs,
    ):
        pid, child_threads = fork_and_report()
    assert pid is not None
    assert child_threads == 1
    assert ticker.alive()
    assert not broken.alive()
    assert [(entry["event"], entry["error"]) for entry in logs] == [
        ("fork.resume_failed", "can't start new thread")
    ]


def test_a_failed_fork_resumes_the_paused_threads(
    ticker: Ticker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork() -> int:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(forking.os, "fork", no_fork)
    with forking.pausable(ticker):
        with pytest.raises(OSError, match="temporarily"):
            forking.fork()
        assert ticker.alive()


def test_ctrl_c_during_the_fork_is_raised_here_after_it_and_the_child_is_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-C lands just as the process forks: it is held back until the fork is done,
    # then raised here, and the child the caller will never hear of is killed and
    # reaped. (That a child has SIGINT's default action is fork_and_report's.)
    real_fork = os.fork
    children: list[int] = []

    def fork_under_ctrl_c() -> int:
        # To this thread, which blocks it across the fork (a signal to the process could
        # go to an idle thread an earlier test left; syncd forks only without any).
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        pid = real_fork()
        if pid == 0:  # pragma: no cover - the child: wait to be killed
            threading.Event().wait(30)
            os._exit(0)
        children.append(pid)
        return pid

    monkeypatch.setattr(forking.os, "fork", fork_under_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        forking.fork()
    assert len(children) == 1
    with pytest.raises(ChildProcessError):  # already reaped by fork()
        os.waitpid(children[0], os.WNOHANG)


def test_a_thread_on_its_way_out_is_waited_for_briefly(ticker: Ticker) -> None:
    # Told to stop but not joined (rich's display refresh does that): it ends within
    # THREAD_EXIT_WAIT_S, and the fork goes ahead.
    leaving = threading.Thread(target=threading.Event().wait, args=(0.01,))
    leaving.start()
    with forking.pausable(ticker):
        pid, child_threads = fork_and_report()
    assert pid is not None
    assert child_threads == 1
