"""Tokens for Microsoft Graph through MSAL, and the httpx auth flow that sends them.

One :class:`msal.ConfidentialClientApplication` per source, built on the first read and
kept, so that MSAL's in-memory token cache serves the repeated runs of a daemon (a
token lives about an hour). MSAL reports a refused credential as a dict (``error``,
``error_codes``, ``error_description``), and any failed tenant discovery as a
``ValueError`` from its constructor (status, URL and body only in the exception's
``__context__``). A refused credential becomes a :class:`~syncd.errors.SourceError`
naming the code, the tenant and what to do (:func:`describe_token_error`); a failed
discovery is read by :func:`discovery_error` (an unknown tenant only when the answer
says so). Never the secret, never a traceback.

MSAL talks HTTP through a :class:`requests.Session` it is given (its public
``http_client`` parameter): :class:`PinnedCaSession` verifies with one SSL context
(the system's CAs plus ``ca_file``) even when ``REQUESTS_CA_BUNDLE`` /
``CURL_CA_BUNDLE`` are set, which requests would otherwise let replace a session's
``verify`` (``Session.merge_environment_settings``).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Generator, Mapping
from typing import Any

import httpx
import msal  # type: ignore[import-untyped]
import requests
import requests.adapters
import structlog
from urllib3.util.retry import Retry

from syncd.errors import SourceError, SourceUnavailableError
from syncd.sources.entra.config import Credential, Endpoints

__all__ = [
    "GraphAuth",
    "PinnedCaSession",
    "TokenProvider",
    "describe_token_error",
    "discovery_endpoint",
    "discovery_error",
]

log = structlog.get_logger(__name__)

_AADSTS = re.compile(r"AADSTS(\d+)")

# What to do about the token errors an operator meets, by AADSTS code.
_ADVICE: dict[int, str] = {
    90002: "the tenant does not exist in this cloud: check tenant_id (and cloud)",
    700016: "no application with this client_id in the tenant: check client_id and tenant_id",
    7000215: (
        "the client secret is wrong: copy the secret's Value (not its ID) from App "
        "registrations > Certificates & secrets into client_secret"
    ),
    7000222: (
        "the client secret has expired: create a new one under App registrations > "
        "Certificates & secrets and update client_secret (and client_secret_expires)"
    ),
    700027: (
        "the certificate was refused: upload this certificate (public part) to the app "
        "registration, or check that it has not expired"
    ),
    700024: "the client assertion is outside its validity: check this machine's clock",
    65001: (
        "admin consent is missing: an administrator must grant admin consent for the "
        "app's application permissions (User.Read.All; GroupMember.Read.All for groups)"
    ),
    7000112: "the application is disabled in the tenant: ask an administrator to enable it",
    500011: "the resource was not found in the tenant: check graph_url / cloud",
}


def describe_token_error(
    result: Mapping[str, Any], *, tenant: str, client_id: str, what: str = "token request"
) -> str:
    """A one-line explanation of an MSAL error dict: the code, the tenant, what to do."""
    codes = [int(code) for code in result.get("error_codes") or () if isinstance(code, int)]
    description = str(result.get("error_description") or "")
    if not codes:
        codes = [int(code) for code in _AADSTS.findall(description)]
    error = str(result.get("error") or "error")
    # The description's first line is the readable part; the rest are trace and time ids.
    summary = description.strip().splitlines()[0] if description.strip() else error
    advice = next((_ADVICE[code] for code in codes if code in _ADVICE), None)
    code_text = f"AADSTS{codes[0]}" if codes else error
    message = f"Entra {what} for app {client_id} in tenant {tenant} failed ({code_text}): {summary}"
    return f"{message}; {advice}" if advice else message


class _ContextAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose every HTTPS connection verifies with one given SSL context.

    requests hands urllib3 a CA path per request (``verify``, else certifi's bundle,
    in :meth:`cert_verify` and the pool key), which urllib3 would load *into* the
    context; here no path is ever given, so the context alone decides, proxied or not.
    """

    def __init__(self, context: ssl.SSLContext, *, max_retries: Retry) -> None:
        self._context = context
        super().__init__(max_retries=max_retries)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The pool manager, with the context for every pool."""
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """A proxy's pool manager (tunnelled HTTPS), with the same context."""
        proxy_kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        """requests' pool key, without CA paths and always verifying."""
        host, pool = super().build_connection_pool_key_attributes(request, True, cert)
        pool.pop("ca_certs", None)
        pool.pop("ca_cert_dir", None)
        pool["cert_reqs"] = "CERT_REQUIRED"
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """requests' checks, then its CA path taken off the connection again."""
        super().cert_verify(conn, url, True, cert)  # type: ignore[no-untyped-call]
        conn.ca_certs = None
        conn.ca_cert_dir = None


class PinnedCaSession(requests.Session):
    """A requests session for MSAL: the trust of ``ssl_context``, whatever the
    environment says.

    requests merges ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` into each request's
    ``verify`` when ``trust_env`` is on, and a request setting beats the session's,
    so a corporate machine's bundle would silently replace the CAs syncd was told to
    trust. With ``ssl_context`` (built from ``ca_file``) every HTTPS connection
    verifies with it alone; without, requests' defaults apply, verification always on.
    Proxies from the environment are still honoured (``trust_env`` stays on). Every
    request gets ``timeout_s`` unless given one.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None, timeout_s: float) -> None:
        super().__init__()
        self.verify = True
        self._pinned = ssl_context is not None
        self._timeout_s = timeout_s
        # One retry on a connection error, as MSAL's own default session does; never
        # on an answer: urllib3 would otherwise sleep out any Retry-After of a 429/503
        # (an hour, if the server says so) inside a run.
        retries = Retry(total=1, connect=1, read=0, redirect=0, status=0,
                        respect_retry_after_header=False)  # fmt: skip
        adapter = (
            _ContextAdapter(ssl_context, max_retries=retries)
            if ssl_context is not None
            else requests.adapters.HTTPAdapter(max_retries=retries)
        )
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> Any:
        """requests' merge, then ``verify`` put back: on, and no CA path with a context."""
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self._pinned or settings.get("verify") is False:
            settings["verify"] = True  # TLS verification is never off
        return settings

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        """Send with the session's timeout unless the caller gave one."""
        kwargs.setdefault("timeout", self._timeout_s)
        return super().request(method, url, *args, **kwargs)


class TokenProvider:
    """Access tokens for one app: built lazily, cached by MSAL, errors made readable.

    Thread-safe. :meth:`token` returns the cached token until MSAL judges it close to
    expiry; ``fresh=True`` drops the cached one first (Graph refused it).
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        credential: Credential,
        endpoints: Endpoints,
        http_client: requests.Session,
    ) -> None:
        self._tenant = tenant_id
        self._client_id = client_id
        self._credential = credential
        self._endpoints = endpoints
        self._http = http_client
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()
        self._current: str | None = None

    def __repr__(self) -> str:
        return f"TokenProvider(tenant={self._tenant!r}, client_id={self._client_id!r})"

    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: the current token and a client secret."""
        values = [self._current] if self._current else []
        msal_credential = self._credential.for_msal()
        if isinstance(msal_credential, str):
            values.append(msal_credential)
        elif msal_credential.get("passphrase"):
            values.append(str(msal_credential["passphrase"]))
        return tuple(values)

    def token(self, *, fresh: bool = False) -> str:
        """An access token for Graph; SourceError (Unavailable when transient) if none."""
        with self._lock:
            app = self._application()
            if fresh:
                app.remove_tokens_for_client()
            try:
                result = app.acquire_token_for_client(scopes=[self._endpoints.scope])
            except (requests.RequestException, OSError) as error:
                raise SourceUnavailableError(
                    f"Entra token request for tenant {self._tenant} failed: "
                    f"{_network_reason(error)} ({self._endpoints.authority})"
                ) from None
            except Exception as error:
                # An answer MSAL could not read (an HTML 503 page from a proxy, a 5xx it
                # raises for): the login service is having trouble, try again later.
                raise SourceUnavailableError(
                    f"Entra token request for tenant {self._tenant} failed: "
                    f"{type(error).__name__}: {_first_line(error)}"
                ) from None
            if not isinstance(result, dict) or "access_token" not in result:
                raise SourceError(
                    describe_token_error(
                        result if isinstance(result, dict) else {},
                        tenant=self._tenant,
                        client_id=self._client_id,
                    )
                )
            token = str(result["access_token"])
            self._current = token
            return token

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is not None:
            return self._app
        endpoints = self._endpoints
        options: dict[str, Any] = {}
        if endpoints.custom_authority:
            # A private cloud or an emulator: never ask Microsoft's public instance
            # discovery about it (it would not know it, and it must not be contacted).
            options = {"validate_authority": False, "instance_discovery": False}
        try:
            self._app = msal.ConfidentialClientApplication(
                self._client_id,
                client_credential=self._credential.for_msal(),
                authority=endpoints.authority,
                http_client=self._http,
                **options,
            )
        except ValueError as error:
            context = error.__context__
            if context is None and "authority" not in str(error).lower():
                # Not discovery: MSAL refused its arguments (a credential it cannot use).
                raise SourceError(
                    f"Entra source for tenant {self._tenant}: MSAL refused the "
                    f"{self._credential.kind}: {_first_line(error)}"
                ) from None
            raise discovery_error(
                context if context is not None else error,
                tenant=self._tenant,
                client_id=self._client_id,
                endpoint=discovery_endpoint(endpoints.authority),
            ) from None
        except (requests.RequestException, OSError) as error:
            raise SourceUnavailableError(
                f"Entra tenant discovery for tenant {self._tenant} failed: "
                f"{_network_reason(error)} ({endpoints.authority})"
            ) from None
        except Exception as error:
            # MSAL raises for a 5xx of the discovery endpoint (MsalServiceError).
            raise SourceUnavailableError(
                f"Entra tenant discovery for tenant {self._tenant} failed: "
                f"{type(error).__name__}: {_first_line(error)} ({endpoints.authority})"
            ) from None
        return self._app


# MSAL's text for a 4xx from tenant discovery (msal.authority.tenant_discovery).
_DISCOVERY_FAILED = re.compile(
    r"OIDC Discovery failed on (?P<url>\S+?)\. HTTP status: (?P<status>\d+), Error: (?P<body>.*)",
    re.DOTALL,
)
# 4xx answers that say "later", not "wrong": a timeout of the server and throttling.
_TRANSIENT_DISCOVERY_STATUSES = frozenset({408, 429})


def discovery_endpoint(authority: str) -> str:
    """The OpenID configuration URL MSAL reads for an Entra ``authority``."""
    return f"{authority}/v2.0/.well-known/openid-configuration"


def discovery_error(
    cause: BaseException, *, tenant: str, client_id: str, endpoint: str
) -> SourceError:
    """What a failed tenant discovery means, from the exception MSAL raised for it.

    MSAL raises ``ValueError`` for every 4xx of the discovery endpoint and for a 200
    whose body is not JSON; its context carries the HTTP status, the URL and the body.
    Only an answer that says so (an AADSTS code, ``invalid_tenant``) is an unknown
    tenant; 408, 429 and a non-JSON page (a proxy's sign-in page) are transient
    (:class:`SourceUnavailableError`); any other status names itself and the URL.
    """
    prefix = f"Entra tenant discovery for tenant {tenant} at"
    if isinstance(cause, json.JSONDecodeError):
        return SourceUnavailableError(
            f"{prefix} {endpoint} failed: HTTP 200 but the answer is not JSON (a proxy's "
            "page?); the next run retries"
        )
    match = _DISCOVERY_FAILED.search(str(cause))
    if match is None:
        return SourceError(f"{prefix} {endpoint} failed: {_first_line(cause)}")
    url, status, body = match["url"], int(match["status"]), match["body"]
    codes = [int(code) for code in _AADSTS.findall(body)]
    if not codes and _json_field(body, "error") == "invalid_tenant":
        codes = [90002]
    if codes:
        description = _aadsts_text(body) or f"HTTP {status}"
        return SourceError(
            describe_token_error(
                {"error": "invalid_tenant", "error_codes": codes, "error_description": description},
                tenant=tenant, client_id=client_id, what="tenant discovery",
            )
        )  # fmt: skip
    reason = f"HTTP {status}" + (f": {_snippet(body)}" if _snippet(body) else "")
    if status in _TRANSIENT_DISCOVERY_STATUSES:
        return SourceUnavailableError(f"{prefix} {url} failed: {reason}; the next run retries")
    advice = (
        "a proxy wants credentials: set HTTPS_PROXY with them, or NO_PROXY for this host"
        if status == 407
        else "check authority_url / cloud"
    )
    return SourceError(f"{prefix} {url} failed: {reason}; {advice}")


def _json_field(body: str, name: str) -> object:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed.get(name) if isinstance(parsed, dict) else None


def _snippet(body: str) -> str:
    """The start of an answer's body on one line (HTML tags and all), for messages."""
    return " ".join(body.split())[:160]


def _aadsts_text(detail: str) -> str | None:
    match = re.search(r"AADSTS\d+:[^\"\\\r\n]*", detail)
    return match.group(0).strip() if match else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def _network_reason(error: BaseException) -> str:
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(error, requests.exceptions.SSLError):
        return "TLS certificate verification failed (set ca_file to the CA that signed it)"
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect"
    return f"{type(error).__name__}: {_first_line(error)}"


class GraphAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` from a :class:`TokenProvider`, renewed on a 401.

    Implements the extension point of :class:`syncd.http.BearerAuth`: ``sync_auth_flow``
    (a token request does network I/O under a lock), one more attempt with a fresh token
    when Graph answers 401, and a second 401 is handed to the caller.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Send with the cached token; on a 401, once more with a fresh one."""
        request.headers["Authorization"] = f"Bearer {self._provider.token()}"
        response = yield request
        if response.status_code == 401:
            log.info("entra.token_refused", detail="Graph answered 401; acquiring a new token")
            request.headers["Authorization"] = f"Bearer {self._provider.token(fresh=True)}"
            yield request

    def secrets(self) -> tuple[str, ...]:
        """The token and client secret, for masking echoed error bodies."""
        return self._provider.secrets()

    def __repr__(self) -> str:
        return f"GraphAuth({self._provider!r})"
