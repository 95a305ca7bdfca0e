"""The first attempt of a call runs outside the retry loop (the common, cheap case).

Only a first attempt that failed in a retryable way builds the retry loop, whose
attempt 1 is that failure replayed. These tests pin what must not change with it:
the failure is not sent twice, ``stop`` set during the first attempt is honoured,
attempts are counted, observed and logged with their numbers, and a streamed call
follows the same path.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from structlog.testing import capture_logs

from syncd.errors import PlatformUnavailableError
from syncd.http import RetryingCaller, RetrySettings, make_http_client
from syncd.platform.client import PLATFORM_API
from tests.http.support import Answer, ScriptedServer, Seen

FAST = RetrySettings(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.005)


class Tally:
    calls = 0


@pytest.fixture
def observed(server: ScriptedServer) -> Iterator[tuple[RetryingCaller, list[int | None]]]:
    """A platform caller of ``server`` and the statuses its observer saw."""
    statuses: list[int | None] = []
    with make_http_client(server.url, auth=None, timeout_s=5) as http:
        yield (
            RetryingCaller(
                http, PLATFORM_API, FAST, observer=lambda method, status: statuses.append(status)
            ),
            statuses,
        )


def test_a_first_attempt_that_succeeds_is_sent_observed_and_logged_once(
    server: ScriptedServer, observed: tuple[RetryingCaller, list[int | None]]
) -> None:
    caller, statuses = observed
    tally = Tally()
    with capture_logs() as logs:
        response = caller.call("insert", "PUT", "/users", content=b"{}", tally=tally, size=3)
    assert response.status_code == 200
    assert (tally.calls, len(server.seen), statuses) == (1, 1, [200])
    assert [(e["event"], e["attempt"], e["size"]) for e in logs] == [("platform call", 1, 3)]


def test_a_failed_first_attempt_is_retried_without_being_sent_twice(
    server: ScriptedServer, observed: tuple[RetryingCaller, list[int | None]]
) -> None:
    caller, statuses = observed
    server.script(Answer(503), Answer(502), Answer(200))
    tally = Tally()
    with capture_logs() as logs:
        response = caller.call("insert", "PUT", "/users", content=b"{}", tally=tally)
    assert response.status_code == 200
    assert (tally.calls, len(server.seen), statuses) == (3, 3, [503, 502, 200])
    calls = [(e["status"], e["attempt"]) for e in logs if e["event"] == "platform call"]
    assert calls == [(503, 1), (502, 2), (200, 3)]
    retries = [e for e in logs if e["event"] == "platform call failed; retrying"]
    assert [(e["reason"], e["attempt"], e["max_attempts"]) for e in retries] == [
        ("HTTP 503", 1, 3),
        ("HTTP 502", 2, 3),
    ]


def test_stop_set_during_the_first_attempt_is_not_followed_by_a_retry(
    server: ScriptedServer, observed: tuple[RetryingCaller, list[int | None]]
) -> None:
    caller, statuses = observed

    def stop_then_fail(seen: Seen) -> Answer:
        caller.stop.set()  # Ctrl-C arrives while the first request is on the wire
        return Answer(503)

    server.script(stop_then_fail, Answer(200))
    with pytest.raises(PlatformUnavailableError, match=r"after 1 attempt; last error: HTTP 503$"):
        caller.call("insert", "PUT", "/users", content=b"{}")
    assert (len(server.seen), statuses) == (1, [503])


def test_a_single_allowed_attempt_fails_with_the_transport_error_as_cause(
    unused_port: int,
) -> None:
    with make_http_client(f"http://127.0.0.1:{unused_port}", auth=None, timeout_s=2) as http:
        caller = RetryingCaller(http, PLATFORM_API, RetrySettings(max_retries=0))
        with pytest.raises(PlatformUnavailableError, match="after 1 attempt;") as caught:
            caller.call("insert", "PUT", "/users", content=b"{}")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_streamed_call_retries_a_failed_first_attempt_and_reads_only_the_last(
    server: ScriptedServer, observed: tuple[RetryingCaller, list[int | None]]
) -> None:
    caller, statuses = observed
    server.script(Answer(500), Answer(200, b'{"users": []}'))
    read: list[bytes] = []
    tally = Tally()

    def read_all(response: httpx.Response) -> str:
        read.append(response.read())
        return "done"

    result = caller.call_streamed("list", "GET", "/users", read_all, tally=tally)
    assert result == "done"
    assert read == [b'{"users": []}']
    assert (tally.calls, statuses) == (2, [500, 200])
