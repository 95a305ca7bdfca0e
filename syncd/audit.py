"""The audit log's entries for a run: the changes the platform confirmed (pure).

Only users in a :attr:`~syncd.ports.WriteOutcome.confirmed` list get an entry: a change
the platform left out, refused or never received is not a change that happened. A
change to several fields of a user is one entry, with the user before and after.

An applying run keeps an :class:`AuditJournal`: it turns names the platform confirmed
into entries as batches are answered, so that the run hands the store a chunk at a
time (a process killed half-way leaves what was confirmed until then in the log);
:func:`audit_batches` builds the entries of finished outcomes at once.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import Operation
from syncd.ports import AuditBatch, AuditedUser, WriteOutcome


def changes_of(plan: Plan, operation: Operation) -> tuple[tuple[ChangeKind, Sequence[Change]], ...]:
    """The plan's changes that ``operation`` writes, by kind (update also ends and
    reactivates)."""
    if operation is Operation.INSERT:
        return ((ChangeKind.INSERT, plan.inserts),)
    if operation is Operation.UPDATE:
        return (
            (ChangeKind.UPDATE, plan.updates),
            (ChangeKind.END, plan.ends),
            (ChangeKind.REACTIVATE, plan.reactivations),
        )
    if operation is Operation.DELETE:
        return ((ChangeKind.DELETE, plan.deletes),)
    return ()


def audit_batches(
    plan: Plan,
    outcomes: Sequence[WriteOutcome],
    *,
    run_id: str,
    job: str,
    confirmed_at: Mapping[Operation, datetime],
    identity: Callable[[str], str],
) -> list[AuditBatch]:
    """The confirmed changes of ``plan``, one batch per change kind, in the order the
    operations ran.

    ``confirmed_at`` is when each operation finished; ``identity`` normalises platform
    spellings (an entry is keyed by the normalised end_user, like ``syncd audit``).
    A batch's users are produced lazily, as the store writes them: a million confirmed
    inserts are never held as a second million objects.
    """
    batches: list[AuditBatch] = []
    for outcome in outcomes:
        if not outcome.confirmed:
            continue
        # Everything confirmed (the usual case): no set of a million names to build.
        confirmed = None if outcome.ok else frozenset(outcome.confirmed)
        at = confirmed_at[outcome.operation]
        for kind, changes in changes_of(plan, outcome.operation):
            if changes:
                users = _Audited(kind, changes, confirmed, identity)
                batches.append(AuditBatch(run_id, job, kind.value, at, users))
    return batches


class _Audited:
    """The audited users of one change kind, produced as the store iterates.

    Each pass reads the plan again (nothing is held); ``__length_hint__`` (the number of changes, an
    upper bound: unconfirmed ones are skipped) lets the store plan a large insert
    (:func:`operator.length_hint`) without holding the rows.
    """

    __slots__ = ("_changes", "_confirmed", "_identity", "_kind")

    def __init__(
        self,
        kind: ChangeKind,
        changes: Sequence[Change],
        confirmed: frozenset[str] | None,
        identity: Callable[[str], str],
    ) -> None:
        self._kind = kind
        self._changes = changes
        self._confirmed = confirmed
        self._identity = identity

    def __length_hint__(self) -> int:
        return len(self._changes)

    def __iter__(self) -> Iterator[AuditedUser]:
        return _audited(self._kind, self._changes, self._confirmed, self._identity)


def _audited(
    kind: ChangeKind,
    changes: Sequence[Change],
    confirmed: frozenset[str] | None,
    identity: Callable[[str], str],
) -> Iterator[AuditedUser]:
    for change in changes:
        if confirmed is None or change.user.end_user in confirmed:
            yield _entry(change, identity)


AUDIT_CHUNK: Final = 50_000
"""Confirmed users an :class:`AuditJournal` gathers before they are worth a write (a
first sync of a million users: ~20 writes while it writes to the platform)."""

AUDIT_DELAY_S: Final = 1.0
"""The longest a confirmed user waits in an :class:`AuditJournal` once its batch is
answered: a process killed outright loses at most this much of what was confirmed
(and what was in flight)."""


@dataclass(frozen=True, slots=True)
class Confirmed:
    """Names one operation got confirmed, gathered until ``at``: what a journal hands
    over, turned into audit batches by :meth:`AuditJournal.batches`."""

    operation: Operation
    names: list[str]
    at: datetime


class AuditJournal:
    """The audit entries of one applying run, gathered as the platform confirms users.

    Two halves, so that the thread feeding the platform does next to nothing:
    :meth:`confirmed` notes the names an answer confirmed (the platform's spelling, as
    sent), :attr:`ready` says when a chunk's worth is gathered, :meth:`take` hands them
    over; :meth:`batches` turns what was taken into audit batches, on the thread that
    writes them (:class:`~syncd.audit_writer.AuditWriter`), one thread at a time.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        run_id: str,
        job: str,
        identity: Callable[[str], str],
        chunk: int = AUDIT_CHUNK,
        delay_s: float = AUDIT_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._plan = plan
        self._run_id = run_id
        self._job = job
        self._identity = identity
        self._chunk = chunk
        self._delay_s = delay_s
        self._clock = clock
        self._since = 0.0  # when the oldest gathered name came
        self._names: dict[Operation, list[str]] = {}
        self._count = 0
        # Built by batches() at an operation's first use: a million inserts need their
        # changes by name, as answers come back in whatever order batches finish.
        self._changes: dict[Operation, dict[str, Change]] = {}

    @property
    def ready(self) -> bool:
        """Worth a write: a chunk's worth of names is gathered, or the oldest waited
        ``delay_s``."""
        if not self._count:
            return False
        return self._count >= self._chunk or self._clock() - self._since >= self._delay_s

    def __len__(self) -> int:
        return self._count

    def confirmed(self, operation: Operation, names: Sequence[str]) -> None:
        """Note that ``operation`` just got ``names`` confirmed."""
        if not names:
            return
        if not self._count:
            self._since = self._clock()
        self._names.setdefault(operation, []).extend(names)
        self._count += len(names)

    def take(self, at: datetime) -> list[Confirmed]:
        """What was gathered, as confirmed until ``at``; the journal forgets it."""
        taken = [Confirmed(operation, names, at) for operation, names in self._names.items()]
        self._names = {}
        self._count = 0
        return taken

    def batches(self, taken: Sequence[Confirmed]) -> list[AuditBatch]:
        """The audit batches (one per change kind and take) of names taken; a name that
        is no change of the plan is left out (nothing says it happened)."""
        batches: list[AuditBatch] = []
        identity = self._identity
        for confirmed in taken:
            changes = self._changes.get(confirmed.operation)
            if changes is None:
                changes = self._changes[confirmed.operation] = {}
                for _, of_kind in changes_of(self._plan, confirmed.operation):
                    changes.update(zip(map(_NAME_OF_CHANGE, of_kind), of_kind, strict=True))
            try:
                found = list(map(changes.__getitem__, confirmed.names))
            except KeyError:
                found = [changes[name] for name in confirmed.names if name in changes]
            by_kind: dict[ChangeKind, list[Change]] = {}
            if confirmed.operation is Operation.UPDATE:
                for change in found:
                    by_kind.setdefault(change.kind, []).append(change)
            elif found:
                by_kind[found[0].kind] = found
            batches.extend(
                # Changes, not entries: a tuple per user is made as the store writes
                # it, so that a million of them never pile up for the garbage collector.
                AuditBatch(
                    self._run_id, self._job, kind.value, confirmed.at, _Entries(of, identity)
                )
                for kind, of in by_kind.items()
            )
        return batches


_NAME_OF_CHANGE = operator.attrgetter("user.end_user")


class _Entries:
    """The audit entries of some changes, made one by one as the store iterates."""

    __slots__ = ("changes", "identity")

    def __init__(self, changes: Sequence[Change], identity: Callable[[str], str]) -> None:
        self.changes = changes
        self.identity = identity

    def __iter__(self) -> Iterator[AuditedUser]:
        identity = self.identity
        return (_entry(change, identity) for change in self.changes)


def _entry(change: Change, identity: Callable[[str], str]) -> AuditedUser:
    kind = change.kind
    if kind is ChangeKind.INSERT:
        return (change.user.end_user, None, change.user)  # the source's id, normalised
    if kind is ChangeKind.DELETE:
        return (identity(change.user.end_user), change.before or change.user, None)
    return (identity(change.user.end_user), change.before, change.user)
