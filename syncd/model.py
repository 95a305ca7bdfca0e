"""Plain, typed values shared by the pure core (mapping, merge, plan, guard).

Users are stored compactly because a run can hold two million of them: frozen
``msgspec.Struct`` values (ten times faster to create than frozen dataclasses, smaller,
and not tracked by the cyclic garbage collector), tags as sorted tuples shared between
users with the same tags, and dates as :class:`datetime.date` objects (compared as
dates, whatever string the API sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Self

import msgspec

Tags = tuple[tuple[str, str], ...]
"""Tag name/value pairs, sorted by name. Hashable, so equal tag sets can be shared."""

_TAGS_CACHE: dict[Tags, Tags] = {}
_DATE_CACHE: dict[str, date] = {}


def make_tags(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Tags:
    """Return the canonical (sorted, shared) form of a tag set."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    tags: Tags = tuple(sorted(items))
    # Directories repeat the same department/region combinations across many users;
    # sharing one tuple per combination keeps a million users small in memory.
    return _TAGS_CACHE.setdefault(tags, tags)


def parse_api_date(value: str) -> date:
    """Parse a date the platform or a source gave: ``2026-01-01`` or a full ISO-8601 time.

    Timestamps with an offset are converted to UTC before the date is taken; naive
    timestamps are taken as UTC. Raises ``ValueError`` with the offending text.
    """
    cached = _DATE_CACHE.get(value)
    if cached is not None:
        return cached
    text = value.strip()
    try:
        if len(text) == 10:
            parsed = date.fromisoformat(text)
        else:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
            parsed = moment.date()
    except ValueError:
        raise ValueError(
            f"invalid date {value!r}: expected YYYY-MM-DD or an ISO-8601 timestamp"
        ) from None
    if len(_DATE_CACHE) < 100_000:
        _DATE_CACHE[value] = parsed
    return parsed


class PlatformUser(msgspec.Struct, frozen=True, gc=False):
    """A user as the platform holds it (or as syncd wants the platform to hold it)."""

    end_user: str
    tags: Tags
    active_from: date
    active_to: date | None = None


class Origin(msgspec.Struct, frozen=True, gc=False):
    """Where a source record came from, for error messages: ``users.csv:12``, or
    ``corp-ad: CN=Ada,OU=People,DC=corp`` for a directory entry (``dn``)."""

    source: str
    line: int | None = None
    dn: str | None = None

    def __str__(self) -> str:
        if self.dn is not None:
            return f"{self.source}: {self.dn}"
        return self.source if self.line is None else f"{self.source}:{self.line}"


class SourceUser(msgspec.Struct, frozen=True, gc=False):
    """A user as the directory describes it, after mapping and normalisation.

    ``active_from`` / ``active_to`` are only set when the source maps them; ``enabled``
    is False for disabled accounts (AD bit 0x2, Graph accountEnabled=false, a column).

    Where the record came from is held as ``source`` (the label, one string shared by
    every user of a source) and ``at``: the line (``int``) of a row, the DN (``str``)
    of a directory entry, or ``None``. :attr:`origin` builds the :class:`Origin` from
    them when a message needs it: an ``Origin`` object per user would cost ~48 MB per
    million users and tell nothing these two fields do not. Build a user from an
    ``Origin`` with :meth:`from_origin`.
    """

    end_user: str
    tags: Tags
    source: str
    at: int | str | None = None
    active_from: date | None = None
    active_to: date | None = None
    enabled: bool = True

    @classmethod
    def from_origin(
        cls,
        end_user: str,
        tags: Tags,
        origin: Origin,
        active_from: date | None = None,
        active_to: date | None = None,
        enabled: bool = True,
    ) -> Self:
        """Make a user whose :attr:`origin` equals ``origin``.

        Raises ``ValueError`` for an ``Origin`` with both a line and a DN: a user holds
        one place, and dropping either would change the messages that name it.
        """
        line, dn = origin.line, origin.dn
        if dn is None:
            return cls(end_user, tags, origin.source, line, active_from, active_to, enabled)
        if line is not None:
            raise ValueError(f"origin {origin!r} has both a line and a DN: a user holds one")
        return cls(end_user, tags, origin.source, dn, active_from, active_to, enabled)

    @property
    def origin(self) -> Origin:
        """Where the record came from (built on each access; equal for equal users)."""
        at = self.at
        if isinstance(at, str):
            return Origin(self.source, None, at)
        return Origin(self.source, at)


class RecordProblem(msgspec.Struct, frozen=True, gc=False):
    """One source record that could not be used, with where it is and why."""

    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"
