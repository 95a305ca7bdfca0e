"""The wire encoding of insert/update bodies: the caching encoder writes the documented
body, byte for byte what the generic encoder of :class:`OutgoingBody` writes."""

from __future__ import annotations

import json
from datetime import date

import msgspec
import pytest

from syncd.model import PlatformUser, make_tags
from syncd.platform.api import OutgoingBody, UsersBodyEncoder, outgoing_user

TRICKY = [
    PlatformUser(
        'Zoë "the admin" \\ O\'Brien@x.com', make_tags({"dept": 'R&D "core"'}), date(2026, 1, 1)
    ),
    PlatformUser("plain@x.com", (), date(2026, 1, 1), date(2026, 12, 31)),  # empty tags stay
    PlatformUser(
        "ctl\u0001@x.com", make_tags({"région": "Île-de-France\n", "a": ""}), date(2025, 2, 3)
    ),
]


def generic(batch: list[PlatformUser]) -> bytes:
    return msgspec.json.encode(OutgoingBody(users=[outgoing_user(user) for user in batch]))


def test_the_body_is_byte_for_byte_the_generic_encoding() -> None:
    encoder = UsersBodyEncoder()
    batch = TRICKY * 3  # the second and third pass come from the caches
    assert encoder.encode(batch) == generic(batch)
    body = json.loads(encoder.encode(TRICKY))
    assert body["users"][1] == {
        "end_user": "plain@x.com",
        "tags": {},
        "active_from": "2026-01-01",
        "active_to": "2026-12-31",
    }
    assert "active_to" not in body["users"][0]  # absent, not null (docs/nebuly-api.md)


def test_a_tag_set_that_reuses_a_freed_ones_id_is_encoded_afresh() -> None:
    encoder = UsersBodyEncoder()
    for i in range(200):
        # Fresh tuples, freed after use: CPython may give a later one the same id.
        batch = [PlatformUser("a@x.com", (("dept", f"D{i}"),), date(2026, 1, 1))]
        assert encoder.encode(batch) == generic(batch)
        del batch


def test_the_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(UsersBodyEncoder, "_MAX_ENTRIES", 3)
    encoder = UsersBodyEncoder()
    batch = [
        PlatformUser("a@x.com", make_tags({"d": f"D{i}"}), date(2026, 1, 1 + i)) for i in range(10)
    ]
    assert encoder.encode(batch) == generic(batch)
    assert len(encoder._tags) <= 3
    assert len(encoder._dates) <= 3
