"""The ``type: entra`` config model, the national-cloud table and the credentials.

A cloud sets both hosts a source talks to: the login authority (tokens) and Microsoft
Graph (users and groups). ``authority_url`` / ``graph_url`` override one of them for
a private cloud or a test emulator. Credentials are read and checked at load: a
missing secret file, an unreadable certificate or a wrong passphrase is a
:class:`~syncd.errors.ConfigError` (exit 2), and the expiry of a certificate
(``notAfter``) or of a secret (``client_secret_expires``) is known before any run.
"""

from __future__ import annotations

import re
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from syncd.config_base import FrozenModel, SourceConfigBase, read_secret_file, resolve_secret
from syncd.errors import ConfigError

# A Graph property name as $select takes it: an identifier, or an extension property
# (extension_<appid>_<name>), which is one too; a field of an object-valued property
# is reached by a dotted path (onPremisesExtensionAttributes.extensionAttribute1).
_PROPERTY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*$")

COMPLEX_PROPERTIES: dict[str, str] = {
    "onPremisesExtensionAttributes": "onPremisesExtensionAttributes.extensionAttribute1",
    "employeeOrgData": "employeeOrgData.costCenter",
    "signInActivity": "signInActivity.lastSignInDateTime",
    "passwordProfile": "",
    "identities": "",
    "assignedLicenses": "",
    "assignedPlans": "",
    "provisionedPlans": "",
    "licenseAssignmentStates": "",
    "authorizationInfo": "",
    "customSecurityAttributes": "",
    "onPremisesProvisioningErrors": "",
    "serviceProvisioningErrors": "",
    "mailboxSettings": "",
}
"""User properties whose value is an object or a list of objects, never a text: one
of them mapped whole is a configuration error. The value is a dotted path to suggest
("" when the property holds a list of objects, which has no single field to map)."""


def check_property(value: str, what: str) -> str:
    """``value`` if it names a Graph user property or a dotted path into one.

    ValueError (pydantic reports it as the config's error) for a name Graph does not
    take, or for an object-valued property mapped whole.
    """
    if not _PROPERTY.fullmatch(value):
        raise ValueError(f"{what}: {value!r} is not a Graph user property name")
    if value in COMPLEX_PROPERTIES:
        example = COMPLEX_PROPERTIES[value]
        advice = (
            f"map one of its fields with a dotted path, e.g. {example!r}"
            if example
            else "it is a list of objects and cannot be mapped to a text"
        )
        raise ValueError(f"{what}: {value!r} is an object, not a value: {advice}")
    return value


class Cloud(StrEnum):
    """A Microsoft cloud: where its login authority and its Graph live."""

    PUBLIC = "public"
    USGOV = "usgov"
    USGOV_DOD = "usgov-dod"
    CHINA = "china"


@dataclass(frozen=True, slots=True)
class CloudHosts:
    """The two base URLs of a cloud."""

    authority: str
    graph: str


CLOUDS: dict[Cloud, CloudHosts] = {
    Cloud.PUBLIC: CloudHosts("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    Cloud.USGOV: CloudHosts("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    Cloud.USGOV_DOD: CloudHosts(
        "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"
    ),
    Cloud.CHINA: CloudHosts(
        "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"
    ),
}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where one source gets its tokens and reads Graph (no trailing slashes)."""

    authority: str
    """``{login host}/{tenant_id}``: MSAL's ``authority``."""
    graph: str
    """The Graph base; calls go to ``{graph}/v1.0/...``."""
    scope: str
    """``{graph}/.default``: every application permission granted to the app."""
    custom_authority: bool
    """True when ``authority_url`` is set: MSAL must not validate it with Microsoft."""


def resolve_endpoints(
    cloud: Cloud, tenant_id: str, authority_url: str | None, graph_url: str | None
) -> Endpoints:
    """The authority, Graph base and scope for a cloud and its overrides (pure)."""
    hosts = CLOUDS[cloud]
    login = (authority_url or hosts.authority).rstrip("/")
    graph = (graph_url or hosts.graph).rstrip("/")
    return Endpoints(
        authority=f"{login}/{tenant_id}",
        graph=graph,
        scope=f"{graph}/.default",
        custom_authority=authority_url is not None,
    )


class CertificateConfig(FrozenModel):
    """A certificate credential: a PEM file holding the key and the certificate, or a PFX."""

    path: Path
    passphrase: SecretStr | None = None
    passphrase_file: Path | None = None

    @model_validator(mode="after")
    def _one_passphrase(self) -> CertificateConfig:
        if self.passphrase is not None and self.passphrase_file is not None:
            raise ValueError("set at most one of 'passphrase' or 'passphrase_file'")
        return self

    def passphrase_value(self) -> SecretStr | None:
        """The passphrase (read from ``passphrase_file`` if given), or None."""
        if self.passphrase is None and self.passphrase_file is None:
            return None
        return resolve_secret(self.passphrase, self.passphrase_file)


class Credential:
    """What a source authenticates with: a client secret or a certificate.

    Holds secrets, so its ``repr`` shows the kind and expiry only; :meth:`for_msal` is
    the one place the values leave it, into MSAL's constructor.
    """

    __slots__ = ("_msal", "expires_at", "kind", "thumbprint")

    def __init__(
        self,
        kind: Literal["secret", "certificate"],
        msal_credential: str | dict[str, Any],
        *,
        expires_at: datetime | None,
        thumbprint: str | None = None,
    ) -> None:
        self.kind = kind
        self._msal = msal_credential
        self.expires_at = expires_at
        """When the credential stops working (certificate notAfter, secret expiry)."""
        self.thumbprint = thumbprint
        """The certificate's SHA-1 thumbprint as the Entra portal shows it, for messages."""

    def for_msal(self) -> str | dict[str, Any]:
        """The ``client_credential`` argument of MSAL's ConfidentialClientApplication."""
        return self._msal

    def __repr__(self) -> str:
        expiry = self.expires_at.isoformat() if self.expires_at else None
        return f"Credential({self.kind}, expires_at={expiry!r})"


def trusted_context(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context trusting the system's CAs **and** those of ``ca_file``.

    The system's are OpenSSL's defaults (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` choose
    them, as for any OpenSSL program); ``ca_file`` is added to them, never instead of
    them. Verification and hostname checks are on. ConfigError naming the file when it
    cannot be read or holds no PEM certificate.
    """
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except OSError as error:
        raise ConfigError(f"cannot read ca_file {ca_file}: {error.strerror or error}") from None
    except ssl.SSLError:
        raise ConfigError(f"ca_file {ca_file}: no PEM certificate in it") from None
    return context


def _check_guid(value: str, what: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an object id (a GUID)") from None
    return value.lower()


def _check_https(value: str | None, key: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{key} {value!r} must be an https:// URL (TLS is never off)")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"{key} {value!r} must be a bare https://host[:port] without a path")
    return value.rstrip("/")


class EntraSourceConfig(SourceConfigBase):
    """Microsoft Entra ID (Azure AD) users read through Microsoft Graph."""

    type: Literal["entra"]
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    client_secret_expires: date | None = None
    certificate: CertificateConfig | None = None
    cloud: Cloud = Cloud.PUBLIC
    authority_url: str | None = None
    graph_url: str | None = None
    ca_file: Path | None = None
    id_attribute: str = "userPrincipalName"
    groups: tuple[str, ...] = ()
    filter: str | None = Field(default=None, min_length=1)
    include_guests: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    active_from_attribute: str | None = "employeeHireDate"
    active_to_attribute: str | None = None
    page_size: int = Field(default=999, ge=1, le=999)
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("tenant_id")
    @classmethod
    def _check_tenant(cls, value: str) -> str:
        # A GUID or a verified domain (contoso.onmicrosoft.com); it becomes a URL path part.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", value):
            raise ValueError(f"tenant_id {value!r} must be the tenant's GUID or its domain")
        return value

    @field_validator("client_id")
    @classmethod
    def _check_client(cls, value: str) -> str:
        return _check_guid(value, "client_id")

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_check_guid(group, "group") for group in value))

    @field_validator("authority_url")
    @classmethod
    def _check_authority(cls, value: str | None) -> str | None:
        return _check_https(value, "authority_url")

    @field_validator("graph_url")
    @classmethod
    def _check_graph(cls, value: str | None) -> str | None:
        return _check_https(value, "graph_url")

    @field_validator("id_attribute", "active_from_attribute", "active_to_attribute")
    @classmethod
    def _check_property(cls, value: str | None) -> str | None:
        return None if value is None else check_property(value, "property")

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for tag, prop in value.items():
            if not tag.strip():
                raise ValueError("tag names must not be empty")
            check_property(prop, f"tag {tag!r}")
        return value

    @model_validator(mode="after")
    def _check_credential_choice(self) -> EntraSourceConfig:
        given = [
            key
            for key, value in (
                ("client_secret", self.client_secret),
                ("client_secret_file", self.client_secret_file),
                ("certificate", self.certificate),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of 'client_secret', 'client_secret_file' or 'certificate'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.client_secret_expires is not None and self.certificate is not None:
            raise ValueError(
                "client_secret_expires is for a client secret; a certificate's expiry is read "
                "from the certificate"
            )
        return self

    @property
    def label(self) -> str:
        """How messages name this source: its ``name``, else ``entra:<tenant>``."""
        return self.name or f"entra:{self.tenant_id}"

    def endpoints(self) -> Endpoints:
        """The authority, Graph base and scope of this source."""
        return resolve_endpoints(self.cloud, self.tenant_id, self.authority_url, self.graph_url)

    def credential(self) -> Credential:
        """The secret or certificate, read and checked (ConfigError naming the file)."""
        if self.certificate is not None:
            # cryptography is loaded only for a source that has a certificate.
            from syncd.sources.entra.certificates import load_certificate  # noqa: PLC0415

            return load_certificate(self.certificate)
        if self.client_secret is not None:
            secret = self.client_secret
        else:
            assert self.client_secret_file is not None  # the validator saw exactly one
            secret = read_secret_file(self.client_secret_file, token=True)
        expires = None
        if self.client_secret_expires is not None:
            # A secret stops working at the start of its "expires" day, in UTC.
            expires = datetime.combine(self.client_secret_expires, time(0, 0), tzinfo=UTC)
        return Credential("secret", secret.get_secret_value(), expires_at=expires)

    def check_secrets(self) -> None:
        """Read the secret file, the certificate and ``ca_file`` now: a bad one fails at load."""
        self.credential()
        if self.ca_file is not None:
            trusted_context(self.ca_file)
