"""BearerAuth: the header on every request, the token never shown."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from syncd.http import (
    BearerAuth,
    RetryingCaller,
    RetrySettings,
    bearer_token_problem,
    make_http_client,
)
from syncd.platform.api import api_key_problem
from tests.http.support import GRAPH_LIKE, Answer, ScriptedServer

TOKEN = "tok-bearer-SECRET-9d1e"


def test_every_request_and_every_retry_carries_the_token(server: ScriptedServer) -> None:
    server.script(Answer(503), Answer(200), Answer(200))
    auth = BearerAuth(SecretStr(TOKEN))
    with make_http_client(server.url, auth=auth, timeout_s=5.0) as http:
        caller = RetryingCaller(http, GRAPH_LIKE, RetrySettings(max_retries=1, backoff_max_s=0))
        caller.call("users", "GET", "/users")
        http.get("/other")  # a plain httpx call gets it too: the auth is the client's
    assert [seen.headers.get("authorization") for seen in server.seen] == [f"Bearer {TOKEN}"] * 3


def test_the_token_is_not_in_repr_nor_in_default_headers() -> None:
    auth = BearerAuth(SecretStr(TOKEN))
    assert repr(auth) == "BearerAuth(token=SecretStr('**********'))"
    with make_http_client("https://api.test", auth=auth, timeout_s=1.0) as http:
        # Set per request by the auth flow, never stored on the client.
        assert "authorization" not in http.headers
        assert TOKEN not in repr(http.headers)
    assert auth.secrets() == (TOKEN,)


@pytest.mark.parametrize("token", ["", "tok en", "tok\n", "tok\r\nX-Injected: 1", "t\u00f6k-42"])
def test_an_unusable_token_is_refused_without_quoting_it(token: str) -> None:
    with pytest.raises(ValueError, match=r"^the client secret ") as caught:
        BearerAuth(SecretStr(token), name="the client secret")
    if token:
        assert token not in str(caught.value)
        assert token.strip() not in str(caught.value)


def test_token_problems_are_worded_for_what_the_token_is() -> None:
    assert bearer_token_problem("ok-token_1.2~/+=") is None
    assert bearer_token_problem("") == "the token is empty"
    assert api_key_problem("") == "the API key is empty"
    assert api_key_problem("a b") == (
        "the API key must be printable ASCII without spaces or newlines"
    )
    assert api_key_problem("sk-fine") is None
