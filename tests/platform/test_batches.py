"""The batch dispatcher on its own, with fake batches (no HTTP): order, stops, errors."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

import pytest

from syncd.errors import PlatformError
from syncd.platform.batches import BatchResult, dispatch_batches

_run_id: contextvars.ContextVar[str] = contextvars.ContextVar("run_id", default="none")


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt (which pytest itself would catch)."""


class Recorder:
    """Fake batches and callbacks that record what ran and in which order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.events: list[tuple[str, int]] = []
        self.interrupts: list[BaseException] = []
        self.cancelled = threading.Event()
        self.stop = threading.Event()

    def run(self, task: int) -> BatchResult:
        with self.lock:
            self.started.append(task)
        return BatchResult(size=task + 1, confirmed=[f"u{task}"], calls=1)

    def absorb(self, result: BatchResult) -> None:
        self.events.append(("absorb", result.size))

    def progress(self, size: int) -> None:
        self.events.append(("progress", size))

    def interrupted(self, exception: BaseException) -> None:
        self.interrupts.append(exception)

    def dispatch(
        self, tasks: range, workers: int, run: Callable[[int], BatchResult] | None = None
    ) -> bool:
        return dispatch_batches(
            tasks,
            run or self.run,
            self.absorb,
            workers=workers,
            progress=self.progress,
            cancelled=self.cancelled,
            stop=self.stop,
            interrupted=self.interrupted,
        )


def test_each_result_is_absorbed_then_reported_and_every_task_runs_once() -> None:
    recorder = Recorder()

    assert recorder.dispatch(range(20), workers=3) is False

    assert sorted(recorder.started) == list(range(20))
    assert [kind for kind, _ in recorder.events] == ["absorb", "progress"] * 20
    # each report carries the size of the result absorbed just before it
    absorbed, reported = recorder.events[::2], recorder.events[1::2]
    assert [size for _, size in absorbed] == [size for _, size in reported]
    assert recorder.interrupts == []


def test_no_batch_starts_before_a_slot_was_absorbed_and_reported() -> None:
    recorder = Recorder()
    started_at_report: list[int] = []

    def slow_progress(size: int) -> None:
        time.sleep(0.01)  # a slow caller: workers must not race ahead of it
        with recorder.lock:
            started_at_report.append(len(recorder.started))

    dispatch_batches(
        range(10),
        recorder.run,
        recorder.absorb,
        workers=2,
        progress=slow_progress,
        cancelled=recorder.cancelled,
        stop=recorder.stop,
        interrupted=recorder.interrupted,
    )

    # At the end of the k-th report (k from 0), k slots were freed: at most 2 + k
    # batches started, however long the report took.
    assert all(n <= 2 + k for k, n in enumerate(started_at_report)), started_at_report
    assert len(started_at_report) == 10


def test_no_batch_starts_after_a_result_with_an_error() -> None:
    recorder = Recorder()

    def run(task: int) -> BatchResult:
        result = recorder.run(task)
        if task == 1:
            result.error = PlatformError("refused", status_code=400)
        return result

    assert recorder.dispatch(range(6), workers=1, run=run) is False

    assert recorder.started == [0, 1]
    assert recorder.events == [("absorb", 1), ("progress", 1), ("absorb", 2), ("progress", 2)]


def test_an_unexpected_worker_exception_is_raised_on_the_calling_thread() -> None:
    recorder = Recorder()

    def run(task: int) -> BatchResult:
        if task == 1:
            raise RuntimeError("a bug in a batch")
        return recorder.run(task)

    with pytest.raises(RuntimeError, match="a bug in a batch") as raised:
        recorder.dispatch(range(6), workers=1, run=run)

    assert recorder.started == [0]  # task 1 raised; nothing started after it
    assert recorder.interrupts == [raised.value]
    assert recorder.events == [("absorb", 1), ("progress", 1)]
    assert not recorder.stop.is_set()  # cleared again: the client was not cancelled


def test_a_cancel_stops_new_batches_and_is_reported() -> None:
    recorder = Recorder()

    def run(task: int) -> BatchResult:
        recorder.cancelled.set()  # cancel() from elsewhere while the first batch runs
        return recorder.run(task)

    assert recorder.dispatch(range(6), workers=1, run=run) is True

    assert recorder.started == [0]
    assert recorder.events == [("absorb", 1), ("progress", 1)]


def test_an_interruption_wakes_the_batches_in_flight_and_absorbs_them_before_raising() -> None:
    recorder = Recorder()
    woken: list[bool] = []
    in_flight = threading.Event()

    def run(task: int) -> BatchResult:
        if task == 1:
            in_flight.set()
            # A retry sleep: wakes once the dispatcher sets the caller's stop event.
            woken.append(recorder.stop.wait(timeout=10))
        return recorder.run(task)

    def interrupting_progress(size: int) -> None:
        recorder.events.append(("progress", size))
        assert in_flight.wait(timeout=10)  # interrupted while task 1 is on the wire
        raise Interrupt

    with pytest.raises(Interrupt) as raised:
        dispatch_batches(
            range(6),
            run,
            recorder.absorb,
            workers=2,
            progress=interrupting_progress,
            cancelled=recorder.cancelled,
            stop=recorder.stop,
            interrupted=recorder.interrupted,
        )

    assert woken == [True]  # task 1 waited on the stop event and was woken by it
    assert sorted(recorder.started) == [0, 1]  # nothing new after the interruption
    # The first result was reported; the one in flight was absorbed, not reported.
    absorbed = sorted(size for kind, size in recorder.events if kind == "absorb")
    assert absorbed == [1, 2]
    assert [size for kind, size in recorder.events if kind == "progress"] == [1]
    assert recorder.interrupts == [raised.value]
    assert not recorder.stop.is_set()  # a long-lived client retries in its next write


def test_after_an_interruption_of_a_cancelled_client_the_stop_event_stays_set() -> None:
    recorder = Recorder()

    def interrupting_progress(size: int) -> None:
        recorder.cancelled.set()
        raise Interrupt

    with pytest.raises(Interrupt):
        dispatch_batches(
            range(3),
            recorder.run,
            recorder.absorb,
            workers=1,
            progress=interrupting_progress,
            cancelled=recorder.cancelled,
            stop=recorder.stop,
            interrupted=recorder.interrupted,
        )

    assert recorder.stop.is_set()
    assert recorder.started == [0]


def test_workers_run_in_a_copy_of_the_callers_context() -> None:
    recorder = Recorder()
    seen: list[tuple[int, str]] = []

    def run(task: int) -> BatchResult:
        with recorder.lock:
            seen.append((threading.get_ident(), _run_id.get()))
        return recorder.run(task)

    token = _run_id.set("run-7")
    try:
        recorder.dispatch(range(5), workers=2, run=run)
    finally:
        _run_id.reset(token)

    assert [run_id for _, run_id in seen] == ["run-7"] * 5
    assert threading.get_ident() not in {ident for ident, _ in seen}


def test_at_least_one_worker_is_required() -> None:
    with pytest.raises(ValueError, match="workers"):
        Recorder().dispatch(range(1), workers=0)
