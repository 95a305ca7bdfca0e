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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

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
"""Confirmed users worth a write before the :data:`AUDIT_DELAY_S` is up (a first sync
of a million users: ~20 writes while it writes to the platform)."""

AUDIT_DELAY_S: Final = 1.0
"""How often the confirmed users an :class:`AuditJournal` follows are written while a
run writes: a process killed outright loses about this much of what was confirmed
(and what was in flight)."""


@dataclass(frozen=True, slots=True)
class Confirmed:
    """Names ``names[start:end]`` that ``operation`` got confirmed, seen ``at``."""

    operation: Operation
    names: Sequence[str]
    start: int
    end: int
    at: datetime


class AuditJournal:
    """The audit entries of one applying run, read from the lists of confirmed names.

    The run hands over each list its writes fill (:meth:`follow`: a write's
    ``outcome.confirmed``, the users a re-read found applied) once; the platform
    client only ever appends to them. :meth:`pending` says which names are not written
    yet, :meth:`written` moves the mark once they are, and :meth:`batches` turns them
    into audit batches. Nothing is ever noted twice nor lost, whatever interrupts the
    run between two statements: the run's thread only appends (a list append is one
    step), and the marks move on the thread that writes, after the write.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        run_id: str,
        job: str,
        identity: Callable[[str], str],
    ) -> None:
        self._plan = plan
        self._run_id = run_id
        self._job = job
        self._identity = identity
        # [operation, names, mark]: names[:mark] are written. One list per followed
        # list, appended in one step, so an interruption cannot half-follow one.
        self._followed: list[list[Any]] = []
        # Built by batches() at an operation's first use: a million inserts need their
        # changes by name, as answers come back in whatever order batches finish.
        self._changes: dict[Operation, dict[str, Change]] = {}

    def follow(self, operation: Operation, names: Sequence[str]) -> None:
        """Audit the names ``operation`` confirms into ``names``, as they come."""
        self._followed.append([operation, names, 0])

    def __len__(self) -> int:
        """How many followed names are not written yet."""
        return sum(len(names) - mark for _, names, mark in list(self._followed))

    def pending(self, at: datetime) -> list[Confirmed]:
        """The followed names not written yet, as seen ``at``."""
        return [
            Confirmed(operation, names, mark, len(names), at)
            for operation, names, mark in list(self._followed)
            if len(names) > mark
        ]

    def written(self, confirmed: Sequence[Confirmed]) -> None:
        """Move the marks past names now in the audit log."""
        for part in confirmed:
            for followed in self._followed:
                if followed[1] is part.names:
                    followed[2] = max(followed[2], part.end)

    def forget_written(self) -> None:
        """Take every followed name as not written (the log they went to is gone)."""
        for followed in self._followed:
            followed[2] = 0

    def batches(self, confirmed: Sequence[Confirmed]) -> list[AuditBatch]:
        """The audit batches (one per change kind and part) of names pending; a name
        that is no change of the plan is left out (nothing says it happened)."""
        batches: list[AuditBatch] = []
        identity = self._identity
        for part in confirmed:
            changes = self._changes.get(part.operation)
            if changes is None:
                changes = self._changes[part.operation] = {}
                for _, of_kind in changes_of(self._plan, part.operation):
                    changes.update(zip(map(_NAME_OF_CHANGE, of_kind), of_kind, strict=True))
            names = part.names[part.start : part.end]
            try:
                found = list(map(changes.__getitem__, names))
            except KeyError:
                found = [changes[name] for name in names if name in changes]
            by_kind: dict[ChangeKind, list[Change]] = {}
            if part.operation is Operation.UPDATE:
                for change in found:
                    by_kind.setdefault(change.kind, []).append(change)
            elif found:
                by_kind[found[0].kind] = found
            batches.extend(
                # Changes, not entries: a tuple per user is made as the store writes
                # it, so that a million of them never pile up for the garbage collector.
                AuditBatch(self._run_id, self._job, kind.value, part.at, _Entries(of, identity))
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
