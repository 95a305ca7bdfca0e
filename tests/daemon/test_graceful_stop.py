"""The daemon's signal policy, with real signals sent to this process."""

from __future__ import annotations

import os
import signal

import pytest

from syncd.signals import EXIT_SIGINT, EXIT_SIGTERM, graceful_stop


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, EXIT_SIGINT)]
)
def test_first_signal_asks_to_stop_and_the_second_exits_at_once(signum: int, code: int) -> None:
    exits: list[int] = []
    before = signal.getsignal(signum)
    with graceful_stop(exit_now=exits.append) as stop:
        os.kill(os.getpid(), signum)
        assert stop.event.wait(5)
        assert stop.signum == signum
        assert exits == []
        os.kill(os.getpid(), signum)
        # The handler runs between bytecodes of the main thread: give it a chance.
        for _ in range(100):
            if exits:
                break
            stop.event.wait(0.01)
    assert exits == [code]
    assert signal.getsignal(signum) is before
