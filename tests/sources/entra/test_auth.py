"""Tokens through the real MSAL against the emulated login: credentials, tenants, TLS."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from syncd.emulator.graph import GraphApp, GraphEmulator
from syncd.errors import SourceError, SourceUnavailableError
from syncd.model import SourceUser
from syncd.sources.entra.auth import describe_token_error
from syncd.sources.entra.source import EntraSource
from tests.sources.entra.support import (
    CERT_CLIENT_ID,
    CLIENT_ID,
    SECRET,
    UNCONSENTED_CLIENT_ID,
    GraphServer,
    entra_config,
    entra_source,
    users,
)


def read_all(source: EntraSource) -> list[object]:
    with source as opened:
        return list(opened.read())


def test_a_wrong_secret_names_the_code_the_tenant_and_the_fix(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    source = entra_source(graph, graph_ca_file, client_secret="not-the-secret")
    with pytest.raises(SourceError) as caught:
        read_all(source)
    message = str(caught.value)
    assert "AADSTS7000215" in message
    assert graph.login.tenant_id in message
    assert "Certificates & secrets" in message
    assert "not-the-secret" not in message
    assert "Traceback" not in message
    assert "\n" not in message
    # No library exception chained: nothing of MSAL's or requests' reaches a traceback.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_an_unknown_tenant_is_a_source_error_not_a_value_error(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    source = entra_source(graph, graph_ca_file, tenant_id="contoso-typo.onmicrosoft.com")
    with pytest.raises(SourceError) as caught:
        read_all(source)
    message = str(caught.value)
    assert "AADSTS90002" in message
    assert "contoso-typo.onmicrosoft.com" in message
    assert "check tenant_id" in message
    assert graph.login_calls["token"] == 0


def test_missing_admin_consent_says_what_to_grant(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    source = entra_source(graph, graph_ca_file, client_id=UNCONSENTED_CLIENT_ID)
    with pytest.raises(SourceError, match=r"AADSTS65001.*admin consent.*User\.Read\.All"):
        read_all(source)


def test_a_pem_certificate_gets_a_token(graph_tls: GraphServer, graph: GraphEmulator) -> None:
    graph.set_users(users(2))
    source = entra_source(
        graph,
        graph_tls.ca_file,
        client_id=CERT_CLIENT_ID,
        client_secret=None,
        certificate={"path": str(graph_tls.app_certificate_file)},
    )
    assert len(read_all(source)) == 2
    assert source.credential_expiry() == graph_tls.app_certificate.not_valid_after_utc


def test_an_encrypted_pfx_certificate_gets_a_token(
    graph_tls: GraphServer, graph: GraphEmulator, tmp_path: Path
) -> None:
    graph.set_users(users(2))
    pem = graph_tls.app_certificate_file.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    pfx = pkcs12.serialize_key_and_certificates(
        b"app",
        key,  # type: ignore[arg-type]
        graph_tls.app_certificate,
        None,
        serialization.BestAvailableEncryption(b"pfx-Pass-42"),
    )
    path = tmp_path / "app.pfx"
    path.write_bytes(pfx)
    source = entra_source(
        graph,
        graph_tls.ca_file,
        client_id=CERT_CLIENT_ID,
        client_secret=None,
        certificate={"path": str(path), "passphrase": "pfx-Pass-42"},
    )
    assert len(read_all(source)) == 2
    assert "pfx-Pass-42" not in repr(source)


def _leaf_file(ca: trustme.CA, directory: Path, *, not_after: datetime) -> Path:
    leaf = ca.issue_cert(
        "syncd-app.example",
        key_type=trustme.KeyType.RSA,
        not_before=not_after - timedelta(days=365),
        not_after=not_after,
    )
    path = directory / "leaf.pem"
    path.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    return path


def test_an_expired_certificate_fails_the_read_without_asking_for_a_token(
    graph_tls: GraphServer, graph: GraphEmulator, tmp_path: Path
) -> None:
    path = _leaf_file(graph_tls.ca, tmp_path, not_after=datetime.now(UTC) - timedelta(days=2))
    source = entra_source(
        graph,
        graph_tls.ca_file,
        client_id=CERT_CLIENT_ID,
        client_secret=None,
        certificate={"path": str(path)},
    )
    with pytest.raises(SourceError, match=r"certificate \(thumbprint [0-9A-F]{40}\) expired on"):
        read_all(source)
    assert graph.login_calls["token"] == 0


def test_a_certificate_close_to_expiry_warns_on_every_run(
    graph_tls: GraphServer, graph: GraphEmulator, tmp_path: Path
) -> None:
    expires = datetime.now(UTC) + timedelta(days=10, hours=1)
    path = _leaf_file(graph_tls.ca, tmp_path, not_after=expires)
    certificate = _certificate_of(path)
    graph.login.apps[CERT_CLIENT_ID] = GraphApp(CERT_CLIENT_ID, certificates=(certificate,))
    graph.set_users(users(1))
    source = entra_source(
        graph,
        graph_tls.ca_file,
        client_id=CERT_CLIENT_ID,
        client_secret=None,
        certificate={"path": str(path)},
    )
    try:
        with structlog.testing.capture_logs() as logs, source:
            for _ in range(2):
                assert len(list(source.read())) == 1
    finally:
        graph.login.apps[CERT_CLIENT_ID] = GraphApp(
            CERT_CLIENT_ID, certificates=(graph_tls.app_certificate,)
        )
    warnings = [entry for entry in logs if entry["event"] == "entra.credential_expiry"]
    assert len(warnings) == 2
    assert "in 10 days" in warnings[0]["detail"]
    assert any("in 10 days" in message for message in source.diagnostics())


def _certificate_of(path: Path) -> object:
    from cryptography import x509

    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_a_secret_expiry_date_within_30_days_is_a_diagnostic(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    soon = (datetime.now(UTC) + timedelta(days=20)).date()
    source = entra_source(graph, graph_ca_file, client_secret_expires=soon.isoformat())
    (message,) = source.diagnostics()
    assert message.startswith(f"the client secret expires on {soon.isoformat()}")
    later = entra_source(graph, graph_ca_file, client_secret_expires="2099-01-01")
    assert later.diagnostics() == []


# ----------------------------------------------------------------------- TLS


def test_ca_file_wins_over_the_ca_variables_of_the_environment(
    graph: GraphEmulator, graph_ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, str(other))
    graph.set_users(users(2))
    assert len(read_all(entra_source(graph, graph_ca_file))) == 2


def test_ca_file_is_added_to_the_system_cas_not_instead_of_them(
    graph: GraphEmulator, graph_ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "system" store (OpenSSL's default, SSL_CERT_FILE) trusts the emulator; ca_file
    # holds an unrelated CA (a proxy's). Login and Graph must both still verify.
    proxy_ca = tmp_path / "proxy-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(proxy_ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(graph_ca_file))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    graph.set_users(users(2))
    assert len(read_all(entra_source(graph, proxy_ca))) == 2


def test_requests_ca_variables_cannot_add_trust_when_ca_file_is_set(
    graph: GraphEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graph_ca_file: Path
) -> None:
    # The variables name the emulator's CA, ca_file and the system store do not: the
    # login must refuse the certificate (requests must not load the variable's bundle).
    proxy_ca = tmp_path / "proxy-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(proxy_ca))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(graph_ca_file))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(SourceUnavailableError, match="TLS certificate verification failed"):
        read_all(entra_source(graph, proxy_ca))
    assert graph.login_calls["discovery"] == 0


def test_without_ca_file_the_emulators_certificate_is_refused(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    source = entra_source(graph, graph_ca_file, ca_file=None)
    with pytest.raises(SourceUnavailableError, match="TLS certificate verification failed"):
        read_all(source)


def test_a_custom_authority_never_asks_microsofts_instance_discovery(
    graph: GraphEmulator, graph_ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every host but 127.0.0.1 goes through a proxy that does not exist: a request to
    # login.microsoftonline.com (instance discovery) would fail the read.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{dead}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    graph.set_users(users(2))
    found = read_all(entra_source(graph, graph_ca_file))
    assert all(isinstance(item, SourceUser) for item in found)
    assert len(found) == 2
    assert graph.login_calls["instance_discovery"] == 0


def test_token_error_descriptions_cover_codes_without_error_codes() -> None:
    text = describe_token_error(
        {"error": "invalid_client", "error_description": "AADSTS7000222: The secret expired.\r\n"},
        tenant="t1",
        client_id=CLIENT_ID,
    )
    assert text.startswith(f"Entra token request for app {CLIENT_ID} in tenant t1 failed")
    assert "AADSTS7000222" in text
    assert "create a new one" in text
    assert SECRET not in text


def test_config_expiry_is_read_at_load(graph: GraphEmulator, graph_ca_file: Path) -> None:
    config = entra_config(graph, graph_ca_file, client_secret_expires="2030-05-01")
    assert config.credential().expires_at == datetime(2030, 5, 1, tzinfo=UTC)


def test_a_login_service_outage_is_transient_and_the_next_read_works(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(2))
    with entra_source(graph, graph_ca_file) as source:
        graph.login.fail_discovery_next = 1  # an HTML 503 page instead of the JSON
        with pytest.raises(SourceUnavailableError, match="tenant discovery"):
            list(source.read())
        assert len(list(source.read())) == 2  # the app is built on the next read
    with entra_source(graph, graph_ca_file) as source:
        graph.login.fail_token_next = 1
        with pytest.raises(SourceUnavailableError, match="token request"):
            list(source.read())


# ----------------------------------------------------------- tenant discovery


def test_a_404_on_discovery_names_the_status_and_url_not_the_tenant(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.login.fail_discovery(404)  # a wrong authority_url: some other web server
    with pytest.raises(SourceError) as caught:
        read_all(entra_source(graph, graph_ca_file))
    message = str(caught.value)
    assert not isinstance(caught.value, SourceUnavailableError)
    assert "HTTP 404" in message
    assert f"{graph.url}/{graph.login.tenant_id}/v2.0/.well-known/openid-configuration" in message
    assert "check authority_url" in message
    assert "AADSTS90002" not in message
    assert "check tenant_id" not in message


def test_a_429_on_discovery_is_transient_and_the_next_read_works(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(1))
    graph.login.fail_discovery(429, body=b'{"error": "throttled"}', retry_after=30)
    with entra_source(graph, graph_ca_file) as source:
        started = time.monotonic()
        with pytest.raises(SourceUnavailableError, match=r"HTTP 429.*the next run retries") as hit:
            list(source.read())
        assert time.monotonic() - started < 5  # the Retry-After is not slept out in the run
        assert "AADSTS90002" not in str(hit.value)
        assert len(list(source.read())) == 1


def test_an_html_page_answered_200_on_discovery_is_transient(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.login.fail_discovery(200, body=b"<html><form>Proxy sign-in</form></html>")
    with pytest.raises(SourceUnavailableError) as caught:
        read_all(entra_source(graph, graph_ca_file))
    message = str(caught.value)
    assert "not JSON" in message
    assert "/v2.0/.well-known/openid-configuration" in message
    assert "AADSTS90002" not in message


def test_a_proxy_407_on_discovery_says_so(graph: GraphEmulator, graph_ca_file: Path) -> None:
    graph.login.fail_discovery(407)
    with pytest.raises(SourceError, match=r"HTTP 407.*proxy wants credentials") as caught:
        read_all(entra_source(graph, graph_ca_file))
    assert "check tenant_id" not in str(caught.value)


def test_an_invalid_tenant_answer_without_a_code_is_still_an_unknown_tenant(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.login.fail_discovery(
        400, body=b'{"error": "invalid_tenant"}', content_type="application/json"
    )
    with pytest.raises(SourceError, match=r"AADSTS90002.*check tenant_id"):
        read_all(entra_source(graph, graph_ca_file))
