"""The signal policies, with real signals sent to this process."""

from __future__ import annotations

import io
import os
import signal
import threading

import pytest
from rich.console import Console

from syncd.signals import EXIT_SIGINT, EXIT_SIGTERM, interruptible, wait_for_stop


def _quiet() -> Console:
    return Console(file=io.StringIO())


def test_sigterm_interrupts_the_block_and_asks_for_143() -> None:
    before = signal.getsignal(signal.SIGTERM)
    reached_end = False
    with interruptible(_quiet()) as interrupted:
        os.kill(os.getpid(), signal.SIGTERM)
        reached_end = True  # pragma: no cover - the signal raises before this line
    assert not reached_end
    assert interrupted.code == EXIT_SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_asks_for_130() -> None:
    with interruptible(_quiet()) as interrupted:
        raise KeyboardInterrupt
    assert interrupted.code == EXIT_SIGINT


def test_no_signal_leaves_the_code_at_zero_and_errors_propagate() -> None:
    with interruptible(_quiet()) as interrupted:
        pass
    assert interrupted.code == 0
    with pytest.raises(ValueError, match="boom"), interruptible(_quiet()):
        raise ValueError("boom")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_wait_for_stop_sets_the_event_and_restores_the_handlers(signum: int) -> None:
    before = signal.getsignal(signum)
    with wait_for_stop() as stop:
        assert not stop.is_set()
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        assert stop.wait(5)
    assert signal.getsignal(signum) is before
