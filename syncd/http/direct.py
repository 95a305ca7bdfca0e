"""Plain requests over :mod:`http.client`, for a fraction of httpx's CPU: :class:`DirectSender`.

A first sync of a million users is some two thousand insert calls of half a megabyte
on two cores, where the platform needs one core to take them in. httpx spends about
0.55 ms of CPU per such call above what :mod:`http.client` needs (its connection pool,
h11's parsing in pure Python, the auth and redirect layers of ``Client.send``),
holding the GIL the thread that encodes the next batch and absorbs the answers is
waiting for: about a second per million users.

The sender takes over only what it sends exactly as httpx would: requests built for
the client (:class:`~syncd.http.requests.RequestBuilder`), to the client's own origin,
over its default transport, so the same TLS context (CA, verification, ``SSL_CERT_FILE``),
the same headers in the same order and the same body go on the wire. Anything else
stays with httpx: a proxy from the environment (``HTTPS_PROXY`` ... unless
``NO_PROXY`` exempts the host), a custom transport (a test's ``MockTransport``), event
hooks, an auth other than :class:`~syncd.http.auth.BearerAuth`, and every request once
the server set a cookie (it goes into the client's jar, and httpx sends it from then
on). Answers are :class:`httpx.Response` objects, decoded as httpx decodes them
(``Content-Encoding``), and failures are httpx's exceptions for the same cause
(``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError`` ...), so the retry policy
and the error messages above it cannot tell the two paths apart. Connections are
kept alive as httpx keeps them (an idle one is dropped once it expires or the server
closed it) and registered with the client's
:class:`~syncd.http.cancel.ConnectionTracker`, so a cancel cuts them too.
"""

from __future__ import annotations

import select
import ssl
import threading
import time
from collections.abc import Mapping
from http.client import (
    HTTPConnection,
    HTTPException,
    HTTPResponse,
    HTTPSConnection,
    RemoteDisconnected,
)
from typing import Any

import httpcore
import httpx

from syncd.http.auth import BearerAuth
from syncd.http.cancel import ConnectionTracker

__all__ = ["DirectSender"]

_DEFAULT_KEEPALIVE_EXPIRY_S = 5.0
"""httpx's default ``Limits.keepalive_expiry``, should the pool not say its own."""

_HTTP_VERSIONS = {10: b"HTTP/1.0", 11: b"HTTP/1.1"}

_NO_ANSWER = "Server disconnected without sending a response."
"""httpcore's words for a connection closed before the status line."""


class DirectSender:
    """Sends the plain requests of one :class:`httpx.Client` over :mod:`http.client`.

    Build it with :meth:`for_client`, which says None for a client whose requests
    httpx must send itself. Ask :meth:`takes` before each :meth:`send`. Thread-safe:
    each request has a connection of its own, taken from the idle ones or opened.
    Whoever built the client closes the sender (:meth:`close`) with it.
    """

    def __init__(
        self,
        http: httpx.Client,
        tracker: ConnectionTracker,
        *,
        ssl_context: ssl.SSLContext | None,
        max_idle: int,
        keepalive_expiry_s: float = _DEFAULT_KEEPALIVE_EXPIRY_S,
    ) -> None:
        url = http.base_url
        self._http = http
        self._tracker = tracker
        self._origin = (url.scheme, url.host, url.port)
        self._host = url.host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl_context = ssl_context if url.scheme == "https" else None
        self._max_idle = max_idle
        self._expiry_s = keepalive_expiry_s
        auth = http.auth
        self._bearer = auth if isinstance(auth, BearerAuth) else None
        self._lock = threading.Lock()
        self._idle: list[tuple[HTTPConnection, float]] = []
        self._closed = False
        tracker.installed = True

    @classmethod
    def for_client(cls, http: httpx.Client, tracker: ConnectionTracker) -> DirectSender | None:
        """A sender for ``http``'s requests, or None when httpx must send them itself
        (a proxy, a custom transport, event hooks, another auth, another scheme)."""
        url = http.base_url
        if url.scheme not in ("http", "https") or not url.host:
            return None
        transport = http._transport
        if type(transport) is not httpx.HTTPTransport:
            return None  # a test's MockTransport, or anyone's own transport
        if http._transport_for_url(url) is not transport:
            return None  # a proxy from the environment
        if any(http.event_hooks.values()):
            return None
        if http.auth is not None and not isinstance(http.auth, BearerAuth):
            return None
        pool = getattr(transport, "_pool", None)
        if not isinstance(pool, httpcore.ConnectionPool) or _pool_has_options(pool):
            return None
        context = getattr(pool, "_ssl_context", None)
        if url.scheme == "https" and not isinstance(context, ssl.SSLContext):
            return None
        expiry = getattr(pool, "_keepalive_expiry", _DEFAULT_KEEPALIVE_EXPIRY_S)
        return cls(
            http,
            tracker,
            ssl_context=context,
            max_idle=max(1, getattr(pool, "_max_keepalive_connections", 1)),
            keepalive_expiry_s=_DEFAULT_KEEPALIVE_EXPIRY_S if expiry is None else expiry,
        )

    def takes(self, request: httpx.Request) -> bool:
        """True if :meth:`send` sends ``request`` exactly as httpx would."""
        http = self._http
        url = request.url
        return (
            not self._closed
            and not http.is_closed
            # A cookie the server set goes back with every request: httpx's job.
            and not http.cookies
            and (url.scheme, url.host, url.port) == self._origin
            and isinstance(request.stream, httpx.ByteStream)
        )

    def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its whole answer; raises httpx's exceptions."""
        if self._bearer is not None:
            self._bearer.authorize(request)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        connection = self._checkout(timeouts.get("connect"))
        try:
            answer, body, reusable = _exchange(connection, request, timeouts)
        except BaseException:
            connection.close()
            raise
        if answer.will_close or not reusable:
            connection.close()
        else:
            self._checkin(connection)
        response = httpx.Response(
            answer.status,
            headers=answer.getheaders(),
            stream=httpx.ByteStream(body),
            request=request,
            extensions={
                "http_version": _HTTP_VERSIONS.get(answer.version, b"HTTP/1.1"),
                "reason_phrase": answer.reason.encode("ascii", "replace"),
            },
        )
        response.read()  # decodes a Content-Encoding, as httpx does
        if "set-cookie" in response.headers:
            http = self._http
            http.cookies.extract_cookies(response)
        return response

    def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()

    def _checkout(self, connect_timeout: float | None) -> HTTPConnection:
        """An idle connection still good for a request, else a new one."""
        while True:
            with self._lock:
                if not self._idle:
                    break
                connection, since = self._idle.pop()
            if time.monotonic() - since <= self._expiry_s and _still_open(connection):
                return connection
            connection.close()
        return self._connect(connect_timeout)

    def _checkin(self, connection: HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append((connection, time.monotonic()))
                return
        connection.close()

    def _connect(self, timeout: float | None) -> HTTPConnection:
        if self._tracker.cancelled:
            raise httpx.ConnectError("the client was cancelled")
        connection: HTTPConnection
        if self._ssl_context is not None:
            connection = HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._ssl_context
            )
        else:
            connection = HTTPConnection(self._host, self._port, timeout=timeout)
        # Never reconnect behind the tracker's back: a closed connection stays closed.
        connection.auto_open = 0
        try:
            connection.connect()
        except TimeoutError as error:
            connection.close()
            raise httpx.ConnectTimeout(_describe(error)) from error
        except OSError as error:  # refused, unreachable, TLS (ssl.SSLError is an OSError)
            connection.close()
            raise httpx.ConnectError(_describe(error)) from error
        try:
            self._tracker.track_socket(connection.sock)
        except httpx.ConnectError:
            connection.close()
            raise
        return connection


def _exchange(
    connection: HTTPConnection,
    request: httpx.Request,
    timeouts: Mapping[str, float | None],
) -> tuple[HTTPResponse, bytes, bool]:
    """Write ``request`` on ``connection`` and read the whole answer; the last item
    says whether the connection can carry another request.

    As httpcore does, a failed write still reads the answer: a server may answer and
    close before it took the whole body (a 413 for a body too large).
    """
    sock = connection.sock
    write_error: OSError | None = None
    try:
        sock.settimeout(timeouts.get("write"))
        connection.putrequest(
            request.method,
            request.url.raw_path.decode("ascii"),
            skip_host=True,  # httpx's headers have Host and Accept-Encoding already
            skip_accept_encoding=True,
        )
        for name, value in request.headers.raw:
            connection.putheader(name, value)
        connection.endheaders(request.content or None)
    except TimeoutError as error:
        raise httpx.WriteTimeout(_describe(error)) from error
    except OSError as error:
        write_error = error
    try:
        sock.settimeout(timeouts.get("read"))
        answer = connection.getresponse()
        return answer, answer.read(), write_error is None
    except TimeoutError as error:
        raise httpx.ReadTimeout(_describe(error)) from error
    except (HTTPException, OSError) as error:
        if write_error is not None:
            raise httpx.WriteError(_describe(write_error)) from write_error
        if isinstance(error, RemoteDisconnected):
            raise httpx.RemoteProtocolError(_NO_ANSWER) from error
        if isinstance(error, HTTPException):
            raise httpx.RemoteProtocolError(_describe(error)) from error
        raise httpx.ReadError(_describe(error)) from error


def _still_open(connection: HTTPConnection) -> bool:
    """False if the server closed an idle connection (or sent something unasked)."""
    sock = connection.sock
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def _describe(error: BaseException) -> str:
    text = str(error)
    return text if text else type(error).__name__


def _pool_has_options(pool: Any) -> bool:
    """True if the pool connects in a way :mod:`http.client` would not (a Unix socket,
    a local address, socket options, connect retries, HTTP/2)."""
    return bool(
        getattr(pool, "_uds", None)
        or getattr(pool, "_local_address", None)
        or getattr(pool, "_socket_options", None)
        or getattr(pool, "_retries", 0)
        or getattr(pool, "_http2", False)
    )
