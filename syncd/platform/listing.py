"""Decoding of the platform's user list (wire format: ``docs/nebuly-api.md``).

A million users arrive in one body of ~150 MB; :func:`decode_page` decodes it in chunks
into :class:`~syncd.model.PlatformUser` values, and every malformed user becomes a
:class:`~syncd.errors.PlatformError` naming the user and the field.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import msgspec

from syncd.errors import PlatformError
from syncd.model import PlatformUser, make_tags, parse_api_date
from syncd.platform.api import Pagination, WireUser

__all__ = ["decode_page"]

# A listed page is first split into raw user objects (views into the body, ~50 bytes
# each), then decoded and converted this many at a time. Decoding a million users into
# WireUser objects at once would hold ~400 MB of dicts and strings next to the body;
# chunks keep that to a few hundred kB, and are faster than one decode call per user.
_DECODE_CHUNK = 500

# msgspec names the failing element of a decoded chunk as ``$[12]`` in its messages.
_ITEM_PATH = re.compile(r"\$\[(\d+)\]([^`\s]*)")


class _RawPage(msgspec.Struct):
    """A list response with its users left undecoded (see _DECODE_CHUNK)."""

    users: list[msgspec.Raw]
    pagination: Pagination | None = None


def decode_page(
    content: bytes, by_name: dict[str, PlatformUser], duplicates: list[str]
) -> str | None:
    """Decode one list response into ``by_name`` (last one wins); return the next cursor."""
    try:
        page = msgspec.json.decode(content, type=_RawPage)
    except msgspec.ValidationError as error:
        raise PlatformError(
            f"list: the platform's response has an unexpected shape: {error}"
        ) from None
    except msgspec.DecodeError as error:
        raise PlatformError(f"list: the platform's response is not valid JSON ({error})") from None
    decoder = msgspec.json.Decoder(list[WireUser])
    raws = page.users
    for start in range(0, len(raws), _DECODE_CHUNK):
        chunk = raws[start : start + _DECODE_CHUNK]
        try:
            wire_users = decoder.decode(b"[" + b",".join(chunk) + b"]")
        except msgspec.ValidationError as error:
            raise _invalid_user_error(chunk, start, error) from None
        for wire in wire_users:
            name = wire.end_user
            if name in by_name:
                duplicates.append(name)
            by_name[name] = _from_wire(wire)
    return page.pagination.next_page_cursor if page.pagination is not None else None


def _parse_date(wire: WireUser, name: str, value: str) -> date:
    try:
        return parse_api_date(value)
    except ValueError as error:
        raise PlatformError(
            f"list: the platform returned user {wire.end_user!r} with an invalid {name}: {error}"
        ) from None


def _from_wire(wire: WireUser) -> PlatformUser:
    """Convert a listed user; a missing or bad date is a PlatformError naming the user."""
    if wire.active_from is None:
        raise PlatformError(
            f"list: the platform returned user {wire.end_user!r} without active_from"
        )
    active_from = _parse_date(wire, "active_from", wire.active_from)
    active_to = None if wire.active_to is None else _parse_date(wire, "active_to", wire.active_to)
    return PlatformUser(wire.end_user, make_tags(wire.tags), active_from, active_to)


def _invalid_user_error(
    chunk: list[msgspec.Raw], offset: int, error: msgspec.ValidationError
) -> PlatformError:
    """A PlatformError naming the listed user (and field) msgspec could not decode."""
    message = str(error)
    match = _ITEM_PATH.search(message)
    if match is None:
        return PlatformError(f"list: the platform's response has an unexpected shape: {message}")
    index = int(match.group(1))
    field_path = match.group(2).lstrip(".") or "user object"
    reason = message.split(" - at ", 1)[0]
    # Only on this error path: decode the one user without a schema to find its name
    # and, for tags (msgspec reports ``tags[...]``), which tag is wrong.
    name: Any = None
    try:
        user = msgspec.json.decode(chunk[index])
        name = user.get("end_user")
        if field_path.startswith("tags["):
            bad = [key for key, value in user["tags"].items() if not isinstance(value, str)]
            field_path = f"tags.{bad[0]}" if bad else "tags"
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, AttributeError):
        pass
    who = f"user {name!r}" if isinstance(name, str) else f"user #{offset + index} (no end_user)"
    return PlatformError(
        f"list: the platform returned {who} with an invalid {field_path}: {reason}"
    )
