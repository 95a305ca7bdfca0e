"""RetryingCaller.call_streamed against a loopback server whose bodies can break off."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from syncd.errors import PlatformError, PlatformUnavailableError
from syncd.http import BearerAuth, RetryingCaller, RetrySettings, make_http_client
from syncd.http.cancel import track_connections
from syncd.platform.client import PLATFORM_API
from tests.http.body_server import Body, BodyServer, running_body_server

TOKEN = "tok-stream-SECRET-7"
FAST = RetrySettings(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.005)
BODY = b"x" * 200_000


@pytest.fixture
def server() -> Iterator[BodyServer]:
    """A started :class:`BodyServer`; stopped even when the test fails."""
    with running_body_server() as served:
        yield served


@pytest.fixture
def caller(server: BodyServer) -> Iterator[RetryingCaller]:
    """A caller of ``server`` under the platform's policy, closed at the end."""
    auth = BearerAuth(SecretStr(TOKEN))
    http = make_http_client(server.url, auth=auth, timeout_s=5.0)
    retrying = RetryingCaller(http, PLATFORM_API, FAST, secrets=auth.secrets)
    try:
        yield retrying
    finally:
        http.close()


def read_all(response: httpx.Response) -> bytes:
    """A reader that keeps every byte (a fresh buffer per attempt)."""
    data = bytearray()
    for piece in response.iter_bytes():
        data += piece
    return bytes(data)


def test_the_reader_gets_the_body_as_it_streams(server: BodyServer, caller: RetryingCaller) -> None:
    server.script(Body(BODY))
    pieces: list[int] = []

    def read(response: httpx.Response) -> int:
        assert not response.is_stream_consumed  # the body is still on the wire
        for piece in response.iter_bytes():
            pieces.append(len(piece))
        return response.status_code

    assert caller.call_streamed("list", "GET", "/items", read) == 200
    assert sum(pieces) == len(BODY)
    assert len(pieces) > 1  # arrived in pieces, not loaded whole first


def test_a_body_cut_short_is_read_again_from_the_start(
    server: BodyServer, caller: RetryingCaller
) -> None:
    server.script(Body(BODY, cut=70_000), Body(BODY, cut=10), Body(BODY))
    with capture_logs() as logs:
        assert caller.call_streamed("list", "GET", "/items", read_all) == BODY
    assert len(server.requests) == 3
    failed = [event for event in logs if event["event"] == "platform call failed"]
    assert len(failed) == 2
    assert all("while reading the answer's body" in event["error"] for event in failed)


def test_a_body_that_always_breaks_off_exhausts_the_retries(
    server: BodyServer, caller: RetryingCaller
) -> None:
    server.script(Body(BODY, cut=5_000))
    with pytest.raises(PlatformUnavailableError) as caught:
        caller.call_streamed("list", "GET", "/items", read_all)
    assert "still failing after 3 attempts" in str(caught.value)
    assert "while reading the answer's body" in str(caught.value)
    assert len(server.requests) == 3


def test_retryable_statuses_are_retried_before_the_reader_sees_them(
    server: BodyServer, caller: RetryingCaller
) -> None:
    server.script(Body(b"busy", status=503), Body(b'{"ok": true}'))
    statuses: list[int] = []

    def read(response: httpx.Response) -> bytes:
        statuses.append(response.status_code)
        return response.read()

    assert caller.call_streamed("list", "GET", "/items", read) == b'{"ok": true}'
    assert statuses == [200]


def test_other_statuses_reach_the_reader_and_an_error_it_raises_is_not_retried(
    server: BodyServer, caller: RetryingCaller
) -> None:
    server.script(Body(f'{{"detail": "no {TOKEN}"}}'.encode(), status=404))

    def read(response: httpx.Response) -> None:
        response.read()
        caller.raise_for_status(response, "list", "GET", "/items")

    with pytest.raises(PlatformError) as caught:
        caller.call_streamed("list", "GET", "/items", read)
    assert caught.value.status_code == 404
    assert TOKEN not in str(caught.value)  # the echoed token is masked
    assert len(server.requests) == 1


def test_stop_cuts_a_stalled_body_at_once(server: BodyServer) -> None:
    server.script(Body(BODY, stall_after=1_000))
    http = make_http_client(server.url, auth=None, timeout_s=30.0)
    tracker = track_connections(http)
    retrying = RetryingCaller(http, PLATFORM_API, FAST)

    def cancel() -> None:
        retrying.stop.set()
        tracker.cancel()

    timer = threading.Timer(0.3, cancel)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(PlatformUnavailableError):
            retrying.call_streamed("list", "GET", "/items", read_all)
    finally:
        timer.join()
        http.close()
    assert time.monotonic() - started < 2  # not the 30 s read timeout
    assert len(server.requests) == 1  # stopped: not sent again


def test_the_observer_and_tally_count_each_streamed_attempt(server: BodyServer) -> None:
    server.script(Body(BODY, cut=100), Body(BODY))
    seen: list[tuple[str, int | None]] = []

    class Tally:
        calls = 0

    http = make_http_client(server.url, auth=None, timeout_s=5.0)
    retrying = RetryingCaller(http, PLATFORM_API, FAST, observer=lambda m, s: seen.append((m, s)))
    tally = Tally()
    try:
        assert retrying.call_streamed("list", "GET", "/items", read_all, tally=tally) == BODY
    finally:
        http.close()
    assert tally.calls == 2
    assert seen == [("GET", 200), ("GET", 200)]  # both answered; the first broke off
