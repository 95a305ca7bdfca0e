"""RetryingCaller against a scripted server on 127.0.0.1, under two API policies.

``PLATFORM_API`` and the Graph-like policy of ``support.py`` retry different statuses
and raise different error types; the same caller must follow whichever it is given.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from syncd.errors import (
    AuthenticationError,
    PlatformError,
    PlatformUnavailableError,
    SourceError,
    SourceUnavailableError,
    is_transient,
)
from syncd.http import (
    ApiPolicy,
    BearerAuth,
    RetryingCaller,
    RetrySettings,
    make_http_client,
    parse_retry_after,
)
from syncd.platform.client import PLATFORM_API
from tests.http.support import GRAPH_LIKE, Answer, DirectoryAuthError, ScriptedServer, Seen

TOKEN = "tok-graph-SECRET-0042"
FAST = RetrySettings(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.005)


@pytest.fixture
def caller_for() -> Iterator[Callable[..., RetryingCaller]]:
    """Build callers (closed at the end of the test) for a base URL and a policy."""
    callers: list[RetryingCaller] = []

    def build(
        url: str, policy: ApiPolicy = GRAPH_LIKE, settings: RetrySettings = FAST
    ) -> RetryingCaller:
        auth = BearerAuth(SecretStr(TOKEN))
        http = make_http_client(url, auth=auth, timeout_s=5.0)
        caller = RetryingCaller(http, policy, settings, secrets=auth.secrets)
        callers.append(caller)
        return caller

    yield build
    for caller in callers:
        caller.http.close()


@dataclass
class Tally:
    calls: int = 0


# ------------------------------------------------------------- what is retried


@pytest.mark.parametrize(
    ("policy", "status", "retried"),
    [
        (PLATFORM_API, 500, True),
        (GRAPH_LIKE, 500, False),
        (PLATFORM_API, 408, True),
        (GRAPH_LIKE, 408, False),
        (PLATFORM_API, 429, True),
        (GRAPH_LIKE, 429, True),
        (GRAPH_LIKE, 503, True),
        (GRAPH_LIKE, 400, False),
    ],
    ids=lambda value: value.name if isinstance(value, ApiPolicy) else str(value),
)
def test_each_policy_retries_its_own_statuses(
    policy: ApiPolicy,
    status: int,
    retried: bool,
    server: ScriptedServer,
    caller_for: Callable[..., RetryingCaller],
) -> None:
    server.script(Answer(status), Answer(200))
    response = caller_for(server.url, policy).call("users", "GET", "/users")
    assert response.status_code == (200 if retried else status)
    assert len(server.seen) == (2 if retried else 1)


@pytest.mark.parametrize(
    ("policy", "error_type", "other_type"),
    [
        (GRAPH_LIKE, SourceUnavailableError, PlatformError),
        (PLATFORM_API, PlatformUnavailableError, SourceError),
    ],
    ids=["graph", "platform"],
)
def test_exhausted_retries_raise_the_policys_unavailable_error(
    policy: ApiPolicy,
    error_type: type[Exception],
    other_type: type[Exception],
    server: ScriptedServer,
    caller_for: Callable[..., RetryingCaller],
) -> None:
    server.script(*[Answer(503)] * 3)
    with pytest.raises(error_type) as caught:
        caller_for(server.url, policy).call("users", "GET", "/v1.0/users")
    assert str(caught.value) == (
        "users: GET /v1.0/users still failing after 3 attempts; last error: HTTP 503"
    )
    assert not isinstance(caught.value, other_type)
    assert is_transient(caught.value)
    assert len(server.seen) == 3


def test_one_attempt_is_named_in_the_singular(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(503))
    caller = caller_for(server.url, settings=RetrySettings(max_retries=0))
    with pytest.raises(SourceUnavailableError, match=r"after 1 attempt; last error: HTTP 503$"):
        caller.call("users", "GET", "/users")


def test_answers_become_the_policys_error_types(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(
        Answer(401),
        Answer(403, b'{"error": {"code": "Authorization_RequestDenied"}}'),
        Answer(200),
        Answer(403),
    )
    graph = caller_for(server.url, GRAPH_LIKE)
    platform = caller_for(server.url, PLATFORM_API)

    with pytest.raises(DirectoryAuthError) as refused:
        graph.raise_for_status(graph.call("users", "GET", "/users"), "users", "GET", "/users")
    with pytest.raises(SourceError) as denied:
        graph.raise_for_status(graph.call("users", "GET", "/users"), "users", "GET", "/users")
    graph.raise_for_status(graph.call("users", "GET", "/users"), "users", "GET", "/users")
    with pytest.raises(AuthenticationError) as platform_refused:
        platform.raise_for_status(platform.call("list", "GET", "/x"), "list", "GET", "/x")

    assert str(refused.value) == f"Microsoft Graph refused the token (HTTP 401) at {server.url}"
    # 403 is not an auth status of this policy: a plain SourceError with the detail.
    assert type(denied.value) is SourceError
    assert str(denied.value) == (
        'users: GET /users answered HTTP 403: {"code":"Authorization_RequestDenied"}'
    )
    assert platform_refused.value.status_code == 403
    assert str(platform_refused.value) == (
        f"the platform rejected the API key (HTTP 403) for {server.url}"
    )


def test_a_transport_error_waiting_cannot_fix_is_the_policys_error(
    caller_for: Callable[..., RetryingCaller],
) -> None:
    caller = caller_for("ftp://directory.test")
    with pytest.raises(SourceError) as caught:
        caller.call("users", "GET", "/users")
    assert type(caught.value) is SourceError  # not the transient SourceUnavailableError
    assert "UnsupportedProtocol" in str(caught.value)


# ------------------------------------------------------------------- logging


def test_connection_errors_are_retried_and_logged_under_the_api_name(
    unused_port: int, caller_for: Callable[..., RetryingCaller]
) -> None:
    with capture_logs() as logs, pytest.raises(SourceUnavailableError, match="ConnectError"):
        caller_for(f"http://127.0.0.1:{unused_port}").call("users", "GET", "/users")
    events = [(entry["event"], entry["log_level"]) for entry in logs]
    assert events == [
        ("graph call failed", "debug"),
        ("graph call failed; retrying", "warning"),
        ("graph call failed", "debug"),
        ("graph call failed; retrying", "warning"),
        ("graph call failed", "debug"),
    ]
    assert all("ConnectError" in entry.get("error", entry.get("reason")) for entry in logs)


def test_each_attempt_is_logged_with_its_fields_and_without_the_token(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(503), Answer(200))
    with capture_logs() as logs:
        caller_for(server.url).call("users", "GET", "/users", page=7)
    calls = [entry for entry in logs if entry["event"] == "graph call"]
    assert [(e["status"], e["attempt"], e["page"]) for e in calls] == [(503, 1, 7), (200, 2, 7)]
    assert all(e["operation"] == "users" and e["path"] == "/users" for e in calls)
    assert all(isinstance(e["duration_ms"], float) for e in calls)
    (retry,) = (entry for entry in logs if entry["event"] == "graph call failed; retrying")
    assert (retry["reason"], retry["attempt"], retry["max_attempts"]) == ("HTTP 503", 1, 3)
    assert 0 <= retry["delay_s"] <= 0.005
    assert TOKEN not in repr(logs)


# --------------------------------------------------------------- waiting


def test_retry_after_is_honoured(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(429, headers={"Retry-After": "0.3"}), Answer(200))
    started = time.monotonic()
    with capture_logs() as logs:
        response = caller_for(server.url).call("users", "GET", "/users")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.29, f"waited only {elapsed:.3f}s for Retry-After: 0.3"
    (retry,) = (entry for entry in logs if entry["log_level"] == "warning")
    assert retry["delay_s"] == pytest.approx(0.3)


def test_retry_after_is_capped(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(503, headers={"Retry-After": "3600"}), Answer(200))
    settings = RetrySettings(max_retries=1, max_retry_after_s=0.05)
    started = time.monotonic()
    assert caller_for(server.url, settings=settings).call("u", "GET", "/u").status_code == 200
    assert time.monotonic() - started < 2


def test_setting_stop_cuts_a_retry_sleep_short(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(503, headers={"Retry-After": "60"}))
    caller = caller_for(server.url, settings=RetrySettings(max_retries=3))
    timer = threading.Timer(0.2, caller.stop.set)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(SourceUnavailableError, match="after 1 attempt; last error: HTTP 503"):
            caller.call("users", "GET", "/users")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5, "the 60 s Retry-After was sat out"
    assert len(server.seen) == 1  # gave up instead of trying again


def test_the_tally_counts_every_attempt(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(503), Answer(503), Answer(200))
    tally = Tally()
    caller_for(server.url).call("users", "GET", "/users", tally=tally)
    assert tally.calls == 3 == len(server.seen)


def test_content_is_sent_as_json_with_params_and_headers(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    caller_for(server.url).call(
        "create",
        "POST",
        "/users",
        content=b'{"a": 1}',
        params={"q": "x y"},
        headers={"If-Match": "abc"},
    )
    (seen,) = server.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/users?q=x+y", b'{"a": 1}')
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["if-match"] == "abc"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"


def test_an_echoed_token_is_masked_in_reasons_and_errors(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    def echo(seen: Seen) -> Answer:
        return Answer(400, f'{{"message": "got {seen.headers["authorization"]}"}}'.encode())

    server.script(echo, echo)
    caller = caller_for(server.url)
    reason = caller.failure_reason(caller.call("users", "GET", "/users"))
    with pytest.raises(SourceError) as caught:
        caller.raise_for_status(caller.call("users", "GET", "/users"), "users", "GET", "/users")
    assert reason == "HTTP 400: got Bearer **********"
    assert TOKEN not in str(caught.value)
    assert str(caught.value).endswith("answered HTTP 400: got Bearer **********")


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("3", 3.0),
        ("0.25", 0.25),
        ("-5", 0.0),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


def test_parse_retry_after_is_still_importable_from_the_platform_client() -> None:
    from syncd.platform import client

    assert client.parse_retry_after is parse_retry_after


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"backoff_base_s": -0.1}, "backoff_base_s"),
        ({"max_retry_after_s": -1}, "max_retry_after_s"),
    ],
)
def test_retry_settings_refuse_negative_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetrySettings(**options)


# ---------------------------------------------------------------- deadline_s


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback port that accepts TCP connections (the kernel's backlog) and never
    answers: a server that hangs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_deadline_bounds_every_attempt_against_a_silent_server(
    silent_url: str, caller_for: Callable[..., RetryingCaller]
) -> None:
    # The client's timeout is 5 s and 5 retries are allowed: ~30 s without a deadline.
    settings = RetrySettings(max_retries=5, backoff_base_s=0.01, backoff_max_s=0.02,
                             deadline_s=1.0)  # fmt: skip
    caller = caller_for(silent_url, settings=settings)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError, match="still failing after"):
        caller.call("users", "GET", "/v1.0/users")
    assert time.monotonic() - started < 2.0


def test_a_retry_after_beyond_the_deadline_fails_at_once_quoting_it(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(429, headers={"Retry-After": "120"}), Answer(200))
    settings = RetrySettings(max_retries=4, max_retry_after_s=300.0, deadline_s=30.0)
    caller = caller_for(server.url, settings=settings)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as caught:
        caller.call("users", "GET", "/v1.0/users")
    assert time.monotonic() - started < 1.0
    assert "asks to wait 120 s" in str(caught.value)
    assert "the next run retries" in str(caught.value)
    assert len(server.seen) == 1


def test_a_retry_after_within_the_deadline_is_waited_out_in_full(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(503, headers={"Retry-After": "0.6"}), Answer(200))
    settings = RetrySettings(max_retries=2, max_retry_after_s=300.0, deadline_s=5.0)
    started = time.monotonic()
    response = caller_for(server.url, settings=settings).call("users", "GET", "/v1.0/users")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.59


def test_without_a_deadline_a_long_retry_after_is_capped_as_before(
    server: ScriptedServer, caller_for: Callable[..., RetryingCaller]
) -> None:
    server.script(Answer(429, headers={"Retry-After": "120"}), Answer(200))
    settings = RetrySettings(max_retries=1, max_retry_after_s=0.05)
    response = caller_for(server.url, settings=settings).call("users", "GET", "/v1.0/users")
    assert response.status_code == 200
    assert len(server.seen) == 2


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        RetrySettings(deadline_s=0)
