"""Sources: adapters that read users from a directory (CSV today; LDAP and Graph next).

A source streams :class:`~syncd.model.SourceUser` values, and a
:class:`~syncd.model.RecordProblem` for every record it could not use (so one bad row
is reported with its location instead of failing silently). A source that cannot be
read at all raises :class:`~syncd.errors.SourceError`; a read that fails half-way
raises too, after the records already yielded, and the run must then treat the read as
failed, never as "these users are gone".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from syncd.model import RecordProblem, SourceUser


class Source(Protocol):
    """Something that streams the users of a directory."""

    @property
    def label(self) -> str:
        """A short name for messages (the file name, or the configured source name)."""
        ...

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        """Stream every user, and a problem for every record that could not be used."""
        ...
