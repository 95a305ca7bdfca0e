"""Microsoft Graph, the pure half: the queries a source sends and the mapping of users.

No I/O here. :func:`build_queries` turns a config into the listings to read (``/users``
or each scope group's transitive user members), each with exactly the ``$select`` the
mapping needs, ``$top``, and the advanced-query marks (``ConsistencyLevel: eventual``
and ``$count=true``) when Graph requires them. :class:`GraphUserMapper` turns one
Graph user object into a :class:`~syncd.model.SourceUser` (through the shared
:class:`~syncd.mapping.RecordMapper`) or a :class:`~syncd.model.RecordProblem`, and
counts which mapped properties ever had a value, so that a property Graph hides
without a permission (it reads as null) is reported instead of silently lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.mapping import RecordMapper
from syncd.model import Origin, RecordProblem, SourceUser

__all__ = [
    "ADVANCED_HEADERS",
    "PERMISSION_OF_PROPERTY",
    "GraphQuery",
    "GraphUserMapper",
    "build_queries",
    "is_guest",
    "property_value",
]

ADVANCED_HEADERS: Mapping[str, str] = {"ConsistencyLevel": "eventual"}
"""Sent on every page of an advanced query (Graph does not carry it in nextLink)."""

# Graph properties that read as null unless the app has one more permission.
PERMISSION_OF_PROPERTY: Mapping[str, str] = {
    "employeeLeaveDateTime": "User-LifeCycleInfo.Read.All",
    "signInActivity": "AuditLog.Read.All",
}

# What the mapping always reads besides the configured properties: the object id and
# userPrincipalName (a problem's location, deduplication across groups, guests) and
# accountEnabled (disabled users); userType only to leave guests out.
_ALWAYS = ("id", "userPrincipalName", "accountEnabled")
_GUEST_TYPE = "userType"
_USER_CAST = "microsoft.graph.user"


@dataclass(frozen=True, slots=True)
class GraphQuery:
    """One listing: a path under ``/v1.0`` with its query and headers."""

    path: str
    """e.g. ``/v1.0/users`` or ``/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user``."""
    params: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)
    group: str | None = None
    """The scope group this listing reads, None for ``/users``."""
    permission: str = "User.Read.All"
    """The application permission a 403 on this listing means is missing."""

    @property
    def advanced(self) -> bool:
        """True when Graph needs advanced query support (header + ``$count``) for it."""
        return bool(self.headers)


def select_properties(
    id_attribute: str,
    tag_properties: list[str],
    date_properties: list[str],
    *,
    include_guests: bool = False,
) -> tuple[str, ...]:
    """Every property the mapping reads, each once, in a stable order.

    A dotted path (``employeeOrgData.costCenter``) selects its top-level property:
    Graph's ``$select`` takes no sub-fields, the mapper drills into the object.
    """
    always = _ALWAYS if include_guests else (*_ALWAYS, _GUEST_TYPE)
    wanted = [id_attribute, *tag_properties, *date_properties]
    return tuple(dict.fromkeys([*always, *(path.split(".", 1)[0] for path in wanted)]))


def build_queries(
    *,
    select: tuple[str, ...],
    page_size: int,
    groups: tuple[str, ...],
    user_filter: str | None,
) -> list[GraphQuery]:
    """The listings one read sends (one per scope group, else ``/users``).

    A group scope reads ``transitiveMembers`` cast to users: nested groups are
    resolved by Graph, and the OData cast is an advanced query. A ``$filter`` is sent
    as an advanced query too, so every operator Graph knows works (``endsWith``,
    ``ne``, ``not`` ...). Both need ``$count=true`` and ``ConsistencyLevel: eventual``.
    """
    base: dict[str, str] = {"$select": ",".join(select), "$top": str(page_size)}
    if user_filter is not None:
        base["$filter"] = user_filter
    if not groups:
        if user_filter is None:
            return [GraphQuery("/v1.0/users", base)]
        return [GraphQuery("/v1.0/users", {**base, "$count": "true"}, ADVANCED_HEADERS)]
    return [
        GraphQuery(
            f"/v1.0/groups/{group}/transitiveMembers/{_USER_CAST}",
            {**base, "$count": "true"},
            ADVANCED_HEADERS,
            group=group,
            permission="GroupMember.Read.All",
        )
        for group in groups
    ]


def is_guest(user: Mapping[str, Any]) -> bool:
    """A guest: ``userType`` Guest, or an ``#EXT#`` user principal name (B2B invitee)."""
    user_type = user.get("userType")
    if isinstance(user_type, str) and user_type.lower() == "guest":
        return True
    upn = user.get("userPrincipalName")
    return isinstance(upn, str) and "#EXT#" in upn.upper()


class _NotAValueError(ValueError):
    """A mapped property holds an object (or objects) where a text is expected."""


def _kind(value: object) -> str:
    return "an object" if isinstance(value, dict) else "a list of objects"


def property_value(user: Mapping[str, Any], path: str) -> object:
    """The value at ``path`` (``name`` or ``name.field...``) of a Graph user.

    None when a step is missing or null. :class:`_NotAValueError` naming the path when the
    value is an object or a list holding objects or lists (mapping it would put a
    Python repr into a tag), or when a dotted path steps into something not an object.
    """
    parts = path.split(".")
    value: object = user
    for depth, part in enumerate(parts):
        if value is None:
            return None
        if not isinstance(value, Mapping):
            walked = ".".join(parts[:depth])
            raise _NotAValueError(f"property {walked!r} is not an object: it has no field {part!r}")
        value = value.get(part)
    if isinstance(value, dict) or (
        isinstance(value, list) and any(isinstance(item, dict | list) for item in value)
    ):
        example = next(iter(value), None) if isinstance(value, dict) else None
        advice = (
            f"map one of its fields with a dotted path, e.g. '{path}.{example}'"
            if example
            else "it cannot be mapped to a text"
        )
        raise _NotAValueError(f"property {path!r} is {_kind(value)}, not a value: {advice}")
    return value


def _text(value: object) -> str:
    """A Graph JSON value as the raw text the mapper parses."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(sorted(_text(item) for item in value if item is not None))
    return str(value)


class GraphUserMapper:
    """Maps Graph user objects of one source; keeps per-read counts of filled properties."""

    def __init__(
        self,
        *,
        label: str,
        id_attribute: str,
        tags: Mapping[str, str],
        active_from_attribute: str | None,
        active_to_attribute: str | None,
        include_guests: bool,
        lowercase: bool,
    ) -> None:
        self._label = label
        self._id = id_attribute
        self._active_from = active_from_attribute
        self._active_to = active_to_attribute
        self._include_guests = include_guests
        self._mapper = RecordMapper(
            id_field=id_attribute,
            tag_fields=tags,
            active_from_field=active_from_attribute,
            active_to_field=active_to_attribute,
            lowercase=lowercase,
            kind="property",
        )
        # In the mapper's order (sorted by tag name), so values go in as a plain list.
        self._tag_properties = tuple(prop for _, prop in self._mapper.tag_fields)
        self._watched = tuple(
            dict.fromkeys(
                [*self._tag_properties]
                + [p for p in (active_from_attribute, active_to_attribute) if p is not None]
            )
        )
        self._paths = tuple(dict.fromkeys([id_attribute, *self._watched]))
        self.users_seen = 0
        self.guests_skipped = 0
        self._filled: dict[str, int] = dict.fromkeys(self._watched, 0)

    def select(self) -> tuple[str, ...]:
        """The ``$select`` list: exactly what :meth:`map` reads."""
        dates = [p for p in (self._active_from, self._active_to) if p is not None]
        return select_properties(
            self._id, list(self._tag_properties), dates, include_guests=self._include_guests
        )

    def start_read(self) -> None:
        """Forget the counts of the previous read."""
        self.users_seen = 0
        self.guests_skipped = 0
        self._filled = dict.fromkeys(self._watched, 0)

    def map(self, user: Mapping[str, Any]) -> SourceUser | RecordProblem | None:
        """A source user, a problem naming the user, or None for a skipped guest."""
        if not self._include_guests and is_guest(user):
            self.guests_skipped += 1
            return None
        self.users_seen += 1
        origin = Origin(self._label, None, _location(user))
        try:
            values = {path: property_value(user, path) for path in self._paths}
        except _NotAValueError as error:
            return RecordProblem(origin, str(error))
        for prop in self._watched:
            if values[prop] not in (None, "", []):
                self._filled[prop] += 1
        raw_id = values[self._id]
        if raw_id in (None, ""):
            return RecordProblem(origin, f"no value for property {self._id!r}")
        try:
            return self._mapper.build(
                origin,
                _text(raw_id),
                [_text(values[prop]) for prop in self._tag_properties],
                active_from=_text(values[self._active_from]) if self._active_from else None,
                active_to=_text(values[self._active_to]) if self._active_to else None,
                enabled="false" if user.get("accountEnabled") is False else None,
            )
        except ValueError as error:
            return RecordProblem(origin, str(error))

    def never_filled(self) -> list[str]:
        """Mapped properties that were null on every user of the read (none read: [])."""
        if self.users_seen == 0:
            return []
        return [prop for prop, count in self._filled.items() if count == 0]


def null_property_warning(prop: str, users: int, *, is_date: bool = False) -> str:
    """Why a mapped property may be null on all ``users``, naming the permission."""
    permission = PERMISSION_OF_PROPERTY.get(prop.split(".", 1)[0])
    if permission is not None:
        return (
            f"property {prop!r} is null on all {users} users: Graph hides it without the "
            f"application permission {permission} (grant it with admin consent)"
        )
    return (
        f"property {prop!r} is null on all {users} users: check its name (Graph names are "
        "case-sensitive) and that the directory fills it in"
        + (" (until then each user's start is the day first seen)" if is_date else "")
    )


def _location(user: Mapping[str, Any]) -> str:
    upn = user.get("userPrincipalName")
    object_id = user.get("id")
    if upn and object_id:
        return f"{upn} (id {object_id})"
    return f"id {object_id}" if object_id else str(upn or "a user without id")
