"""Platform emulator faults, counters and control endpoints, over real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.platform.api import ApiFlavour, Operation
from tests.emulator.platform_support import AUTH, EU, KEY, PU, call, user, wire

# -------------------------------------------------------------------------- faults


def test_fail_next_answers_503_then_recovers(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(fail_next=2))
    payload = {"users": [user("a")]}
    assert client.post(EU.path, json=payload).status_code == 503
    assert client.put(PU.path, json=payload).status_code == 503
    assert "a" not in emulator.users()
    assert client.post(EU.path, json=payload).status_code == 200
    assert "a" in emulator.users()
    # Other operations are not affected; faulted calls are counted.
    assert client.get(EU.path).status_code == 200
    assert emulator.calls()["insert"] == 3
    assert emulator.faults(Operation.INSERT).fail_next == 0


@pytest.mark.parametrize(("retry_after", "header"), [(2.0, "2"), (0.5, "0.5"), (1, "1")])
def test_throttle_next_answers_429_with_retry_after(
    emulator: PlatformEmulator, client: httpx.Client, retry_after: float, header: str
) -> None:
    emulator.set_faults(Operation.LIST, EndpointFaults(throttle_next=1, retry_after_s=retry_after))
    throttled = client.get(EU.path)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == header
    assert client.get(EU.path).status_code == 200


def test_throttle_comes_before_fail(emulator: PlatformEmulator, client: httpx.Client) -> None:
    emulator.set_faults(Operation.LIST, EndpointFaults(fail_next=1, throttle_next=1))
    assert [client.get(EU.path).status_code for _ in range(3)] == [429, 503, 200]


def test_latency_is_added(emulator: PlatformEmulator, client: httpx.Client) -> None:
    client.get(EU.path)  # warm the connection
    emulator.set_faults(Operation.LIST, EndpointFaults(latency_ms=250))
    started = time.perf_counter()
    assert client.get(EU.path).status_code == 200
    assert time.perf_counter() - started >= 0.25
    started = time.perf_counter()
    client.request("DELETE", EU.path, json={"users": []})  # other operations: no latency
    assert time.perf_counter() - started < 0.25


def test_error_rate_one_always_fails_and_zero_never(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.set_faults(Operation.LIST, EndpointFaults(error_rate=1.0))
    assert {client.get(EU.path).status_code for _ in range(5)} == {503}
    emulator.set_faults(Operation.LIST, EndpointFaults(error_rate=0.0))
    assert {client.get(EU.path).status_code for _ in range(5)} == {200}


def test_error_rate_is_reproducible_with_a_seed() -> None:
    def statuses(seed: int) -> list[int]:
        with (
            PlatformEmulator(api_key=KEY, seed=seed) as emu,
            httpx.Client(base_url=emu.url, headers=AUTH, timeout=10) as http,
        ):
            emu.set_faults(Operation.LIST, EndpointFaults(error_rate=0.5))
            return [http.get(EU.path).status_code for _ in range(30)]

    first = statuses(7)
    assert first == statuses(7)
    assert set(first) == {200, 503}


@pytest.mark.parametrize("op", [Operation.INSERT, Operation.UPDATE])
def test_refuse_users_gives_partial_success(
    emulator: PlatformEmulator, client: httpx.Client, op: Operation
) -> None:
    if op is Operation.UPDATE:
        emulator.seed_users([wire("a"), wire("b")])
    emulator.set_faults(op, EndpointFaults(refuse_users=frozenset({"b"})))
    response = call(
        client, ApiFlavour.ELIGIBLE_USERS, op, {"users": [user("a", t="1"), user("b", t="1")]}
    )
    assert response.status_code == 200
    assert [u["end_user"] for u in response.json()["users"]] == ["a"]
    stored = emulator.users()
    assert stored["a"].tags == {"t": "1"}
    assert "b" not in stored or stored["b"].tags == {}


def test_clear_faults(emulator: PlatformEmulator, client: httpx.Client) -> None:
    emulator.set_faults(Operation.LIST, EndpointFaults(fail_next=5))
    emulator.clear_faults()
    assert client.get(EU.path).status_code == 200


def test_set_faults_stores_a_copy_and_validates(emulator: PlatformEmulator) -> None:
    faults = EndpointFaults(fail_next=1)
    emulator.set_faults(Operation.LIST, faults)
    faults.fail_next = 9
    assert emulator.faults(Operation.LIST).fail_next == 1
    with pytest.raises(ValueError, match="error_rate"):
        emulator.set_faults(Operation.LIST, EndpointFaults(error_rate=1.5))
    with pytest.raises(ValueError, match="fail_next"):
        emulator.set_faults(Operation.LIST, EndpointFaults(fail_next=-1))


# ------------------------------------------------------------------------ counters


def test_counters_by_operation_and_verb(emulator: PlatformEmulator, client: httpx.Client) -> None:
    client.get(PU.path)
    client.get(EU.path)
    client.put(PU.path, json={"users": [user("a")]})  # insert
    client.post(EU.path, json={"users": [user("b")]})  # insert
    client.post(PU.path, json={"users": [user("a", t="1")]})  # update
    client.request("DELETE", EU.path, json={"users": ["a"]})
    client.post(EU.path, content=b"{")  # a 422 is still a call
    client.get("/_emulator/stats")  # control calls are not counted
    client.get("/elsewhere")
    assert emulator.calls() == {
        "list": 2,
        "insert": 3,
        "update": 1,
        "delete": 1,
        "GET": 2,
        "PUT": 1,
        "POST": 3,
        "DELETE": 1,
    }
    emulator.reset_counters()
    assert set(emulator.calls().values()) == {0}


# ------------------------------------------------------------------ control paths


def test_control_endpoints_over_http(emulator: PlatformEmulator, client: httpx.Client) -> None:
    emulator.seed_users([wire("a"), wire("b")])
    client.get(EU.path)
    stats = client.get("/_emulator/stats").json()
    assert stats["users"] == 2
    assert stats["calls"]["list"] == 1
    assert stats["calls"]["GET"] == 1

    assert client.post("/_emulator/reset-counters").status_code == 200
    assert client.get("/_emulator/stats").json()["calls"]["list"] == 0

    set_faults = client.post(
        "/_emulator/faults",
        json={
            "operation": "insert",
            "fail_next": 1,
            "throttle_next": 1,
            "retry_after_s": 3,
            "refuse_users": ["x"],
        },
    )
    assert set_faults.status_code == 200
    assert set_faults.json()["refuse_users"] == ["x"]
    assert emulator.faults(Operation.INSERT) == EndpointFaults(
        fail_next=1, throttle_next=1, retry_after_s=3, refuse_users=frozenset({"x"})
    )
    throttled = client.post(EU.path, json={"users": [user("c")]})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "3"
    assert client.post(EU.path, json={"users": [user("c")]}).status_code == 503
    partial = client.post(EU.path, json={"users": [user("c"), user("x")]})
    assert [u["end_user"] for u in partial.json()["users"]] == ["c"]

    client.post("/_emulator/faults", json={"operation": "list", "fail_next": 3})
    assert client.delete("/_emulator/faults").status_code == 200
    assert client.get(EU.path).status_code == 200
    assert emulator.faults(Operation.INSERT) == EndpointFaults()


@pytest.mark.parametrize(
    "payload",
    [
        {"operation": "upsert"},
        {"fail_next": 1},
        {"operation": "list", "fail_nxt": 1},
        {"operation": "list", "error_rate": 2},
        {"operation": "list", "fail_next": -1},
        {"operation": "list", "refuse_users": "a"},
    ],
)
def test_bad_faults_body_is_422(
    emulator: PlatformEmulator, client: httpx.Client, payload: dict[str, object]
) -> None:
    response = client.post("/_emulator/faults", json=payload)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("invalid faults body")
    assert emulator.faults(Operation.LIST) == EndpointFaults()
