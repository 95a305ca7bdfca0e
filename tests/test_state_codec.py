"""Stored forms: users as wire-form JSON (fast encoder), times in UTC."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.model import PlatformUser, make_tags
from syncd.state_codec import (
    UserEncoder,
    chunk_marker,
    decode_chunk,
    decode_user,
    encode_user,
    stored_time,
    user_to_json,
)


def test_users_round_trip_through_their_wire_form() -> None:
    tricky = PlatformUser(
        'Zoë "the admin" \\ O\'Brien@x.com',
        make_tags({"dept": 'R&D "core"', "région": "Île-de-France\n"}),
        date(2026, 1, 1),
        date(2026, 11, 22),
    )
    plain = PlatformUser("a@x.com", (), date(2026, 1, 1))
    for user in (tricky, plain):
        text = encode_user(user)
        assert text is not None
        assert decode_user(text) == user
        assert json.loads(text) == user_to_json(user)
    assert json.loads(encode_user(plain) or "") == {
        "end_user": "a@x.com",
        "tags": {},
        "active_from": "2026-01-01",
        "active_to": None,
    }
    assert encode_user(None) is None
    assert decode_user(None) is None


def test_a_chunk_round_trips_its_entries_in_order_sharing_cached_tags() -> None:
    tags = make_tags({"dept": "Eng"})
    first = PlatformUser("U0@x.com", tags, date(2026, 1, 1))
    ended = PlatformUser("U0@x.com", tags, date(2026, 1, 1), date(2026, 11, 22))
    entries = [
        ("u0@x.com", first, ended),
        *(
            (f"u{i}@x.com", None, PlatformUser(f"u{i}@x.com", tags, date(2026, 1, 1)))
            for i in (1, 2)
        ),
        ("u3@x.com", first, None),
    ]
    encoder = UserEncoder()
    chunk = encoder.encode_chunk(entries)
    assert decode_chunk(chunk) == entries
    assert decode_chunk(chunk.decode()) == entries
    # Each user is stored exactly as the single-user form, inside [end_user, before, after].
    assert json.loads(chunk)[0] == ["u0@x.com", user_to_json(first), user_to_json(ended)]


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAMES, NAMES), min_size=1, max_size=6), NAMES)
def test_a_chunk_holding_a_user_always_contains_its_marker(
    pairs: list[tuple[str, str]], probe: str
) -> None:
    # Names and tag values with quotes, backslashes, brackets and control characters:
    # the marker must be found whenever the user has an entry (a miss would hide a
    # user's history); a chunk without the user may contain it (the caller decodes).
    users = [
        (name, None, PlatformUser(name, make_tags({"t": value}), date(2026, 1, 1)))
        for name, value in pairs
    ]
    chunk = UserEncoder().encode_chunk(users)
    for name, _, _ in users:
        assert chunk_marker(name) in chunk
    if chunk_marker(probe) not in chunk:
        assert probe not in {name for name, _, _ in users}


def test_times_are_stored_in_utc_so_text_order_is_time_order() -> None:
    paris = timezone(timedelta(hours=1))
    assert stored_time(datetime(2026, 11, 22, 13, 0, tzinfo=paris)) == "2026-11-22T12:00:00+00:00"
    assert stored_time(datetime(2026, 11, 22, 12, 0)) == "2026-11-22T12:00:00+00:00"
    earlier = stored_time(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    later = stored_time(datetime(2026, 11, 22, 12, 0, 0, 500, tzinfo=UTC))
    assert earlier < later


def generic_json(user: PlatformUser) -> str:
    """The stored form by the generic route: every field through the JSON encoder."""
    return json.dumps(
        {
            "end_user": user.end_user,
            "tags": dict(user.tags),
            "active_from": user.active_from.isoformat(),
            "active_to": None if user.active_to is None else user.active_to.isoformat(),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def test_the_encoder_writes_what_a_generic_encoder_writes_whatever_it_has_cached() -> None:
    encoder = UserEncoder()
    names = ['Zoë "x" \\ y@x.com', "tab\t@x.com", "a@x.com", "€@x.com"]
    tag_sets = [(), make_tags({"d": "R&D"}), make_tags({"d": "Sales", "région": "Île\n"})]
    dates = [
        (date(2026, 1, 1), None),
        (date(2026, 1, 1), date(2026, 2, 1)),
        (date(2025, 5, 5), None),
    ]
    for name in names:
        for tags in tag_sets:
            for active_from, active_to in dates:
                one = PlatformUser(name, tags, active_from, active_to)
                assert encoder.encode(one) == generic_json(one)
                assert decode_user(encoder.encode(one)) == one


def test_a_tag_set_that_reuses_a_freed_ones_id_is_never_given_its_json() -> None:
    encoder = UserEncoder()
    # Not make_tags (it keeps every tag set alive): fresh tuples, freed after use, so
    # CPython may hand a later one the same id.
    for i in range(200):
        tags = (("dept", f"D{i}"),)
        one = PlatformUser("a@x.com", tags, date(2026, 1, 1))
        assert decode_user(encoder.encode(one)) == one
        del tags, one
