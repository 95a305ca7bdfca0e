"""What the client reports when an answer does not say what happened (real HTTP).

A write that may have been applied is an UncertainFailure, never a plain failure; a
permanent error stops the write at once. The emulator's faults apply a batch and then
drop the connection or hold the answer past the client's timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.errors import PlatformError, PlatformUnavailableError
from syncd.model import PlatformUser, make_tags
from syncd.platform.api import ApiFlavour, Operation, WireUser
from syncd.platform.client import PlatformClient
from syncd.platform.outcome import UncertainFailure, is_uncertain
from syncd.ports import WriteFailure, WriteOutcome


@pytest.fixture
def client_for(
    emulator: PlatformEmulator, emulator_api_key: str
) -> Iterator[Callable[..., PlatformClient]]:
    clients: list[PlatformClient] = []

    def build(**options: Any) -> PlatformClient:
        settings: dict[str, Any] = {
            "batch_size": 5,
            "concurrency": 1,
            "timeout_s": 0.5,
            "max_retries": 2,
            "backoff_base_s": 0.001,
            "backoff_max_s": 0.005,
        }
        settings.update(options)
        client = PlatformClient(
            base_url=emulator.url,
            api_key=SecretStr(emulator_api_key),
            flavour=ApiFlavour.PLATFORM_USERS,
            **settings,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def users(count: int, dept: str = "eng") -> list[PlatformUser]:
    return [
        PlatformUser(f"u{i:02d}@example.com", make_tags({"dept": dept}), date(2026, 1, 1))
        for i in range(count)
    ]


def test_an_insert_applied_before_the_connection_dropped_is_uncertain_not_failed(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(drop_after_apply_next=1))
    outcome = client_for().insert(users(10))
    # The retry of the first batch finds its users there and leaves them out.
    assert outcome.confirmed == [u.end_user for u in users(10)[5:]]
    assert [f.end_user for f in outcome.failures] == [u.end_user for u in users(5)]
    assert all(is_uncertain(f) for f in outcome.failures)
    assert outcome.failures[0].reason == "not confirmed after a retry; it may have been applied"
    assert set(emulator.users()) == {u.end_user for u in users(10)}
    assert outcome.calls == emulator.calls()["insert"] == 3


def test_a_refused_insert_without_a_retry_is_a_plain_failure(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.seed_users([WireUser("u01@example.com", {"dept": "hand-made"}, "2024-01-01")])
    outcome = client_for().insert(users(3))
    assert outcome.failures == [WriteFailure("u01@example.com", "not confirmed by the platform")]


def test_a_413_split_is_not_a_doubt(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    # The halves of a batch answered 413 are new requests: a user left out of one is
    # refused for sure, whatever the 413 attempt before it.
    emulator.max_batch_size = 2
    emulator.seed_users([WireUser("u01@example.com", {}, "2024-01-01")])
    outcome = client_for(batch_size=4).insert(users(4))
    assert outcome.failures == [WriteFailure("u01@example.com", "not confirmed by the platform")]
    assert outcome.calls == 3


@pytest.mark.parametrize("op", [Operation.UPDATE, Operation.DELETE])
def test_updates_and_deletes_retried_after_a_drop_are_confirmed(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient], op: Operation
) -> None:
    emulator.seed_users([WireUser(u.end_user, {"dept": "old"}, "2026-01-01") for u in users(5)])
    emulator.set_faults(op, EndpointFaults(drop_after_apply_next=1))
    client = client_for()
    if op is Operation.UPDATE:
        outcome = client.update(users(5, dept="new"))
        assert {u.tags["dept"] for u in emulator.users().values()} == {"new"}
    else:
        outcome = client.delete([u.end_user for u in users(5)])
        assert emulator.users() == {}
    assert outcome.ok
    assert outcome.calls == 2


def test_a_batch_that_timed_out_on_every_attempt_after_applying_is_uncertain(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(stall_after_apply_next=2, stall_s=1.5))
    outcome = WriteOutcome(Operation.INSERT, requested=10)
    with pytest.raises(PlatformUnavailableError, match="ReadTimeout"):
        client_for(max_retries=1).insert(users(10), outcome=outcome)
    first, rest = outcome.failures[:5], outcome.failures[5:]
    assert all(isinstance(f, UncertainFailure) for f in first)
    assert "no clear answer after 2 attempt(s)" in first[0].reason
    assert first[0].reason.endswith("it may have been applied")
    # The second batch was never sent: not written, for sure.
    assert all(type(f) is WriteFailure for f in rest)
    assert rest[0].reason == "not written: the operation stopped (PlatformUnavailableError)"
    assert set(emulator.users()) == {u.end_user for u in users(5)}
    assert emulator.calls()["insert"] == 2


@pytest.mark.parametrize("status", [400, 404, 405])
def test_a_permanent_error_stops_the_write_and_sends_no_other_batch(
    emulator: PlatformEmulator,
    client_for: Callable[..., PlatformClient],
    status: int,
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(status_next=100, status_code=status))
    outcome = WriteOutcome(Operation.INSERT, requested=20)
    with pytest.raises(PlatformError) as caught:
        client_for().insert(users(20), outcome=outcome)
    assert caught.value.status_code == status
    assert f"answered HTTP {status}" in str(caught.value)
    assert "stopped at once, the remaining batches were not sent" in str(caught.value)
    assert emulator.calls()["insert"] == 1
    assert outcome.calls == 1
    assert len(outcome.failures) == 20
    assert not any(is_uncertain(f) for f in outcome.failures)
    assert emulator.users() == {}


def test_a_permanent_error_with_concurrent_batches_stops_at_the_batches_in_flight(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.set_faults(Operation.UPDATE, EndpointFaults(status_next=1000, status_code=404))
    outcome = WriteOutcome(Operation.UPDATE, requested=200)
    with pytest.raises(PlatformError, match="HTTP 404"):
        client_for(batch_size=2, concurrency=4).update(users(200), outcome=outcome)
    # At most one round of in-flight batches, not 100 batches failing in turn.
    assert emulator.calls()["update"] <= 4
    assert len(outcome.failures) == 200


def test_a_permanent_error_after_a_retry_leaves_the_batch_in_doubt() -> None:
    # The first attempt may have been applied (the connection dropped); the retry is
    # refused. A refusal now says nothing about the first attempt.
    attempts: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) == 1:
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        return httpx.Response(400, json={"detail": "bad request"})

    client = PlatformClient(
        base_url="https://platform.test",
        api_key=SecretStr("k"),
        flavour=ApiFlavour.PLATFORM_USERS,
        transport=httpx.MockTransport(handler),
        backoff_base_s=0.001,
        backoff_max_s=0.001,
    )
    outcome = WriteOutcome(Operation.INSERT, requested=5)
    with client, pytest.raises(PlatformError, match="HTTP 400"):
        client.insert(users(5), outcome=outcome)
    assert len(attempts) == 2
    assert [f.reason for f in outcome.failures] == [
        "refused: HTTP 400: bad request; it may have been applied"
    ] * 5
    assert all(is_uncertain(f) for f in outcome.failures)


def test_the_halves_of_a_413_split_keep_the_doubt_of_the_attempt_before(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    # The first attempt is applied and its connection dropped; the retry meets a 413
    # and is split. The halves find the users there already and leave them out: that
    # is "may have been applied", not "not confirmed by the platform".
    inner = emulator.mock_transport()
    writes = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal writes
        if request.method != "GET":
            writes += 1
            if writes == 1:
                inner.handle_request(request)
                raise httpx.RemoteProtocolError("dropped after apply", request=request)
            if writes == 2:
                return httpx.Response(413, json={"detail": "too large"})
        return inner.handle_request(request)

    client = PlatformClient(
        base_url="http://emulator.invalid",
        api_key=SecretStr(emulator_api_key),
        flavour=ApiFlavour.PLATFORM_USERS,
        transport=httpx.MockTransport(handler),
        batch_size=4,
        backoff_base_s=0.001,
        backoff_max_s=0.001,
    )
    try:
        outcome = client.insert(users(4))
    finally:
        client.close()
    assert writes == 4  # the dropped attempt, the 413, two halves
    assert outcome.confirmed == []
    assert [f.end_user for f in outcome.failures] == [u.end_user for u in users(4)]
    assert all(is_uncertain(failure) for failure in outcome.failures)
    assert set(emulator.users()) == {u.end_user for u in users(4)}
