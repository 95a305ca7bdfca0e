"""The typed values of the core: how a source user holds where it came from."""

from __future__ import annotations

import gc
from datetime import date

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.model import Origin, RecordProblem, SourceUser, make_tags

ORIGINS = st.one_of(
    st.builds(Origin, st.text(max_size=8)),
    st.builds(Origin, st.text(max_size=8), st.integers(min_value=0, max_value=10**7)),
    st.builds(Origin, st.text(max_size=8), st.none(), st.text(max_size=30)),
)


@given(ORIGINS)
def test_a_user_gives_back_the_origin_it_was_made_from(origin: Origin) -> None:
    user = SourceUser.from_origin("ada@x.com", (), origin)
    assert user.origin == origin
    assert str(user.origin) == str(origin)
    assert user.source == origin.source


def test_the_origin_is_kept_as_a_label_and_a_line_or_dn() -> None:
    row = SourceUser.from_origin("ada@x.com", (), Origin("users.csv", 1234))
    entry = SourceUser.from_origin("ada@x.com", (), Origin("corp-ad", None, "CN=Ada,DC=corp"))
    nowhere = SourceUser.from_origin("ada@x.com", (), Origin("ldap"))
    assert (row.source, row.at) == ("users.csv", 1234)
    assert (entry.source, entry.at) == ("corp-ad", "CN=Ada,DC=corp")
    assert (nowhere.source, nowhere.at) == ("ldap", None)
    # The messages that name a user read exactly as they did with an Origin field.
    assert [str(user.origin) for user in (row, entry, nowhere)] == [
        "users.csv:1234",
        "corp-ad: CN=Ada,DC=corp",
        "ldap",
    ]
    assert str(RecordProblem(row.origin, "bad")) == "users.csv:1234: bad"


def test_no_origin_object_is_stored_per_user() -> None:
    user = SourceUser("ada@x.com", (), "users.csv", 1234)
    fields = [getattr(user, name) for name in user.__struct_fields__]
    assert not any(isinstance(value, Origin) for value in fields)
    # A million users: one object each, untracked by the cyclic collector.
    assert not gc.is_tracked(user)


def test_an_origin_with_both_a_line_and_a_dn_is_refused() -> None:
    with pytest.raises(ValueError, match="both a line and a DN"):
        SourceUser.from_origin("ada@x.com", (), Origin("corp-ad", 3, "CN=Ada,DC=corp"))


def test_users_with_the_same_fields_and_origin_are_equal() -> None:
    tags = make_tags({"department": "Eng"})

    def made(origin: Origin) -> SourceUser:
        return SourceUser.from_origin("ada@x.com", tags, origin, date(2026, 1, 1), None, False)

    same = made(Origin("users.csv", 2))
    assert same == made(Origin("users.csv", 2))
    assert hash(same) == hash(made(Origin("users.csv", 2)))
    assert same == SourceUser("ada@x.com", tags, "users.csv", 2, date(2026, 1, 1), None, False)
    assert same != made(Origin("users.csv", 3))
    assert same != made(Origin("other.csv", 2))
    # A line and a DN that read alike are different places.
    assert made(Origin("x", None, "2")) != made(Origin("x", 2))


def test_a_user_is_frozen() -> None:
    user = SourceUser.from_origin("ada@x.com", (), Origin("users.csv", 2))
    with pytest.raises(AttributeError):
        user.at = 3  # type: ignore[misc]
    assert msgspec.structs.replace(user, at=3).origin == Origin("users.csv", 3)
