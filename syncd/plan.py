"""The plan engine: desired users x current users x policy x today -> changes (pure).

The rules (the README's "Semantics" section says the same for operators):

* A user in the source and not on the platform is inserted, with ``active_from`` from the
  source or, failing that, today (the day first seen). A disabled user that was never on
  the platform is not inserted unless the source gives an end date that has passed:
  otherwise nobody knows when their access ended.
* A user on both sides is updated when tags, ``active_from`` or ``active_to`` differ.
  A "first seen" date never moves an ``active_from`` the platform already holds.
* ``active_to`` comes from a mapped end date, or is the day the user is first seen
  disabled (an end date already on the platform is kept, so it does not creep forward;
  a disabled user's mapped end date that has passed wins over both).
  An enabled user without an end date gets ``active_to`` cleared (reactivation).
* A user on the platform and not in the source is handled by ``on_missing``: end-dated
  today (``end_date``), deleted (``delete``) or left alone (``ignore``). With
  ``scope: owned`` only users this job owns are touched. Protected users never are.
* ``purge_after_days``: users whose ``active_to`` is older than that are deleted, and
  never inserted again.
* When the source read was incomplete (a failed source, bad records, conflicts) the plan
  ends and deletes nobody: a partial read never turns into removals.
* Platform names are matched after the same normalisation as source ids (so
  ``Alice@X.com`` on the platform is ``alice@x.com`` in the source), and written back
  with the platform's own spelling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, Literal

import msgspec

from syncd.model import PlatformUser, SourceUser


class ChangeKind(StrEnum):
    """What a change does; INSERT, UPDATE-like kinds and DELETE map to API operations."""

    INSERT = "insert"
    UPDATE = "update"
    END = "end"
    REACTIVATE = "reactivate"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs between the platform and the target state."""

    name: str
    before: str | None
    after: str | None


class Change(msgspec.Struct, frozen=True, gc=False):
    """One user to write. ``user`` is the target state (for DELETE, the user removed).

    Built as ``Change(kind, user, before, reason)``, by position (the fourth field is
    private: ``reason=`` is not a keyword); :attr:`reason` is the text. An
    insert may be given the :class:`SourceUser` it comes from instead of its text, which
    is then ``new in <origin>``, formatted when read: a first sync plans a million
    inserts whose reasons are seldom shown, and formatting them all cost 0.4 s and
    ~60 MB. Equality, hashing and ``repr`` go by the text, so both forms are the same.
    """

    kind: ChangeKind
    user: PlatformUser
    before: PlatformUser | None
    _why: str | SourceUser

    @property
    def reason(self) -> str:
        """Why the change is made, for operators (tables, plan files, the JSON output)."""
        why = self._why
        if type(why) is str:
            return why
        assert isinstance(why, SourceUser)
        return f"new in {why.origin}"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Change:
            return NotImplemented
        return (
            self.kind == other.kind
            and self.user == other.user
            and self.before == other.before
            and (self._why is other._why or self.reason == other.reason)
        )

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((self.kind, self.user, self.before, self.reason))

    def __repr__(self) -> str:
        return (
            f"Change(kind={self.kind!r}, user={self.user!r}, before={self.before!r}, "
            f"reason={self.reason!r})"
        )

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # rich's pretty printer reads struct fields, not __repr__: the text, not _why.
        return [
            ("kind", self.kind),
            ("user", self.user),
            ("before", self.before),
            ("reason", self.reason),
        ]

    def field_changes(self) -> tuple[FieldChange, ...]:
        """The field-level diff between ``before`` and ``user`` (computed on demand)."""
        if self.kind is ChangeKind.DELETE:
            return ()
        return diff_users(self.before, self.user)


def diff_users(before: PlatformUser | None, after: PlatformUser) -> tuple[FieldChange, ...]:
    """Field-level differences; tags are compared one by one (``tags.department``)."""
    changes: list[FieldChange] = []
    before_tags = dict(before.tags) if before is not None else {}
    after_tags = dict(after.tags)
    for name in sorted(before_tags.keys() | after_tags.keys()):
        old, new = before_tags.get(name), after_tags.get(name)
        if old != new:
            changes.append(FieldChange(f"tags.{name}", old, new))
    old_from = before.active_from if before is not None else None
    if old_from != after.active_from:
        changes.append(FieldChange("active_from", _iso(old_from), _iso(after.active_from)))
    old_to = before.active_to if before is not None else None
    if old_to != after.active_to:
        changes.append(FieldChange("active_to", _iso(old_to), _iso(after.active_to)))
    return tuple(changes)


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


OnMissing = Literal["end_date", "delete", "ignore"]
Scope = Literal["all", "owned"]


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """The job's policy, as plain values."""

    on_missing: OnMissing = "end_date"
    purge_after_days: int | None = None
    scope: Scope = "all"
    protected: frozenset[str] = frozenset()
    owned: frozenset[str] = frozenset()
    """With ``scope='owned'``: the end_users this job created or adopted earlier."""

    def purge_before(self, today: date) -> date | None:
        """Users whose ``active_to`` is before this date are purged."""
        if self.purge_after_days is None:
            return None
        return today - timedelta(days=self.purge_after_days)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one run would write, grouped by kind, plus what it leaves alone.

    No end_user is in two changes (given a platform list with each end_user once, as
    :meth:`~syncd.ports.PlatformPort.list_users` returns it; a plan file naming one
    twice is refused): the runner's writes rely on it.
    """

    inserts: tuple[Change, ...] = ()
    updates: tuple[Change, ...] = ()
    ends: tuple[Change, ...] = ()
    reactivations: tuple[Change, ...] = ()
    deletes: tuple[Change, ...] = ()
    unchanged: int = 0
    skipped_disabled: int = 0
    """Disabled users in the source that were never on the platform (not inserted)."""
    untouched_missing: int = 0
    """Users missing from the source that the plan leaves alone (scope, policy, partial read)."""
    protected: int = 0
    """Protected users present on either side (never touched)."""
    active_managed: int = 0
    """Platform users this job manages whose access has not ended: what removals are
    measured against (ended, protected and out-of-scope users would dilute the ratio)."""
    active_removals: int = 0
    """End-dates and deletes of users whose access had not ended (purges of long-gone
    users are removals too, but they take nobody's access away)."""
    withheld_removals: int = 0
    """End-dates and deletes left out because the source read was incomplete."""
    platform_duplicates: int = 0
    """Platform entries whose normalised name another entry already has."""

    @property
    def removals(self) -> int:
        """End-dates plus deletes: what the guard counts."""
        return len(self.ends) + len(self.deletes)

    @property
    def update_calls_users(self) -> tuple[PlatformUser, ...]:
        """Every user sent with the update verb (updates, end-dates, reactivations)."""
        return tuple(change.user for change in (*self.updates, *self.ends, *self.reactivations))

    @property
    def total_changes(self) -> int:
        """Number of users the plan writes."""
        return (
            len(self.inserts)
            + len(self.updates)
            + len(self.ends)
            + len(self.reactivations)
            + len(self.deletes)
        )

    @property
    def is_empty(self) -> bool:
        """True when the plan writes nothing."""
        return self.total_changes == 0

    def counts(self) -> dict[str, int]:
        """The size of each part of the plan, for logs, history and output."""
        return {
            "insert": len(self.inserts),
            "update": len(self.updates),
            "reactivate": len(self.reactivations),
            "end": len(self.ends),
            "delete": len(self.deletes),
            "unchanged": self.unchanged,
            "skipped_disabled": self.skipped_disabled,
            "untouched_missing": self.untouched_missing,
            "protected": self.protected,
            "withheld_removals": self.withheld_removals,
            "platform_duplicates": self.platform_duplicates,
        }

    def changes(self) -> Iterable[Change]:
        """Every change, inserts first and deletes last."""
        yield from self.inserts
        yield from self.updates
        yield from self.reactivations
        yield from self.ends
        yield from self.deletes


def _end_date_for_source_user(
    source: SourceUser, current: PlatformUser | None, today: date
) -> date | None:
    """The ``active_to`` the platform should hold for a user present in the source."""
    if source.enabled:
        return source.active_to
    if source.active_to is not None and source.active_to <= today:
        # Disabled, with an end date that has passed: the source knows when it ended.
        return source.active_to
    # Disabled, with no end date (or one still ahead): ended the day we first saw it
    # disabled. Keep an end date the platform already has and that has passed, so it
    # does not move forward every run.
    if current is not None and current.active_to is not None and current.active_to <= today:
        return current.active_to
    return today


def _target_state(source: SourceUser, before: PlatformUser | None, today: date) -> PlatformUser:
    """What the platform should hold for a user present in the source."""
    active_to = _end_date_for_source_user(source, before, today)
    if source.active_from is not None:
        active_from = source.active_from
    elif before is not None:
        active_from = before.active_from  # a first-seen date never moves an existing one
    else:
        active_from = today
    if active_to is not None and active_from > active_to:
        # Seen for the first time after it ended (a back-filled leaver), or an end date
        # earlier than the start the platform holds: the range must stay valid.
        active_from = active_to
    # Writes must name the user exactly as the platform stores it (update matches on it).
    end_user = before.end_user if before is not None else source.end_user
    return PlatformUser(end_user, source.tags, active_from, active_to)


def classify_update(before: PlatformUser, after: PlatformUser) -> ChangeKind:
    """The kind of a change of ``before`` into ``after``: an earlier end ends, a later
    or no end reactivates, anything else is an update."""
    old_to, new_to = before.active_to, after.active_to
    if new_to is not None and (old_to is None or new_to < old_to):
        return ChangeKind.END
    if old_to is not None and (new_to is None or new_to > old_to):
        return ChangeKind.REACTIVATE
    return ChangeKind.UPDATE


def _reason(source: SourceUser, kind: ChangeKind) -> str:
    if kind is ChangeKind.END:
        return "disabled in the source" if not source.enabled else "end date from the source"
    if kind is ChangeKind.REACTIVATE:
        return "back in the source"
    return f"changed in the source ({source.origin})"


def plan_changes(
    desired: Mapping[str, SourceUser],
    current: Iterable[PlatformUser],
    policy: PlanPolicy,
    today: date,
    *,
    source_complete: bool = True,
    identity: Callable[[str], str] | None = None,
) -> Plan:
    """Compute the minimal set of writes that makes the platform match the source.

    ``desired``, ``policy.protected`` and ``policy.owned`` are keyed by normalised
    end_user; ``identity`` normalises the platform's names the same way for matching
    (writes keep the platform's spelling). With ``source_complete=False`` the plan
    holds no end-date and no delete at all: they are only counted as withheld.
    """
    key_of = identity if identity is not None else _same
    purge_before = policy.purge_before(today)
    inserts: list[Change] = []
    updates: list[Change] = []
    ends: list[Change] = []
    reactivations: list[Change] = []
    deletes: list[Change] = []
    by_kind = {
        ChangeKind.UPDATE: updates,
        ChangeKind.END: ends,
        ChangeKind.REACTIVATE: reactivations,
    }
    unchanged = untouched_missing = protected = active_managed = platform_duplicates = 0
    seen: set[str] = set()
    # Platform users whose first entry was not counted in active_managed (ended, or out
    # of scope): only consulted for a duplicate entry, which must not count twice.
    uncounted: set[str] = set()
    listed = 0  # source users found on the platform (each once)
    # Bound once: this loop runs once per platform user (a million per run).
    desired_get = desired.get
    seen_add = seen.add
    protected_names = policy.protected
    all_in_scope = policy.scope == "all"

    for before in current:
        name = before.end_user
        source = desired_get(name)
        if source is not None:
            key = name  # found as-is among the normalised source ids: already normalised
        else:
            # Only names not found as-is pay for normalisation (0.5 s per million).
            key = key_of(name)
            if key != name:
                source = desired_get(key)
        size = len(seen)
        seen_add(key)
        duplicate = len(seen) == size
        if source is not None and not duplicate:
            listed += 1
        if duplicate:
            # Two platform entries for one person (``Alice@X.com`` and ``alice@x.com``):
            # both follow the source; the guard counts the person once.
            platform_duplicates += 1
        if protected_names and key in protected_names:
            protected += 1
            continue
        active = before.active_to is None or before.active_to > today
        if source is not None:
            if active and (not duplicate or key in uncounted):
                uncounted.discard(key)
                active_managed += 1
            elif not duplicate:
                uncounted.add(key)
            before_to = before.active_to
            if (
                # The common case, decided without building the target state: an
                # enabled user whose tags and dates the platform already holds. Each
                # condition is one that _target_state would keep as it is (the range
                # is valid, nothing to purge), so the full path would find it equal.
                source.enabled
                and (source.tags is before.tags or source.tags == before.tags)
                and source.active_to == before_to
                and (source.active_from is None or source.active_from == before.active_from)
                and (before_to is None or before.active_from <= before_to)
                and (purge_before is None or before_to is None or before_to >= purge_before)
            ):
                unchanged += 1
                continue
        else:
            in_scope = all_in_scope or key in policy.owned
            if in_scope and active and (not duplicate or key in uncounted):
                uncounted.discard(key)
                active_managed += 1
            elif not duplicate:
                uncounted.add(key)
            change = _plan_missing(before, key, policy, today, purge_before, source_complete)
            if change is None:
                if policy.on_missing == "ignore" or not source_complete or not in_scope:
                    untouched_missing += 1
                else:
                    unchanged += 1
            elif change.kind is ChangeKind.DELETE:
                deletes.append(change)
            else:
                ends.append(change)
            continue
        after = _target_state(source, before, today)
        if _is_purged(after.active_to, purge_before):
            assert after.active_to is not None
            deletes.append(
                Change(ChangeKind.DELETE, before, before, _purge_reason(after.active_to, policy))
            )
            continue
        if after == before:
            unchanged += 1
            continue
        kind = classify_update(before, after)
        by_kind[kind].append(Change(kind, after, before, _reason(source, kind)))

    # Only when some source user is not on the platform (a set difference would copy a
    # million keys first); in source order, so that writes go out in a stable order.
    skipped_disabled = 0
    if listed < len(desired):
        skipped_disabled, protected_new = _plan_inserts(
            desired, seen, policy.protected, today, purge_before, inserts.append
        )
        protected += protected_new

    # The platform lists in an order of its own (the emulator in the order concurrent
    # batches landed): changes found while walking it are put in name order, so the
    # same source and platform give the same plan, table and hold examples every run.
    for found in (updates, ends, reactivations, deletes):
        if len(found) > 1:
            found.sort(key=_change_name)

    withheld = 0
    if not source_complete:
        # A partial read never turns into removals, not even of users it did read: an
        # operator who forces it through gets the inserts and updates only.
        withheld = len(ends) + len(deletes)
        ends, deletes = [], []
    return Plan(
        inserts=tuple(inserts),
        updates=tuple(updates),
        ends=tuple(ends),
        reactivations=tuple(reactivations),
        deletes=tuple(deletes),
        unchanged=unchanged,
        skipped_disabled=skipped_disabled,
        untouched_missing=untouched_missing,
        protected=protected,
        active_managed=active_managed,
        active_removals=sum(
            1 for change in (*ends, *deletes) if change.before and _is_active(change.before, today)
        ),
        withheld_removals=withheld,
        platform_duplicates=platform_duplicates,
    )


def _plan_inserts(
    desired: Mapping[str, SourceUser],
    seen: set[str],
    protected_names: frozenset[str],
    today: date,
    purge_before: date | None,
    add: Callable[[Change], None],
) -> tuple[int, int]:
    """Hand ``add`` an insert for each source user not ``seen`` on the platform, in
    source order; returns how many were skipped (disabled, or already purged) and how
    many are protected.

    Each insert is ``Change(INSERT, _target_state(source, None, today), None, source)``
    (its reason formatted when read), written out: this loop runs for every user of a
    first sync, a million times, and the calls and the reason strings were most of its
    cost. With no platform user, :func:`_end_date_for_source_user` returns the mapped
    end date for every user that reaches the insert (the disabled ones without a past
    end date were skipped); tests/test_plan_inserts.py checks it against the full path.
    """
    skipped = protected = 0
    insert = ChangeKind.INSERT
    for end_user, source in desired.items():
        if end_user in seen:
            continue
        if protected_names and end_user in protected_names:
            protected += 1
            continue
        active_to = source.active_to
        if not source.enabled and (active_to is None or active_to > today):
            # Disabled and never synced: nobody knows when its access ended.
            skipped += 1
            continue
        active_from = source.active_from
        if active_from is None:
            active_from = today  # the day first seen
        if active_to is not None:
            if purge_before is not None and active_to < purge_before:
                # Inserting it would only be purged on the next run.
                skipped += 1
                continue
            # A back-filled leaver (ended before it starts): the range must stay valid.
            active_from = min(active_from, active_to)
        after = PlatformUser(source.end_user, source.tags, active_from, active_to)
        add(Change(insert, after, None, source))
    return skipped, protected


def _change_name(change: Change) -> str:
    return change.user.end_user


def _is_active(user: PlatformUser, today: date) -> bool:
    return user.active_to is None or user.active_to > today


def _is_purged(active_to: date | None, purge_before: date | None) -> bool:
    return purge_before is not None and active_to is not None and active_to < purge_before


def _in_scope(end_user: str, policy: PlanPolicy) -> bool:
    return policy.scope == "all" or end_user in policy.owned


def _purge_reason(active_to: date, policy: PlanPolicy) -> str:
    return f"purge: ended {active_to.isoformat()}, more than {policy.purge_after_days} days ago"


def _same(name: str) -> str:
    return name


def _plan_missing(
    before: PlatformUser,
    key: str,
    policy: PlanPolicy,
    today: date,
    purge_before: date | None,
    source_complete: bool,
) -> Change | None:
    """The change for a platform user the source no longer has, or None."""
    if not source_complete or not _in_scope(key, policy):
        return None
    if policy.on_missing == "delete":
        return Change(ChangeKind.DELETE, before, before, "missing from the source")
    active_to = before.active_to
    if policy.on_missing == "end_date" and (active_to is None or active_to > today):
        # Never before the start, so the range stays valid for future-dated joiners.
        active_to = max(today, before.active_from)
    if _is_purged(active_to, purge_before):
        assert active_to is not None
        return Change(ChangeKind.DELETE, before, before, _purge_reason(active_to, policy))
    if active_to == before.active_to:
        return None
    after = PlatformUser(before.end_user, before.tags, before.active_from, active_to)
    return Change(ChangeKind.END, after, before, "missing from the source")


def apply_plan(current: Iterable[PlatformUser], plan: Plan) -> dict[str, PlatformUser]:
    """The platform state after every change of ``plan`` succeeded (for tests and previews)."""
    state = {user.end_user: user for user in current}
    for change in plan.changes():
        if change.kind is ChangeKind.DELETE:
            state.pop(change.user.end_user, None)
        else:
            state[change.user.end_user] = change.user
    return state
