"""What the Nebuly platform-users API looks like on the wire (see ``docs/nebuly-api.md``).

Shared by the client and the emulator so that both agree on paths, verbs and payloads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType

import msgspec

from syncd.http.auth import bearer_token_problem
from syncd.model import PlatformUser, Tags


class ApiFlavour(StrEnum):
    """The two resource names of the same object. Their insert/update verbs are swapped."""

    PLATFORM_USERS = "platform-users"
    ELIGIBLE_USERS = "eligible-users"


class Operation(StrEnum):
    """A platform call, independent of the HTTP verb a flavour uses for it."""

    LIST = "list"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class FlavourSpec:
    """Path and verbs of one flavour."""

    path: str
    insert_method: str
    update_method: str
    list_method: str = "GET"
    delete_method: str = "DELETE"

    def method(self, operation: Operation) -> str:
        """The HTTP verb this flavour uses for ``operation``."""
        return {
            Operation.LIST: self.list_method,
            Operation.INSERT: self.insert_method,
            Operation.UPDATE: self.update_method,
            Operation.DELETE: self.delete_method,
        }[operation]

    def operation(self, method: str) -> Operation | None:
        """The operation an HTTP verb means for this flavour (None if it means nothing)."""
        for operation in Operation:
            if self.method(operation) == method.upper():
                return operation
        return None


FLAVOURS: dict[ApiFlavour, FlavourSpec] = {
    ApiFlavour.PLATFORM_USERS: FlavourSpec(
        path="/api/external/platform-users", insert_method="PUT", update_method="POST"
    ),
    ApiFlavour.ELIGIBLE_USERS: FlavourSpec(
        path="/api/external/eligible-users", insert_method="POST", update_method="PUT"
    ),
}

REGION_BASE_URLS: dict[str, str] = {
    "us": "https://backend.nebuly.com",
    "eu": "https://backend.eu.nebuly.com",
}


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be sent as a bearer token, or None if it can.

    The same check :class:`~syncd.http.BearerAuth` makes, for the configuration to run
    at load time; the message never quotes the key.
    """
    return bearer_token_problem(key, name="the API key")


class WireUser(msgspec.Struct, omit_defaults=True, gc=False):
    """A user object as JSON: ``{"end_user", "tags", "active_from", "active_to"?}``.

    For decoding. Request bodies are encoded by the client with a struct that always
    sends ``tags`` (``omit_defaults`` here would drop empty tags, and update needs them).
    """

    end_user: str
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    active_from: str | None = None
    active_to: str | None = None


class OutgoingUser(msgspec.Struct, omit_defaults=True, gc=False):
    """A user in an insert/update body, as syncd sends it.

    Not :class:`WireUser`: its ``omit_defaults`` would drop empty tags, and an update
    needs ``tags`` present, even when empty (``docs/nebuly-api.md``). Only an absent
    ``active_to`` is left out.
    """

    end_user: str
    tags: dict[str, str]
    active_from: str
    active_to: str | None = None


class OutgoingBody(msgspec.Struct, gc=False):
    """Body of insert/update requests as syncd sends them."""

    users: list[OutgoingUser]


def outgoing_user(user: PlatformUser) -> OutgoingUser:
    """The wire form of a user to insert or update (dates as ``YYYY-MM-DD``)."""
    return OutgoingUser(
        end_user=user.end_user,
        tags=dict(user.tags),
        active_from=user.active_from.isoformat(),
        active_to=None if user.active_to is None else user.active_to.isoformat(),
    )


class _EncodedUser(msgspec.Struct, omit_defaults=True, gc=False):
    """:class:`OutgoingUser` with its tags already encoded and its dates as dates.

    msgspec writes a ``date`` as ``YYYY-MM-DD``, exactly :meth:`datetime.date.isoformat`
    (a test holds the two equal over the whole range), in C: no per-user formatting.
    """

    end_user: str
    tags: msgspec.Raw
    active_from: date
    active_to: date | None = None


class _EncodedBody(msgspec.Struct, gc=False):
    users: list[_EncodedUser]


class _TagsJson(dict[Tags, msgspec.Raw]):
    """The JSON of each tag set, keyed by the set itself; a miss encodes it.

    A plain dict lookup (one hash of a short tuple of interned pairs) from inside the
    encoding loop: no Python call per user unless the set is new.
    """

    def __init__(self, limit: int, encode: Callable[[object], bytes]) -> None:
        super().__init__()
        self._limit = limit
        self._encode = encode

    def __missing__(self, tags: Tags) -> msgspec.Raw:
        if len(self) >= self._limit:
            self.clear()
        raw = self[tags] = msgspec.Raw(self._encode(dict(tags)))
        return raw


class UsersBodyEncoder:
    """Encodes insert/update bodies, caching what users share: the JSON of each tag set.

    The bytes are exactly those of :class:`OutgoingBody` built from
    :func:`outgoing_user` (a test holds the two equal); a first sync of a million users
    has a few thousand tag sets, so a user costs one small struct, built in a
    comprehension with no Python call per user, instead of a dict copy and two date
    formats. Safe to share between threads: a race only computes an entry twice.
    """

    _MAX_ENTRIES = 100_000
    """Entries of the tag cache; past this it starts again (users that share nothing
    must not make it a second copy of the directory)."""

    _dates: Mapping[date, str] = MappingProxyType({})
    """No date cache any more: msgspec writes dates itself (always empty)."""

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._tags = _TagsJson(self._MAX_ENTRIES, self._encode)

    def encode(self, batch: Sequence[PlatformUser]) -> bytes:
        """The JSON body ``{"users": [...]}`` of ``batch``."""
        tags_json = self._tags
        return self._encode(
            _EncodedBody(
                [
                    _EncodedUser(
                        user.end_user, tags_json[user.tags], user.active_from, user.active_to
                    )
                    for user in batch
                ]
            )
        )


_USERS_BODY_START = b'{"users":'


def users_of_body(body: bytes) -> bytes:
    """The JSON array of users inside an insert/update body :class:`UsersBodyEncoder`
    encoded (``{"users": [...]}``): what an audit log of inserts stores as it is."""
    if not (body.startswith(_USERS_BODY_START + b"[") and body.endswith(b"]}")):
        raise ValueError("not an insert/update body as syncd encodes it")
    return body[len(_USERS_BODY_START) : -1]


class Pagination(msgspec.Struct, omit_defaults=True):
    """Cursor pagination, in the convention of the analytics API (optional on GET)."""

    next_page_cursor: str | None = None


class UsersResponse(msgspec.Struct, omit_defaults=True):
    """Body of GET and of insert/update responses: ``{"users": [...]}``."""

    users: list[WireUser]
    pagination: Pagination | None = None


class DeleteBody(msgspec.Struct):
    """Body of delete requests: ``{"users": ["end_user", ...]}``."""

    users: list[str]
