"""Writes an applying run's audit log while it writes to the platform.

The runner tells an :class:`AuditWriter` which users each answered batch confirmed;
the writer gathers them in an :class:`~syncd.audit.AuditJournal` and, a chunk at a time
(or every half second), hands them to the state store's
:class:`~syncd.ports.AuditAppender` on a thread of its own. So a process killed
outright leaves in the log what was confirmed until a moment before, and the thread
that feeds the platform never waits for the disk: a commit that checkpoints the WAL
can take tens of milliseconds, during which no batch would be absorbed nor sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import structlog

from syncd.audit import AuditJournal, Confirmed
from syncd.platform.api import Operation
from syncd.ports import AuditAppender, AuditBatch

__all__ = ["AuditWriter"]

log = structlog.get_logger(__name__)


class AuditWriter:
    """The audit log of one applying run: gathered on the caller's thread, written on
    one thread of its own, in order; what it could not write goes with the run's
    record (:meth:`finish`)."""

    def __init__(self, journal: AuditJournal, appender: AuditAppender) -> None:
        self._journal = journal
        self._appender = appender
        # One thread: appends stay in order, and the appender's SQLite connection is
        # opened, used and closed on that thread only.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-audit")
        self._failed = False
        self._unwritten: list[Confirmed] = []  # touched by the writer thread only
        self._finished = False

    def confirmed(self, operation: Operation, names: Sequence[str]) -> None:
        """Note that the platform confirmed ``names`` (caller's thread)."""
        journal = self._journal
        journal.confirmed(operation, names)
        if journal.ready and not self._finished:
            self._thread.submit(self._write, journal.take(datetime.now(UTC)))

    def finish(self) -> list[AuditBatch]:
        """Wait for the writes under way; the entries not written yet (the last ones,
        and all of them from a failed write on), for the run's record."""
        if not self._finished:
            self._finished = True
            self._thread.submit(self._appender.close)
            self._thread.shutdown(wait=True)
        # The writer thread is done: the journal is this thread's alone now.
        left = self._unwritten + self._journal.take(datetime.now(UTC))
        self._unwritten = []
        return self._journal.batches(left)

    def _write(self, taken: list[Confirmed]) -> None:
        """On the writer thread: append, or keep for the record once a write failed (a
        store that refused one write is not made to wait its busy timeout again)."""
        if self._failed:
            self._unwritten.extend(taken)
            return
        try:
            self._appender.append(self._journal.batches(taken))
        except Exception as error:  # any error of this thread must reach the log
            self._failed = True
            self._unwritten.extend(taken)
            log.error("audit.append_failed", error=str(error))
