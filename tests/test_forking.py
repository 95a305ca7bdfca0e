"""Background threads stepping aside for a fork (syncd.forking), with real threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from syncd import forking


class Ticker:
    """A real background thread that ends between ticks when paused."""

    def __init__(self) -> None:
        self.ticks = 0
        self.pauses = 0
        self._wake = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self._wake.clear()
        self.thread = threading.Thread(target=self._run, name="ticker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._wake.wait(0.001):
            self.ticks += 1

    def pause(self) -> None:
        self.pauses += 1
        self._wake.set()
        assert self.thread is not None
        self.thread.join()

    def resume(self) -> None:
        self.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


@pytest.fixture
def ticker() -> Iterator[Ticker]:
    ticker = Ticker()
    ticker.start()
    yield ticker
    ticker.pause()


@pytest.fixture(autouse=True)
def only_this_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count threads as if the test's own and the tickers were the only ones: another
    test may have left an idle server thread in this process."""
    baseline = threading.active_count() - 1

    def active_count() -> int:
        return len(threading.enumerate()) - baseline

    monkeypatch.setattr(forking.threading, "active_count", active_count)


def test_a_registered_thread_is_paused_for_the_block_and_resumed_after(ticker: Ticker) -> None:
    assert not forking.could_be_alone()  # not registered: the ticker counts
    with forking.pausable(ticker):
        assert forking.could_be_alone()
        with forking.alone() as single:
            assert single
            assert not ticker.alive()
        assert ticker.alive()
        before = ticker.ticks
        while ticker.ticks == before:  # it ticks again (bounded by the test timeout)
            threading.Event().wait(0.001)
    assert ticker.pauses == 1
    assert not forking.could_be_alone()  # unregistered when the block ended


def test_an_unregistered_thread_keeps_the_process_multi_threaded(ticker: Ticker) -> None:
    other = Ticker()
    other.start()
    try:
        with forking.pausable(ticker):
            assert not forking.could_be_alone()
            with forking.alone() as single:
                assert not single
                assert not ticker.alive()  # paused all the same; the caller does without
            assert ticker.alive()
    finally:
        other.pause()


def test_paused_threads_are_resumed_when_the_block_raises(ticker: Ticker) -> None:
    with forking.pausable(ticker):
        with pytest.raises(OSError, match="no fork"), forking.alone():
            raise OSError("no fork")
        assert ticker.alive()
