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

import bisect
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, overload

from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import Operation, users_of_body
from syncd.ports import AuditBatch, AuditedUser, ConfirmedSpan, SentUsers, WriteOutcome


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
    """Names ``names[start:end]`` that ``operation`` got confirmed, seen ``at``;
    ``spans`` are the write's hints of where runs of ``names`` sit among its items."""

    operation: Operation
    names: Sequence[str]
    start: int
    end: int
    at: datetime
    spans: Sequence[ConfirmedSpan] = ()


class AuditJournal:
    """The audit entries of one applying run, read from the lists of confirmed names.

    The run hands over each list its writes fill (:meth:`follow`: a write's
    ``outcome.confirmed``, the users a re-read found applied) once; the platform
    client only ever appends to them. :meth:`pending` says which names are not written
    yet, :meth:`written` moves the mark once they are, and :meth:`batches` turns them
    into audit batches. Nothing is ever noted twice nor lost, whatever interrupts the
    run between two statements: the run's thread only appends (a list append is one
    step), and the marks move on the thread that writes, after the write.

    A name's change is found by position when the write noted a
    :class:`~syncd.ports.ConfirmedSpan` for it (checked against the names by one list
    comparison), else by name: a first sync of a million users then never builds a
    dictionary of a million changes (0.5 s during which no HTTP worker could run).
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
        # [operation, names, mark, spans]: names[:mark] are written. One list per
        # followed list, appended in one step, so an interruption cannot half-follow one.
        self._followed: list[list[Any]] = []
        # The changes of each operation in the order its write was given them.
        self._ordered: dict[Operation, Sequence[Change]] = {}
        # By name, built at the first name no span covers.
        self._by_name: dict[Operation, dict[str, Change]] = {}

    def follow(
        self,
        operation: Operation,
        names: Sequence[str],
        spans: Sequence[ConfirmedSpan] = (),
    ) -> None:
        """Audit the names ``operation`` confirms into ``names``, as they come; ``spans``
        (the outcome's own list, appended to as ``names`` is) place runs of them among
        the write's items, which are the plan's changes in :func:`changes_of` order."""
        self._followed.append([operation, names, 0, spans])

    def __len__(self) -> int:
        """How many followed names are not written yet."""
        return sum(len(names) - mark for _, names, mark, _ in list(self._followed))

    def pending(self, at: datetime) -> list[Confirmed]:
        """The followed names not written yet, as seen ``at``."""
        return [
            Confirmed(operation, names, mark, len(names), at, spans)
            for operation, names, mark, spans in list(self._followed)
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
        """The audit batches (per change kind, in order) of names pending; a name that
        is no change of the plan is left out (nothing says it happened).

        Inserts a single request wrote are the users as sent (:class:`SentUsers`, from
        the span's body, which is let go of then): the store keeps those bytes as they
        are instead of encoding each user again. Should that write fail, the next
        call finds no body and builds the entries from the plan's changes.
        """
        batches: list[AuditBatch] = []
        for part in confirmed:
            found: list[Change] = []
            for piece in self._pieces(part):
                if isinstance(piece, SentUsers):
                    self._add_changes(batches, part, found)
                    found = []
                    batches.append(
                        AuditBatch(self._run_id, self._job, ChangeKind.INSERT.value, part.at, piece)
                    )
                else:
                    found += piece
            self._add_changes(batches, part, found)
        return batches

    def _add_changes(
        self, batches: list[AuditBatch], part: Confirmed, found: Sequence[Change]
    ) -> None:
        """Add the batches (one per change kind) of some changes of ``part``."""
        by_kind: dict[ChangeKind, list[Change]] = {}
        if part.operation is Operation.UPDATE:
            for change in found:
                by_kind.setdefault(change.kind, []).append(change)
        elif found:
            by_kind[found[0].kind] = list(found)
        identity = self._identity
        batches.extend(
            # Changes, not entries: a tuple per user is made as the store writes
            # it, so that a million of them never pile up for the garbage collector.
            AuditBatch(self._run_id, self._job, kind.value, part.at, _Entries(of, identity))
            for kind, of in by_kind.items()
        )

    def _pieces(self, part: Confirmed) -> Iterator[Sequence[Change] | SentUsers]:
        """``part``'s names as the plan's changes, in their order, or, for a whole span
        of inserts that kept its body, as the users that body sent."""
        names, spans = part.names, part.spans
        position, end = part.start, part.end
        # Spans are noted in the order of the names, so they are sorted by `at`.
        index = max(bisect.bisect_right(spans, position, key=_AT) - 1, 0)
        while position < end:
            span = spans[index] if index < len(spans) else None
            if span is None or span.at > position:
                # Names no span covers (a re-read's finds, a batch partly confirmed).
                stop = end if span is None else min(end, span.at)
                yield self._named(part.operation, names[position:stop])
                position = stop
                continue
            span_end = span.at + span.count
            if span_end <= position:
                index += 1
                continue
            stop = min(end, span_end)
            first = span.start + (position - span.at)
            candidates = self._in_order(part.operation)[first : first + stop - position]
            if list(map(_NAME_OF_CHANGE, candidates)) != names[position:stop]:
                # A hint that does not hold: the names decide.
                yield self._named(part.operation, names[position:stop])
            elif (sent := _sent_users(part.operation, span, position, stop)) is not None:
                yield sent
            else:
                yield candidates
            position = stop

    def _in_order(self, operation: Operation) -> Sequence[Change]:
        ordered = self._ordered.get(operation)
        if ordered is None:
            parts = [of_kind for _, of_kind in changes_of(self._plan, operation)]
            ordered = parts[0] if len(parts) == 1 else [c for of in parts for c in of]
            self._ordered[operation] = ordered
        return ordered

    def _named(self, operation: Operation, names: Sequence[str]) -> list[Change]:
        changes = self._by_name.get(operation)
        if changes is None:
            changes = self._by_name[operation] = {}
            for _, of_kind in changes_of(self._plan, operation):
                changes.update(zip(map(_NAME_OF_CHANGE, of_kind), of_kind, strict=True))
        try:
            return list(map(changes.__getitem__, names))
        except KeyError:
            return [changes[name] for name in names if name in changes]


def _sent_users(
    operation: Operation, span: ConfirmedSpan, start: int, stop: int
) -> SentUsers | None:
    """The users ``span``'s body sent, if the span is wholly ``names[start:stop]`` of an
    insert and still has its body (which it then lets go of)."""
    sent = span.sent
    whole = start == span.at and stop == span.at + span.count
    if operation is not Operation.INSERT or sent is None or not whole:
        return None
    content = sent.content
    if content is None:
        return None
    sent.release()
    try:
        return SentUsers(users_of_body(content), span.count)
    except ValueError:  # not a body syncd's encoder made: the plan's changes say it
        return None


_NAME_OF_CHANGE = operator.attrgetter("user.end_user")
_AT = operator.attrgetter("at")


class _Entries(Sequence[AuditedUser]):
    """The audit entries of some changes, made as the store reads them (by slices of a
    chunk: one comprehension per chunk, no generator step per user)."""

    __slots__ = ("changes", "identity")

    def __init__(self, changes: Sequence[Change], identity: Callable[[str], str]) -> None:
        self.changes = changes
        self.identity = identity

    def __len__(self) -> int:
        return len(self.changes)

    @overload
    def __getitem__(self, index: int) -> AuditedUser: ...

    @overload
    def __getitem__(self, index: slice) -> list[AuditedUser]: ...

    def __getitem__(self, index: int | slice) -> AuditedUser | list[AuditedUser]:
        if isinstance(index, int):
            return _entry(self.changes[index], self.identity)
        changes = self.changes[index]
        if changes and changes[0].kind is ChangeKind.INSERT:
            # The source's id, normalised; every change of one batch is of one kind.
            return [(change.user.end_user, None, change.user) for change in changes]
        identity = self.identity
        return [_entry(change, identity) for change in changes]

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
