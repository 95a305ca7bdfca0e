"""httpcore's HTTP/1.1 exchange without its connection pool, for a fraction of httpx's CPU:
:class:`DirectSender`.

A first sync of a million users is some two thousand insert calls of half a megabyte
on two cores, where the platform needs one core to take them in. Through httpx a call
costs ~0.5 ms of CPU; the same exchange on a plain socket, framed and parsed by h11 (the
parser httpcore itself uses), ~0.2 ms: the rest is httpcore's pool (its locks, request
queue and per-request connection bookkeeping) and ``Client.send``'s auth, redirect and
cookie layers, all holding the GIL that the thread absorbing the answers is waiting for.

The sender takes over only what it sends exactly as httpx would: requests built for the
client (:class:`~syncd.http.requests.RequestBuilder`), to the client's own origin, over
its default transport. It does what httpcore does, step by step: h11 frames the request
(so the same head and body go on the wire) and parses the answer (so what h11 accepts
or refuses, it accepts or refuses: informational answers skipped, odd headers kept as
bytes), writes a send at a time under the write timeout, reads under the read timeout,
reads the answer after a failed write (a server may answer and close early), and keeps
a connection only when both sides finished their message. The usual answer (HTTP/1.1,
printable ASCII headers, one ``Content-Length``) is read by
:mod:`~syncd.http.plain_answer` instead, as h11 would read it, for a tenth of h11's CPU;
every other answer, and every answer cut short, is handed to h11 with the bytes read so
far. One difference, on purpose: bytes a server sends after a plain answer's body close
the connection (h11 would keep them and read them as the next request's answer).
TLS uses the transport's own context (CA, verification, ``SSL_CERT_FILE``), with
httpcore's ALPN. Failures are
httpx's exceptions with httpx's messages (``ConnectError``, ``ReadTimeout``,
``RemoteProtocolError`` ...), so the retry policy above cannot tell the two paths
apart. Idle connections are dropped as httpcore drops them (expired, or closed by the
server), and every socket is registered with the client's
:class:`~syncd.http.cancel.ConnectionTracker`, so a cancel cuts them too.

Everything else stays with httpx: a proxy from the environment (``HTTPS_PROXY`` ...
unless ``NO_PROXY`` exempts the host), a custom transport (a test's ``MockTransport``),
event hooks, an auth other than :class:`~syncd.http.auth.BearerAuth`, streamed bodies,
and every request once the server set a cookie (it goes into the client's jar, and
httpx sends it from then on). Not reproduced: httpx's ``HTTP Request:`` line on the
``httpx`` logger at INFO, which syncd does not show.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

import h11
import httpcore
import httpx

from syncd.http.auth import BearerAuth
from syncd.http.cancel import ConnectionTracker
from syncd.http.plain_answer import could_be_plain, head_end, read_plain_head

__all__ = ["DirectSender"]

_DEFAULT_KEEPALIVE_EXPIRY_S = 5.0
"""httpx's default ``Limits.keepalive_expiry``, should the pool not say its own."""

_READ_BYTES = 256 * 1024
"""Bytes asked of each read (httpcore asks 64 kB): an answer of a 500-user batch comes
in one or two reads, each of which must win the GIL back."""

_MAX_INCOMPLETE_EVENT_SIZE = 100 * 1024
"""httpcore's limit on a response head (h11's ``max_incomplete_event_size``)."""

_NO_ANSWER = "Server disconnected without sending a response."
"""httpcore's words for a connection closed before the status line."""


class _Connection:
    """One socket and the h11 state of the exchanges on it."""

    __slots__ = ("h11", "idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = _new_state()
        self.idle_since = 0.0

    def close(self) -> None:
        self.sock.close()


class DirectSender:
    """Sends the plain requests of one :class:`httpx.Client` on sockets of its own.

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
        keepalive_expiry_s: float | None = _DEFAULT_KEEPALIVE_EXPIRY_S,
    ) -> None:
        """``keepalive_expiry_s`` None: idle connections never expire (httpx's None)."""
        url = http.base_url
        self._http = http
        self._tracker = tracker
        self._origin = (url.scheme, url.host, url.port)
        # The ASCII form httpcore dials and names in TLS (IDNA 2008): Python's own
        # encoding of a str host (IDNA 2003) would reach another server for some names.
        host = url.raw_host.decode("ascii")
        self._address = (host, url.port or (443 if url.scheme == "https" else 80))
        self._ssl_context = ssl_context if url.scheme == "https" else None
        if self._ssl_context is not None:
            # What httpcore sets on the same context before each TLS connection.
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._max_idle = max_idle
        self._expiry_s = math.inf if keepalive_expiry_s is None else keepalive_expiry_s
        auth = http.auth
        self._bearer = auth if isinstance(auth, BearerAuth) else None
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
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
        return cls(
            http,
            tracker,
            ssl_context=context,
            max_idle=max(1, getattr(pool, "_max_keepalive_connections", 1)),
            keepalive_expiry_s=getattr(pool, "_keepalive_expiry", _DEFAULT_KEEPALIVE_EXPIRY_S),
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
        started = time.perf_counter()
        if self._bearer is not None:
            self._bearer.authorize(request)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        try:
            connection = self._checkout(timeouts.get("connect"))
            try:
                answer, body, reusable = _exchange(connection, request, timeouts)
            except BaseException:
                connection.close()
                raise
        except httpx.RequestError as error:
            error.request = request  # as httpx's request_context sets it
            raise
        self._release(connection, reusable)
        response = httpx.Response(
            answer.status_code,
            headers=answer.headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions={
                "http_version": b"HTTP/" + answer.http_version,
                "reason_phrase": answer.reason,
            },
        )
        response.read()  # decodes a Content-Encoding, as httpx does
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        if "set-cookie" in response.headers:
            self._http.cookies.extract_cookies(response)
        return response

    def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _checkout(self, connect_timeout: float | None) -> _Connection:
        """An idle connection still good for a request, else a new one."""
        while True:
            with self._lock:
                if not self._idle:
                    break
                connection = self._idle.pop()
            if time.monotonic() - connection.idle_since <= self._expiry_s and _still_open(
                connection.sock
            ):
                return connection
            connection.close()
        return self._connect(connect_timeout)

    def _release(self, connection: _Connection, reusable: bool) -> None:
        """Keep the connection for the next request if ``reusable`` (both sides finished
        their message, and neither asked to close: see :func:`_exchange`)."""
        if reusable:
            with self._lock:
                if not self._closed and len(self._idle) < self._max_idle:
                    connection.idle_since = time.monotonic()
                    self._idle.append(connection)
                    return
        connection.close()

    def _connect(self, timeout: float | None) -> _Connection:
        """A new connection, as httpcore's sync backend opens one."""
        if self._closed:  # closed by another thread since takes() said yes
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if self._tracker.cancelled:
            raise httpx.ConnectError("the client was cancelled")
        try:
            sock = socket.create_connection(self._address, timeout)
        except TimeoutError as error:
            raise httpx.ConnectTimeout(str(error)) from error
        except OSError as error:  # refused, unreachable, unknown host
            raise httpx.ConnectError(str(error)) from error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock.settimeout(timeout)
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._address[0])
        except TimeoutError as error:
            sock.close()
            raise httpx.ConnectTimeout(str(error)) from error
        except OSError as error:  # TLS: ssl.SSLError is an OSError
            sock.close()
            raise httpx.ConnectError(str(error)) from error
        self._tracker.track_socket(sock)  # closes it and raises if cancelled meanwhile
        return _Connection(sock)


class _Answer(NamedTuple):
    """What :meth:`DirectSender.send` makes its :class:`httpx.Response` of."""

    status_code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: bytes


def _exchange(
    connection: _Connection, request: httpx.Request, timeouts: Mapping[str, float | None]
) -> tuple[_Answer, bytes, bool]:
    """Send ``request`` on ``connection`` and read its whole answer (httpcore's steps);
    the last item says whether the connection can carry another request."""
    state = connection.h11
    sock = connection.sock
    try:
        head = state.send(
            h11.Request(
                method=request.method, target=request.url.raw_path, headers=request.headers.raw
            )
        )
        # Passed through, not joined: a half-megabyte body is not copied once more.
        body = state.send_with_data_passthrough(h11.Data(data=request.content))
        tail = state.send(h11.EndOfMessage())
    except h11.LocalProtocolError as error:
        raise httpx.LocalProtocolError(str(error)) from error
    written = True
    try:
        write_timeout = timeouts.get("write")
        for data in (head, *(body or ()), tail):
            if data:
                _write(sock, data, write_timeout)
    except httpx.WriteError:
        # As httpcore: the server may have answered and closed before it took the whole
        # body (a 413); what it answered, if anything, decides. (h11 counts the request
        # as sent: the connection is never used again.)
        written = False
    read_timeout = timeouts.get("read")
    # Bytes h11 kept after the last answer it read are this answer's start: h11's.
    plain = (
        None if state.trailing_data[0] else _read_plain_answer(connection, request, read_timeout)
    )
    if plain is not None:
        answer, content, reusable = plain
        if reusable and written:
            # h11 never saw this answer: the next request starts on a fresh state.
            connection.h11 = _new_state()
        return answer, content, reusable and written
    while True:  # informational answers (100, 103 ...) are skipped, as by httpcore
        event = _next_event(connection, read_timeout)
        if isinstance(event, h11.Response):
            break
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            # An upgrade ends the answer there, as in httpcore (the connection is then
            # the other protocol's: never reused). syncd never asks for one.
            return _answer_of(event), b"", False
    chunks: list[bytes] = []
    while True:
        part = _next_event(connection, read_timeout)
        if isinstance(part, h11.Data):
            chunks.append(bytes(part.data))
        elif isinstance(part, h11.EndOfMessage) or part is h11.PAUSED:
            break
    reusable = written and state.our_state is h11.DONE and state.their_state is h11.DONE
    if reusable:
        state.start_next_cycle()
    return _answer_of(event), chunks[0] if len(chunks) == 1 else b"".join(chunks), reusable


def _answer_of(event: h11.Response | h11.InformationalResponse) -> _Answer:
    return _Answer(event.status_code, event.reason, event.headers.raw_items(), event.http_version)


def _new_state() -> h11.Connection:
    return h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=_MAX_INCOMPLETE_EVENT_SIZE)


def _read_plain_answer(
    connection: _Connection, request: httpx.Request, timeout: float | None
) -> tuple[_Answer, bytes, bool] | None:
    """The answer, if it is a plain one (:mod:`syncd.http.plain_answer`); else None, with
    every byte read so far handed to h11, which then reads the answer as it would have.

    A plain answer is reusable when it allows keep-alive and nothing came after its body
    (h11 would keep such bytes for the next answer; here the connection is closed).
    """
    received = bytearray()
    end: int | None = None
    while end is None:
        data = _receive(connection.sock, timeout)
        if not data:
            # Before the head is whole h11 has produced no answer: httpcore's error.
            raise httpx.RemoteProtocolError(_NO_ANSWER)
        searched = max(0, len(received) - 3)
        received += data
        end = head_end(received, searched)
        if not could_be_plain(received) or (
            end is None and len(received) > _MAX_INCOMPLETE_EVENT_SIZE
        ):
            # h11 reads it from here, and refuses at once what it refuses (an empty
            # first line, a TLS alert, a head too long), as it would have.
            connection.h11.receive_data(bytes(received))
            return None
    head = read_plain_head(
        bytes(received[:end]), method=request.method, request_closes=_asks_to_close(request)
    )
    if head is None:
        connection.h11.receive_data(bytes(received))
        return None
    wanted = end + head.content_length
    while len(received) < wanted:
        data = _receive(connection.sock, timeout)
        if not data:
            # Cut short: h11 reads what came and says how much was missing, as it would.
            connection.h11.receive_data(bytes(received))
            connection.h11.receive_data(b"")
            return None
        received += data
    answer = _Answer(head.status_code, head.reason, head.headers, b"1.1")
    reusable = head.keep_alive and len(received) == wanted
    return answer, bytes(memoryview(received)[end:wanted]), reusable


def _write(sock: socket.socket, data: bytes, timeout: float | None) -> None:
    """Write ``data`` a send at a time, each under ``timeout`` (as httpcore: a slow but
    steady reader is no timeout)."""
    view = memoryview(data)
    try:
        while view:
            sock.settimeout(timeout)
            sent = sock.send(view)
            view = view[sent:]
    except TimeoutError as error:
        raise httpx.WriteTimeout(str(error)) from error
    except OSError as error:
        raise httpx.WriteError(str(error)) from error


def _next_event(connection: _Connection, timeout: float | None) -> Any:
    """The next h11 event of the answer, reading as needed; a connection closed before
    the status line is httpcore's "Server disconnected" error."""
    state = connection.h11
    while True:
        try:
            event = state.next_event()
        except h11.RemoteProtocolError as error:
            raise httpx.RemoteProtocolError(str(error)) from error
        if event is not h11.NEED_DATA:
            return event
        data = _receive(connection.sock, timeout)
        if not data and state.their_state is h11.SEND_RESPONSE:
            raise httpx.RemoteProtocolError(_NO_ANSWER)
        state.receive_data(data)


def _asks_to_close(request: httpx.Request) -> bool:
    """True if the request says ``Connection: close`` (tokens read as h11 reads them)."""
    return any(
        token.strip() == b"close"
        for name, value in request.headers.raw
        if name.lower() == b"connection"
        for token in value.lower().split(b",")
    )


def _receive(sock: socket.socket, timeout: float | None) -> bytes:
    """One read of up to :data:`_READ_BYTES` under ``timeout`` (b"" at the end)."""
    try:
        sock.settimeout(timeout)
        return sock.recv(_READ_BYTES)
    except TimeoutError as error:
        raise httpx.ReadTimeout(str(error)) from error
    except OSError as error:
        raise httpx.ReadError(str(error)) from error


def _still_open(sock: socket.socket) -> bool:
    """False if the server closed an idle connection (or sent something unasked)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def _pool_has_options(pool: Any) -> bool:
    """True if the pool connects in a way this sender would not (a Unix socket, a local
    address, socket options, connect retries, HTTP/2)."""
    return bool(
        getattr(pool, "_uds", None)
        or getattr(pool, "_local_address", None)
        or getattr(pool, "_socket_options", None)
        or getattr(pool, "_retries", 0)
        or getattr(pool, "_http2", False)
    )
