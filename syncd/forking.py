"""Background threads that step aside while this process forks.

A fork copies the calling thread only: a lock another thread held at that moment
stays locked in the child forever. A reader that forks a helper process (the CSV
source reads the second half of a large file in a forked child) therefore forks only
when this process runs one thread.

``syncd apply`` always runs one more: the job lock's heartbeat, which refreshes the
lock every 30 seconds. It registers here as :class:`Pausable`. :func:`alone` pauses
every registered thread (each ends between two pieces of work, so it holds no lock),
tells whether the process is then single-threaded, and starts them again after the
block, which is meant to be the ``os.fork()`` call alone. A thread nobody registered
(a daemon's scheduler or HTTP server) keeps the process multi-threaded, and the caller
then does without the fork.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["Pausable", "alone", "could_be_alone", "pausable"]


class Pausable(Protocol):
    """A background thread that can end between two pieces of work and start again."""

    def pause(self) -> None:
        """End the thread between two pieces of work; return once it has ended."""

    def resume(self) -> None:
        """Start the thread again, keeping its schedule (after :meth:`pause`)."""


_registered: list[Pausable] = []
# Held while threads are paused, so a thread cannot be registered, or unregistered and
# closed by its owner, half-way through.
_registry_lock = threading.Lock()


@contextmanager
def pausable(thread: Pausable) -> Iterator[None]:
    """Register ``thread`` for the block: :func:`alone` may pause it meanwhile.

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


def could_be_alone() -> bool:
    """True if this process would run one thread once the registered ones paused."""
    with _registry_lock:
        registered = len(_registered)
    return threading.active_count() - registered <= 1


@contextmanager
def alone() -> Iterator[bool]:
    """Pause every registered thread for the block; yield whether this process then
    runs one thread only (a fork is safe only then). They start again after the block,
    even when it raises."""
    with _registry_lock:
        paused: list[Pausable] = []
        try:
            for thread in _registered:
                thread.pause()
                paused.append(thread)
            yield threading.active_count() == 1
        finally:
            for thread in reversed(paused):
                thread.resume()
