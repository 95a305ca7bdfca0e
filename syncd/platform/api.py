"""What the Nebuly platform-users API looks like on the wire (see ``docs/nebuly-api.md``).

Shared by the client and the emulator so that both agree on paths, verbs and payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
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
