"""The audit log of an applying run, written on a thread of its own (syncd.audit_writer)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

from syncd.audit import AuditJournal
from syncd.audit_writer import AuditWriter
from syncd.errors import StateError
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


def journal(chunk: int) -> AuditJournal:
    return AuditJournal(PLAN, run_id="r1", job="corp", identity=str, chunk=chunk, delay_s=3600)


def test_chunks_are_written_on_the_writer_thread_and_the_rest_goes_with_the_record(
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
    writer = AuditWriter(journal(chunk=3), appender)
    writer.confirmed(Operation.INSERT, NAMES[:2])
    writer.confirmed(Operation.INSERT, NAMES[2:4])  # 4 gathered: one write of 4
    writer.confirmed(Operation.INSERT, NAMES[4:5])
    left = writer.finish()
    assert [entry[0] for b in left for entry in b.users] == ["u4@x.com"]  # not a chunk yet
    assert writer.finish() == []  # finished once
    assert threads == ["syncd-audit_0"]
    assert [e.end_user for e in store.audit(NAMES)] == NAMES[:4]
    writer.confirmed(Operation.INSERT, NAMES[5:])  # after finish: kept, never written
    assert [len(list(b.users)) for b in writer.finish()] == [2]


class RefusingAppender:
    """An appender whose store refuses the first write (a locked database, say)."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed_on: str | None = None

    def append(self, audit: Iterable[AuditBatch]) -> None:
        self.calls += 1
        raise StateError("state database x is locked by another process")

    def close(self) -> None:
        self.closed_on = threading.current_thread().name


def test_after_a_refused_write_everything_waits_for_the_record_in_order() -> None:
    appender = RefusingAppender()
    writer = AuditWriter(journal(chunk=2), appender)
    for name in NAMES:
        writer.confirmed(Operation.INSERT, [name])
    left = writer.finish()
    assert [entry[0] for batch in left for entry in batch.users] == NAMES
    assert appender.calls == 1  # not made to wait its busy timeout again and again
    assert appender.closed_on == "syncd-audit_0"  # its connection's own thread
