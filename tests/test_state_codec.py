"""Stored forms: users as wire-form JSON (fast encoder), times in UTC."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

from syncd.model import PlatformUser, make_tags
from syncd.state_codec import (
    UserEncoder,
    audit_rows,
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


def test_audit_rows_share_one_encoder_across_users_with_the_same_tags() -> None:
    tags = make_tags({"dept": "Eng"})
    users = [
        (f"u{i}@x.com", None, PlatformUser(f"u{i}@x.com", tags, date(2026, 1, 1))) for i in range(3)
    ]
    rows = list(audit_rows(7, users, UserEncoder()))
    assert [row[:3] for row in rows] == [(7, f"u{i}@x.com", None) for i in range(3)]
    assert [decode_user(row[3]) for row in rows] == [u[2] for u in users]


def test_times_are_stored_in_utc_so_text_order_is_time_order() -> None:
    paris = timezone(timedelta(hours=1))
    assert stored_time(datetime(2026, 11, 22, 13, 0, tzinfo=paris)) == "2026-11-22T12:00:00+00:00"
    assert stored_time(datetime(2026, 11, 22, 12, 0)) == "2026-11-22T12:00:00+00:00"
    earlier = stored_time(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    later = stored_time(datetime(2026, 11, 22, 12, 0, 0, 500, tzinfo=UTC))
    assert earlier < later
