"""Forking through :func:`syncd.forking.fork` in a test, and looking inside the child."""

from __future__ import annotations

import os
import signal
import threading

from syncd import forking


def fork_and_report(report_after_s: float = 0.05) -> tuple[int | None, int]:
    """``forking.fork()``; the child waits ``report_after_s`` (a resumed thread would
    have started by then), reports its threads as the kernel counts them, 100 more if
    Ctrl-C would not end it at once (a Python handler), and exits 0. Returns the pid
    and that report, or (None, 0) if the fork was refused (another thread runs)."""
    readable, writable = os.pipe()
    try:
        pid = forking.fork()
        if pid == 0:  # pragma: no cover - the child; reported through the pipe
            threading.Event().wait(report_after_s)
            handled = 0 if signal.getsignal(signal.SIGINT) == signal.SIG_DFL else 100
            os.write(writable, bytes([len(os.listdir("/proc/self/task")) + handled]))
            os._exit(0)
        os.close(writable)
        if pid is None:
            return None, 0
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return pid, os.read(readable, 1)[0]
    finally:
        os.close(readable)
