"""The audit log's entries for a run: the changes the platform confirmed (pure).

Only users in a :attr:`~syncd.ports.WriteOutcome.confirmed` list get an entry: a change
the platform left out, refused or never received is not a change that happened. A
change to several fields of a user is one entry, with the user before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime

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
    if kind is ChangeKind.INSERT:
        # The source's id, already normalised: no second normalisation per insert.
        for change in changes:
            name = change.user.end_user
            if confirmed is None or name in confirmed:
                yield (name, None, change.user)
        return
    for change in changes:
        name = change.user.end_user
        if confirmed is not None and name not in confirmed:
            continue
        if kind is ChangeKind.DELETE:
            yield (identity(name), change.before or change.user, None)
        else:
            yield (identity(name), change.before, change.user)
