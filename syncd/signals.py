"""How syncd processes react to SIGINT and SIGTERM, in one place.

Three policies:

* :func:`interruptible` (one-shot commands): a signal interrupts the work at once, by
  raising in the main thread, so the run in progress records itself as failed before
  the process exits 130 (Ctrl-C) or 143 (SIGTERM, ``docker stop``, a rollout).
* :func:`wait_for_stop` (servers such as the emulators): a signal sets an event; the
  serving loop notices it and shuts down cleanly.
* :func:`graceful_stop` (the daemon, ``syncd run``): the first signal sets an event and
  the daemon stops at the next safe point, then exits 0; a second signal exits at once
  (130 / 143), for an operator who does not want to wait.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from rich.console import Console

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that the run in progress is recorded.

    A BaseException like KeyboardInterrupt: ``except Exception`` must not swallow it.
    """


@dataclass
class Interruption:
    """Set by :func:`interruptible`: the exit code a signal asks for (0 if none came)."""

    code: int = 0


@contextmanager
def interruptible(console: Console | None = None) -> Iterator[Interruption]:
    """Turn Ctrl-C into exit code 130 and SIGTERM into 143, after the block unwound.

    The block is interrupted at once; retry sleeps and write pools wake up and give up
    (see the platform client), and the runner records the interrupted run.
    """
    state = Interruption()
    err = console or Console(stderr=True)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield state
    except KeyboardInterrupt:
        err.print("[red]interrupted (Ctrl-C)[/red]")
        state.code = EXIT_SIGINT
    except Terminated:
        err.print("[red]stopped by SIGTERM[/red]")
        state.code = EXIT_SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def wait_for_stop() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (handlers restored after).

    Wait on it with a timeout (``while not stop.wait(0.5)``) so the handlers run promptly.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class StopRequest:
    """Set by :func:`graceful_stop`: ``event`` once a signal came, and which one."""

    event: threading.Event
    signum: int | None = None


def _exit_now(code: int) -> None:  # pragma: no cover - replaced in tests
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def graceful_stop(exit_now: Callable[[int], None] = _exit_now) -> Iterator[StopRequest]:
    """The daemon's policy: the first SIGINT/SIGTERM asks for a clean stop, the second
    ends the process at once with 130 / 143 (``exit_now``; handlers restored after).

    The main thread waits on ``event`` with a timeout, so the handler runs promptly.
    """
    request = StopRequest(threading.Event())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if request.event.is_set():
            exit_now(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
            return
        request.signum = signum
        request.event.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
