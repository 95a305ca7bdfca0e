"""PlatformClient against the emulator over real HTTP on 127.0.0.1.

httpx.MockTransport is used only for answers the emulator cannot give (garbage JSON,
an HTTP-date Retry-After, 422 on one batch, duplicate users, a looping cursor).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

import syncd
from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.errors import (
    AuthenticationError,
    ConfigError,
    PlatformError,
    PlatformUnavailableError,
)
from syncd.http import DirectSender
from syncd.model import PlatformUser, make_tags
from syncd.platform.api import FLAVOURS, ApiFlavour, Operation, UsersBodyEncoder, WireUser
from syncd.platform.client import PlatformClient, WriteFailure, WriteOutcome
from syncd.ports import PlatformPort

BOTH_FLAVOURS = pytest.mark.parametrize("flavour", list(ApiFlavour), ids=lambda f: f.value)
MOCK_URL = "https://platform.test"


class RecordingTransport(httpx.BaseTransport):
    """A real HTTP transport that remembers each request and the status it got."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.exchanges: list[tuple[httpx.Request, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.exchanges.append((request, response.status_code))
        return response

    def close(self) -> None:
        self.inner.close()


def make_client(
    base_url: str,
    key: str,
    flavour: ApiFlavour = ApiFlavour.ELIGIBLE_USERS,
    **options: Any,
) -> PlatformClient:
    settings: dict[str, Any] = {
        "batch_size": 500,
        "timeout_s": 5.0,
        "max_retries": 3,
        "backoff_base_s": 0.005,
        "backoff_max_s": 0.02,
    }
    settings.update(options)
    return PlatformClient(base_url=base_url, api_key=SecretStr(key), flavour=flavour, **settings)


@pytest.fixture
def client_for(
    emulator: PlatformEmulator, emulator_api_key: str
) -> Iterator[Callable[..., PlatformClient]]:
    """Build clients for the ``emulator`` fixture; closes them at the end of the test."""
    clients: list[PlatformClient] = []

    def build(flavour: ApiFlavour = ApiFlavour.ELIGIBLE_USERS, **options: Any) -> PlatformClient:
        client = make_client(emulator.url, emulator_api_key, flavour, **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def platform_users(count: int, *, start: int = 0, dept: str = "eng") -> list[PlatformUser]:
    return [
        PlatformUser(
            end_user=f"user{index:04d}@example.com",
            tags=make_tags({"department": dept, "region": "emea"}),
            active_from=date(2026, 1, 1),
        )
        for index in range(start, start + count)
    ]


def wire(user: PlatformUser) -> WireUser:
    return WireUser(
        end_user=user.end_user,
        tags=dict(user.tags),
        active_from=user.active_from.isoformat(),
        active_to=None if user.active_to is None else user.active_to.isoformat(),
    )


def stored(emulator: PlatformEmulator) -> dict[str, tuple[dict[str, str], str | None, str | None]]:
    return {
        name: (user.tags, user.active_from, user.active_to)
        for name, user in emulator.users().items()
    }


# --------------------------------------------------------------------------- list


@BOTH_FLAVOURS
def test_list_users_converts_every_field(
    flavour: ApiFlavour, emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.seed_users(
        [
            WireUser("a@example.com", {"region": "emea", "dept": "eng"}, "2026-01-01"),
            # A timestamp with an offset is converted to UTC before the date is taken.
            WireUser("b@example.com", {}, "2025-12-31T23:30:00-02:00", "2026-03-01"),
        ]
    )
    users = {user.end_user: user for user in client_for(flavour).list_users()}

    assert users == {
        "a@example.com": PlatformUser(
            "a@example.com", (("dept", "eng"), ("region", "emea")), date(2026, 1, 1)
        ),
        "b@example.com": PlatformUser("b@example.com", (), date(2026, 1, 1), date(2026, 3, 1)),
    }
    assert emulator.calls()["GET"] == 1


def test_list_users_of_an_empty_project(client_for: Callable[..., PlatformClient]) -> None:
    assert client_for().list_users() == []


@BOTH_FLAVOURS
def test_list_users_follows_page_cursors(flavour: ApiFlavour, emulator_api_key: str) -> None:
    expected = platform_users(10)
    transport = RecordingTransport()
    with PlatformEmulator(api_key=emulator_api_key, page_size=3) as emulator:
        emulator.seed_users(wire(user) for user in expected)
        with make_client(
            emulator.url, emulator_api_key, flavour, transport=transport, cache_list=True
        ) as client:
            first = client.list_users()
            second = client.list_users()

        assert sorted(first, key=lambda u: u.end_user) == expected
        assert second == first
        assert emulator.calls()["list"] == 8  # 4 pages (3+3+3+1), twice
    cursors = [request.url.params.get("page_cursor") for request, _ in transport.exchanges]
    assert cursors[0] is None
    assert cursors[4] is None
    assert all(cursor for cursor in cursors[1:4] + cursors[5:])
    # A first page's ETag says nothing about later pages: nothing is cached when paging.
    assert all("If-None-Match" not in request.headers for request, _ in transport.exchanges)


def test_list_users_uses_etag_and_304(emulator: PlatformEmulator, emulator_api_key: str) -> None:
    emulator.seed_users(wire(user) for user in platform_users(5))
    transport = RecordingTransport()
    with make_client(
        emulator.url, emulator_api_key, transport=transport, cache_list=True
    ) as client:
        first = client.list_users()
        second = client.list_users()
        first.clear()  # the caller's list is its own: the cache must not be affected
        client.insert(platform_users(1, start=5))
        third = client.list_users()

    gets = [(request, status) for request, status in transport.exchanges if request.method == "GET"]
    assert [status for _, status in gets] == [200, 304, 200]
    assert "If-None-Match" not in gets[0][0].headers
    assert gets[1][0].headers["If-None-Match"] == gets[2][0].headers["If-None-Match"]
    assert len(second) == 5
    assert {user.end_user for user in second} == {u.end_user for u in platform_users(5)}
    assert len(third) == 6


def test_requests_carry_bearer_key_and_user_agent(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    transport = RecordingTransport()
    with make_client(emulator.url, emulator_api_key, transport=transport) as client:
        client.list_users()
        client.insert(platform_users(1))
    assert len(transport.exchanges) == 2
    for request, status in transport.exchanges:
        assert status == 200
        assert request.headers["Authorization"] == f"Bearer {emulator_api_key}"
        assert request.headers["User-Agent"] == f"syncd/{syncd.__version__}"


@pytest.mark.parametrize(
    ("user", "field"),
    [
        (WireUser("nodate@example.com", {"a": "b"}, None), "active_from"),
        (WireUser("baddate@example.com", {}, "yesterday"), "active_from"),
        (WireUser("badend@example.com", {}, "2026-01-01", "2026-13-45"), "active_to"),
        (WireUser("badtag@example.com", {"dept": 7}, "2026-01-01"), "tags.dept"),  # type: ignore[dict-item]
    ],
)
def test_list_users_names_the_user_and_field_of_bad_data(
    user: WireUser,
    field: str,
    emulator: PlatformEmulator,
    client_for: Callable[..., PlatformClient],
) -> None:
    emulator.seed_users([WireUser("fine@example.com", {}, "2026-01-01"), user])
    with pytest.raises(PlatformError) as caught:
        client_for().list_users()
    assert user.end_user in str(caught.value)
    assert field in str(caught.value)


def test_list_users_names_a_bad_user_far_into_a_large_response(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.seed_users(wire(user) for user in platform_users(1200))
    emulator.seed_users([WireUser("late@example.com", {}, "2026-02-30")])
    with pytest.raises(PlatformError, match=r"'late@example\.com' with an invalid active_from"):
        client_for().list_users()


def test_list_users_on_a_wrong_path_is_a_platform_error(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    with (
        make_client(f"{emulator.url}/no-such-prefix", emulator_api_key) as client,
        pytest.raises(PlatformError) as caught,
    ):
        client.list_users()
    assert caught.value.status_code == 404
    assert "HTTP 404" in str(caught.value)
    assert emulator.calls()["GET"] == 0  # the emulator did not route it to the API


# ------------------------------------------------------------------------- writes


@BOTH_FLAVOURS
def test_insert_update_delete_change_the_platform(
    flavour: ApiFlavour, emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    spec = FLAVOURS[flavour]
    client = client_for(flavour, batch_size=3)
    users = platform_users(7)

    inserted = client.insert(users)
    assert sorted(inserted.confirmed) == [u.end_user for u in users]
    assert inserted.failures == []
    assert (inserted.requested, inserted.calls, inserted.ok) == (7, 3, True)
    assert stored(emulator) == {
        u.end_user: ({"department": "eng", "region": "emea"}, "2026-01-01", None) for u in users
    }

    changed = [
        PlatformUser(
            u.end_user, make_tags({"department": "sales"}), date(2025, 6, 1), date(2026, 2, 1)
        )
        for u in users[:5]
    ]
    updated = client.update(changed)
    assert (updated.calls, len(updated.confirmed), updated.failures) == (2, 5, [])
    after_update = stored(emulator)
    assert after_update[users[0].end_user] == ({"department": "sales"}, "2025-06-01", "2026-02-01")
    assert after_update[users[6].end_user] == (
        {"department": "eng", "region": "emea"},
        "2026-01-01",
        None,
    )

    deleted = client.delete([u.end_user for u in users[:4]])
    assert (deleted.calls, sorted(deleted.confirmed), deleted.failures) == (
        2,
        [u.end_user for u in users[:4]],
        [],
    )
    assert set(emulator.users()) == {u.end_user for u in users[4:]}

    calls = emulator.calls()
    assert (calls["insert"], calls["update"], calls["delete"]) == (3, 2, 2)
    # The flavour's verbs were used: its insert verb 3 times, its update verb twice.
    assert calls[spec.insert_method] == 3
    assert calls[spec.update_method] == 2
    assert calls["DELETE"] == 2


def test_writes_go_through_the_direct_sender_and_the_list_through_httpx(
    emulator: PlatformEmulator,
    client_for: Callable[..., PlatformClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Spies that count and delegate: the real sender and the real httpx client send.
    sent_direct: list[str] = []
    sent_httpx: list[str] = []
    direct_send, httpx_send = DirectSender.send, httpx.Client.send

    def count_direct(sender: DirectSender, request: httpx.Request) -> httpx.Response:
        sent_direct.append(request.method)
        return direct_send(sender, request)

    def count_httpx(http: httpx.Client, request: httpx.Request, **options: Any) -> httpx.Response:
        sent_httpx.append(request.method)
        return httpx_send(http, request, **options)

    monkeypatch.setattr(DirectSender, "send", count_direct)
    monkeypatch.setattr(httpx.Client, "send", count_httpx)
    client = client_for(ApiFlavour.PLATFORM_USERS, batch_size=2)
    users = platform_users(5)
    assert client.insert(users).ok
    assert client.delete([users[0].end_user]).ok
    assert len(client.list_users()) == 4
    assert sent_direct == ["PUT"] * 3 + ["DELETE"]
    assert sent_httpx == ["GET"]  # the streamed list stays with httpx


def test_update_clears_active_to_when_absent(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    ended = PlatformUser("back@example.com", (), date(2026, 1, 1), date(2026, 2, 1))
    emulator.seed_users([wire(ended)])
    outcome = client_for().update([PlatformUser("back@example.com", (), date(2026, 1, 1))])
    assert outcome.ok
    assert emulator.users()["back@example.com"].active_to is None


@pytest.mark.parametrize(("count", "batch_size"), [(0, 5), (1, 5), (5, 5), (11, 5), (250, 7)])
def test_write_calls_are_ceil_of_users_over_batch_size(
    count: int,
    batch_size: int,
    emulator: PlatformEmulator,
    client_for: Callable[..., PlatformClient],
) -> None:
    client = client_for(batch_size=batch_size, concurrency=3)
    users = platform_users(count)
    progressed: list[int] = []

    outcomes = [
        client.insert(users, progress=progressed.append),
        client.update(users, progress=progressed.append),
        client.delete([u.end_user for u in users], progress=progressed.append),
    ]

    expected_calls = math.ceil(count / batch_size)
    calls = emulator.calls()
    assert (calls["insert"], calls["update"], calls["delete"]) == (expected_calls,) * 3
    assert [o.calls for o in outcomes] == [expected_calls] * 3
    assert all(o.ok and len(o.confirmed) == count for o in outcomes)
    assert sum(progressed) == 3 * count
    assert len(progressed) == 3 * expected_calls
    assert emulator.users() == {}


def test_batches_run_concurrently_and_progress_runs_on_the_calling_thread(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=300))
    threads: list[int] = []
    client = client_for(batch_size=2, concurrency=4)

    started = time.monotonic()
    outcome = client.insert(
        platform_users(8), progress=lambda n: threads.append(threading.get_ident())
    )
    elapsed = time.monotonic() - started

    assert outcome.ok
    assert outcome.calls == 4
    assert elapsed < 0.9, f"4 batches of 300 ms took {elapsed:.2f}s: not concurrent"
    assert threads == [threading.get_ident()] * 4


def test_existing_users_on_insert_and_missing_users_on_update_are_not_confirmed(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    old, new = platform_users(2)
    emulator.seed_users([wire(old)])
    client = client_for()

    inserted = client.insert([old, new])
    updated = client.update([old, new])

    assert inserted.confirmed == [new.end_user]
    assert inserted.failures == [WriteFailure(old.end_user, "not confirmed by the platform")]
    assert sorted(updated.confirmed) == [old.end_user, new.end_user]
    missing = PlatformUser("ghost@example.com", (), date(2026, 1, 1))
    assert client.update([missing]).failures == [
        WriteFailure("ghost@example.com", "not confirmed by the platform")
    ]


@BOTH_FLAVOURS
@pytest.mark.parametrize("operation", [Operation.INSERT, Operation.UPDATE])
def test_users_left_out_of_the_response_are_failures(
    flavour: ApiFlavour,
    operation: Operation,
    emulator: PlatformEmulator,
    client_for: Callable[..., PlatformClient],
) -> None:
    users = platform_users(6)
    if operation is Operation.UPDATE:
        emulator.seed_users(wire(u) for u in platform_users(6, dept="old"))
    refused = {users[1].end_user, users[4].end_user}
    emulator.set_faults(operation, EndpointFaults(refuse_users=frozenset(refused)))
    client = client_for(flavour, batch_size=4)

    write = client.insert if operation is Operation.INSERT else client.update
    outcome = write(users)

    assert {f.end_user for f in outcome.failures} == refused
    assert {f.reason for f in outcome.failures} == {"not confirmed by the platform"}
    assert set(outcome.confirmed) == {u.end_user for u in users} - refused
    assert not outcome.ok
    assert outcome.calls == 2
    depts = {name: user.tags["department"] for name, user in emulator.users().items()}
    for user in users:
        expected = "eng" if user.end_user not in refused else "old"
        assert depts.get(user.end_user, "old") == expected


@BOTH_FLAVOURS
def test_413_splits_batches_until_the_platform_accepts_them(
    flavour: ApiFlavour, emulator_api_key: str
) -> None:
    users = platform_users(10)
    with (
        PlatformEmulator(api_key=emulator_api_key, max_batch_size=4) as emulator,
        make_client(emulator.url, emulator_api_key, flavour, batch_size=10) as client,
    ):
        outcome = client.insert(users)
        stored_names = set(emulator.users())
        calls = emulator.calls()["insert"]

    # 10 -> 413; 5 + 5 -> 413 each; 2 + 3 + 2 + 3 -> written. 1 + 2 + 4 calls.
    assert outcome.ok
    assert sorted(outcome.confirmed) == [u.end_user for u in users]
    assert outcome.calls == calls == 7
    assert stored_names == {u.end_user for u in users}


def test_429_retry_after_is_honoured(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient], emulator_api_key: str
) -> None:
    emulator.set_faults(Operation.INSERT, EndpointFaults(throttle_next=1, retry_after_s=0.4))
    client = client_for(backoff_base_s=0.001, backoff_max_s=0.001)

    started = time.monotonic()
    with capture_logs() as logs:
        outcome = client.insert(platform_users(3))
    elapsed = time.monotonic() - started

    assert outcome.ok
    assert outcome.calls == 2
    assert emulator.calls()["insert"] == 2
    assert elapsed >= 0.39, f"waited only {elapsed:.3f}s for Retry-After: 0.4"
    retries = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(retries) == 1
    assert retries[0]["delay_s"] == pytest.approx(0.4)
    assert retries[0]["reason"] == "HTTP 429"
    assert emulator_api_key not in repr(logs)


def test_retry_after_is_capped(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    emulator.set_faults(Operation.LIST, EndpointFaults(throttle_next=1, retry_after_s=3600))
    client = client_for(max_retry_after_s=0.05)
    started = time.monotonic()
    assert client.list_users() == []
    assert time.monotonic() - started < 2
    assert emulator.calls()["list"] == 2


@BOTH_FLAVOURS
def test_503_then_success_is_retried(
    flavour: ApiFlavour, emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    for operation in (Operation.LIST, Operation.INSERT, Operation.DELETE):
        emulator.set_faults(operation, EndpointFaults(fail_next=2))
    client = client_for(flavour, max_retries=3)
    users = platform_users(3)

    assert client.list_users() == []
    inserted = client.insert(users)
    deleted = client.delete([u.end_user for u in users])

    assert inserted.ok
    assert inserted.calls == 3
    assert deleted.ok
    assert deleted.calls == 3
    assert emulator.calls()["list"] == 3
    assert emulator.users() == {}


def test_exhausted_retries_raise_with_the_partial_outcome(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    users = platform_users(6)
    client = client_for(batch_size=2, concurrency=1, max_retries=2)

    def break_after_first_batch(done: int) -> None:
        emulator.set_faults(Operation.INSERT, EndpointFaults(fail_next=100))

    outcome = WriteOutcome(Operation.INSERT, requested=len(users))
    with pytest.raises(PlatformUnavailableError) as caught:
        client.insert(users, progress=break_after_first_batch, outcome=outcome)

    message = str(caught.value)
    for part in ("insert", FLAVOURS[ApiFlavour.ELIGIBLE_USERS].path, "HTTP 503", "3 attempts"):
        assert part in message
    assert not hasattr(caught.value, "outcome")  # the caller's outcome holds it, not the error
    assert outcome.confirmed == [users[0].end_user, users[1].end_user]
    assert {f.end_user for f in outcome.failures} == {u.end_user for u in users[2:]}
    assert outcome.calls == 1 + 3  # batch 1, then batch 2 three times; batch 3 never sent
    assert emulator.calls()["insert"] == 4
    assert set(emulator.users()) == {users[0].end_user, users[1].end_user}


def test_in_flight_batches_finish_before_the_error_is_raised(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    # Every call is slow; exactly one (the first to arrive) answers 503 until retries
    # run out, while the other in-flight batches succeed and must be kept.
    emulator.set_faults(Operation.INSERT, EndpointFaults(latency_ms=100, fail_next=1))
    client = client_for(batch_size=1, concurrency=3, max_retries=0)
    users = platform_users(3)

    outcome = WriteOutcome(Operation.INSERT, requested=len(users))
    with pytest.raises(PlatformUnavailableError):
        client.insert(users, outcome=outcome)

    assert len(outcome.confirmed) == 2
    assert len(outcome.failures) == 1
    assert set(outcome.confirmed) == set(emulator.users())
    assert outcome.calls == 3


def test_connection_refused_raises_platform_unavailable(unused_port: int) -> None:
    with make_client(f"http://127.0.0.1:{unused_port}", "k", max_retries=2) as client:
        with pytest.raises(PlatformUnavailableError) as listing:
            client.list_users()
        outcome = WriteOutcome(Operation.DELETE, requested=2)
        with pytest.raises(PlatformUnavailableError):
            client.delete(["a@example.com", "b@example.com"], outcome=outcome)
    assert "ConnectError" in str(listing.value)
    assert "3 attempts" in str(listing.value)
    assert outcome.confirmed == []
    assert [f.end_user for f in outcome.failures] == ["a@example.com", "b@example.com"]
    assert outcome.calls == 3


def test_a_bad_key_is_an_authentication_error_without_the_key(
    emulator: PlatformEmulator,
) -> None:
    secret = "sk-live-DO-NOT-LEAK-42"
    outcome = WriteOutcome(Operation.INSERT, requested=3)
    with capture_logs() as logs, make_client(emulator.url, secret, max_retries=3) as client:
        with pytest.raises(AuthenticationError) as listing:
            client.list_users()
        with pytest.raises(AuthenticationError) as writing:
            client.insert(platform_users(3), outcome=outcome)
        text = repr(client)

    assert str(listing.value) == f"the platform rejected the API key (HTTP 401) for {emulator.url}"
    assert listing.value.status_code == 401
    # One call each: a 401 is not retried.
    assert [e["status"] for e in logs if e["event"] == "platform call"] == [401, 401]
    assert outcome.confirmed == []
    assert len(outcome.failures) == 3
    assert text == f"PlatformClient(base_url={emulator.url!r}, flavour='eligible-users')"
    for shown in (text, str(listing.value), repr(listing.value), str(writing.value), repr(logs)):
        assert secret not in shown
    assert logs, "the calls were logged"


@pytest.mark.parametrize("key", ["", "sk-abc\n", "sk abc", "sk-\u00e9t\u00e9"])
def test_an_unusable_key_is_refused_without_quoting_it(key: str) -> None:
    with pytest.raises(ValueError, match="API key") as caught:
        make_client(MOCK_URL, key)
    if key:
        assert key not in str(caught.value)


def test_a_non_transient_transport_error_is_a_platform_error() -> None:
    with make_client("ftp://platform.test", "k") as client, pytest.raises(PlatformError) as caught:
        client.list_users()
    assert "UnsupportedProtocol" in str(caught.value)
    assert caught.value.status_code is None


def test_calls_are_logged_at_debug_without_secrets(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient], emulator_api_key: str
) -> None:
    emulator.set_faults(Operation.UPDATE, EndpointFaults(fail_next=1))
    with capture_logs() as logs:
        client_for(batch_size=2).update(platform_users(3))
    calls = [e for e in logs if e["event"] == "platform call"]
    assert [(e["status"], e["attempt"]) for e in calls].count((503, 1)) == 1
    assert all(e["method"] == "PUT" and e["operation"] == "update" for e in calls)
    assert sorted(e["batch_size"] for e in calls) in ([1, 2, 2], [1, 1, 2])
    assert all(isinstance(e["duration_ms"], float) for e in calls)
    warning = next(e for e in logs if e["log_level"] == "warning")
    assert warning["reason"] == "HTTP 503"
    assert 0 <= warning["delay_s"] <= 0.02
    assert emulator_api_key not in repr(logs)


def test_duplicate_end_users_in_a_write_are_refused(
    client_for: Callable[..., PlatformClient], emulator: PlatformEmulator
) -> None:
    user = platform_users(1)[0]
    client = client_for()
    with pytest.raises(ValueError, match="more than once"):
        client.insert([user, user])
    with pytest.raises(ValueError, match="more than once"):
        client.update([user, user])
    with pytest.raises(ValueError, match="more than once"):
        client.delete([user.end_user, user.end_user])
    calls = emulator.calls()
    assert calls["insert"] == calls["update"] == calls["delete"] == 0


def test_a_write_the_caller_says_is_distinct_is_sent_as_any_other(
    client_for: Callable[..., PlatformClient], emulator: PlatformEmulator
) -> None:
    # distinct=True (a plan's changes) skips the duplicate check only.
    users = platform_users(5)
    client = client_for()
    outcome = client.insert(users, distinct=True)
    assert outcome.confirmed == [user.end_user for user in users]
    assert outcome.ok
    deleted = client.delete([user.end_user for user in users], distinct=True)
    assert deleted.ok
    assert emulator.calls()["insert"] == 1


def test_the_list_is_not_cached_by_default(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users(wire(user) for user in platform_users(3))
    transport = RecordingTransport()
    with make_client(emulator.url, emulator_api_key, transport=transport) as client:
        first = client.list_users()
        second = client.list_users()
    assert [status for _, status in transport.exchanges] == [200, 200]
    assert all("If-None-Match" not in request.headers for request, _ in transport.exchanges)
    assert first == second
    assert len(first) == 3


def test_a_write_fills_and_returns_the_callers_outcome(
    client_for: Callable[..., PlatformClient],
) -> None:
    users = platform_users(5)
    outcome = WriteOutcome(Operation.INSERT, requested=5)
    returned = client_for(batch_size=2).insert(users, outcome=outcome)
    assert returned is outcome
    assert (sorted(outcome.confirmed), outcome.calls, outcome.ok) == (
        [u.end_user for u in users],
        3,
        True,
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (WriteOutcome(Operation.UPDATE, requested=2), "is for update of 2 users, not insert"),
        (WriteOutcome(Operation.INSERT, requested=3), "is for insert of 3 users, not insert of 2"),
        (WriteOutcome(Operation.INSERT, requested=2, calls=1), "already filled"),
    ],
)
def test_an_outcome_that_is_not_for_this_write_is_refused(
    given: WriteOutcome,
    message: str,
    client_for: Callable[..., PlatformClient],
    emulator: PlatformEmulator,
) -> None:
    with pytest.raises(ValueError, match=message):
        client_for().insert(platform_users(2), outcome=given)
    assert emulator.calls()["insert"] == 0


def test_an_interrupted_write_fills_the_callers_outcome(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    users = platform_users(6)
    client = client_for(batch_size=2, concurrency=1)

    def interrupt(done: int) -> None:
        raise KeyboardInterrupt

    outcome = WriteOutcome(Operation.INSERT, requested=6)
    with pytest.raises(KeyboardInterrupt):
        client.insert(users, progress=interrupt, outcome=outcome)

    assert outcome.confirmed == [users[0].end_user, users[1].end_user]
    assert outcome.failures == [
        WriteFailure(u.end_user, "not written: the operation stopped (KeyboardInterrupt)")
        for u in users[2:]
    ]
    assert set(emulator.users()) == set(outcome.confirmed)
    # The client is not left unable to retry: a daemon keeps it for its next run.
    emulator.set_faults(Operation.LIST, EndpointFaults(fail_next=1))
    assert len(client.list_users()) == 2
    assert emulator.calls()["list"] == 2


def test_an_interruption_cuts_a_batch_retry_sleep_short(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient]
) -> None:
    # The first batch to arrive is throttled for a minute; the other one succeeds, and
    # the interruption raised from its progress must not wait out that minute.
    emulator.set_faults(Operation.INSERT, EndpointFaults(throttle_next=1, retry_after_s=60))
    users = platform_users(4)
    client = client_for(batch_size=2, concurrency=2, max_retry_after_s=60)

    def interrupt(done: int) -> None:
        raise KeyboardInterrupt

    outcome = WriteOutcome(Operation.INSERT, requested=4)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.insert(users, progress=interrupt, outcome=outcome)

    assert time.monotonic() - started < 10
    assert emulator.calls()["insert"] == 2  # the throttled batch was not sent again
    assert len(outcome.confirmed) == 2
    assert {f.end_user for f in outcome.failures} == {u.end_user for u in users} - set(
        outcome.confirmed
    )
    assert outcome.calls == 2


def test_the_client_is_a_platform_port(client_for: Callable[..., PlatformClient]) -> None:
    port: PlatformPort = client_for()  # checked by mypy: the runner's view of the client
    assert port.list_users() == []


# ---------------------------------------------- answers the emulator cannot give


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> PlatformClient:
    return make_client(MOCK_URL, "k", transport=httpx.MockTransport(handler), **options)


def test_a_2xx_body_that_is_not_json_is_a_platform_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=b"<html>login</html>", headers={"Content-Type": "text/html"}
        )

    with mock_client(handler) as client:
        with pytest.raises(PlatformError, match=r"^list: .*not valid JSON"):
            client.list_users()
        outcome = WriteOutcome(Operation.INSERT, requested=2)
        with pytest.raises(PlatformError, match=r"^insert: POST .* HTTP 200 .*text/html"):
            client.insert(platform_users(2), outcome=outcome)
        with pytest.raises(PlatformError, match=r"^delete: "):
            client.delete(["a"])
    assert outcome.confirmed == []
    assert len(outcome.failures) == 2


@pytest.mark.parametrize("body", [{"message": "ok"}, {"users": "all"}, [1, 2]])
def test_a_2xx_body_of_the_wrong_shape_is_a_platform_error(body: object) -> None:
    with mock_client(lambda request: httpx.Response(200, json=body)) as client:
        with pytest.raises(PlatformError, match=r"^update: "):
            client.update(platform_users(1))
        with pytest.raises(PlatformError, match=r"^list: "):
            client.list_users()


def test_a_batch_refused_with_a_permanent_error_stops_the_write_at_once() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        users = json.loads(request.content)["users"]
        if any(u["end_user"] == "user0003@example.com" for u in users):
            return httpx.Response(422, json={"detail": "tag value too long"})
        return httpx.Response(200, json={"users": users})

    outcome = WriteOutcome(Operation.INSERT, requested=6)
    with (
        mock_client(handler, batch_size=2, concurrency=1) as client,
        pytest.raises(PlatformError) as caught,
    ):
        client.insert(platform_users(6), outcome=outcome)
    assert caught.value.status_code == 422
    assert str(caught.value) == (
        "insert: POST /api/external/eligible-users answered HTTP 422: tag value too long; "
        "stopped at once, the remaining batches were not sent (the platform refused the "
        "request body, so every batch would be refused too)"
    )
    assert sorted(outcome.confirmed) == ["user0000@example.com", "user0001@example.com"]
    assert outcome.failures == [
        WriteFailure("user0002@example.com", "refused: HTTP 422: tag value too long"),
        WriteFailure("user0003@example.com", "refused: HTTP 422: tag value too long"),
        WriteFailure("user0004@example.com", "not written: the operation stopped (PlatformError)"),
        WriteFailure("user0005@example.com", "not written: the operation stopped (PlatformError)"),
    ]
    assert outcome.calls == 2  # a 422 is not retried, and the third batch is never sent


def test_a_single_user_rejected_with_413_is_a_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, text="too large")

    with mock_client(handler) as client:
        outcome = client.delete(["a", "b", "c"])
    assert outcome.calls == 5  # 3 -> 1 + 2 -> 1 + 1
    assert outcome.failures == [
        WriteFailure(name, "rejected with 413 even alone") for name in ("a", "b", "c")
    ]


def test_an_http_date_retry_after_is_honoured_and_capped() -> None:
    answers = iter(
        [
            httpx.Response(
                429,
                headers={
                    "Retry-After": format_datetime(
                        datetime.now(UTC) + timedelta(hours=1), usegmt=True
                    )
                },
            ),
            httpx.Response(200, json={"users": []}),
        ]
    )
    with mock_client(lambda request: next(answers), max_retry_after_s=0.3) as client:
        started = time.monotonic()
        assert client.list_users() == []
        elapsed = time.monotonic() - started
    # The jittered backoff alone would wait at most 0.02 s; the date said an hour.
    assert 0.29 <= elapsed < 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    statuses = iter([status, 200])
    with mock_client(lambda request: httpx.Response(next(statuses), json={"users": []})) as client:
        assert client.list_users() == []


@pytest.mark.parametrize("status", [400, 404, 405, 409, 422, 501])
def test_other_error_statuses_are_not_retried_and_stop_the_write(status: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"message": "no"})

    outcome = WriteOutcome(Operation.UPDATE, requested=2)
    with mock_client(handler) as client:
        with pytest.raises(PlatformError) as caught:
            client.list_users()
        with pytest.raises(PlatformError) as stopped:
            client.update(platform_users(2), outcome=outcome)
    assert caught.value.status_code == status
    assert f"HTTP {status}: no" in str(caught.value)
    assert stopped.value.status_code == status
    assert f"answered HTTP {status}: no; stopped at once" in str(stopped.value)
    assert outcome.failures == [
        WriteFailure(u.end_user, f"refused: HTTP {status}: no") for u in platform_users(2)
    ]
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("oops", "user #1 (no end_user) with an invalid user object"),
        ({"tags": {}, "active_from": "2026-01-01"}, "user #1 (no end_user)"),
        (
            {"end_user": 5, "active_from": "2026-01-01"},
            "user #1 (no end_user) with an invalid end_user",
        ),
    ],
)
def test_list_users_reports_malformed_user_objects(bad: object, expected: str) -> None:
    body = {"users": [{"end_user": "ok", "active_from": "2026-01-01"}, bad]}
    with (
        mock_client(lambda request: httpx.Response(200, json=body)) as client,
        pytest.raises(PlatformError) as caught,
    ):
        client.list_users()
    assert expected in str(caught.value)


def test_duplicate_users_in_a_list_keep_the_last_and_warn() -> None:
    body = {
        "users": [
            {"end_user": "a", "tags": {"v": "1"}, "active_from": "2026-01-01"},
            {"end_user": "b", "tags": {}, "active_from": "2026-01-01"},
            {"end_user": "a", "tags": {"v": "2"}, "active_from": "2026-01-02"},
        ]
    }
    with (
        capture_logs() as logs,
        mock_client(lambda request: httpx.Response(200, json=body)) as client,
    ):
        users = client.list_users()
    assert sorted(users, key=lambda u: u.end_user) == [
        PlatformUser("a", (("v", "2"),), date(2026, 1, 2)),
        PlatformUser("b", (), date(2026, 1, 1)),
    ]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["examples"] == ["a"]


def test_a_repeated_page_cursor_stops_the_listing() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        page = {"end_user": f"u{len(seen)}", "active_from": "2026-01-01"}
        return httpx.Response(
            200, json={"users": [page], "pagination": {"next_page_cursor": "same"}}
        )

    with mock_client(handler) as client, pytest.raises(PlatformError, match="twice"):
        client.list_users()
    assert len(seen) == 2  # the second page names the cursor just followed: stop there


def test_unknown_fields_in_write_responses_are_ignored() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        users = json.loads(request.content)["users"]
        return httpx.Response(
            200, json={"users": [{"end_user": u["end_user"], "id": 1} for u in users], "x": 1}
        )

    with mock_client(handler) as client:
        assert client.insert(platform_users(2)).ok


def test_write_outcome_ok_needs_every_user_confirmed() -> None:
    assert WriteOutcome(Operation.DELETE, requested=1, confirmed=["a"]).ok
    assert not WriteOutcome(Operation.DELETE, requested=2, confirmed=["a"]).ok


def test_an_error_body_that_echoes_the_key_is_masked() -> None:
    # A misconfigured proxy or debug endpoint may echo request headers in its error.
    secret = "sk-echoed-0123456789"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(400, json={"detail": request.headers["Authorization"]})
        return httpx.Response(422, json={"detail": f"bad: {request.headers['Authorization']}"})

    user = PlatformUser("a@x.com", make_tags({}), date(2026, 1, 1))
    outcome = WriteOutcome(Operation.INSERT, requested=1)
    with make_client(MOCK_URL, secret, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(PlatformError) as writing:
            client.insert([user], outcome=outcome)
        with pytest.raises(PlatformError) as listing:
            client.list_users()
    (failure,) = outcome.failures
    assert failure.reason == "refused: HTTP 422: bad: Bearer **********"
    for error in (writing.value, listing.value):
        assert secret not in str(error)
        assert "Bearer **********" in str(error)


def test_a_malformed_proxy_variable_is_a_config_error_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "foo://bad:proxy")
    with pytest.raises(ConfigError, match="check the proxy environment variables") as caught:
        make_client(MOCK_URL, "sk-proxy-secret-42")
    assert "sk-proxy-secret-42" not in str(caught.value)


def test_masking_happens_before_the_detail_is_cut_short() -> None:
    secret = "sk-long-secret-ABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422, json={"detail": "x" * 280 + " got " + request.headers["Authorization"]}
        )

    user = PlatformUser("a@x.com", make_tags({}), date(2026, 1, 1))
    outcome = WriteOutcome(Operation.INSERT, requested=1)
    with (
        make_client(MOCK_URL, secret, transport=httpx.MockTransport(handler)) as client,
        pytest.raises(PlatformError) as writing,
    ):
        client.insert([user], outcome=outcome)
    (failure,) = outcome.failures
    for text in (failure.reason, str(writing.value)):
        assert "sk-long" not in text
        assert "ABCDEFGH" not in text
    # 300 characters are kept: the cut falls inside the mask, never inside the key.
    assert failure.reason.endswith(" got Bearer ********")


def test_a_retried_batch_sends_the_body_it_encoded_once(
    emulator: PlatformEmulator, client_for: Callable[..., PlatformClient], monkeypatch: Any
) -> None:
    encoded: list[bytes] = []
    real = UsersBodyEncoder.encode

    def counting(self: UsersBodyEncoder, batch: Any) -> bytes:
        body = real(self, batch)
        encoded.append(body)
        return body

    # A spy, not a stand-in: the real encoder runs and its bytes go on the wire.
    monkeypatch.setattr(UsersBodyEncoder, "encode", counting)
    emulator.set_faults(Operation.INSERT, EndpointFaults(fail_next=2))
    client = client_for(max_retries=3, batch_size=2)
    outcome = client.insert(platform_users(4))
    assert outcome.ok
    assert outcome.calls == 4  # two batches, two retries between them
    assert len(encoded) == 2  # one encoding per batch, whatever its retries
    assert sorted(emulator.users()) == sorted(u.end_user for u in platform_users(4))
