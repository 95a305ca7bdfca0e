"""Decoding list responses as they arrive (PageReader) and converting them (ListedUsers).

Pure: bytes in, users out. Every layout a server may write is decoded to the same users
as one whole decode would give; the reader streams where the layout allows it and
collects the body whole where it does not.
"""

from __future__ import annotations

import json
import random
from datetime import date
from typing import Any

import msgspec
import pytest

from syncd.errors import PlatformError
from syncd.model import Origin, PlatformUser, SourceUser, make_tags
from syncd.platform import listed as listed_module
from syncd.platform import listing as listing_module
from syncd.platform.listed import ListedUsers, decode_users

SMALL = 256  # bytes per chunk in these tests: many chunks from a few users


def wire_users(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    for index in range(start, start + count):
        user: dict[str, Any] = {
            "end_user": f"user{index:05d}@example.com",
            "tags": {"department": ["eng", "ops", "sales"][index % 3], "region": "emea"},
            "active_from": f"2026-01-{index % 28 + 1:02d}",
        }
        if index % 5 == 0:
            user["active_to"] = "2026-12-31"
        if index % 7 == 0:
            user["tags"] = {}
        users.append(user)
    return users


def expected(users: list[dict[str, Any]]) -> list[PlatformUser]:
    """The users a plain whole decode gives (the reference)."""
    return [
        PlatformUser(
            user["end_user"],
            make_tags(user.get("tags", {})),
            date.fromisoformat(user["active_from"]),
            date.fromisoformat(user["active_to"]) if "active_to" in user else None,
        )
        for user in users
    ]


def read(
    body: bytes,
    *,
    pieces: int | None = None,
    known: dict[str, SourceUser] | None = None,
    expected_size: int | None = None,
    chunk_bytes: int = SMALL,
) -> tuple[list[PlatformUser], list[str], str | None, bool]:
    """Feed ``body`` in pieces of ``pieces`` bytes (random sizes if None)."""
    listing = ListedUsers(known)
    reader = listing.page(expected_size=expected_size, chunk_bytes=chunk_bytes)
    rng = random.Random(len(body))
    position = 0
    while position < len(body):
        size = pieces if pieces is not None else rng.randint(1, 97)
        reader.feed(body[position : position + size])
        position += size
    cursor = reader.finish()
    users, duplicates = listing.result()
    return users, duplicates, cursor, reader.streaming


def known_of(users: list[dict[str, Any]]) -> dict[str, SourceUser]:
    origin = Origin("test")
    names = [user["end_user"] for user in users]
    # New string objects, equal to the listed names: as a directory read gives them.
    return {name: SourceUser.from_origin(name, (), origin) for name in ("".join(n) for n in names)}


USERS = wire_users(60)


# ------------------------------------------------------------------- layouts


@pytest.mark.parametrize("pieces", [None, 1, 4096])
def test_compact_output_streams_and_gives_every_user(pieces: int | None) -> None:
    body = msgspec.json.encode({"users": USERS})
    users, duplicates, cursor, streaming = read(body, pieces=pieces)
    assert users == expected(USERS)
    assert duplicates == []
    assert cursor is None
    assert streaming


@pytest.mark.parametrize(
    "dump",
    [
        json.dumps,  # ", " and ": " separators
        lambda body: json.dumps(body, indent=2),
        lambda body: json.dumps(body, indent="\t", ensure_ascii=False),
    ],
    ids=["spaces", "indent", "tabs"],
)
def test_python_json_layouts_stream_too(dump: Any) -> None:
    body = dump({"users": USERS, "pagination": {"next_page_cursor": "c2"}}).encode()
    users, _, cursor, streaming = read(body)
    assert users == expected(USERS)
    assert cursor == "c2"
    assert streaming


def test_a_body_smaller_than_a_chunk_is_decoded_whole() -> None:
    body = msgspec.json.encode({"users": USERS[:2]})
    assert read(body, chunk_bytes=1 << 20)[0] == expected(USERS[:2])


def test_an_empty_list_and_a_null_pagination() -> None:
    assert read(b'{"users": [], "pagination": null}')[:3] == ([], [], None)
    assert read(b' {"users":[]} ', pieces=1)[:3] == ([], [], None)


@pytest.mark.parametrize(
    "body",
    [
        # The pagination first: the start is not {"users":[
        {"pagination": {"next_page_cursor": "n"}, "users": USERS},
        # end_user last in each user object: no cut point
        {"users": [{k: u[k] for k in reversed(list(u))} for u in USERS]},
    ],
    ids=["top-level-order", "user-key-order"],
)
@pytest.mark.parametrize("expected_size", [None, "exact"])
def test_other_key_orders_are_collected_and_decoded_whole(
    body: dict[str, Any], expected_size: str | None
) -> None:
    data = msgspec.json.encode(body)
    size = len(data) if expected_size else None
    users, _, cursor, streaming = read(data, expected_size=size, chunk_bytes=64)
    assert users == expected(USERS)
    assert cursor == body.get("pagination", {}).get("next_page_cursor")
    assert not streaming


def test_a_cut_pattern_inside_a_tag_value_is_not_a_cut() -> None:
    users = wire_users(30)
    users[10]["tags"] = {"note": '},{"end_user":"intruder@example.com","tags":{}}'}
    users[11]["tags"] = {"note": "}, {\n  end_user"}
    body = json.dumps({"users": users}, separators=(",", ":")).encode()
    listed, _, _, streaming = read(body, chunk_bytes=64)
    assert listed == expected(users)
    assert "intruder@example.com" not in {user.end_user for user in listed}
    assert streaming


def test_a_cut_inside_a_nested_array_falls_back_to_a_whole_decode() -> None:
    users = wire_users(30)
    # An unknown field whose objects look like user objects: cutting there leaves a
    # chunk that is not balanced JSON, so the reader stops cutting.
    for user in users[5:]:
        user["history"] = [{"at": 1}, {"end_user": "old@example.com", "tags": {}}]
    body = msgspec.json.encode({"users": users})
    listed, _, _, streaming = read(body, chunk_bytes=64)
    assert listed == expected(users)
    assert not streaming


def test_every_cut_of_a_body_in_pieces_gives_the_same_users() -> None:
    body = json.dumps({"users": USERS}, indent=1).encode()
    reference = expected(USERS)
    for pieces in (2, 3, 17, 64, 255, 256, 257):
        assert read(body, pieces=pieces, chunk_bytes=100)[0] == reference


# -------------------------------------------------------------------- errors


@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20], ids=["streamed", "whole"])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"active_from": None}, "user 'user00040@example.com' without active_from"),
        ({"active_from": "yesterday"}, "'user00040@example.com' with an invalid active_from"),
        ({"active_to": "2026-13-45"}, "'user00040@example.com' with an invalid active_to"),
        (
            {"tags": {"dept": 7}},
            "'user00040@example.com' with an invalid tags.dept: Expected `str`",
        ),
        ({"tags": ["x"]}, "'user00040@example.com' with an invalid tags: Expected `object`"),
        ({"end_user": 5}, "user #40 (no end_user) with an invalid end_user"),
    ],
)
def test_a_bad_user_is_named_with_its_field(
    change: dict[str, Any], message: str, chunk_bytes: int
) -> None:
    users = wire_users(60)
    users[40].update(change)
    if change.get("active_from", "") is None:
        del users[40]["active_from"]
    body = msgspec.json.encode({"users": users})
    with pytest.raises(PlatformError, match=r"^list: the platform returned ") as caught:
        read(body, chunk_bytes=chunk_bytes)
    assert message in str(caught.value)


def test_a_user_without_end_user_is_numbered_across_chunks() -> None:
    users = wire_users(60)
    del users[50]["end_user"]
    body = msgspec.json.encode({"users": users})
    with pytest.raises(PlatformError, match=r"user #50 \(no end_user\)"):
        read(body, chunk_bytes=64)


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.999])
def test_a_body_cut_mid_object_is_not_valid_json(cut: float) -> None:
    body = msgspec.json.encode({"users": USERS})
    with pytest.raises(PlatformError, match=r"^list: the platform's response is not valid JSON"):
        read(body[: int(len(body) * cut)], chunk_bytes=64)


@pytest.mark.parametrize(
    "body",
    [b"<html>login</html>", b'{"users":[{"end_user":"a","active_from":"2026-01-01"},]}', b""],
)
def test_invalid_json_is_a_platform_error(body: bytes) -> None:
    with pytest.raises(PlatformError, match=r"^list: the platform's response is not valid JSON"):
        read(body)


def test_garbage_after_the_body_is_invalid_even_when_streamed() -> None:
    body = msgspec.json.encode({"users": USERS}) + b"]"
    with pytest.raises(PlatformError, match="trailing characters"):
        read(body, chunk_bytes=64)


def test_an_error_position_is_counted_in_the_whole_body() -> None:
    body = msgspec.json.encode({"users": USERS})
    broken = body[:-3] + b"x" + body[-2:]  # a character the closing user does not allow
    with pytest.raises(PlatformError) as caught:
        read(broken, chunk_bytes=64)
    assert f"(byte {len(body) - 3})" in str(caught.value)


@pytest.mark.parametrize(
    "body", [{"message": "ok"}, {"users": "all"}, [1, 2], {"users": [], "pagination": 3}]
)
def test_a_wrong_shape_is_a_platform_error(body: object) -> None:
    with pytest.raises(PlatformError, match=r"^list: the platform's response has an unexpected"):
        read(msgspec.json.encode(body))


# ------------------------------------------------- conversion, known, duplicates


def test_dates_and_tags_are_shared_and_dates_compared_as_dates() -> None:
    users = wire_users(40)
    users[3]["active_from"] = "2025-12-31T23:30:00-02:00"  # 2026-01-01 in UTC
    listed = read(msgspec.json.encode({"users": users}))[0]
    assert listed[3].active_from == date(2026, 1, 1)
    by_tags = {user.tags: user.tags for user in listed}
    assert all(user.tags is by_tags[user.tags] for user in listed)
    assert listed[1].tags is make_tags({"region": "emea", "department": "ops"})
    assert listed[0].active_to is listed[5].active_to


def test_known_names_are_stored_as_the_known_strings() -> None:
    users = wire_users(200)
    known = known_of(users[:150])
    listed, duplicates, _, _ = read(msgspec.json.encode({"users": users}), known=known)
    assert listed == expected(users)
    assert duplicates == []
    keys = {name: name for name in known}
    assert all(user.end_user is keys[user.end_user] for user in listed[:150])
    assert all(user.end_user not in keys for user in listed[150:])


def shuffled_in_batches(users: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Batches of a first sync landing out of turn, and a few users gone from known."""
    batches = [users[start : start + size] for start in range(0, len(users), size)]
    random.Random(7).shuffle(batches)
    return [user for batch in batches for user in batch]


@pytest.mark.parametrize("size", [1, 10, 97])
def test_a_listing_out_of_the_known_order_converts_the_same(size: int) -> None:
    users = wire_users(600)
    known = known_of([user for index, user in enumerate(users) if index % 11])  # skips
    listing = shuffled_in_batches(users, size)
    listed, duplicates, _, _ = read(msgspec.json.encode({"users": listing}), known=known)
    assert listed == expected(listing)
    assert duplicates == []
    keys = {name: name for name in known}
    assert all(u.end_user is keys[u.end_user] for u in listed if u.end_user in keys)


@pytest.mark.parametrize("known", [False, True], ids=["without-known", "with-known"])
@pytest.mark.parametrize(
    "repeat",
    [
        [(5, 6)],  # the same user twice in a row
        [(5, 400)],  # far apart (in the known order, then out of it)
        [(400, 5)],  # out of the known order first
        [(5, 6), (5, 7)],  # three times
        [(590, 591)],  # not a known user (with known)
    ],
)
def test_duplicates_keep_the_last_occurrence_at_the_first_place(
    repeat: list[tuple[int, int]], known: bool
) -> None:
    users = wire_users(600)
    known_users = known_of(users[:580]) if known else None
    for original, copy in repeat:
        users[copy] = {**users[original], "active_from": f"2027-01-0{copy % 9 + 1}"}
    listed, duplicates, _, _ = read(msgspec.json.encode({"users": users}), known=known_users)
    reference: dict[str, PlatformUser] = {}
    extra: list[str] = []
    for user in expected(users):
        if user.end_user in reference:
            extra.append(user.end_user)
        reference[user.end_user] = user
    assert listed == list(reference.values())
    assert duplicates == extra


@pytest.mark.parametrize("known", [False, True], ids=["without-known", "with-known"])
def test_a_page_read_again_forgets_the_broken_attempt(known: bool) -> None:
    first = msgspec.json.encode({"users": wire_users(50), "pagination": {"next_page_cursor": "2"}})
    second = msgspec.json.encode({"users": wire_users(50, start=50)})
    listing = ListedUsers(known_of(wire_users(100)) if known else None)
    reader = listing.page(chunk_bytes=64)
    reader.feed(first)
    assert reader.finish() == "2"
    broken = listing.page(chunk_bytes=64)
    broken.feed(second[: len(second) // 2])  # then the connection broke
    again = listing.page(chunk_bytes=64)
    again.feed(second)
    assert again.finish() is None
    users, duplicates = listing.result()
    assert users == expected(wire_users(100))
    assert duplicates == []  # the broken attempt's users are not counted twice


def test_a_duplicate_across_pages_is_found() -> None:
    listing = ListedUsers()
    for page in (wire_users(30), wire_users(30, start=29)):
        reader = listing.page(chunk_bytes=64)
        reader.feed(msgspec.json.encode({"users": page}))
        reader.finish()
    users, duplicates = listing.result()
    assert len(users) == 59
    assert duplicates == ["user00029@example.com"]


def test_decode_users_reads_one_whole_response() -> None:
    body = msgspec.json.encode({"users": USERS, "pagination": {"next_page_cursor": "x"}})
    users, duplicates, cursor = decode_users(body, chunk_bytes=128)
    assert (users, duplicates, cursor) == (expected(USERS), [], "x")


def test_false_alarms_of_the_seen_bitmap_cost_no_user() -> None:
    # 100,000 names in 2**23 bits: a few hundred find their bit set by another name.
    users = [
        {"end_user": f"n{index}", "tags": {}, "active_from": "2026-01-01"}
        for index in range(100_000)
    ]
    listing = ListedUsers()
    reader = listing.page()
    reader.feed(msgspec.json.encode({"users": users}))
    reader.finish()
    assert len(listing._doubtful) > 100  # the exact count ran
    listed, duplicates = listing.result()
    assert len(listed) == 100_000
    assert duplicates == []


# ------------------------------------------------- other orders than the known one


def blocks_swapped(users: list[Any], size: int) -> list[Any]:
    """Each pair of blocks of ``size`` users swapped (pages of another paging order)."""
    out: list[Any] = []
    for start in range(0, len(users), 2 * size):
        out += users[start + size : start + 2 * size] + users[start : start + size]
    return out


ORDERS = {
    "sorted": sorted,
    "reversed": lambda users: users[::-1],
    "blocks-swapped": lambda users: blocks_swapped(users, 2_500),
    "shuffled": lambda users: random.Random(3).sample(users, len(users)),
}


@pytest.mark.parametrize("order", ORDERS)
def test_a_listing_in_another_order_costs_a_bounded_search(order: str) -> None:
    # known in a source's order, the platform listing in another one: the searches stay
    # within their budget and the walk is given up early, not kept per name.
    names = [f"user{index:05d}@example.com" for index in range(10_000)]
    source_order = random.Random(1).sample(names, len(names))
    known = known_of([{"end_user": name} for name in source_order])
    listing_order = ORDERS[order](source_order)
    users = [{"end_user": name, "tags": {}, "active_from": "2026-01-01"} for name in listing_order]
    listing = ListedUsers(known)
    reader = listing.page(chunk_bytes=4096)
    reader.feed(msgspec.json.encode({"users": users}))
    reader.finish()
    listed, duplicates = listing.result()
    assert listed == expected(users)
    assert duplicates == []
    keys = {name: name for name in known}
    assert all(user.end_user is keys[user.end_user] for user in listed)
    assert listing._searched <= listed_module._SEARCH_BUDGET * len(users) + 8 * listed_module._NEAR
    assert listing._placed <= listed_module._MISSES_IN_A_ROW + 16
    if order != "blocks-swapped":  # two searches per pair of blocks: the walk goes on
        assert listing._keys is None  # the rest by hash lookup
    assert len(listing._doubtful) < len(users) // 20  # bitmap false alarms only


def test_a_listing_in_the_known_order_never_searches() -> None:
    users = wire_users(3_000)
    listing = ListedUsers(known_of(users))
    reader = listing.page(chunk_bytes=4096)
    reader.feed(msgspec.json.encode({"users": users}))
    reader.finish()
    assert listing.result() == (expected(users), [])
    assert (listing._placed, listing._searched, listing._doubtful) == (0, 0, [])


def test_duplicates_are_found_across_the_moment_the_walk_is_lost() -> None:
    users = wire_users(2_000)
    known = known_of(users[:1_900])
    # In the known order first (user 5 and the unknown user 1950 once each), then
    # sorted against it (reversed), with both again and one repeated within each part.
    first = [*users[:100], users[1_950], users[7]]
    rest = [*users[100:][::-1], {**users[5], "active_from": "2027-02-02"}, users[1_950]]
    listing_order = [*first, *rest]
    listing = ListedUsers(known)
    reader = listing.page(chunk_bytes=1024)
    reader.feed(msgspec.json.encode({"users": listing_order}))
    reader.finish()
    listed, duplicates = listing.result()
    assert listing._keys is None  # the walk was lost
    reference: dict[str, PlatformUser] = {}
    extra: list[str] = []
    for user in expected(listing_order):
        if user.end_user in reference:
            extra.append(user.end_user)
        reference[user.end_user] = user
    assert listed == list(reference.values())
    assert sorted(duplicates) == sorted(extra)
    assert len(duplicates) == 4  # 7, 1950 (in the reversed rest and at the end), 5


@pytest.mark.parametrize("order", ["known", "reversed"])
def test_a_known_name_is_kept_as_the_users_end_user_on_every_path(order: str) -> None:
    # Keys that are other string objects than the users' end_user, and one user whose
    # end_user is not its key: the walk, the search and the hash lookup store the same.
    users = wire_users(300)
    origin = Origin("test")
    known = {
        "".join(user["end_user"]): SourceUser.from_origin("".join(user["end_user"]), (), origin)
        for user in users
    }
    odd = users[10]["end_user"]
    known[odd] = SourceUser.from_origin("someone.else@example.com", (), origin)
    listing_order = users if order == "known" else users[::-1]
    listed, duplicates, _, _ = read(msgspec.json.encode({"users": listing_order}), known=known)
    assert listed == expected(listing_order)
    assert duplicates == []
    for user in listed:
        if user.end_user == odd:
            assert user.end_user is not known[odd].end_user
            assert all(user.end_user is not key for key in known)
        else:
            assert user.end_user is known[user.end_user].end_user


# ------------------------------------------------- fallback buffer, repeated keys


def test_a_huge_content_length_does_not_preallocate_it() -> None:
    body = json.dumps({"pagination": None, "users": USERS}).encode()  # not streamed
    listed, _, _, streaming = read(body, expected_size=1 << 40)
    assert not streaming
    assert listed == expected(USERS)


def test_a_body_too_large_for_memory_is_a_platform_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real allocation that fails: 2**60 bytes can be asked for, never granted.
    monkeypatch.setattr(listing_module, "_PREALLOCATED_MAX", 1 << 60)
    body = json.dumps({"pagination": None, "users": USERS}).encode()
    with pytest.raises(PlatformError, match=r"Content-Length 1152921504606846976.*fit in memory"):
        read(body, expected_size=1 << 60)


@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20], ids=["streamed", "whole"])
def test_a_key_repeated_in_a_user_object_takes_its_last_value(chunk_bytes: int) -> None:
    # Known behaviour (see PageReader): as in any JSON decoder the last value wins and
    # the earlier one is not checked; detecting repeats would cost a second parse.
    body = (
        b'{"users":[{"end_user":"a@example.com","tags":{"team":1},"tags":{"team":"x"},'
        b'"active_from":"2026-01-01"}]}'
    )
    listed = read(body, chunk_bytes=chunk_bytes)[0]
    assert listed == [PlatformUser("a@example.com", make_tags({"team": "x"}), date(2026, 1, 1))]


class CountingKnown(dict[str, SourceUser]):
    """Known users that count how often they are walked through."""

    walks = 0

    def values(self):  # type: ignore[override]
        CountingKnown.walks += 1
        return super().values()

    def items(self):  # type: ignore[override]
        CountingKnown.walks += 1
        return super().items()


def test_an_empty_project_never_walks_the_known_users() -> None:
    # A first sync lists an empty project with a million known users: nothing to place.
    CountingKnown.walks = 0
    known = CountingKnown(known_of(wire_users(50)))
    users, duplicates, _, _ = read(msgspec.json.encode({"users": []}), known=known)
    assert (users, duplicates) == ([], [])
    assert CountingKnown.walks == 0


def test_users_after_an_empty_first_page_are_placed_as_the_known_strings() -> None:
    known = known_of(wire_users(40))
    listing = ListedUsers(known)
    pages = ({"users": [], "pagination": {"next_page_cursor": "2"}}, {"users": wire_users(40)})
    for page in pages:
        reader = listing.page(chunk_bytes=64)
        reader.feed(msgspec.json.encode(page))
        reader.finish()
    users, duplicates = listing.result()
    assert users == expected(wire_users(40))
    assert duplicates == []
    assert all(user.end_user is known[user.end_user].end_user for user in users)
