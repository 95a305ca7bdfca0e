"""The Graph emulator's own behaviour: login, paging, advanced queries, groups, faults."""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from syncd.emulator.graph import GraphApp, GraphEmulator, GraphOperation
from syncd.emulator.graph_data import make_graph_user, make_graph_users, object_id
from syncd.emulator.server import LISTENING_PREFIX, EndpointFaults

TENANT = "tenant-1"
CLIENT = "11111111-1111-1111-1111-111111111111"
LIMITED = "22222222-2222-2222-2222-222222222222"
CERT_APP = "33333333-3333-3333-3333-333333333333"
SECRET = "emu-Secret-1"
EVENTUAL = {"ConsistencyLevel": "eventual"}


@pytest.fixture(scope="module")
def expired_leaf() -> trustme.LeafCert:
    now = datetime.now(UTC)
    return trustme.CA().issue_cert(
        "old.example", key_type=trustme.KeyType.RSA,
        not_before=now - timedelta(days=400), not_after=now - timedelta(days=1),
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(expired_leaf: trustme.LeafCert) -> Iterator[GraphEmulator]:
    certificate = x509.load_pem_x509_certificate(expired_leaf.cert_chain_pems[0].bytes())
    apps = [
        GraphApp(CLIENT, secret=SECRET),
        GraphApp(LIMITED, secret=SECRET, roles=frozenset({"User.Read.All"})),
        GraphApp(CERT_APP, certificates=(certificate,)),
    ]
    emulator = GraphEmulator(tenant_id=TENANT, apps=apps)  # plain HTTP: no MSAL here
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def graph(server: GraphEmulator) -> Iterator[GraphEmulator]:
    server.reset()
    yield server
    server.reset()


def token(graph: GraphEmulator, client: str = CLIENT, secret: str = SECRET) -> httpx.Response:
    return httpx.post(
        f"{graph.url}/{TENANT}/oauth2/v2.0/token",
        data={"client_id": client, "client_secret": secret, "grant_type": "client_credentials",
              "scope": f"{graph.url}/.default"},
    )  # fmt: skip


def client(graph: GraphEmulator, app: str = CLIENT) -> httpx.Client:
    access = token(graph, app).json()["access_token"]
    return httpx.Client(base_url=graph.url, headers={"Authorization": f"Bearer {access}"})


def test_discovery_and_tokens(graph: GraphEmulator) -> None:
    found = httpx.get(f"{graph.url}/{TENANT}/v2.0/.well-known/openid-configuration").json()
    assert found["token_endpoint"] == f"{graph.url}/{TENANT}/oauth2/v2.0/token"
    unknown = httpx.get(f"{graph.url}/nosuch/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400
    assert unknown.json()["error_codes"] == [90002]
    good = token(graph)
    assert good.status_code == 200
    assert good.json()["expires_in"] == 3600
    bad = token(graph, secret="wrong")
    assert bad.status_code == 401
    assert bad.json()["error_description"].startswith("AADSTS7000215")
    assert token(graph, client=str(uuid.uuid4())).json()["error_codes"] == [700016]
    assert graph.login_calls == {"discovery": 2, "instance_discovery": 0, "token": 3}


def test_an_expired_certificate_assertion_is_refused(
    graph: GraphEmulator, expired_leaf: trustme.LeafCert
) -> None:
    certificate = x509.load_pem_x509_certificate(expired_leaf.cert_chain_pems[0].bytes())
    key = serialization.load_pem_private_key(expired_leaf.private_key_pem.bytes(), None)
    thumb = base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA256())).decode()
    audience = f"{graph.url}/{TENANT}/oauth2/v2.0/token"
    assertion = jwt.encode(
        {"aud": audience, "iss": CERT_APP, "sub": CERT_APP, "exp": int(time.time()) + 600},
        key,  # type: ignore[arg-type]
        algorithm="PS256",
        headers={"x5t#S256": thumb},
    )
    answer = httpx.post(
        audience,
        data={"client_id": CERT_APP, "grant_type": "client_credentials",
              "scope": f"{graph.url}/.default", "client_assertion": assertion,
              "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
    )  # fmt: skip
    assert answer.status_code == 401
    assert "expired certificate" in answer.json()["error_description"]
    assert answer.json()["error_codes"] == [700027]


def test_users_page_with_top_select_and_next_links(graph: GraphEmulator) -> None:
    graph.set_users(make_graph_users(25))
    with client(graph) as http:
        page = http.get("/v1.0/users", params={"$top": "10", "$select": "id,mail"}).json()
        seen = [u["mail"] for u in page["value"]]
        assert set(page["value"][0]) == {"id", "mail"}
        while "@odata.nextLink" in page:
            page = http.get(page["@odata.nextLink"]).json()
            seen += [u["mail"] for u in page["value"]]
        assert len(seen) == len(set(seen)) == 25
        default = http.get("/v1.0/users").json()["value"][0]
        assert "accountEnabled" not in default
        assert "userPrincipalName" in default
        assert http.get("/v1.0/users", params={"$top": "1000"}).status_code == 400
        assert http.get("/v1.0/users", params={"$select": "nosuch"}).status_code == 400
    assert graph.calls()["list_users"] == 3 + 3


def test_advanced_queries_need_the_header_and_count_on_every_page(graph: GraphEmulator) -> None:
    graph.set_users(make_graph_users(10))
    query = {"$filter": "endswith(mail,'.example')", "$top": "4"}
    with client(graph) as http:
        refused = http.get("/v1.0/users", params=query)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "Request_UnsupportedQuery"
        page = http.get("/v1.0/users", params={**query, "$count": "true"}, headers=EVENTUAL)
        assert page.json()["@odata.count"] == 10
        link = page.json()["@odata.nextLink"]
        assert http.get(link).status_code == 400  # the header is not in the link
        assert len(http.get(link, headers=EVENTUAL).json()["value"]) == 4
        plain = http.get("/v1.0/users", params={"$filter": "department eq 'sales'"}).json()
        assert {u["mail"] for u in plain["value"]} == {
            "user0000001@contoso.example",
            "user0000009@contoso.example",
        }


def test_transitive_members_resolve_nesting_and_cycles(graph: GraphEmulator) -> None:
    graph.set_users(make_graph_users(5))
    a, b, c = object_id(1, 1), object_id(2, 1), object_id(3, 1)
    graph.set_groups({a: [object_id(0), b], b: [object_id(1), c], c: [object_id(2), a]})
    with client(graph) as http:
        cast = http.get(
            f"/v1.0/groups/{a}/transitiveMembers/microsoft.graph.user",
            params={"$count": "true", "$select": "id"},
            headers=EVENTUAL,
        ).json()
        assert sorted(u["id"] for u in cast["value"]) == [object_id(i) for i in range(3)]
        mixed = http.get(f"/v1.0/groups/{a}/transitiveMembers").json()["value"]
        assert sum(1 for m in mixed if m.get("@odata.type") == "#microsoft.graph.group") == 2
        assert http.get(f"/v1.0/groups/{object_id(9, 1)}/transitiveMembers").status_code == 404
    with client(graph, LIMITED) as limited:
        denied = limited.get(f"/v1.0/groups/{a}/transitiveMembers")
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "Authorization_RequestDenied"


def test_permissions_tokens_and_lifecycle_property(graph: GraphEmulator) -> None:
    graph.set_users([make_graph_user(0, employeeLeaveDateTime="2030-01-01T00:00:00Z")])
    assert httpx.get(f"{graph.url}/v1.0/users").status_code == 401
    with client(graph) as http:
        user = http.get("/v1.0/users", params={"$select": "id,employeeLeaveDateTime"}).json()
        assert user["value"][0]["employeeLeaveDateTime"] is None  # no LifeCycleInfo role
        graph.login.revoke_all()
        assert http.get("/v1.0/users").status_code == 401


def test_faults_per_page_and_per_operation(graph: GraphEmulator) -> None:
    graph.set_users(make_graph_users(6))
    graph.fail_page(2, 502, times=1)
    graph.set_faults(GraphOperation.LIST_USERS, EndpointFaults(throttle_next=1, retry_after_s=2))
    with client(graph) as http:
        throttled = http.get("/v1.0/users", params={"$top": "3"})
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "2"
        first = http.get("/v1.0/users", params={"$top": "3"}).json()
        link = first["@odata.nextLink"]
        assert http.get(link).status_code == 502
        assert len(http.get(link).json()["value"]) == 3  # the cursor survived the fault
    stats = httpx.get(
        f"{graph.url}/_emulator/stats",
        headers={"Authorization": f"Bearer {graph._api_key.decode()}"},
    ).json()
    assert stats["calls"]["list_users"] == 4
    assert stats["users"] == 6


def test_a_page_fault_sends_the_retry_after_it_is_given(graph: GraphEmulator) -> None:
    graph.set_users(make_graph_users(2))
    graph.fail_page(1, 429, times=1, retry_after=120)
    with client(graph) as http:
        throttled = http.get("/v1.0/users")
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "120"
        assert http.get("/v1.0/users").status_code == 200


def test_discovery_faults_answer_in_order_then_discovery_works(graph: GraphEmulator) -> None:
    url = f"{graph.url}/{TENANT}/v2.0/.well-known/openid-configuration"
    graph.login.fail_discovery(404)
    graph.login.fail_discovery(429, body=b"{}", content_type="application/json", retry_after=7)
    graph.login.fail_discovery(200, body=b"<html>sign in</html>")
    missing = httpx.get(url)
    assert (missing.status_code, missing.headers["content-type"]) == (404, "text/html")
    throttled = httpx.get(url)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "7")
    page = httpx.get(url)
    assert (page.status_code, page.text) == (200, "<html>sign in</html>")
    assert "token_endpoint" in httpx.get(url).json()
    assert graph.login_calls["discovery"] == 4


def test_next_link_switches_point_elsewhere_or_repeat(graph: GraphEmulator) -> None:
    graph.set_users(make_graph_users(9))
    graph.next_link_base = "https://elsewhere.example:8443"
    with client(graph) as http:
        link = http.get("/v1.0/users", params={"$top": "3"}).json()["@odata.nextLink"]
        assert link.startswith("https://elsewhere.example:8443/v1.0/users?")
        graph.next_link_base = None
        graph.repeat_next_link = True
        first = http.get("/v1.0/users", params={"$top": "3"}).json()["@odata.nextLink"]
        again = http.get(first).json()
        assert again["@odata.nextLink"] == first
        assert http.get(first).json()["@odata.nextLink"] == first


def test_the_cli_serves_an_emulated_tenant_over_https(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    command = [
        sys.executable, "-m", "syncd", "emulator", "graph", "--port", "0", "--users", "7",
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
        "--tenant-id", TENANT, "--client-id", CLIENT, "--client-secret", SECRET,
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    ) as process:  # fmt: skip
        try:
            _list_seven_users(process, ca_file)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode == 0


def _list_seven_users(process: subprocess.Popen[str], ca_file: Path) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(LISTENING_PREFIX), line
    url = line[len(LISTENING_PREFIX) :].strip()
    assert url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(ca_file))
    with httpx.Client(base_url=url, verify=context) as http:
        access = http.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={"client_id": CLIENT, "client_secret": SECRET,
                  "grant_type": "client_credentials", "scope": f"{url}/.default"},
        ).json()["access_token"]  # fmt: skip
        listed = http.get("/v1.0/users", headers={"Authorization": f"Bearer {access}"})
        assert len(listed.json()["value"]) == 7
