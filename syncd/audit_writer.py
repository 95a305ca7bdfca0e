"""Writes an applying run's audit log while it writes to the platform.

The runner has an :class:`~syncd.audit.AuditJournal` follow the lists of names each
write confirms; an :class:`AuditWriter` thread reads what is new there every second
(sooner when the runner sees a chunk's worth: :meth:`AuditWriter.poke`) and hands it
to the state store's :class:`~syncd.ports.AuditAppender`. So a process killed outright
leaves in the log what was confirmed until about a second before, and the thread that
feeds the platform never waits for the disk (a commit that checkpoints the WAL can
take tens of milliseconds, during which no batch would be absorbed nor sent) nor
does more than append to a list and, now and then, set an event.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from syncd.audit import AUDIT_CHUNK, AUDIT_DELAY_S, AuditJournal
from syncd.errors import StateReplacedError
from syncd.platform.api import Operation
from syncd.ports import AuditAppender, AuditBatch, ConfirmedSpan

__all__ = ["AuditWriter"]

log = structlog.get_logger(__name__)


class AuditWriter:
    """The audit log of one applying run, written on a thread of its own, in order;
    what it could not write goes with the run's record (:meth:`finish`)."""

    def __init__(
        self,
        journal: AuditJournal,
        appender: AuditAppender,
        *,
        chunk: int = AUDIT_CHUNK,
        delay_s: float = AUDIT_DELAY_S,
    ) -> None:
        self._journal = journal
        self._appender = appender
        self._chunk = chunk
        self._delay_s = delay_s
        self._wake = threading.Event()
        self._stopping = False
        self._failed = False
        # Daemon: a bug that stops the run without finish() must not keep the process
        # alive; finish() joins it. The appender's connection lives on this thread.
        self._thread = threading.Thread(target=self._loop, name="syncd-audit", daemon=True)
        self._thread.start()

    def follow(
        self,
        operation: Operation,
        names: Sequence[str],
        spans: Sequence[ConfirmedSpan] = (),
    ) -> None:
        """Audit the names ``operation`` confirms into ``names`` (the run's thread);
        ``spans`` as for :meth:`AuditJournal.follow`."""
        self._journal.follow(operation, names, spans)

    def poke(self) -> None:
        """After a batch was answered (the run's thread): write now if a chunk's worth
        is pending, instead of at the next tick."""
        if len(self._journal) >= self._chunk:
            self._wake.set()

    def finish(self) -> list[AuditBatch]:
        """Stop the thread once its write under way is done; the entries not written
        (the last ones, and every one from a failed write on), for the run's record."""
        if self._thread.is_alive():
            self._stopping = True
            self._wake.set()
            self._thread.join()
        # The thread is done: the journal's marks are this thread's alone now.
        journal = self._journal
        return journal.batches(journal.pending(datetime.now(UTC)))

    def _loop(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(self._delay_s)
                self._wake.clear()
                if not self._failed:
                    self._write(last=self._stopping)
        finally:
            self._appender.close()

    def _write(self, *, last: bool = False) -> None:
        """Append what is pending; after a failure everything waits for the record (a
        store that refused one write is not made to wait its busy timeout again). The
        last pass appends even nothing: the appender then checks once more that its
        file is the one written so far."""
        journal = self._journal
        pending = journal.pending(datetime.now(UTC))
        if not pending and not last:
            return
        try:
            self._appender.append(journal.batches(pending))
        except StateReplacedError as error:
            # The file was replaced: what went into the old one is lost with it, so the
            # record writes every entry of the run again, into the new one.
            self._failed = True
            journal.forget_written()
            log.error("audit.append_failed", error=str(error))
        except Exception as error:  # any error of this thread must reach the log
            self._failed = True
            log.error("audit.append_failed", error=str(error))
        else:
            journal.written(pending)
