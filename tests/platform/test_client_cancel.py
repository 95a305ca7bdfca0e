"""PlatformClient.cancel() from another thread, against the emulator over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date

import pytest
from pydantic import SecretStr

from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.errors import PlatformError
from syncd.model import PlatformUser, make_tags
from syncd.platform.api import ApiFlavour, Operation
from syncd.platform.client import PlatformClient, WriteOutcome


def _users(count: int) -> list[PlatformUser]:
    return [
        PlatformUser(f"u{i}@x.com", make_tags({"d": "eng"}), date(2026, 1, 1), None)
        for i in range(count)
    ]


def _client(emulator: PlatformEmulator, key: str, **options: object) -> PlatformClient:
    return PlatformClient(
        base_url=emulator.url,
        api_key=SecretStr(key),
        flavour=ApiFlavour.PLATFORM_USERS,
        timeout_s=30,
        backoff_base_s=0.01,
        **options,  # type: ignore[arg-type]
    )


def _cancel_after(client: PlatformClient, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, client.cancel)
    timer.start()
    return timer


def _timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except PlatformError as error:
        return error, time.monotonic() - started
    return None, time.monotonic() - started


def test_cancel_cuts_a_hanging_write_and_keeps_what_was_confirmed(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=400))
    users = _users(6)
    outcome = WriteOutcome(Operation.INSERT, requested=len(users))
    with _client(emulator, emulator_api_key, batch_size=1, concurrency=1) as client:
        timer = _cancel_after(client, 1.0)  # two batches confirmed, the third on the wire
        error, seconds = _timed(lambda: client.insert(users, outcome=outcome))
        timer.join()
    assert isinstance(error, PlatformError)
    assert seconds < 1.5  # cut at once, not after the 400 ms latency of later batches
    assert outcome.confirmed == ["u0@x.com", "u1@x.com"]
    assert {f.end_user for f in outcome.failures} == {f"u{i}@x.com" for i in range(2, 6)}


def test_cancel_does_not_wait_for_a_request_timeout(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    # 3 s of latency stands for a request hanging until its 30 s timeout (the emulator
    # finishes the sleep before it can stop, so a longer one only slows the test).
    emulator.set_faults(Operation.LIST, EndpointFaults(latency_ms=3_000))
    with _client(emulator, emulator_api_key) as client:
        timer = _cancel_after(client, 0.3)
        error, seconds = _timed(client.list_users)
        timer.join()
    assert isinstance(error, PlatformError)
    assert seconds < 1.5


def test_a_cancelled_client_refuses_every_later_call(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    with _client(emulator, emulator_api_key) as client:
        client.cancel()
        assert client.cancelled
        with pytest.raises(PlatformError, match="cancelled"):
            client.list_users()
        with pytest.raises(PlatformError, match="cancelled"):
            client.insert(_users(1))
    assert emulator.calls()["list"] == 0
    assert emulator.users() == {}


def test_each_attempt_reaches_the_observer(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    seen: list[tuple[str, int | None]] = []
    emulator.set_faults(Operation.INSERT, EndpointFaults(fail_next=1))
    with _client(emulator, emulator_api_key, observer=lambda m, s: seen.append((m, s))) as client:
        client.insert(_users(2))
        client.list_users()
    assert seen == [("PUT", 503), ("PUT", 200), ("GET", 200)]
