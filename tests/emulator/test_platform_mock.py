"""The platform emulator through ``mock_transport()``: same answers as HTTP, no sockets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from syncd.emulator import EndpointFaults, PlatformEmulator, make_users
from syncd.platform.api import Operation
from tests.emulator.platform_support import AUTH, EU, KEY, MAX_BATCH, PU, user, wire

# Never resolved: the mock transport answers every request itself.
MOCK_BASE = "http://platform.mock"


def mock_client(emulator: PlatformEmulator) -> httpx.Client:
    """A client whose requests go through ``emulator.mock_transport()``."""
    return httpx.Client(transport=emulator.mock_transport(), base_url=MOCK_BASE, headers=AUTH)


@pytest.fixture
def mock(emulator: PlatformEmulator) -> Iterator[httpx.Client]:
    with mock_client(emulator) as http:
        yield http


Step = Callable[[httpx.Client], httpx.Response]

# One scenario with every kind of answer: 200s, 401, 404, 405, 413, 422, 304 and 429.
SCENARIO: list[Step] = [
    lambda c: c.put(PU.path, json={"users": [user("a", t="1"), user("b")]}),
    lambda c: c.post(EU.path, json={"users": [user("a", t="2"), user("c")]}),
    lambda c: c.put(EU.path, json={"users": [user("b", t="3"), user("ghost")]}),
    lambda c: c.request("DELETE", PU.path, json={"users": ["c", "nobody"]}),
    lambda c: c.get(EU.path),
    lambda c: c.get(PU.path, headers={"If-None-Match": c.get(PU.path).headers["etag"]}),
    lambda c: c.get(EU.path, headers={"Authorization": "Bearer wrong"}),
    lambda c: c.get("/nowhere"),
    lambda c: c.patch(EU.path, json={"users": []}),
    lambda c: c.request("HEAD", EU.path),
    lambda c: c.post(EU.path, json={"users": [user(f"u{i}") for i in range(MAX_BATCH + 1)]}),
    lambda c: c.post(EU.path, content=b"{"),
    lambda c: c.get(EU.path, params={"page_cursor": "x"}),
    lambda c: c.post("/_emulator/faults", json={"operation": "list", "throttle_next": 1}),
    lambda c: c.get(EU.path),
    lambda c: c.get("/_emulator/stats"),
]

# Headers that must agree; ETag values differ between two emulators (clock-based).
COMPARED_HEADERS = ("content-type", "allow", "retry-after", "www-authenticate")


def answers(client: httpx.Client) -> list[tuple[object, ...]]:
    result: list[tuple[object, ...]] = []
    for step in SCENARIO:
        response = step(client)
        headers = tuple(response.headers.get(name) for name in COMPARED_HEADERS)
        result.append((response.status_code, response.content, headers, "etag" in response.headers))
    return result


def test_a_scenario_gives_the_same_answers_as_real_http() -> None:
    over_mock = PlatformEmulator(api_key=KEY, max_batch_size=MAX_BATCH)
    with mock_client(over_mock) as http:
        mocked = answers(http)
    with (
        PlatformEmulator(api_key=KEY, max_batch_size=MAX_BATCH) as over_http,
        httpx.Client(base_url=over_http.url, headers=AUTH, timeout=10) as http,
    ):
        real = answers(http)
        assert over_http.calls() == over_mock.calls()
        assert over_http.users() == over_mock.users()
    assert mocked == real
    statuses = [status for status, *_ in mocked]
    assert statuses == [
        200,
        200,
        200,
        200,
        200,
        304,
        401,
        404,
        405,
        405,
        413,
        422,
        400,
        200,
        429,
        200,
    ]


def test_insert_through_mock_then_list_over_http_and_back(
    emulator: PlatformEmulator, client: httpx.Client, mock: httpx.Client
) -> None:
    inserted = mock.post(EU.path, json={"users": [user("a", team="x")]})
    assert inserted.status_code == 200
    assert inserted.json() == {"users": [user("a", team="x")]}
    over_http, over_mock = client.get(EU.path), mock.get(EU.path)
    assert over_http.json() == {"users": [user("a", team="x")]}
    assert over_mock.content == over_http.content
    assert over_mock.headers["etag"] == over_http.headers["etag"]
    assert over_mock.headers["content-length"] == str(len(over_http.content))
    not_modified = mock.get(EU.path, headers={"If-None-Match": over_http.headers["etag"]})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert "content-length" not in not_modified.headers


def test_mock_needs_no_running_server() -> None:
    emu = PlatformEmulator(api_key=KEY)
    emu.seed_users([wire("a")])
    with mock_client(emu) as http:
        assert http.get(PU.path).json() == {"users": [user("a")]}
    assert not emu.running
    assert emu.calls()["list"] == 1


def test_counters_and_faults_apply_through_the_mock(
    emulator: PlatformEmulator, mock: httpx.Client
) -> None:
    emulator.set_faults(Operation.LIST, EndpointFaults(throttle_next=1, retry_after_s=2))
    emulator.set_faults(
        Operation.INSERT, EndpointFaults(fail_next=1, refuse_users=frozenset({"b"}))
    )
    throttled = mock.get(EU.path)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
    assert mock.get(EU.path).status_code == 200
    payload = {"users": [user("a"), user("b")]}
    assert mock.post(EU.path, json=payload).status_code == 503
    assert [u["end_user"] for u in mock.post(EU.path, json=payload).json()["users"]] == ["a"]
    with httpx.Client(transport=emulator.mock_transport(), base_url=MOCK_BASE) as anonymous:
        assert anonymous.get(EU.path).status_code == 401
    assert emulator.calls() == {
        "list": 2,
        "insert": 2,
        "update": 0,
        "delete": 0,
        "GET": 2,
        "PUT": 0,
        "POST": 2,
        "DELETE": 0,
    }
    assert mock.get("/_emulator/stats").json() == {"calls": emulator.calls(), "users": 1}


def test_latency_is_added_through_the_mock(emulator: PlatformEmulator, mock: httpx.Client) -> None:
    emulator.set_faults(Operation.LIST, EndpointFaults(latency_ms=200))
    started = time.perf_counter()
    assert mock.get(EU.path).status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_pagination_through_the_mock() -> None:
    emu = PlatformEmulator(api_key=KEY, page_size=4)
    emu.seed_users(make_users(10))
    seen: list[str] = []
    with mock_client(emu) as http:
        body = http.get(PU.path).json()
        seen.extend(u["end_user"] for u in body["users"])
        while cursor := body["pagination"]["next_page_cursor"]:
            body = http.get(PU.path, params={"page_cursor": cursor}).json()
            seen.extend(u["end_user"] for u in body["users"])
    assert seen == [u.end_user for u in make_users(10)]


def test_streamed_request_body_through_the_mock(
    emulator: PlatformEmulator, mock: httpx.Client
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"users": ['
        yield httpx.Request("POST", "/", json=user("a")).content
        yield b"]}"

    assert mock.post(EU.path, content=chunks()).status_code == 200
    assert "a" in emulator.users()
