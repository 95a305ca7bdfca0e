"""The audit log of an applying run, written on a thread of its own (syncd.audit_writer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from syncd.audit import AuditJournal
from syncd.audit_writer import AuditWriter
from syncd.errors import StateError, StateReplacedError
from syncd.model import PlatformUser, make_tags
from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import Operation
from syncd.ports import AuditBatch, RunRecord
from syncd.state import SqliteStateStore

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
NAMES = [f"u{i}@x.com" for i in range(7)]
PLAN = Plan(
    inserts=tuple(
        Change(
            ChangeKind.INSERT,
            PlatformUser(n, make_tags({"d": "Eng"}), date(2026, 1, 1)),
            None,
            "new",
        )
        for n in NAMES
    )
)


def journal() -> AuditJournal:
    return AuditJournal(PLAN, run_id="r1", job="corp", identity=str)


def names_of(batches: list[AuditBatch]) -> list[str]:
    return [entry[0] for batch in batches for entry in batch.users]


def started_writer(
    tmp_path: Path, *, chunk: int, delay_s: float
) -> tuple[SqliteStateStore, AuditWriter, list[str]]:
    """A writer for run r1 over a real store, following a list of inserted names."""
    store = SqliteStateStore(tmp_path)
    appender = store.start_run(RunRecord("r1", "corp", NOW, NOW, "running", {}))
    writer = AuditWriter(journal(), appender, chunk=chunk, delay_s=delay_s)
    confirmed: list[str] = []
    writer.follow(Operation.INSERT, confirmed)
    return store, writer, confirmed


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_what_was_confirmed_is_written_on_the_writer_thread_and_the_rest_goes_with_the_record(
    tmp_path: Path,
) -> None:
    store = SqliteStateStore(tmp_path)
    appender = store.start_run(RunRecord("r1", "corp", NOW, NOW, "running", {}))
    threads: list[str] = []
    append = appender.append

    def spy(audit: Iterable[AuditBatch]) -> None:
        threads.append(threading.current_thread().name)
        append(audit)

    appender.append = spy  # type: ignore[method-assign]
    writer = AuditWriter(journal(), appender, chunk=3, delay_s=3600)
    confirmed: list[str] = []
    writer.follow(Operation.INSERT, confirmed)
    confirmed += NAMES[:2]
    writer.poke()  # 2 pending: not a chunk, and the tick is an hour away
    confirmed += NAMES[2:4]
    writer.poke()  # 4 pending: written now, on the writer's thread
    wait_for(lambda: len(store.audit(NAMES)) == 4)
    assert [e.end_user for e in store.audit(NAMES)] == NAMES[:4]
    confirmed.append(NAMES[4])
    assert writer.finish() == []  # the last ones are written as the thread stops
    assert [e.end_user for e in store.audit(NAMES)] == NAMES[:5]
    assert threads == ["syncd-audit", "syncd-audit"]
    assert not any(t.name == "syncd-audit" for t in threading.enumerate())


def test_the_writer_writes_on_its_own_every_tick(tmp_path: Path) -> None:
    store, writer, confirmed = started_writer(tmp_path, chunk=1000, delay_s=0.05)
    confirmed += NAMES[:3]  # no poke: a batch in backoff, a long re-read
    wait_for(lambda: len(store.audit(NAMES)) == 3)
    assert [e.end_user for e in store.audit(NAMES)] == NAMES[:3]
    assert writer.finish() == []


class RefusingAppender:
    """An appender whose store refuses every write (a locked database, say)."""

    def __init__(self, error: StateError) -> None:
        self.error = error
        self.calls = 0
        self.closed_on: str | None = None

    def append(self, audit: Iterable[AuditBatch]) -> None:
        self.calls += 1
        raise self.error

    def close(self) -> None:
        self.closed_on = threading.current_thread().name


def test_after_a_refused_write_everything_waits_for_the_record_in_order() -> None:
    appender = RefusingAppender(StateError("state database x is locked by another process"))
    writer = AuditWriter(journal(), appender, chunk=2, delay_s=0.01)
    confirmed: list[str] = []
    writer.follow(Operation.INSERT, confirmed)
    for name in NAMES:
        confirmed.append(name)
        writer.poke()
        time.sleep(0.02)
    assert names_of(writer.finish()) == NAMES
    assert appender.calls == 1  # not made to wait its busy timeout again and again
    assert appender.closed_on == "syncd-audit"  # its connection's own thread


@pytest.mark.parametrize("more_after", [2, 0])
def test_a_replaced_database_gets_every_entry_again_from_the_record(
    tmp_path: Path, more_after: int
) -> None:
    # more_after=0: deleted while nothing more is pending, noticed by the last pass.
    store, writer, confirmed = started_writer(tmp_path, chunk=2, delay_s=3600)
    confirmed += NAMES[:2]
    writer.poke()
    wait_for(lambda: len(store.audit(NAMES)) == 2)
    for leftover in tmp_path.iterdir():  # an operator deletes the state file
        leftover.unlink()
    confirmed += NAMES[2 : 2 + more_after]
    writer.poke()
    left = writer.finish()
    assert names_of(left) == NAMES[: 2 + more_after]  # the two in the deleted file too
    store.record_run(RunRecord("r1", "corp", NOW, NOW, "applied", {}), left)
    assert [e.end_user for e in store.audit(NAMES)] == NAMES[: 2 + more_after]


def test_the_appender_says_when_its_file_was_replaced(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    appender = store.start_run(RunRecord("r1", "corp", NOW, NOW, "running", {}))
    batch = AuditBatch("r1", "corp", "insert", NOW, [(NAMES[0], None, PLAN.inserts[0].user)])
    appender.append([batch])
    store.path.unlink()
    with pytest.raises(StateReplacedError, match="was deleted or replaced while this run"):
        appender.append([batch])
    appender.close()
