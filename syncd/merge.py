"""Merging the users of several sources into one desired set (pure, no I/O).

Users are merged by ``end_user``. Two records with the same ``end_user`` (in one source
or across sources) are a conflict: neither is used, both origins are reported, and the
read counts as incomplete so that the conflict can never turn into a removal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date

from syncd.messages import bounded_list
from syncd.model import Origin, RecordProblem, SourceUser


@dataclass(frozen=True, slots=True)
class Conflict:
    """Several source records claim the same ``end_user``."""

    end_user: str
    origins: tuple[Origin, ...]

    def __str__(self) -> str:
        where = bounded_list(self.origins)
        return f"end_user {self.end_user!r} appears {len(self.origins)} times: {where}"


@dataclass(frozen=True, slots=True)
class SourceSummary:
    """What one source produced in this run."""

    label: str
    users: int
    problems: int
    error: str | None = None

    @property
    def failed(self) -> bool:
        """The read raised before it finished."""
        return self.error is not None


@dataclass(slots=True)
class DesiredUsers:
    """The merged result of every source of a job."""

    users: dict[str, SourceUser]
    problems: list[RecordProblem]
    conflicts: list[Conflict]
    sources: list[SourceSummary]

    @property
    def complete(self) -> bool:
        """True when every source was read in full, with no bad record and no conflict."""
        return (
            not self.problems
            and not self.conflicts
            and not any(source.failed for source in self.sources)
        )

    @property
    def failed_sources(self) -> list[SourceSummary]:
        """Sources whose read raised."""
        return [source for source in self.sources if source.failed]

    def refuse_starts_after(self, latest: date) -> int:
        """Turn every user whose ``active_from`` is after ``latest`` into a bad record.

        A start date years ahead is a broken export or mapping (a wrong column, a typo
        in the year), and writing it would make the user ineligible until then. The
        record is refused like any bad one, naming where it is; returns how many were.
        """
        refused = [
            user
            for user in self.users.values()
            if user.active_from is not None and user.active_from > latest
        ]
        if not refused:
            return 0
        by_source: dict[str, int] = {}
        for user in refused:
            del self.users[user.end_user]
            assert user.active_from is not None
            self.problems.append(
                RecordProblem(
                    user.origin,
                    f"active_from {user.active_from.isoformat()} is implausibly far in the "
                    f"future (after {latest.isoformat()}, guard.max_start_days_ahead)",
                )
            )
            by_source[user.origin.source] = by_source.get(user.origin.source, 0) + 1
        self.sources = [
            replace(
                summary,
                users=summary.users - by_source.get(summary.label, 0),
                problems=summary.problems + by_source.get(summary.label, 0),
            )
            for summary in self.sources
        ]
        return len(refused)


@dataclass(slots=True)
class DesiredUsersBuilder:
    """Accumulates streamed source records into :class:`DesiredUsers`."""

    _users: dict[str, SourceUser] = field(default_factory=dict)
    _duplicates: dict[str, list[Origin]] = field(default_factory=dict)
    _problems: list[RecordProblem] = field(default_factory=list)
    _sources: list[SourceSummary] = field(default_factory=list)
    _current_label: str | None = None
    _current_users: int = 0
    _current_problems: int = 0

    def begin_source(self, label: str) -> None:
        """Start counting the records of the source named ``label``."""
        self._current_label = label
        self._current_users = 0
        self._current_problems = 0

    def add(self, item: SourceUser | RecordProblem) -> None:
        """Add one streamed record (a user or a problem)."""
        if isinstance(item, RecordProblem):
            self._problems.append(item)
            self._current_problems += 1
            return
        self._current_users += 1
        existing = self._users.get(item.end_user)
        if existing is None:
            if item.end_user in self._duplicates:
                self._duplicates[item.end_user].append(item.origin)
            else:
                self._users[item.end_user] = item
            return
        # Keep neither record: which one is right is for a human to decide.
        del self._users[item.end_user]
        self._duplicates[item.end_user] = [existing.origin, item.origin]

    def add_all(self, items: Iterable[SourceUser | RecordProblem]) -> None:
        """Add every record of ``items`` (a source's :meth:`~syncd.ports.Source.read`).

        The same as calling :meth:`add` for each, without a Python call per record. If
        iterating ``items`` raises (a source read that fails half-way), the records
        before are kept and counted, and the error propagates to the caller.
        """
        users = self._users
        duplicates = self._duplicates
        claim = users.setdefault  # one probe of a big dict instead of get() and set
        size = len(users)
        added = 0
        try:
            for item in items:
                # Exact type: a plain user takes the inline path, anything else add().
                if type(item) is not SourceUser:
                    self.add(item)
                    size = len(users)
                    continue
                added += 1
                end_user = item.end_user
                existing = claim(end_user, item)
                if existing is item and len(users) > size:
                    size += 1
                    if duplicates and end_user in duplicates:
                        del users[end_user]  # already a conflict: one more origin
                        size -= 1
                        duplicates[end_user].append(item.origin)
                else:
                    # Keep neither record: which one is right is for a human to decide.
                    # (``existing is item`` here: the same record given twice.)
                    del users[end_user]
                    size -= 1
                    duplicates[end_user] = [existing.origin, item.origin]
        finally:
            self._current_users += added

    def end_source(self, error: str | None = None) -> None:
        """Finish the current source; ``error`` says why its read failed, if it did."""
        if self._current_label is None:
            raise RuntimeError("end_source() without begin_source()")
        self._sources.append(
            SourceSummary(
                label=self._current_label,
                users=self._current_users,
                problems=self._current_problems,
                error=error,
            )
        )
        self._current_label = None

    def build(self) -> DesiredUsers:
        """The merged users, problems and conflicts."""
        conflicts = [
            Conflict(end_user=end_user, origins=tuple(origins))
            for end_user, origins in sorted(self._duplicates.items())
        ]
        return DesiredUsers(
            users=self._users,
            problems=self._problems,
            conflicts=conflicts,
            sources=self._sources,
        )
