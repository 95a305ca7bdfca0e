"""How the state store writes values as SQLite text: times, and users in audit chunks.

Kept apart from :mod:`syncd.state` because it is pure (no database) and on the hot path:
a first sync records a million inserts, so a user's JSON is assembled from cached
pieces (tags are shared tuples, dates repeat) and a chunk of a thousand entries is
one call to msgspec's encoder instead of a generic encoder per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

import msgspec

from syncd.model import PlatformUser, Tags, make_tags
from syncd.ports import AuditedUser


class StoredUser(msgspec.Struct, gc=False):
    """A user in an audit row: the wire form, with ``active_to`` always present."""

    end_user: str
    tags: dict[str, str]
    active_from: str
    active_to: str | None


_decoder = msgspec.json.Decoder(StoredUser)


def stored_time(moment: datetime) -> str:
    """A time as stored: ISO-8601 in UTC, so that text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


class _StoredOut(msgspec.Struct, gc=False):
    """:class:`StoredUser` as written: the tags' JSON comes pre-encoded from a cache, and
    msgspec writes the dates as ``YYYY-MM-DD``, as ``date.isoformat`` does."""

    end_user: str
    tags: msgspec.Raw
    active_from: date
    active_to: date | None


class UserEncoder:
    """Encodes users to their stored form, caching the parts users share."""

    def __init__(self) -> None:
        # Keyed by id(): make_tags shares one tuple per tag set, and hashing a tuple of
        # pairs per user would cost more than the rest. The tuple is kept in the value
        # so that its id cannot be reused while cached.
        self._tags: dict[int, tuple[Tags, msgspec.Raw]] = {}

    def stored(self, user: PlatformUser | None) -> _StoredOut | None:
        """The user as the struct its stored JSON is encoded from (None stays None)."""
        if user is None:
            return None
        tags = user.tags
        cached = self._tags.get(id(tags))
        if cached is None or cached[0] is not tags:
            cached = (tags, msgspec.Raw(_encode_json(dict(tags))))
            self._tags[id(tags)] = cached
        return _StoredOut(user.end_user, cached[1], user.active_from, user.active_to)

    def encode(self, user: PlatformUser | None) -> str | None:
        """The JSON text of a user (None stays None)."""
        stored = self.stored(user)
        return None if stored is None else _encode_json(stored).decode()

    def encode_chunk(self, users: Iterable[AuditedUser]) -> bytes:
        """The ``entries`` JSON of one audit chunk: ``[[end_user, before, after], ...]``."""
        stored = self.stored
        return _encode_json(
            [
                # Most entries are inserts (a first sync): no call for an absent "before".
                (end_user, None if before is None else stored(before), stored(after))
                for end_user, before, after in users
            ]
        )


# Built once; msgspec.json.encode would look up its default encoder on every call.
_encode_json = msgspec.json.Encoder().encode


def encode_user(user: PlatformUser | None) -> str | None:
    """The stored JSON text of one user (None stays None)."""
    return UserEncoder().encode(user)


def decode_user(text: str | None) -> PlatformUser | None:
    """A user back from its JSON text (None stays None)."""
    return None if text is None else _user_of(_decoder.decode(text))


def _user_of(stored: StoredUser | SentUser | None) -> PlatformUser | None:
    if stored is None:
        return None
    return PlatformUser(
        end_user=stored.end_user,
        tags=make_tags(stored.tags),
        active_from=date.fromisoformat(stored.active_from),
        active_to=None if stored.active_to is None else date.fromisoformat(stored.active_to),
    )


def user_to_json(user: PlatformUser | None) -> dict[str, object] | None:
    """A user as JSON-ready data (``syncd audit --output json``)."""
    text = encode_user(user)
    return None if text is None else msgspec.json.decode(text)


_chunk_decoder = msgspec.json.Decoder(list[tuple[str, StoredUser | None, StoredUser | None]])


class SentUser(msgspec.Struct, gc=False):
    """A user in a ``sent`` audit chunk: as the insert body held it (``active_to``
    absent when there is none)."""

    end_user: str
    tags: dict[str, str]
    active_from: str
    active_to: str | None = None


_sent_decoder = msgspec.json.Decoder(list[SentUser])


def decode_chunk(entries: bytes | str) -> list[AuditedUser]:
    """The ``(end_user, before, after)`` entries of one audit chunk's JSON."""
    return [
        (end_user, _user_of(before), _user_of(after))
        for end_user, before, after in _chunk_decoder.decode(entries)
    ]


def decode_sent_chunk(users: bytes | str) -> list[AuditedUser]:
    """The ``(end_user, None, after)`` entries of one ``sent`` audit chunk's JSON (the
    users of an insert body, in its order)."""
    return [(user.end_user, None, _user_of(user)) for user in _sent_decoder.decode(users)]


def sent_chunk_marker(end_user: str) -> bytes:
    """Bytes that every ``sent`` audit chunk holding ``end_user`` contains: a user of an
    insert body starts ``{"end_user":"<end_user as JSON>",`` (syncd's encoder writes
    that field first). As with :func:`chunk_marker`, a chunk with them may still not
    hold the user: the caller decodes it and compares names."""
    return b'{"end_user":' + _encode_json(end_user) + b","


def chunk_marker(end_user: str) -> bytes:
    """Bytes that every audit chunk holding an entry of ``end_user`` contains.

    An entry starts ``["<end_user as JSON>",``; the name is encoded here exactly as
    :meth:`UserEncoder.encode_chunk` encodes it, so a chunk without these bytes has no
    entry of the user. A chunk with them may still not (the bytes could sit inside a
    value): the caller decodes it and compares names.
    """
    return b"[" + _encode_json(end_user) + b","
