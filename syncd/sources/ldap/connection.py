"""Opening an LDAP connection: failover across URLs, bounded retries, TLS, bind.

ldap3's ``ServerPool`` retries forever by default and sleeps 10 s between cycles, so
failover is done here: the URLs are tried in order, in at most :data:`MAX_ROUNDS`
rounds, and never after :data:`CONNECT_BUDGET_S` seconds, so a read with every server
down fails within 30 s at the default settings. A refused bind is not retried (the
same password fails on every server, and retries would lock the account out).

TLS uses the standard library's verification (chain and host name, IP addresses
included) through an ``ssl.SSLContext``, not ldap3's own host name check.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import structlog

from syncd.sources.ldap import _ldap3  # noqa: F401 - before any ldap3 import

# isort: split
from ldap3 import NONE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException

from syncd.errors import SourceError, SourceUnavailableError
from syncd.sources.ldap.config import LdapSourceConfig
from syncd.sources.ldap.values import bind_failure_message

log = structlog.get_logger(__name__)

CONNECT_BUDGET_S = 25.0
"""No new connection attempt starts after this many seconds of trying."""
MAX_ROUNDS = 3
"""Rounds over every URL before giving up (transient failures only)."""
CONNECT_TIMEOUT_CAP_S = 8.0
"""Timeout of each step of an attempt (TCP connect, TLS, bind): ``timeout_s``, capped at
this and at what is left of the budget."""
_ROUND_PAUSES_S = (1.0, 2.0)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One configured server URL, parsed."""

    url: str
    host: str
    port: int
    use_ssl: bool


def parse_endpoint(url: str) -> Endpoint:
    """``ldap[s]://host[:port]`` -> :class:`Endpoint` (389 / 636 by default)."""
    parts = urlsplit(url)
    use_ssl = parts.scheme.lower() == "ldaps"
    host = parts.hostname or ""
    port = parts.port or (636 if use_ssl else 389)
    return Endpoint(url=url, host=host, port=port, use_ssl=use_ssl)


class _ContextTls(Tls):
    """ldap3 TLS over a standard ``ssl.SSLContext`` (host name checked in the handshake)."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__()
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        """Wrap the connection's socket (called by ldap3 for LDAPS and StartTLS)."""
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._server_hostname,
        )


def tls_context(ca_file: Path | None, *, verify: bool) -> ssl.SSLContext:
    """A client TLS context: verifying against ``ca_file`` (or the system CAs), or not."""
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (OSError, ssl.SSLError) as error:
        raise SourceError(
            f"cannot load the CA certificates in ca_file {ca_file}: {error}"
        ) from None


class _BindRefusedError(Exception):
    """The server answered and refused the bind: not worth another server or round."""


class Connector:
    """Opens bound connections for one source config (see the module docstring).

    ``sleep`` and ``clock`` are injectable so the retry bounds can be tested quickly.
    """

    def __init__(
        self,
        config: LdapSourceConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._endpoints = [parse_endpoint(url) for url in config.urls]
        self._sleep = sleep
        self._clock = clock

    @property
    def cleartext_bind(self) -> bool:
        """True if a password would travel unencrypted (ldap:// without StartTLS)."""
        return (
            self._config.bind_dn is not None
            and not self._config.start_tls
            and any(not endpoint.use_ssl for endpoint in self._endpoints)
        )

    def open(self) -> Connection:
        """A connected, bound connection to the first server that works.

        Raises :class:`SourceUnavailableError` when no server could be reached in time,
        :class:`SourceError` when the bind was refused or TLS failed on every server.
        """
        config = self._config
        context = None
        if config.start_tls or any(e.use_ssl for e in self._endpoints):
            context = tls_context(config.ca_file, verify=config.tls_verify)
        started = self._clock()
        failures: list[str] = []
        transient = False
        for round_index in range(MAX_ROUNDS):
            transient = False
            for endpoint in self._endpoints:
                remaining = CONNECT_BUDGET_S - (self._clock() - started)
                if remaining < 1:
                    break
                try:
                    return self._open_one(endpoint, context, min(CONNECT_TIMEOUT_CAP_S, remaining))
                except _BindRefusedError as refused:
                    raise SourceError(
                        f"LDAP bind as {config.bind_dn!r} refused by {endpoint.url}: {refused}"
                    ) from None
                except _AttemptError as failed:
                    failures.append(f"{endpoint.url}: {failed}")
                    transient = transient or failed.transient
                    log.warning("ldap.connect_failed", url=endpoint.url, error=str(failed))
            elapsed = self._clock() - started
            last_round = round_index == MAX_ROUNDS - 1
            if not transient or last_round or elapsed > CONNECT_BUDGET_S:
                break
            pause = _ROUND_PAUSES_S[min(round_index, len(_ROUND_PAUSES_S) - 1)]
            self._sleep(min(pause, max(0.0, CONNECT_BUDGET_S - elapsed)))
        # Keep the message short: one line per distinct failure.
        summary = "; ".join(dict.fromkeys(failures)) or "no attempt was made"
        message = f"cannot connect to any LDAP server ({summary})"
        if transient:
            raise SourceUnavailableError(message)
        raise SourceError(message)

    def _open_one(
        self, endpoint: Endpoint, context: ssl.SSLContext | None, attempt_timeout: float
    ) -> Connection:
        """One attempt: connect, StartTLS and bind, each bounded by ``attempt_timeout``."""
        config = self._config
        tls = None
        if context is not None and (endpoint.use_ssl or config.start_tls):
            tls = _ContextTls(context, endpoint.host)
        server = Server(
            endpoint.host,
            port=endpoint.port,
            use_ssl=endpoint.use_ssl,
            tls=tls,
            get_info=NONE,
            connect_timeout=min(config.timeout_s, attempt_timeout),
        )
        password = config.password()
        connection = Connection(
            server,
            user=config.bind_dn,
            password=None if password is None else password.get_secret_value(),
            auto_bind=False,
            raise_exceptions=False,
            # For opening, StartTLS and bind; the searches get timeout_s (below). ldap3
            # packs it into a socket option as an integer.
            receive_timeout=max(1, math.ceil(min(config.timeout_s, attempt_timeout))),
            auto_referrals=False,
            read_only=True,
            return_empty_attributes=False,
            check_names=False,
        )
        try:
            connection.open()
            if config.start_tls and not endpoint.use_ssl and not connection.start_tls():
                raise _AttemptError(
                    f"StartTLS refused: {_result_text(connection)}", transient=False
                )
            if config.bind_dn is not None and not connection.bind():
                result = connection.result or {}
                raise _BindRefusedError(
                    bind_failure_message(
                        str(result.get("description", "")), str(result.get("message", ""))
                    )
                )
        except (_AttemptError, _BindRefusedError):
            close_quietly(connection)
            raise
        except LDAPException as error:
            close_quietly(connection)
            raise _classify(error) from None
        except (OSError, ssl.SSLError) as error:
            close_quietly(connection)
            raise _classify(error) from None
        connection.socket.settimeout(config.timeout_s)
        connection.receive_timeout = max(1, math.ceil(config.timeout_s))
        decode_raw_entries_only(connection)
        return connection


class _AttemptError(Exception):
    """One attempt failed; ``transient`` says whether another round may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _classify(error: BaseException) -> _AttemptError:
    text = _error_text(error)
    lowered = text.lower()
    tls_problem = any(
        word in lowered for word in ("certificate", "ssl", "tls", "handshake", "hostname")
    )
    if tls_problem:
        return _AttemptError(f"TLS failed: {text}", transient=False)
    return _AttemptError(text, transient=True)


def _error_text(error: BaseException) -> str:
    """A one-line reason from an ldap3 or socket error (ldap3 nests the cause in args)."""
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def _result_text(connection: Connection) -> str:
    result = connection.result or {}
    return f"{result.get('description', '')} {result.get('message', '')}".strip()


_SEARCH_RESULT_ENTRY = 4  # the protocolOp of a searchResEntry


def decode_raw_entries_only(connection: Connection) -> None:
    """Make ``connection`` decode search entries to ``dn`` and ``raw_attributes`` only.

    ldap3 decodes every entry twice, to bytes (``raw_attributes``) and to text
    (``attributes``); the source reads only the bytes (it decodes what it maps, and
    binary ids need the bytes), and the text copy costs about a quarter of a read. Entries
    with controls or ranged attributes (AD's ``member;range=0-1499``, which ldap3's
    auto-range handling needs) take ldap3's own path. Attribute names are lower-cased.
    """
    strategy = connection.strategy
    original = getattr(strategy, "decode_response_fast", None)
    if original is None or not connection.fast_decoder:
        return

    def decode(message: dict[str, Any]) -> dict[str, Any]:
        if message["protocolOp"] != _SEARCH_RESULT_ENTRY or message["controls"]:
            return cast("dict[str, Any]", original(message))
        payload = message["payload"]
        attributes: dict[str, list[bytes]] = {}
        for attribute in payload[1][3]:
            name = attribute[3][0][3].decode("utf-8").lower()
            if ";range=" in name:
                return cast("dict[str, Any]", original(message))
            attributes[name] = [bytes(value[3]) for value in attribute[3][1][3]]
        return {
            "type": "searchResEntry",
            "dn": payload[0][3].decode("utf-8", "replace"),
            "raw_attributes": attributes,
            "attributes": {},
        }

    strategy.decode_response_fast = decode


def close_quietly(connection: Connection) -> None:
    """Unbind and close, ignoring errors (the connection may already be broken)."""
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()
    # ldap3 leaves the socket open when a TLS handshake or bind fails half-way.
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
