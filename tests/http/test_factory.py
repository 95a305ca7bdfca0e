"""make_http_client: the settings every syncd client shares."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

import syncd
from syncd.errors import ConfigError
from syncd.http import BearerAuth, make_http_client
from tests.http.support import Answer, ScriptedServer


def test_redirects_are_not_followed(server: ScriptedServer) -> None:
    server.script(Answer(302, b"", {"Location": f"{server.url}/moved"}))
    with make_http_client(server.url, auth=None, timeout_s=5.0) as http:
        response = http.get("/users")
    assert response.status_code == 302
    assert [seen.path for seen in server.seen] == ["/users"]


def test_default_headers_and_overrides(server: ScriptedServer) -> None:
    with make_http_client(
        server.url, auth=None, timeout_s=5.0, headers={"Accept": "text/csv", "X-Job": "hr"}
    ) as http:
        http.get("/")
    (seen,) = server.seen
    assert seen.headers["user-agent"] == f"syncd/{syncd.__version__}"
    assert seen.headers["accept"] == "text/csv"
    assert seen.headers["x-job"] == "hr"


def test_a_malformed_proxy_variable_is_a_config_error_without_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "foo://bad:proxy")
    auth = BearerAuth(SecretStr("tok-proxy-SECRET"))
    with pytest.raises(ConfigError, match="check the proxy environment variables") as caught:
        make_http_client("https://api.test/", auth=auth, timeout_s=5.0)
    assert "tok-proxy-SECRET" not in str(caught.value)
    assert "cannot set up HTTP for https://api.test:" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"), [({"timeout_s": 0}, "timeout_s"), ({"concurrency": 0}, "concurrency")]
)
def test_unusable_sizes_are_refused(options: dict[str, float], message: str) -> None:
    settings = {"timeout_s": 5.0, **options}
    with pytest.raises(ValueError, match=message):
        make_http_client("https://api.test", auth=None, **settings)  # type: ignore[arg-type]
