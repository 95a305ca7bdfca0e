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


# ------------------------------------------------ answers that never come, permanent


@pytest.mark.parametrize("status", [400, 404, 405, 500])
def test_status_next_answers_that_status_without_handling_the_call(
    emulator: PlatformEmulator, client: httpx.Client, status: int
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(status_next=2, status_code=status))
    payload = {"users": [user("a")]}
    assert [client.post(EU.path, json=payload).status_code for _ in range(3)] == [
        status,
        status,
        200,
    ]
    assert list(emulator.users()) == ["a"]
    assert emulator.calls()["insert"] == 3


def test_drop_next_closes_the_connection_before_applying(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(drop_next=1))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(EU.path, json={"users": [user("a")]})
    assert emulator.users() == {}
    # The fault is used up; the client reconnects and the next call is handled.
    assert client.post(EU.path, json={"users": [user("a")]}).status_code == 200
    assert list(emulator.users()) == ["a"]


@pytest.mark.parametrize("op", [Operation.INSERT, Operation.UPDATE, Operation.DELETE])
def test_drop_after_apply_next_applies_the_write_then_closes_the_connection(
    emulator: PlatformEmulator, client: httpx.Client, op: Operation
) -> None:
    if op is not Operation.INSERT:
        emulator.seed_users([wire("a")])
    emulator.set_faults(op, EndpointFaults(drop_after_apply_next=1))
    body: object = {"users": ["a"]} if op is Operation.DELETE else {"users": [user("a", t="1")]}
    with pytest.raises(httpx.RemoteProtocolError):
        call(client, ApiFlavour.ELIGIBLE_USERS, op, body)
    stored = emulator.users()
    if op is Operation.DELETE:
        assert stored == {}
    else:
        assert stored["a"].tags == {"t": "1"}
    assert emulator.faults(op).drop_after_apply_next == 0


def test_stall_after_apply_next_applies_then_answers_too_late(
    emulator: PlatformEmulator,
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(stall_after_apply_next=1, stall_s=1.0))
    with httpx.Client(base_url=emulator.url, headers=AUTH, timeout=0.2) as impatient:
        started = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            impatient.post(EU.path, json={"users": [user("a")]})
        assert time.perf_counter() - started < 0.9
    assert list(emulator.users()) == ["a"]
    with httpx.Client(base_url=emulator.url, headers=AUTH, timeout=5) as patient:
        emulator.set_faults(Operation.INSERT, EndpointFaults(stall_after_apply_next=1, stall_s=0.3))
        late = patient.post(EU.path, json={"users": [user("b")]})
    assert late.status_code == 200
    assert [u["end_user"] for u in late.json()["users"]] == ["b"]


def test_stall_next_holds_the_call_and_never_applies_it(emulator: PlatformEmulator) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(stall_next=1, stall_s=0.3))
    with httpx.Client(base_url=emulator.url, headers=AUTH, timeout=5) as patient:
        started = time.perf_counter()
        with pytest.raises(httpx.RemoteProtocolError):
            patient.post(EU.path, json={"users": [user("a")]})
        assert time.perf_counter() - started >= 0.3
    assert emulator.users() == {}


def test_a_stalled_call_does_not_delay_stop() -> None:
    emu = PlatformEmulator(api_key=KEY).start()
    try:
        emu.set_faults(Operation.LIST, EndpointFaults(stall_next=1, stall_s=60))
        with (
            httpx.Client(base_url=emu.url, headers=AUTH, timeout=0.2) as http,
            pytest.raises(httpx.ReadTimeout),
        ):
            http.get(EU.path)
    finally:
        started = time.perf_counter()
        emu.stop()
    assert time.perf_counter() - started < 3


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (EndpointFaults(drop_next=1), httpx.RemoteProtocolError),
        (EndpointFaults(drop_after_apply_next=1), httpx.RemoteProtocolError),
        (EndpointFaults(stall_next=1), httpx.ReadTimeout),
        (EndpointFaults(stall_after_apply_next=1), httpx.ReadTimeout),
    ],
)
def test_the_mock_transport_raises_what_a_client_would_see(
    faults: EndpointFaults, error: type[Exception]
) -> None:
    emu = PlatformEmulator(api_key=KEY)
    emu.set_faults(Operation.INSERT, faults)
    started = time.perf_counter()
    transport = emu.mock_transport()
    with (
        httpx.Client(base_url="http://emu.test", headers=AUTH, transport=transport) as http,
        pytest.raises(error),
    ):
        http.post(EU.path, json={"users": [user("a")]})
    assert time.perf_counter() - started < 1  # nothing waits without a socket
    applied = faults.drop_after_apply_next or faults.stall_after_apply_next
    assert ("a" in emu.users()) is bool(applied)


def test_the_new_faults_over_the_control_endpoint(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    body = {
        "operation": "update",
        "status_next": 1,
        "status_code": 405,
        "drop_next": 2,
        "drop_after_apply_next": 3,
        "stall_next": 4,
        "stall_after_apply_next": 5,
        "stall_s": 0.5,
    }
    assert client.post("/_emulator/faults", json=body).status_code == 200
    assert emulator.faults(Operation.UPDATE) == EndpointFaults(
        status_next=1,
        status_code=405,
        drop_next=2,
        drop_after_apply_next=3,
        stall_next=4,
        stall_after_apply_next=5,
        stall_s=0.5,
    )


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (EndpointFaults(status_code=302), "status_code"),
        (EndpointFaults(status_code=600), "status_code"),
        (EndpointFaults(drop_next=-1), "drop_next"),
        (EndpointFaults(stall_after_apply_next=-1), "stall_after_apply_next"),
        (EndpointFaults(stall_s=-1), "stall_s"),
    ],
)
def test_the_new_faults_are_validated(
    emulator: PlatformEmulator, faults: EndpointFaults, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        emulator.set_faults(Operation.INSERT, faults)


# ------------------------------------------------------------------- fired faults


def test_fired_faults_count_what_fired_not_what_was_set(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    emulator.reset_counters()
    # Set generously: only the calls that meet a fault count.
    emulator.set_faults(Operation.INSERT, EndpointFaults(fail_next=5, throttle_next=1))
    emulator.set_faults(Operation.DELETE, EndpointFaults(drop_after_apply_next=3))
    payload = {"users": [user("a")]}
    assert client.put(PU.path, json=payload).status_code == 429
    assert client.put(PU.path, json=payload).status_code == 503
    assert emulator.fired_faults() == {"throttle": 1, "fail": 1}
    emulator.clear_faults()
    emulator.set_faults(Operation.INSERT, EndpointFaults(refuse_users=frozenset({"b", "c"})))
    emulator.max_batch_size = 1
    assert client.put(PU.path, json={"users": [user("a"), user("b")]}).status_code == 413
    emulator.max_batch_size = 1000
    assert client.put(PU.path, json={"users": [user("a"), user("b")]}).status_code == 200
    # Clearing the faults keeps the counts; resetting the counters zeroes them.
    assert emulator.fired_faults() == {
        "throttle": 1,
        "fail": 1,
        "batch_too_large": 1,
        "refused_user": 1,
    }
    emulator.reset_counters()
    assert emulator.fired_faults() == {}
