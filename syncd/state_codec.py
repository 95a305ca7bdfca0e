"""How the state store writes values as SQLite text: times, and users in audit rows.

Kept apart from :mod:`syncd.state` because it is pure (no database) and on the hot path:
a first sync records a million inserts, so a user's JSON is assembled from cached
pieces (tags are shared tuples, dates repeat) instead of a generic encoder per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime

import msgspec

from syncd.model import PlatformUser, Tags, make_tags
from syncd.ports import AuditedUser

AuditRow = tuple[int, str, str | None, str | None]
"""``(op, end_user, before, after)`` as stored in the ``audit`` table."""


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


class UserEncoder:
    """Encodes users to their stored JSON, caching the parts users share."""

    def __init__(self) -> None:
        # Keyed by id(): make_tags shares one tuple per tag set, and hashing a tuple of
        # pairs per row would cost more than the rest. The tuple is kept in the value so
        # its id cannot be reused while cached.
        self._tags: dict[int, tuple[Tags, str]] = {}
        self._dates: dict[date, str] = {}

    def _date(self, value: date | None) -> str:
        if value is None:
            return "null"
        text = self._dates.get(value)
        if text is None:
            text = self._dates[value] = f'"{value.isoformat()}"'
        return text

    def encode(self, user: PlatformUser | None) -> str | None:
        """The JSON text of a user (None stays None)."""
        if user is None:
            return None
        tags = user.tags
        cached = self._tags.get(id(tags))
        if cached is None or cached[0] is not tags:
            cached = (tags, _encode_json(dict(tags)).decode())
            self._tags[id(tags)] = cached
        name = _encode_json(user.end_user).decode()
        return (
            f'{{"end_user":{name},"tags":{cached[1]},'
            f'"active_from":{self._date(user.active_from)},'
            f'"active_to":{self._date(user.active_to)}}}'
        )


# Built once; msgspec.json.encode would look up its default encoder on every call.
_encode_json = msgspec.json.Encoder().encode


def encode_user(user: PlatformUser | None) -> str | None:
    """The stored JSON text of one user (None stays None)."""
    return UserEncoder().encode(user)


def decode_user(text: str | None) -> PlatformUser | None:
    """A user back from its JSON text (None stays None)."""
    if text is None:
        return None
    stored = _decoder.decode(text)
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


def audit_rows(op: int, users: Iterable[AuditedUser], encoder: UserEncoder) -> Iterator[AuditRow]:
    """The ``audit`` rows of one batch, streamed."""
    encode = encoder.encode
    for end_user, before, after in users:
        # Most rows are inserts (a first sync): no call to encode an absent "before".
        yield (op, end_user, None if before is None else encode(before), encode(after))
