"""How a write spreads its batches over the client's workers (real HTTP, the emulator).

Workers take the next batch themselves; the calling thread absorbs results and calls
``progress``. A batch starts only once a slot is free, and a slot is freed only after
its result was absorbed and reported, so no more than ``concurrency`` batches are ever
ahead of the caller. A worker's unexpected exception reaches the caller, and workers
run in a copy of the caller's context (its log fields).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from syncd.emulator import PlatformEmulator
from syncd.platform.api import ApiFlavour, Operation
from syncd.platform.client import PlatformClient
from syncd.ports import WriteFailure, WriteOutcome
from tests.platform.test_client import platform_users


@pytest.fixture
def client_for(
    emulator: PlatformEmulator, emulator_api_key: str
) -> Iterator[Callable[..., PlatformClient]]:
    clients: list[PlatformClient] = []

    def build(**options: Any) -> PlatformClient:
        client = PlatformClient(
            base_url=emulator.url,
            api_key=SecretStr(emulator_api_key),
            flavour=ApiFlavour.PLATFORM_USERS,
            timeout_s=5.0,
            max_retries=0,
            **options,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def test_no_batch_starts_until_a_slot_was_absorbed_and_reported(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    client = client_for(batch_size=1, concurrency=2)
    sent_at_progress: list[int] = []

    def slow_progress(size: int) -> None:
        sent_at_progress.append(emulator.calls()["insert"])
        time.sleep(0.05)  # a slow caller: workers must not race ahead of it

    outcome = client.insert(platform_users(8), progress=slow_progress)

    assert outcome.ok
    assert outcome.calls == 8
    # At the k-th report (k from 0), k slots were freed: at most 2 + k batches started.
    assert all(sent <= 2 + k for k, sent in enumerate(sent_at_progress)), sent_at_progress
    assert len(sent_at_progress) == 8


@pytest.mark.parametrize("distinct", [False, True])
def test_an_unexpected_worker_exception_reaches_the_caller_with_the_outcome_filled(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient], distinct: bool
) -> None:
    # With distinct, no names were listed before the batches: the accounting names them.
    client = client_for(batch_size=2, concurrency=1)
    names = [f"user{i}@example.com" for i in range(6)]
    encoded: list[int] = []

    def encode(batch: Sequence[str]) -> bytes:
        encoded.append(len(batch))
        if len(encoded) == 2:
            raise RuntimeError("a bug in an encoder")
        return b'{"users": [%s]}' % b",".join(b'"%s"' % n.encode() for n in batch)

    outcome = WriteOutcome(Operation.DELETE, requested=6)
    with pytest.raises(RuntimeError, match="a bug in an encoder"):
        client._write(Operation.DELETE, names, encode, str, None, outcome, distinct)

    assert encoded == [2, 2]  # the bug stopped the write: the third batch never started
    assert outcome.confirmed == names[:2]
    assert outcome.failures == [
        WriteFailure(name, "not written: the operation stopped (RuntimeError)")
        for name in names[2:]
    ]


def test_workers_run_in_a_copy_of_the_callers_context(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    client = client_for(batch_size=1, concurrency=3)
    seen: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def encode(batch: Sequence[str]) -> bytes:
        with lock:
            seen.append((threading.get_ident(), structlog.contextvars.get_contextvars()))
        return b'{"users": ["%s"]}' % batch[0].encode()

    structlog.contextvars.bind_contextvars(run_id="run-7")
    try:
        outcome = client._write(
            Operation.DELETE, [f"u{i}@example.com" for i in range(6)], encode, str, None, None, True
        )
    finally:
        structlog.contextvars.unbind_contextvars("run_id")

    assert outcome.ok
    assert [context for _, context in seen] == [{"run_id": "run-7"}] * 6
    assert threading.get_ident() not in {ident for ident, _ in seen}
