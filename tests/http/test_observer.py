"""RetryingCaller's request observer: every attempt is seen, and it never fails a call."""

from __future__ import annotations

import pytest

from syncd.errors import PlatformUnavailableError
from syncd.http import RetryingCaller, RetrySettings, make_http_client
from syncd.platform.client import PLATFORM_API
from tests.http.support import Answer, ScriptedServer

FAST = RetrySettings(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.005)


def test_every_attempt_is_observed_with_its_status(server: ScriptedServer) -> None:
    seen: list[tuple[str, int | None]] = []
    server.script(Answer(503), Answer(200))
    with make_http_client(server.url, auth=None, timeout_s=5) as http:
        caller = RetryingCaller(
            http, PLATFORM_API, FAST, observer=lambda method, status: seen.append((method, status))
        )
        assert caller.call("list", "GET", "/users").status_code == 200
    assert seen == [("GET", 503), ("GET", 200)]


def test_a_connection_error_is_observed_without_a_status(unused_port: int) -> None:
    seen: list[tuple[str, int | None]] = []
    with make_http_client(f"http://127.0.0.1:{unused_port}", auth=None, timeout_s=2) as http:
        caller = RetryingCaller(
            http, PLATFORM_API, FAST, observer=lambda method, status: seen.append((method, status))
        )
        with pytest.raises(PlatformUnavailableError):
            caller.call("insert", "PUT", "/users", content=b"{}")
    assert seen == [("PUT", None)] * FAST.attempts


def test_a_failing_observer_does_not_fail_the_call(server: ScriptedServer) -> None:
    def broken(method: str, status: int | None) -> None:
        raise RuntimeError("metrics down")

    server.script(Answer(200))
    with make_http_client(server.url, auth=None, timeout_s=5) as http:
        caller = RetryingCaller(http, PLATFORM_API, FAST, observer=broken)
        assert caller.call("list", "GET", "/users").status_code == 200
