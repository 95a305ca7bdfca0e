"""PlatformClient.list_users reading its body as a stream, over real HTTP on 127.0.0.1.

The emulator gives whole answers; a body that breaks off or stalls half-way comes from
the loopback :class:`~tests.http.body_server.BodyServer`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import msgspec
import pytest
from pydantic import SecretStr

from syncd.emulator import PlatformEmulator
from syncd.errors import PlatformError, PlatformUnavailableError
from syncd.model import Origin, PlatformUser, SourceUser, make_tags
from syncd.planfile import FingerprintingPlatform
from syncd.platform.api import ApiFlavour, WireUser
from syncd.platform.client import PlatformClient
from tests.http.body_server import Body, BodyServer, running_body_server

PATH = "GET /api/external/platform-users"


def users_body(count: int, *, cursor: str | None = None) -> bytes:
    users = [
        {
            "end_user": f"u{index:06d}@example.com",
            "tags": {"department": "eng"},
            "active_from": "2026-01-01",
        }
        for index in range(count)
    ]
    return msgspec.json.encode({"users": users, "pagination": {"next_page_cursor": cursor}})


def client_of(url: str, key: str = "sk-list-test", **options: Any) -> PlatformClient:
    settings: dict[str, Any] = {"timeout_s": 5.0, "max_retries": 2, "backoff_base_s": 0.001}
    settings.update(options)
    return PlatformClient(
        base_url=url,
        api_key=SecretStr(key),
        flavour=ApiFlavour.PLATFORM_USERS,
        **settings,
    )


@pytest.fixture
def server() -> Iterator[BodyServer]:
    """A started :class:`BodyServer`; stopped even when the test fails."""
    with running_body_server() as served:
        yield served


def test_a_body_that_breaks_off_is_listed_again_whole(server: BodyServer) -> None:
    body = users_body(30_000)  # ~2 MB: the first attempt decodes chunks before the cut
    server.script(Body(body, cut=len(body) * 2 // 3), Body(body))
    with client_of(server.url) as client:
        users = client.list_users()
    assert len(users) == 30_000
    assert len({user.end_user for user in users}) == 30_000  # nothing twice
    assert len(server.requests) == 2


def test_a_body_that_always_breaks_off_is_unavailable_not_a_short_list(
    server: BodyServer,
) -> None:
    body = users_body(30_000)
    server.script(Body(body, cut=len(body) - 10))
    with client_of(server.url) as client, pytest.raises(PlatformUnavailableError) as caught:
        client.list_users()
    assert "list: GET /api/external/platform-users still failing after 3 attempts" in str(
        caught.value
    )
    assert len(server.requests) == 3


def test_a_page_that_breaks_off_is_read_again_from_its_cursor(server: BodyServer) -> None:
    first, second = users_body(10, cursor="p2"), users_body(20)
    server.script(Body(first), Body(second, cut=200), Body(second))
    with client_of(server.url) as client:
        users = client.list_users()
    assert [user.end_user for user in users] == [f"u{i:06d}@example.com" for i in range(20)]
    assert server.requests[0] == f"{PATH} HTTP/1.1"
    assert server.requests[1:] == [f"{PATH}?page_cursor=p2 HTTP/1.1"] * 2


def test_cancel_cuts_a_stalled_body_at_once(server: BodyServer) -> None:
    body = users_body(30_000)
    server.script(Body(body, stall_after=len(body) // 2))
    with client_of(server.url, timeout_s=30.0) as client:
        timer = threading.Timer(0.3, client.cancel)
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(PlatformError, match="cancelled"):
                client.list_users()
        finally:
            timer.join()
    assert time.monotonic() - started < 2  # not the 30 s read timeout
    assert len(server.requests) == 1


def test_known_names_are_returned_as_the_callers_strings(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users(
        WireUser(f"u{index}@example.com", {"d": "eng"}, "2026-01-01") for index in range(50)
    )
    origin = Origin("test")
    known = {
        name: SourceUser.from_origin(name, (), origin)
        for name in ("".join(f"u{index}@example.com") for index in range(40))
    }
    with client_of(emulator.url, emulator_api_key) as client:
        users = client.list_users(known=known)
        wrapped = FingerprintingPlatform(client).list_users(known=known)
    assert sorted(users, key=lambda u: u.end_user) == sorted(wrapped, key=lambda u: u.end_user)
    by_name = {user.end_user: user for user in users}
    assert len(by_name) == 50
    for name, source in known.items():
        assert by_name[name].end_user is source.end_user
    assert by_name["u45@example.com"] == PlatformUser(
        "u45@example.com", make_tags({"d": "eng"}), date(2026, 1, 1)
    )
