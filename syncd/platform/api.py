"""What the Nebuly platform-users API looks like on the wire (see ``docs/nebuly-api.md``).

Shared by the client and the emulator so that both agree on paths, verbs and payloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import msgspec

from syncd.http.auth import bearer_token_problem
from syncd.model import PlatformUser


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
    """:class:`OutgoingUser` with its tags already encoded (the same bytes on the wire)."""

    end_user: str
    tags: msgspec.Raw
    active_from: str
    active_to: str | None = None


class _EncodedBody(msgspec.Struct, gc=False):
    users: list[_EncodedUser]


class UsersBodyEncoder:
    """Encodes insert/update bodies, caching what users share: the JSON of each tag
    set and the text of each date.

    The bytes are exactly those of :class:`OutgoingBody` built from
    :func:`outgoing_user` (a test holds the two equal); a first sync of a million users
    has a few thousand tag sets and dates, so a user costs one small struct instead
    of a dict copy and two date formats. Safe to share between threads: a race only
    computes an entry twice.
    """

    _MAX_ENTRIES = 100_000
    """Entries per cache; past this it starts again (users that share nothing must not
    make it a second copy of the directory)."""

    def __init__(self) -> None:
        # Keyed by id() of the tags: make_tags shares one tuple per tag set, and hashing
        # the tuple of pairs would cost more than encoding. The tuple is kept in the
        # value so that its id cannot be reused while cached.
        self._tags: dict[int, tuple[object, msgspec.Raw]] = {}
        self._dates: dict[date, str] = {}
        self._encode = msgspec.json.Encoder().encode

    def _tags_json(self, tags: tuple[tuple[str, str], ...]) -> msgspec.Raw:
        cached = self._tags.get(id(tags))
        if cached is None or cached[0] is not tags:
            if len(self._tags) >= self._MAX_ENTRIES:
                self._tags.clear()
            cached = self._tags[id(tags)] = (tags, msgspec.Raw(self._encode(dict(tags))))
        return cached[1]

    def _date(self, value: date) -> str:
        text = self._dates.get(value)
        if text is None:
            if len(self._dates) >= self._MAX_ENTRIES:
                self._dates.clear()
            text = self._dates[value] = value.isoformat()
        return text

    def encode(self, batch: Sequence[PlatformUser]) -> bytes:
        """The JSON body ``{"users": [...]}`` of ``batch``."""
        tags_json, day = self._tags_json, self._date
        return self._encode(
            _EncodedBody(
                [
                    _EncodedUser(
                        user.end_user,
                        tags_json(user.tags),
                        day(user.active_from),
                        None if user.active_to is None else day(user.active_to),
                    )
                    for user in batch
                ]
            )
        )


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
