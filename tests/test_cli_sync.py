"""The progress bars of ``syncd apply`` (:mod:`syncd.cli_sync`): drawn only when shown."""

from __future__ import annotations

import io
import sys
import threading

import pytest
from rich.console import Console

from syncd.cli_sync import _progress_bars
from syncd.platform.api import Operation


def test_bars_that_are_shown_draw_each_operation_to_its_total() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    with _progress_bars(console, show=True) as bars:
        assert bars is not None
        advance = bars.start(Operation.INSERT, 10)
        started = _refresh_threads()
        advance(4)
        bars.finish(Operation.INSERT)
    for thread in started:  # rich tells its refresh thread to stop, without a join
        thread.join(timeout=10)
    assert "insert" in out.getvalue()
    assert "10/10" in out.getvalue()  # finish() completes the bar


def test_bars_that_are_not_shown_are_none_and_draw_nothing() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with _progress_bars(console, show=False) as bars:
        assert bars is None
    # Nothing drawn; that rich.progress is not even imported for a plan or an apply in a
    # pipe is checked in a fresh interpreter by tests/test_startup.py.
    assert out.getvalue() == ""


def _refresh_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if type(thread).__name__ == "_RefreshThread"]


def test_the_live_display_and_its_thread_start_with_the_first_write_only() -> None:
    # Until then the process may fork to read a large CSV file (syncd.forking).
    console = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    with _progress_bars(console, show=True) as bars:
        assert bars is not None
        assert _refresh_threads() == []  # reading, planning: no display thread
        bars.start(Operation.INSERT, 10)
        started = _refresh_threads()
        assert len(started) == 1
    started[0].join(timeout=10)  # told to stop with the job; it ends within a refresh
    assert not started[0].is_alive()
    with _progress_bars(console, show=True) as bars:
        pass  # a plan without writes never starts it
    assert _refresh_threads() == []


def test_the_live_display_ends_when_the_job_fails_half_way() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    started: list[threading.Thread] = []
    shown: list[object] = []

    def job_interrupted_while_writing() -> None:
        with _progress_bars(console, show=True) as bars:
            assert bars is not None
            shown.append(bars)
            bars.start(Operation.DELETE, 3)
            started.extend(_refresh_threads())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job_interrupted_while_writing()
    assert len(started) == 1
    started[0].join(timeout=10)
    assert not started[0].is_alive()
    assert not getattr(shown[0], "live", True)


def test_a_display_that_fails_to_start_is_still_taken_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # rich redirects sys.stdout before it starts its refresh thread: if that thread
    # cannot start, the redirect must still be undone (and the cursor shown again).
    import rich.live

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(rich.live._RefreshThread, "start", cannot_start)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    stdout = sys.stdout

    def job() -> None:
        with _progress_bars(console, show=True) as bars:
            assert bars is not None
            bars.start(Operation.INSERT, 1)

    with pytest.raises(RuntimeError, match="can't start"):
        job()
    assert sys.stdout is stdout
    assert out.getvalue().endswith("\x1b[?25h")  # the cursor shown again
