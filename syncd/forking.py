"""Forking a helper process, with the background threads that can step aside paused.

A fork copies the calling thread only: a lock another thread held at that moment
stays locked in the child forever. A reader that forks a helper process (the CSV
source reads the second part of a large file in a forked child) therefore forks only
when this process runs one thread.

``syncd apply`` always runs one more: the job lock's heartbeat, which refreshes the
lock every 30 seconds. It registers here as :class:`Pausable`. :func:`fork` pauses
every registered thread (each ends between two pieces of work, so it holds no lock),
forks only if the process then runs a single thread, as the kernel counts them, and
starts the paused threads again in the parent. In the child they stay paused: they
are the parent's. A thread nobody registered (a daemon's scheduler or HTTP server, a
progress display already running) keeps the process multi-threaded, and the caller
does without the fork.

:func:`pausable` and :func:`fork` take one lock: neither may be called from a
registered thread, nor inside the other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import structlog

__all__ = ["Pausable", "could_fork", "fork", "pausable"]

log = structlog.get_logger(__name__)

THREAD_EXIT_WAIT_S = 0.05
"""How long :func:`fork` waits for threads on their way out: one joined but still in
the kernel's thread list (on Python 3.11 and 3.12, ``join()`` returns a few ms before
it leaves), or one told to stop and not joined (rich's display refresh)."""


class Pausable(Protocol):
    """A background thread that can end between two pieces of work and start again."""

    def pause(self) -> None:
        """End the thread between two pieces of work; return once it has ended (after
        the piece in progress, which may wait on I/O)."""

    def resume(self) -> None:
        """Start the thread again, keeping its schedule (after :meth:`pause`)."""


_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_registered: list[Pausable] = []
# Held while threads are paused, so a thread cannot be registered, or unregistered and
# stopped by its owner, half-way through.
_registry_lock = threading.Lock()


@contextmanager
def pausable(thread: Pausable) -> Iterator[None]:
    """Register ``thread`` for the block: :func:`fork` may pause it meanwhile.

    On leaving, it is unregistered first, so that the owner can stop it for good
    without a pause or resume coming in between.
    """
    with _registry_lock:
        _registered.append(thread)
    try:
        yield
    finally:
        with _registry_lock:
            _registered.remove(thread)


def could_fork() -> bool:
    """A hint: True if :func:`fork` may fork, as this process would run one thread once
    the registered ones paused. Threads are counted as the kernel counts them, so that
    native ones (Apache Arrow's pool, once a file was read by columns here) count too.
    :func:`fork` checks again, exactly."""
    if not hasattr(os, "fork"):
        return False
    with _registry_lock:
        registered = len(_registered)
    if threading.active_count() - registered > 1:
        return False
    # A thread joined a moment ago may still be listed: given the time fork() gives it.
    deadline = time.monotonic() + THREAD_EXIT_WAIT_S
    while (threads := os_thread_count()) is not None and threads - registered > 1:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)
    return True


def fork() -> int | None:
    """``os.fork()`` with the registered threads paused around it: the child's pid in
    the parent, 0 in the child, None (no fork) if another thread runs.

    Raises ``OSError`` if the fork fails. A paused thread that cannot be started again
    is logged, never raised: the caller's fork has happened by then.

    Ctrl-C and SIGTERM are held back across the fork, so a ``KeyboardInterrupt`` can
    never unwind the parent's frames (its lock, its run record) in the child: there
    they have their default action (they end it). One held back is raised here once
    the fork is done, after the child was killed and reaped.
    """
    with _registry_lock:
        paused: list[Pausable] = []
        try:
            for thread in _registered:
                thread.pause()
                paused.append(thread)
            if not _single_threaded():
                return None
            held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
            try:
                pid = os.fork()
            except BaseException:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
                raise
            if pid == 0:
                # The child: the registered threads are the parent's; nothing to
                # resume. Signals sent to it from now on end it, with no Python handler.
                paused.clear()
                _registered.clear()
                for number in _HELD_SIGNALS:
                    signal.signal(number, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
                return 0
            try:
                # A signal held back runs its handler here: the child must not outlive
                # the interrupted caller, who never learns its pid.
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            except BaseException:
                _end_child(pid)
                raise
            return pid
        finally:
            _resume(paused)


def _end_child(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _resume(paused: list[Pausable]) -> None:
    for thread in reversed(paused):
        try:
            thread.resume()
        except Exception as error:  # logged, not raised: the fork is done already
            log.error("fork.resume_failed", thread=type(thread).__name__, error=str(error))


def _single_threaded() -> bool:
    """One Python thread, and one thread as the kernel counts them (threads started
    from C code, and joined threads still on their way out, count there). A thread
    told to stop, but not joined, is given :data:`THREAD_EXIT_WAIT_S` to end."""
    deadline = time.monotonic() + THREAD_EXIT_WAIT_S
    while True:
        count = os_thread_count()
        if threading.active_count() == 1 and (count is None or count == 1):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)


def os_thread_count() -> int | None:
    """The threads of this process as the kernel lists them (None: not on Linux)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None
