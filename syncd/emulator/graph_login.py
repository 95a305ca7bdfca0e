"""The login half of the Graph emulator: tenant discovery and the token endpoint.

Answers what MSAL asks of ``https://HOST:PORT/{tenant}``: the OpenID configuration
(``/{tenant}/v2.0/.well-known/openid-configuration``), the client-credentials grant
(``POST /{tenant}/oauth2/v2.0/token``) with a client secret or a certificate's signed
assertion, and Microsoft's instance discovery (``/common/discovery/instance``), which
is only counted: a client with a custom authority must never call it. Errors have
Entra's shape: ``error``, ``error_description`` starting with the AADSTS code, and
``error_codes``.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from syncd.emulator.server import Request, Response, json_response

__all__ = ["DEFAULT_ROLES", "Grant", "GraphApp", "LoginService"]

DEFAULT_ROLES = frozenset({"User.Read.All", "GroupMember.Read.All"})
"""The application permissions an emulated app has unless told otherwise."""

_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class GraphApp:
    """An app registration: its credentials and the permissions granted to it."""

    client_id: str
    secret: str | None = None
    certificates: tuple[x509.Certificate, ...] = ()
    roles: frozenset[str] = DEFAULT_ROLES
    consented: bool = True
    """False: the token endpoint answers AADSTS65001 (no admin consent)."""

    def __repr__(self) -> str:
        return f"GraphApp({self.client_id!r}, roles={sorted(self.roles)!r})"


@dataclass(frozen=True, slots=True)
class Grant:
    """An issued access token's app, permissions and expiry (monotonic seconds)."""

    client_id: str
    roles: frozenset[str]
    expires: float


@dataclass
class LoginService:
    """Tenant discovery and tokens for one tenant; thread-safe."""

    tenant_id: str
    apps: dict[str, GraphApp]
    token_lifetime_s: int = 3600
    domains: tuple[str, ...] = ()
    calls: dict[str, int] = field(
        default_factory=lambda: {"discovery": 0, "instance_discovery": 0, "token": 0}
    )
    fail_discovery_next: int = 0
    """The next N tenant discoveries answer 503 with an HTML page (a proxy's)."""
    fail_token_next: int = 0
    """The next N token requests answer 503 with an HTML page."""
    _discovery_faults: list[Response] = field(default_factory=list)
    _tokens: dict[str, Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handles(self, path: str) -> bool:
        """True for the login paths (answered without a bearer token)."""
        parts = path.strip("/").split("/")
        if parts[:3] == ["common", "discovery", "instance"]:
            return True
        return parts[1:] in (["v2.0", ".well-known", "openid-configuration"],
                             ["oauth2", "v2.0", "token"]) if len(parts) > 1 else False  # fmt: skip

    def answer(self, request: Request, base_url: str) -> Response:
        """Answer one login request."""
        parts = request.path.strip("/").split("/")
        if parts[0] == "common" and parts[1:3] == ["discovery", "instance"]:
            self._count("instance_discovery")
            return json_response(400, _aad_error("invalid_instance", 50049, "Unknown authority"))
        if parts[1] == "v2.0" and (fault := self._take_discovery_fault()) is not None:
            self._count("discovery")
            return fault
        if self._take_fault(discovery=parts[1] == "v2.0"):
            self._count("discovery" if parts[1] == "v2.0" else "token")
            return Response(503, b"<html>Service Unavailable</html>", content_type="text/html")
        tenant = parts[0]
        if parts[1] == "v2.0":
            self._count("discovery")
            if request.method != "GET":
                return json_response(405, {"error": "method not allowed"})
            if not self._known_tenant(tenant):
                return json_response(400, _unknown_tenant(tenant))
            prefix = f"{base_url}/{tenant}"
            return json_response(
                200,
                {
                    "token_endpoint": f"{prefix}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{prefix}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{prefix}/oauth2/v2.0/devicecode",
                    "issuer": f"{base_url}/{self.tenant_id}/v2.0",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post", "private_key_jwt", "client_secret_basic",
                    ],
                },
            )  # fmt: skip
        self._count("token")
        if request.method != "POST":
            return json_response(405, {"error": "method not allowed"})
        if not self._known_tenant(tenant):
            return json_response(400, _unknown_tenant(tenant))
        return self._token(request, f"{base_url}/{tenant}/oauth2/v2.0/token")

    def grant(self, token: str) -> Grant | None:
        """The live grant of an access token, or None (unknown or expired)."""
        with self._lock:
            found = self._tokens.get(token)
        if found is None or found.expires <= time.monotonic():
            return None
        return found

    def revoke_all(self) -> None:
        """Invalidate every issued token (a client then gets 401 and must get a new one)."""
        with self._lock:
            self._tokens.clear()

    def fail_discovery(
        self,
        status: int,
        *,
        body: bytes = b"<html><body>Not here</body></html>",
        content_type: str = "text/html",
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` tenant discoveries answer ``status`` with ``body`` (a wrong
        authority's 404, a proxy's 407 or sign-in page, a 429 with ``Retry-After``)."""
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        with self._lock:
            self._discovery_faults.extend(
                Response(status, body, headers, content_type=content_type) for _ in range(times)
            )

    def clear_discovery_faults(self) -> None:
        """Forget the faults :meth:`fail_discovery` set (and ``fail_*_next``)."""
        with self._lock:
            self._discovery_faults.clear()
            self.fail_discovery_next = self.fail_token_next = 0

    def _take_discovery_fault(self) -> Response | None:
        with self._lock:
            return self._discovery_faults.pop(0) if self._discovery_faults else None

    def _take_fault(self, *, discovery: bool) -> bool:
        with self._lock:
            if discovery and self.fail_discovery_next > 0:
                self.fail_discovery_next -= 1
                return True
            if not discovery and self.fail_token_next > 0:
                self.fail_token_next -= 1
                return True
            return False

    def counts(self) -> dict[str, int]:
        """A copy of the login call counters."""
        with self._lock:
            return dict(self.calls)

    def reset_counters(self) -> None:
        """Set the login call counters to zero."""
        with self._lock:
            for key in self.calls:
                self.calls[key] = 0

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() in {self.tenant_id.lower(), *(d.lower() for d in self.domains)}

    def _token(self, request: Request, audience: str) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        app = self.apps.get(form.get("client_id", "").lower())
        if app is None:
            return json_response(
                400,
                _aad_error(
                    "unauthorized_client", 700016,
                    f"Application with identifier '{form.get('client_id')}' was not found in "
                    f"the directory '{self.tenant_id}'.",
                ),
            )  # fmt: skip
        if form.get("grant_type") != "client_credentials":
            return json_response(400, _aad_error("unsupported_grant_type", 70003, "grant_type"))
        if not form.get("scope", "").endswith("/.default"):
            return json_response(400, _aad_error("invalid_scope", 1002012, "scope"))
        refused = self._check_credential(app, form, audience)
        if refused is not None:
            return refused
        if not app.consented:
            return json_response(
                400,
                _aad_error(
                    "invalid_grant", 65001,
                    "The user or administrator has not consented to use the application.",
                ),
            )  # fmt: skip
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            # Expired grants go as new ones come: the table stays small in a long run.
            self._tokens = {k: g for k, g in self._tokens.items() if g.expires > now}
            self._tokens[token] = Grant(app.client_id, app.roles, now + self.token_lifetime_s)
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_s,
                "ext_expires_in": self.token_lifetime_s,
                "access_token": token,
            },
        )

    def _check_credential(
        self, app: GraphApp, form: Mapping[str, str], audience: str
    ) -> Response | None:
        secret = form.get("client_secret")
        if secret is not None:
            if app.secret is not None and hmac.compare_digest(secret.encode(), app.secret.encode()):
                return None
            return json_response(
                401,
                _aad_error(
                    "invalid_client", 7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the "
                    f"request is the client secret value, not the client secret ID, for a "
                    f"secret added to app '{app.client_id}'.",
                ),
            )  # fmt: skip
        assertion = form.get("client_assertion")
        if assertion is None or form.get("client_assertion_type") != _ASSERTION_TYPE:
            return json_response(
                401, _aad_error("invalid_client", 7000216, "client_assertion or secret required")
            )
        return self._check_assertion(app, assertion, audience)

    def _check_assertion(self, app: GraphApp, assertion: str, audience: str) -> Response | None:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return json_response(401, _aad_error("invalid_client", 50027, "Invalid JWT token."))
        certificate = _find_certificate(app.certificates, header)
        if certificate is None:
            return json_response(
                401,
                _aad_error(
                    "invalid_client", 700027,
                    "Client assertion failed signature validation: the key was not found "
                    f"among the certificates of app '{app.client_id}'.",
                ),
            )  # fmt: skip
        if certificate.not_valid_after_utc <= datetime.now(UTC):
            return json_response(
                401,
                _aad_error(
                    "invalid_client", 700027,
                    f"Client assertion contains an expired certificate "
                    f"(expired {certificate.not_valid_after_utc:%Y-%m-%d}).",
                ),
            )  # fmt: skip
        try:
            jwt.decode(
                assertion,
                key=certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=audience,
                issuer=app.client_id,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.PyJWTError as error:
            return json_response(
                401, _aad_error("invalid_client", 700027, f"Client assertion invalid: {error}")
            )
        return None


def _find_certificate(
    certificates: Iterable[x509.Certificate], header: Mapping[str, object]
) -> x509.Certificate | None:
    # Compared without padding: MSAL sends it, RFC 7515 says base64url without it.
    wanted_256 = str(header.get("x5t#S256") or "").rstrip("=")
    wanted_1 = str(header.get("x5t") or "").rstrip("=")
    for certificate in certificates:
        if wanted_256 == _b64(certificate.fingerprint(hashes.SHA256())):
            return certificate
        if wanted_1 == _b64(certificate.fingerprint(hashes.SHA1())):  # noqa: S303 - Entra's x5t
            return certificate
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _aad_error(error: str, code: int, text: str) -> dict[str, object]:
    trace = secrets.token_hex(8)
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {trace}",
        "error_codes": [code],
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": trace,
        "correlation_id": trace,
    }


def _unknown_tenant(tenant: str) -> dict[str, object]:
    return _aad_error(
        "invalid_tenant",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud.",
    )
