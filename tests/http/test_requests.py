"""RetryingCaller builds its requests with a RequestBuilder (cheaper than ``build_request``);
they must be exactly the requests httpx would build: URL, headers, body, timeout."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from syncd.http import BearerAuth, RetryingCaller, RetrySettings, make_http_client
from syncd.platform.client import PLATFORM_API
from tests.http.support import ScriptedServer

TOKEN = "tok-build-SECRET-0042"
BODY = b'{"users": [{"end_user": "a@x.com"}]}'


@pytest.fixture
def caller() -> Iterator[RetryingCaller]:
    """A caller under a base URL with a path prefix, without a server (requests only built)."""
    auth = BearerAuth(SecretStr(TOKEN))
    http = make_http_client("https://api.test/prefix", auth=auth, timeout_s=7.0)
    built = RetryingCaller(http, PLATFORM_API, RetrySettings(max_retries=0))
    yield built
    http.close()


def same_request(ours: httpx.Request, theirs: httpx.Request) -> None:
    assert ours.method == theirs.method
    assert ours.url == theirs.url
    assert ours.headers.raw == theirs.headers.raw  # names, values and order
    assert ours.content == theirs.content
    assert ours.extensions == theirs.extensions


@pytest.mark.parametrize("path", ["/api/external/platform-users", "relative/path", "/"])
def test_a_write_is_the_request_httpx_builds(caller: RetryingCaller, path: str) -> None:
    headers = {"Content-Type": "application/json"}
    ours = caller.requests.build("PUT", path, BODY, None, headers, None)
    same_request(ours, caller.http.build_request("PUT", path, content=BODY, headers=headers))
    assert str(ours.url).startswith("https://api.test/prefix/")


def test_a_call_timeout_and_call_headers_are_those_httpx_would_set(
    caller: RetryingCaller,
) -> None:
    timeout = httpx.Timeout(0.25)
    headers = {"If-None-Match": '"v1"', "Accept": "text/plain"}  # overrides a client header
    ours = caller.requests.build("GET", "/users", None, None, headers, timeout)
    same_request(ours, caller.http.build_request("GET", "/users", headers=headers, timeout=timeout))
    assert ours.extensions["timeout"] == timeout.as_dict()
    assert ours.headers["Accept"] == "text/plain"


def test_query_parameters_and_cookies_go_through_httpx(caller: RetryingCaller) -> None:
    params = {"page_cursor": "c 1"}
    ours = caller.requests.build("GET", "/users", None, params, {}, None)
    same_request(ours, caller.http.build_request("GET", "/users", params=params))
    caller.http.cookies.set("AWSALB", "sticky", domain="api.test")  # a load balancer's
    ours = caller.requests.build("PUT", "/users", BODY, None, {}, None)
    assert ours.headers["Cookie"] == "AWSALB=sticky"
    same_request(ours, caller.http.build_request("PUT", "/users", content=BODY))


def test_a_new_base_url_is_followed(caller: RetryingCaller) -> None:
    caller.requests.build("PUT", "/users", BODY, None, {}, None)
    caller.http.base_url = httpx.URL("https://other.test/v2")
    ours = caller.requests.build("PUT", "/users", BODY, None, {}, None)
    assert str(ours.url) == "https://other.test/v2/users"


def test_on_the_wire_a_call_sends_what_httpx_sends(server: ScriptedServer) -> None:
    auth = BearerAuth(SecretStr(TOKEN))
    with make_http_client(server.url + "/base", auth=auth, timeout_s=5.0) as http:
        caller = RetryingCaller(http, PLATFORM_API, RetrySettings(max_retries=0))
        assert caller.call("insert", "PUT", "/users", content=BODY).status_code == 200
        http.request("PUT", "/users", content=BODY, headers={"Content-Type": "application/json"})
    ours, theirs = server.seen
    assert ours == theirs
    assert ours.path == "/base/users"
    assert ours.headers["authorization"] == f"Bearer {TOKEN}"
    assert ours.headers["content-type"] == "application/json"
    assert ours.headers["content-length"] == str(len(BODY))
    assert ours.body == BODY


def test_one_off_page_links_do_not_pile_up(caller: RetryingCaller) -> None:
    for page in range(500):
        link = f"https://api.test/prefix/users?$skiptoken=t{page}"
        ours = caller.requests.build("GET", link, None, None, {}, None)
        assert ours.url == caller.http.build_request("GET", link).url
    assert len(caller.requests._urls) <= 64
