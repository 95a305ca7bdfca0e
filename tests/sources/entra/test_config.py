"""The ``type: entra`` config model: clouds, credentials, validation (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from syncd.config import masked_config, parse_config
from syncd.errors import ConfigError
from syncd.sources.entra.config import CLOUDS, Cloud, EntraSourceConfig, resolve_endpoints
from tests.sources.entra.support import CLIENT_ID, SECRET, TENANT

BASE: dict[str, Any] = {
    "type": "entra",
    "tenant_id": TENANT,
    "client_id": CLIENT_ID,
    "client_secret": SECRET,
}


def config(**changes: Any) -> EntraSourceConfig:
    data = {**BASE, **changes}
    return EntraSourceConfig.model_validate({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(
    ("cloud", "login", "graph"),
    [
        ("public", "https://login.microsoftonline.com", "https://graph.microsoft.com"),
        ("usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us"),
        ("usgov-dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
        ("china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
    ],
)
def test_a_cloud_sets_both_the_authority_and_the_graph_host(
    cloud: str, login: str, graph: str
) -> None:
    endpoints = config(cloud=cloud).endpoints()
    assert endpoints.authority == f"{login}/{TENANT}"
    assert endpoints.graph == graph
    assert endpoints.scope == f"{graph}/.default"
    assert endpoints.custom_authority is False


def test_overrides_replace_one_host_each() -> None:
    endpoints = resolve_endpoints(Cloud.USGOV, "t", "https://login.example/", None)
    assert endpoints.authority == "https://login.example/t"
    assert endpoints.graph == CLOUDS[Cloud.USGOV].graph
    assert endpoints.custom_authority is True
    graph_only = config(graph_url="https://127.0.0.1:8443").endpoints()
    assert graph_only.graph == "https://127.0.0.1:8443"
    assert graph_only.scope == "https://127.0.0.1:8443/.default"
    assert graph_only.authority.startswith("https://login.microsoftonline.com/")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"client_secret": None}, "set exactly one of"),
        ({"certificate": {"path": "x.pem"}}, "got client_secret, certificate"),
        ({"client_id": "not-a-guid"}, "not an object id"),
        ({"groups": ["cn=x"]}, "not an object id"),
        ({"tenant_id": "a/b"}, "tenant_id"),
        ({"graph_url": "http://graph.example"}, "must be an https:// URL"),
        ({"authority_url": "https://login.example/tenant"}, "without a path"),
        ({"tags": {"dept": "department eq 'x'"}}, "not a Graph user property"),
        ({"page_size": 1000}, "less than or equal to 999"),
        ({"id_attribute": "mail,id"}, "not a Graph user property"),
        ({"nosuch": 1}, "Extra inputs are not permitted"),
        (
            {"tags": {"cc": "onPremisesExtensionAttributes"}},
            r"tag 'cc': 'onPremisesExtensionAttributes' is an object.*"
            r"'onPremisesExtensionAttributes\.extensionAttribute1'",
        ),
        ({"id_attribute": "identities"}, "is an object, not a value: it is a list of objects"),
        ({"tags": {"cc": "employeeOrgData..costCenter"}}, "not a Graph user property"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**changes)


def test_a_dotted_path_into_an_object_property_is_accepted() -> None:
    loaded = config(tags={"cc": "onPremisesExtensionAttributes.extensionAttribute1"})
    assert loaded.tags == {"cc": "onPremisesExtensionAttributes.extensionAttribute1"}


def test_client_secret_expires_is_for_secrets_only(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="client_secret_expires is for a client secret"):
        config(
            client_secret=None, certificate={"path": "a.pem"}, client_secret_expires="2030-01-01"
        )


def test_defaults() -> None:
    loaded = config()
    assert loaded.cloud is Cloud.PUBLIC
    assert loaded.id_attribute == "userPrincipalName"
    assert loaded.active_from_attribute == "employeeHireDate"
    assert (loaded.page_size, loaded.timeout_s, loaded.include_guests) == (999, 30.0, False)
    assert loaded.label == f"entra:{TENANT}"


# ------------------------------------------------------------------ certificates


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _pem(ca: trustme.CA, directory: Path, *, passphrase: bytes | None = None) -> Path:
    leaf = ca.issue_cert("app.example", key_type=trustme.KeyType.RSA)
    key_pem = leaf.private_key_pem.bytes()
    if passphrase is not None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    path = directory / "app.pem"
    path.write_bytes(leaf.cert_chain_pems[0].bytes() + key_pem)
    return path


def test_a_pem_certificate_is_read_at_load_with_its_expiry(ca: trustme.CA, tmp_path: Path) -> None:
    loaded = config(client_secret=None, certificate={"path": str(_pem(ca, tmp_path))})
    credential = loaded.credential()
    assert credential.kind == "certificate"
    assert credential.expires_at is not None
    assert credential.expires_at > datetime.now(UTC) + timedelta(days=300)
    assert "PRIVATE KEY" not in repr(credential)


def test_an_encrypted_key_needs_its_passphrase(ca: trustme.CA, tmp_path: Path) -> None:
    path = _pem(ca, tmp_path, passphrase=b"Right-Pass-1")
    with pytest.raises(ConfigError, match="needs a passphrase"):
        config(client_secret=None, certificate={"path": str(path)}).check_secrets()
    with pytest.raises(ConfigError, match="wrong passphrase"):
        config(
            client_secret=None, certificate={"path": str(path), "passphrase": "Wrong-Pass-2"}
        ).check_secrets()
    ok = config(client_secret=None, certificate={"path": str(path), "passphrase": "Right-Pass-1"})
    ok.check_secrets()
    assert "Right-Pass-1" not in repr(ok) + repr(ok.credential())


def test_a_key_of_another_certificate_is_refused(ca: trustme.CA, tmp_path: Path) -> None:
    one = ca.issue_cert("a.example", key_type=trustme.KeyType.RSA)
    other = ca.issue_cert("b.example", key_type=trustme.KeyType.RSA)
    path = tmp_path / "mixed.pem"
    path.write_bytes(one.cert_chain_pems[0].bytes() + other.private_key_pem.bytes())
    with pytest.raises(ConfigError, match="belongs to none of its certificates"):
        config(client_secret=None, certificate={"path": str(path)}).check_secrets()


def test_missing_files_fail_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read certificate file"):
        config(client_secret=None, certificate={"path": str(tmp_path / "no.pem")}).check_secrets()
    with pytest.raises(ConfigError, match="cannot read secret file"):
        config(client_secret=None, client_secret_file=str(tmp_path / "no")).check_secrets()
    with pytest.raises(ConfigError, match="cannot read ca_file"):
        config(ca_file=str(tmp_path / "no-ca.pem")).check_secrets()


def test_the_config_file_masks_the_secret_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    text = f"""\
jobs:
  - name: j
    target: {{base_url: "http://127.0.0.1:9", api_key: k}}
    sources:
      - {{type: entra, tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_secret_file: secret}}
      - {{type: entra, name: b, tenant_id: {TENANT}, client_id: {CLIENT_ID},
         client_secret: {SECRET}}}
"""
    loaded = parse_config(text, origin="t.yaml", base_dir=tmp_path)
    first = loaded.jobs[0].sources[0]
    assert isinstance(first, EntraSourceConfig)
    assert first.client_secret_file == tmp_path / "secret"
    assert first.credential().for_msal() == SECRET
    assert SECRET not in repr(masked_config(loaded)) + repr(loaded)
