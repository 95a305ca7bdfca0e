"""What the Entra tests share: the emulated tenant, its app, and config builders."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509

from syncd.emulator.graph import GraphApp, GraphEmulator
from syncd.emulator.graph_data import make_graph_user
from syncd.sources.entra import EntraSourceConfig
from syncd.sources.entra.source import GRAPH_RETRIES, EntraSource

TENANT = "9c1f2a57-1d3e-4c5b-8a6f-0e2d4b6c8a10"
CLIENT_ID = "2f6c1b3a-8e4d-4f0a-9b7c-5d3e1a2b4c6d"
SECRET = "entra-Test-Secret~7f3k2"
"""The emulated app's client secret (a fake)."""
CERT_CLIENT_ID = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
"""An app that authenticates with the session's certificate."""
LIMITED_CLIENT_ID = "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"
"""An app granted User.Read.All only (no GroupMember.Read.All)."""
UNCONSENTED_CLIENT_ID = "5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c1b"


def entra_config(emulator: GraphEmulator, ca: Path, **overrides: Any) -> EntraSourceConfig:
    """A source config for the emulated tenant, with the client secret, over TLS."""
    data: dict[str, Any] = {
        "type": "entra",
        "name": "corp-entra",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "authority_url": emulator.url,
        "graph_url": emulator.url,
        "ca_file": str(ca),
        "id_attribute": "userPrincipalName",
        "tags": {"department": "department"},
        "active_from_attribute": "employeeHireDate",
    }
    data.update(overrides)
    return EntraSourceConfig.model_validate({k: v for k, v in data.items() if v is not None})


def entra_source(emulator: GraphEmulator, ca: Path, **overrides: Any) -> EntraSource:
    """An (unopened) source over :func:`entra_config`; fast retries for the tests.

    An override set to None drops the key (``ca_file=None``: no CA bundle).
    """
    return EntraSource(entra_config(emulator, ca, **overrides), lowercase=True, retry=FAST)


FAST = type(GRAPH_RETRIES)(max_retries=4, backoff_base_s=0.01, backoff_max_s=0.05,
                           max_retry_after_s=0.5)  # fmt: skip
"""Retries with short waits, so fault tests take milliseconds."""


def users(count: int, start: int = 0, **properties: Any) -> list[dict[str, Any]]:
    """``count`` Graph users from ``start``."""
    return [make_graph_user(index, **properties) for index in range(start, start + count)]


@dataclass
class GraphServer:
    """A started Graph emulator, the CA file that trusts it, and the app certificate."""

    emulator: GraphEmulator
    ca: trustme.CA
    ca_file: Path
    app_certificate_file: Path
    app_certificate: x509.Certificate


def start_graph(directory: Path) -> GraphServer:
    """A Graph emulator over HTTPS on 127.0.0.1 with the test apps; stop() it after use.

    The CA (made with trustme) signs the server certificate and the certificate app's
    RSA certificate; its PEM is written to ``directory/ca.pem``.
    """
    ca = trustme.CA(organization_name="syncd entra tests")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("syncd-app.example", key_type=trustme.KeyType.RSA)
    app_file = directory / "app.pem"
    app_file.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    apps = [
        GraphApp(CLIENT_ID, secret=SECRET),
        GraphApp(CERT_CLIENT_ID, certificates=(certificate,)),
        GraphApp(LIMITED_CLIENT_ID, secret=SECRET, roles=frozenset({"User.Read.All"})),
        GraphApp(UNCONSENTED_CLIENT_ID, secret=SECRET, consented=False),
    ]
    emulator = GraphEmulator(tenant_id=TENANT, apps=apps, ssl_context=context)
    emulator.start()
    return GraphServer(emulator, ca, ca_file, app_file, certificate)
