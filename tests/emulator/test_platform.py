"""The platform emulator's routes over real HTTP: verbs, auth, writes, errors, list."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from syncd.emulator import PlatformEmulator, make_users
from syncd.platform.api import FLAVOURS, ApiFlavour, Operation, WireUser
from tests.emulator.platform_support import AUTH, EU, KEY, MAX_BATCH, PU, call, user, wire

# --------------------------------------------------------------------------- verbs


@pytest.mark.parametrize("flavour", list(ApiFlavour))
def test_each_flavour_inserts_and_updates_with_its_own_verbs(
    emulator: PlatformEmulator, client: httpx.Client, flavour: ApiFlavour
) -> None:
    spec = FLAVOURS[flavour]
    inserted = client.request(spec.insert_method, spec.path, json={"users": [user("a", team="x")]})
    assert inserted.status_code == 200
    assert inserted.json() == {"users": [user("a", team="x")]}
    assert emulator.users()["a"].tags == {"team": "x"}

    updated = client.request(spec.update_method, spec.path, json={"users": [user("a", team="y")]})
    assert updated.status_code == 200
    assert updated.json() == {"users": [user("a", team="y")]}
    assert emulator.users()["a"].tags == {"team": "y"}

    calls = emulator.calls()
    assert calls["insert"] == 1
    assert calls["update"] == 1
    assert calls[spec.insert_method] == 1
    assert calls[spec.update_method] == 1


def test_swapped_verb_does_the_other_operation(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    # POST means update on platform-users: a new user is not inserted by it.
    response = client.post(PU.path, json={"users": [user("new")]})
    assert response.status_code == 200
    assert response.json() == {"users": []}
    assert "new" not in emulator.users()
    # ...but POST inserts on eligible-users, and both flavours share one store.
    assert client.post(EU.path, json={"users": [user("new")]}).json()["users"] == [user("new")]
    # PUT means insert on platform-users: inserting an existing user changes nothing.
    assert client.put(PU.path, json={"users": [user("new", t="1")]}).json() == {"users": []}
    # PUT means update on eligible-users.
    assert client.put(EU.path, json={"users": [user("new", t="2")]}).json()["users"] == [
        user("new", t="2")
    ]
    assert emulator.users()["new"].tags == {"t": "2"}
    assert emulator.calls() == {
        "list": 0,
        "insert": 2,
        "update": 2,
        "delete": 0,
        "GET": 0,
        "PUT": 2,
        "POST": 2,
        "DELETE": 0,
    }


# ---------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": "Bearer"},
    ],
)
@pytest.mark.parametrize("path", [PU.path, EU.path, "/_emulator/stats"])
def test_missing_or_wrong_key_is_401_and_never_echoed(
    emulator: PlatformEmulator, headers: dict[str, str], path: str
) -> None:
    with httpx.Client(base_url=emulator.url, timeout=10) as anonymous:
        response = anonymous.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or missing API key"}
    assert KEY not in response.text
    assert "wrong-key" not in response.text
    assert all(KEY not in value for value in response.headers.values())
    assert emulator.calls()["list"] == 0  # refused before it counts


def test_key_is_not_in_repr_or_responses(emulator: PlatformEmulator, client: httpx.Client) -> None:
    assert KEY not in repr(emulator)
    assert KEY not in str(emulator)
    assert "***" in repr(emulator)
    for response in (
        client.get(PU.path),
        client.get("/_emulator/stats"),
        client.post(PU.path, content=b"{"),
        client.get("/nowhere"),
    ):
        assert KEY not in response.text


# ------------------------------------------------------------------ insert/update


def test_insert_of_existing_user_is_left_out(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.seed_users([wire("a", team="old")])
    response = client.post(EU.path, json={"users": [user("a", team="new"), user("b")]})
    assert response.status_code == 200
    assert [u["end_user"] for u in response.json()["users"]] == ["b"]
    assert emulator.users()["a"].tags == {"team": "old"}


def test_duplicate_in_one_insert_batch_is_inserted_once(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    response = client.post(EU.path, json={"users": [user("a", n="1"), user("a", n="2")]})
    assert response.json() == {"users": [user("a", n="1")]}
    assert emulator.users()["a"].tags == {"n": "1"}


def test_update_of_missing_user_is_left_out(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.seed_users([wire("a")])
    response = client.put(EU.path, json={"users": [user("a", t="1"), user("ghost", t="1")]})
    assert [u["end_user"] for u in response.json()["users"]] == ["a"]
    assert set(emulator.users()) == {"a"}


def test_update_replaces_everything_and_absent_active_to_clears_it(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.seed_users(
        [
            WireUser(
                "a", tags={"k": "v", "old": "x"}, active_from="2025-01-01", active_to="2026-06-30"
            )
        ]
    )
    response = client.put(EU.path, json={"users": [user("a", "2026-02-01", k="w")]})
    assert response.json()["users"] == [user("a", "2026-02-01", k="w")]
    stored = emulator.users()["a"]
    assert stored.active_to is None
    assert stored.tags == {"k": "w"}
    assert stored.active_from == "2026-02-01"


@pytest.mark.parametrize(
    "bad",
    [
        {"end_user": "", "tags": {}, "active_from": "2026-01-01"},
        {"end_user": "   ", "tags": {}, "active_from": "2026-01-01"},
        {"end_user": "x", "tags": {}},
        {"end_user": "x", "active_from": "2026-01-01"},
        {"end_user": "x", "tags": {}, "active_from": "not a date"},
        {"end_user": "x", "tags": {}, "active_from": "2026-02-30"},
        {"end_user": "x", "tags": {}, "active_from": "2026-01-01", "active_to": "soon"},
    ],
)
def test_invalid_users_are_left_out_not_stored(
    emulator: PlatformEmulator, client: httpx.Client, bad: dict[str, object]
) -> None:
    response = client.post(EU.path, json={"users": [bad, user("ok")]})
    assert response.status_code == 200
    assert [u["end_user"] for u in response.json()["users"]] == ["ok"]
    assert set(emulator.users()) == {"ok"}


def test_iso_timestamps_are_accepted(emulator: PlatformEmulator, client: httpx.Client) -> None:
    body = {
        "users": [
            {
                "end_user": "a",
                "tags": {},
                "active_from": "2026-01-01T08:30:00Z",
                "active_to": "2026-12-31T23:59:59+02:00",
            }
        ]
    }
    assert client.post(EU.path, json=body).json()["users"][0]["end_user"] == "a"
    assert emulator.users()["a"].active_to == "2026-12-31T23:59:59+02:00"


# -------------------------------------------------------------------------- delete


@pytest.mark.parametrize("flavour", list(ApiFlavour))
def test_delete_removes_and_ignores_missing(
    emulator: PlatformEmulator, client: httpx.Client, flavour: ApiFlavour
) -> None:
    emulator.seed_users([wire("a"), wire("b"), wire("c")])
    response = call(client, flavour, Operation.DELETE, {"users": ["a", "c", "ghost"]})
    assert response.status_code == 200
    assert response.json() == {"message": "Deleted 2 users"}
    assert set(emulator.users()) == {"b"}
    assert emulator.calls()["DELETE"] == 1


# -------------------------------------------------------------- 413 / 422 / 404 / 405


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("POST", {"users": [user(f"u{i}") for i in range(MAX_BATCH + 1)]}),
        ("PUT", {"users": [user(f"u{i}") for i in range(MAX_BATCH + 1)]}),
        ("DELETE", {"users": [f"u{i}" for i in range(MAX_BATCH + 1)]}),
    ],
)
def test_batch_above_maximum_is_413_and_changes_nothing(
    emulator: PlatformEmulator, client: httpx.Client, method: str, payload: dict[str, object]
) -> None:
    emulator.seed_users([wire("u0"), wire("u1")])
    before = emulator.users()
    response = client.request(method, EU.path, json=payload)
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"batch of {MAX_BATCH + 1} users exceeds the maximum of {MAX_BATCH}"
    }
    assert emulator.users() == before


def test_batch_at_maximum_is_accepted(emulator: PlatformEmulator, client: httpx.Client) -> None:
    response = client.post(EU.path, json={"users": [user(f"u{i}") for i in range(MAX_BATCH)]})
    assert response.status_code == 200
    assert len(emulator.users()) == MAX_BATCH


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"[1, 2]", "invalid request body"),
        (b'{"people": []}', "users"),
        (b'{"users": [{"end_user": 7}]}', "end_user"),
        (b'{"users": [{"end_user": "a", "tags": {"k": 1}, "active_from": "2026-01-01"}]}', "tags"),
        (b'{"users": "a"}', "users"),
    ],
)
def test_malformed_or_wrong_shape_body_is_422_with_detail(
    emulator: PlatformEmulator, client: httpx.Client, content: bytes, expected: str
) -> None:
    response = client.post(EU.path, content=content)
    assert response.status_code == 422
    assert expected in response.json()["detail"]
    assert emulator.users() == {}


def test_delete_body_must_be_a_list_of_strings(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.seed_users([wire("a")])
    response = client.request("DELETE", EU.path, json={"users": [{"end_user": "a"}]})
    assert response.status_code == 422
    assert "a" in emulator.users()


def test_unknown_path_is_404_and_wrong_verb_405(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    assert client.get("/api/external/other-users").status_code == 404
    assert client.get("/").status_code == 404
    response = client.patch(EU.path, json={"users": []})
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "PUT", "POST", "DELETE"}
    assert client.request("HEAD", PU.path).status_code == 405
    assert client.put("/_emulator/stats").status_code == 405
    assert client.get("/_emulator/faults").status_code == 405
    assert client.get("/_emulator/reset-counters").status_code == 405
    assert emulator.calls()["list"] == 0


# ---------------------------------------------------------------------------- list


def test_list_returns_every_user(emulator: PlatformEmulator, client: httpx.Client) -> None:
    emulator.seed_users(make_users(2500))
    body = client.get(PU.path).json()
    assert "pagination" not in body
    assert len(body["users"]) == 2500
    assert body["users"][0] == {
        "end_user": "user0000000@example.com",
        "tags": {"department": "engineering", "region": "emea"},
        "active_from": "2026-01-01",
    }


def test_users_without_tags_are_sent_with_empty_tags(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    client.post(EU.path, json={"users": [user("a")]})
    emulator.seed_users([WireUser("b", active_from="2026-01-01")])
    assert client.get(EU.path).json() == {"users": [user("a"), user("b")]}


def test_etag_and_if_none_match(emulator: PlatformEmulator, client: httpx.Client) -> None:
    emulator.seed_users([wire("a")])
    first = client.get(EU.path)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')

    same = client.get(EU.path, headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == etag
    # Both flavours share the store, so they share the ETag.
    assert client.get(PU.path, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(EU.path, headers={"If-None-Match": '"0"'}).status_code == 200

    client.post(EU.path, json={"users": [user("b")]})
    changed = client.get(EU.path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert {u["end_user"] for u in changed.json()["users"]} == {"a", "b"}


def test_write_that_changes_nothing_keeps_the_etag(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.seed_users([wire("a")])
    etag = client.get(EU.path).headers["etag"]
    client.post(EU.path, json={"users": [user("a")]})  # already exists
    client.request("DELETE", EU.path, json={"users": ["ghost"]})
    assert client.get(EU.path, headers={"If-None-Match": etag}).status_code == 304
    client.request("DELETE", EU.path, json={"users": ["a"]})
    assert client.get(EU.path, headers={"If-None-Match": etag}).status_code == 200


def test_cached_list_is_invalidated_by_writes(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.seed_users([wire("a")])
    assert len(client.get(EU.path).json()["users"]) == 1
    assert len(client.get(EU.path).json()["users"]) == 1
    client.post(EU.path, json={"users": [user("b")]})
    assert len(client.get(EU.path).json()["users"]) == 2
    emulator.seed_users([wire("c")])
    assert len(client.get(EU.path).json()["users"]) == 3


def test_cursor_without_pagination_is_400(client: httpx.Client) -> None:
    response = client.get(EU.path, params={"page_cursor": "abc"})
    assert response.status_code == 400


@pytest.fixture
def paged() -> Iterator[tuple[PlatformEmulator, httpx.Client]]:
    with (
        PlatformEmulator(api_key=KEY, page_size=3) as emu,
        httpx.Client(base_url=emu.url, headers=AUTH, timeout=10) as http,
    ):
        yield emu, http


def walk(http: httpx.Client) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"page_cursor": cursor} if cursor else {}
        response = http.get(PU.path, params=params)
        assert response.status_code == 200
        body = response.json()
        assert len(body["users"]) <= 3
        seen.extend(u["end_user"] for u in body["users"])
        cursor = body["pagination"]["next_page_cursor"]
        pages += 1
        assert pages < 100
        if cursor is None:
            return seen


def test_pagination_walks_every_user_exactly_once(
    paged: tuple[PlatformEmulator, httpx.Client],
) -> None:
    emu, http = paged
    emu.seed_users(make_users(10))
    seen = walk(http)
    assert len(seen) == 10
    assert set(seen) == set(emu.users())


def test_pagination_last_page_says_null(paged: tuple[PlatformEmulator, httpx.Client]) -> None:
    emu, http = paged
    emu.seed_users(make_users(2))
    response = http.get(PU.path)
    assert response.json()["pagination"] == {"next_page_cursor": None}
    assert '"next_page_cursor":null' in response.text


def test_pagination_is_a_snapshot_despite_writes_mid_walk(
    paged: tuple[PlatformEmulator, httpx.Client],
) -> None:
    emu, http = paged
    emu.seed_users(make_users(7))
    first = http.get(PU.path).json()
    cursor = first["pagination"]["next_page_cursor"]
    http.post(EU.path, json={"users": [user("late")]})
    http.request("DELETE", EU.path, json={"users": [first["users"][0]["end_user"]]})
    rest: list[str] = []
    while cursor:
        body = http.get(PU.path, params={"page_cursor": cursor}).json()
        rest.extend(u["end_user"] for u in body["users"])
        cursor = body["pagination"]["next_page_cursor"]
    seen = [u["end_user"] for u in first["users"]] + rest
    assert sorted(seen) == sorted(u.end_user for u in make_users(7))


def test_pagination_cursor_can_be_retried(paged: tuple[PlatformEmulator, httpx.Client]) -> None:
    emu, http = paged
    emu.seed_users(make_users(5))
    cursor = http.get(PU.path).json()["pagination"]["next_page_cursor"]
    again = [http.get(PU.path, params={"page_cursor": cursor}).json() for _ in range(2)]
    assert again[0] == again[1]
    assert len(again[0]["users"]) == 2


@pytest.mark.parametrize("cursor", ["nonsense", "", "deadbeef.3", "x.y"])
def test_pagination_bad_cursor_is_400(
    paged: tuple[PlatformEmulator, httpx.Client], cursor: str
) -> None:
    emu, http = paged
    emu.seed_users(make_users(5))
    response = http.get(PU.path, params={"page_cursor": cursor})
    assert response.status_code == 400
    assert "page_cursor" in response.json()["detail"]


def test_pagination_cursor_offset_out_of_range_is_400(
    paged: tuple[PlatformEmulator, httpx.Client],
) -> None:
    emu, http = paged
    emu.seed_users(make_users(5))
    cursor = http.get(PU.path).json()["pagination"]["next_page_cursor"]
    walk_id = cursor.split(".")[0]
    assert http.get(PU.path, params={"page_cursor": f"{walk_id}.99"}).status_code == 400
    assert http.get(PU.path, params={"page_cursor": f"{walk_id}.0"}).status_code == 400
