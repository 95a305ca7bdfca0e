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


# ------------------------------------------ dates written by msgspec, tags by value


@pytest.mark.parametrize(
    "day",
    [date(1, 1, 1), date(999, 12, 31), date(1900, 2, 28), date(2024, 2, 29), date(9999, 12, 31)],
    ids=str,
)
def test_every_date_is_written_as_its_isoformat(day: date) -> None:
    batch = [PlatformUser("a@x.com", (), day, day)]
    assert UsersBodyEncoder().encode(batch) == generic(batch)
    assert json.loads(UsersBodyEncoder().encode(batch))["users"][0]["active_to"] == day.isoformat()


def test_the_whole_date_range_is_written_as_isoformat() -> None:
    # Every day of four centuries (the calendar repeats after 400 years), in one batch.
    first = date(1900, 1, 1).toordinal()
    days = [date.fromordinal(first + offset) for offset in range(146_097)]
    batch = [PlatformUser("a@x.com", (), day) for day in days]
    body = json.loads(UsersBodyEncoder().encode(batch))
    assert [user["active_from"] for user in body["users"]] == [day.isoformat() for day in days]


def test_equal_tag_sets_share_one_entry_and_keep_their_order() -> None:
    encoder = UsersBodyEncoder()
    # Equal, but distinct tuples (not shared through make_tags), and an unsorted one.
    first = (("b", "2"), ("a", "1"))
    second = tuple(pair for pair in first)
    assert second == first
    assert second is not first
    batch = [
        PlatformUser("a@x.com", first, date(2026, 1, 1)),
        PlatformUser("b@x.com", second, date(2026, 1, 1)),
    ]
    assert encoder.encode(batch) == generic(batch)
    assert len(encoder._tags) == 1
    assert b'"tags":{"b":"2","a":"1"}' in encoder.encode(batch)
