"""How a write spreads its batches over a small pool of worker threads.

:func:`dispatch_batches` runs one write's batches for :class:`~syncd.platform.client.
PlatformClient`. Each worker takes the next batch itself (rather than the calling
thread building a Future per batch and waiting on all of them); the calling thread
absorbs the results and reports progress. The guarantees the client's write contract
rests on:

* a batch starts only when one of ``workers`` slots is free, and a slot is freed only
  once its result was absorbed and its progress reported, so at most ``workers``
  batches are ever ahead of the caller;
* after an error (a result carrying one), a cancel or an interruption no worker takes
  a new batch: only those in flight finish;
* a worker's unexpected exception (a bug, never a SyncdError: those travel in the
  result) is raised on the calling thread, as a Future would;
* workers run in a copy of the caller's context, so their log lines carry the run's
  fields (job, run_id) like every other line;
* an interruption of the calling thread (Ctrl-C, SIGTERM, a failing progress callback)
  stops everything at once, lets the requests on the wire finish, and absorbs what they
  did before it is re-raised.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from syncd.errors import SyncdError
from syncd.ports import ProgressCallback, WriteFailure

__all__ = ["BatchResult", "dispatch_batches"]

_Task = TypeVar("_Task")

THREAD_NAME_PREFIX = "syncd-platform"


@dataclass(slots=True)
class BatchResult:
    """What one batch (and its 413 halves) did; merged by the calling thread."""

    size: int
    start: int = 0  # the batch's first item among the write's items
    confirmed: list[str] = field(default_factory=list)
    failures: list[WriteFailure] = field(default_factory=list)
    calls: int = 0  # every attempt of the batch's requests (413 halves included)
    error: SyncdError | None = None
    sent: bytes | None = None  # the body, when one request wrote and confirmed all of it


def dispatch_batches(
    tasks: Iterable[_Task],
    run: Callable[[_Task], BatchResult],
    absorb: Callable[[BatchResult], None],
    *,
    workers: int,
    progress: ProgressCallback | None,
    cancelled: threading.Event,
    stop: threading.Event,
    interrupted: Callable[[BaseException], None],
) -> bool:
    """Run ``run(task)`` for each of ``tasks`` on ``workers`` threads; True if cut by a cancel.

    ``run`` is called on a worker thread and reports a failure in its result's
    ``error`` (it raises only on a bug); a result with an error stops further batches.
    ``absorb(result)`` and then ``progress(result.size)`` are called on the calling
    thread, one result at a time. ``cancelled`` (the client's cancel, set from any
    thread) is checked before each batch: once it is set no batch starts, and the
    return value is True, so the caller can account the rest as not written.

    On any exception on the calling thread (an interruption, a failing ``absorb`` or
    ``progress``, a worker's unexpected exception raised here): no batch starts any
    more, ``stop`` (the caller's retry stop) is set so retry sleeps wake and give up,
    the pool is shut down once the requests on the wire finished, and ``stop`` is
    cleared again unless ``cancelled`` is set (a long-lived client must retry in its
    next write). Results that arrived meanwhile are absorbed (without progress), then
    ``interrupted(exception)`` is called and the exception re-raised.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    pending = iter(tasks)
    results: queue.SimpleQueue[BatchResult | BaseException | None] = queue.SimpleQueue()
    take = threading.Lock()
    # Free slots as tokens in a C-level queue: cheaper than a Python Semaphore.
    slots: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(workers):
        slots.put(None)
    halt = threading.Event()
    saw_cancel = threading.Event()

    def work() -> None:
        try:
            while True:
                slots.get()
                if halt.is_set():
                    return
                with take:
                    try:
                        task = next(pending)
                    except StopIteration:
                        return
                if cancelled.is_set():
                    # cancel() from another thread: this batch and the rest are not
                    # sent; the caller accounts them as not written.
                    saw_cancel.set()
                    halt.set()
                    return
                result = run(task)
                if result.error is not None:
                    halt.set()
                results.put(result)
        except BaseException as unexpected:
            halt.set()
            results.put(unexpected)  # raised by the calling thread, as a Future would
        finally:
            results.put(None)  # this worker is done

    pool = ThreadPoolExecutor(workers, thread_name_prefix=THREAD_NAME_PREFIX)
    try:
        running = 0
        for _ in range(workers):
            # A copy of the caller's context per worker: its log fields come along.
            pool.submit(contextvars.copy_context().run, work)
            running += 1
        while running:
            item = results.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                absorb(item)
                if progress is not None:
                    progress(item.size)
                slots.put(None)
    except BaseException as interrupt:
        # Ctrl-C / SIGTERM (or a failing callback): stop at once. Retry sleeps wake up
        # and give up, so only requests already on the wire finish (within the
        # client's timeout); what they confirmed is absorbed into the caller's outcome.
        halt.set()
        for _ in range(workers):
            slots.put(None)  # a worker waiting for a slot wakes and sees the halt
        stop.set()
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            # No batch of this write is left to wake (even if a second Ctrl-C cut the
            # wait short); a client kept across runs (the daemon) must retry again in
            # its next write, unless it was cancelled.
            if not cancelled.is_set():
                stop.clear()
        while not results.empty():
            left = results.get()
            if isinstance(left, BatchResult):
                absorb(left)
        interrupted(interrupt)
        raise
    finally:
        pool.shutdown(wait=True)
    return saw_cancel.is_set()
