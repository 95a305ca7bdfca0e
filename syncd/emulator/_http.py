"""The wire side of the emulators: requests, responses and the HTTP(S) socket server.

Transport only, no emulation policy: :class:`EmulatorHTTPServer` reads each request
into a :class:`Request`, hands it to a ``dispatch`` function and writes the
:class:`Response` back. :class:`~syncd.emulator.server.EmulatorServer` supplies that
function and builds its ``httpx.MockTransport`` on the same two types.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import msgspec

logger = logging.getLogger(__name__)

# The emulated APIs cap their batches, so a legitimate body is small; this cap only
# protects the emulator from a runaway client.
_MAX_BODY_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class Response:
    """An answer: status, body bytes, extra headers. ``content_type=None`` sends none."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"


def json_response(
    status: int, payload: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON response; ``payload`` is anything msgspec encodes (dicts, Structs...)."""
    return Response(status, msgspec.json.encode(payload), headers or [])


def detail_response(
    status: int, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    """An error in the FastAPI convention the emulated APIs share: ``{"detail": message}``."""
    return json_response(status, {"detail": message}, headers)


@dataclass(frozen=True, slots=True)
class Request:
    """One request, the same whether it came over a socket or through the mock transport.

    Header names are lower-case; values are latin-1 text, as http.client decodes them,
    so ``value.encode("latin-1")`` gives back the bytes on the wire.
    """

    method: str
    path: str
    """Without the query and without a trailing slash (``/`` stays ``/``)."""
    query: str
    headers: Mapping[str, str]
    body: bytes = b""

    @classmethod
    def from_target(
        cls, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Request:
        """Build from a request target (``/path?query``) and header pairs (first wins)."""
        parts = urlsplit(target)
        lowered: dict[str, str] = {}
        for name, value in headers:
            lowered.setdefault(name.lower(), value)
        path = parts.path.rstrip("/") or "/"
        return cls(method.upper(), path, parts.query, lowered, body)

    def header(self, name: str) -> str | None:
        """A header value by case-insensitive name, or None."""
        return self.headers.get(name.lower())

    def query_value(self, name: str) -> str | None:
        """The first value of a query parameter (``""`` if given empty), or None."""
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[0] if values else None


def response_headers(response: Response) -> list[tuple[str, str]]:
    """The headers both transports send (the HTTP one adds Date, Server, Connection)."""
    headers: list[tuple[str, str]] = []
    if response.content_type is not None:
        headers.append(("Content-Type", response.content_type))
    headers.extend(response.headers)
    if response.status != 304:
        headers.append(("Content-Length", str(len(response.body))))
    return headers


class _BodyError(Exception):
    """The request body could not be read; answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Threading HTTP(S) server that tracks its connections so stop() can close them."""

    daemon_threads = True
    # Keep a burst of benchmark connections from being refused.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        dispatch: Callable[[Request], Response],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.dispatch = dispatch
        self._connections: set[socket.socket] = set()
        self._connections_changed = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        if ssl_context is not None:
            # Accepted sockets inherit the wrapping; the handshake waits for the handler.
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._connections_changed:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._connections_changed:
                self._connections.discard(request)
                self._connections_changed.notify_all()

    def close_connections(self, timeout: float) -> None:
        """Shut every open (keep-alive) connection and wait for the handlers to finish."""
        with self._connections_changed:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        with self._connections_changed:
            self._connections_changed.wait_for(lambda: not self._connections, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Quiet: a client that goes away (or fails the TLS handshake) is normal; anything
        # else goes to logging only.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        logger.error("emulator connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, hands it to the server's ``dispatch``, writes the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive: a sync makes thousands of calls
    server_version = "syncd-emulator"
    sys_version = ""
    disable_nagle_algorithm = True  # small responses must not wait for delayed ACKs
    timeout = 300  # idle keep-alive connections are dropped eventually

    def setup(self) -> None:
        """Set the socket timeout, then finish a pending TLS handshake in this thread."""
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: nothing is printed per request."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(self._read_chunks())
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise _BodyError(400, "invalid Content-Length") from None
        if length < 0:
            raise _BodyError(400, "invalid Content-Length")
        if length > _MAX_BODY_BYTES:
            raise _BodyError(413, f"request body of {length} bytes is too large")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionResetError("client disconnected while sending the body")
        return body

    def _read_chunks(self) -> Iterator[bytes]:
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ConnectionResetError("client disconnected while sending the body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(400, "invalid chunked encoding") from None
            if size == 0:
                # Skip trailers up to the blank line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            total += size
            if total > _MAX_BODY_BYTES:
                raise _BodyError(413, "request body is too large")
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise ConnectionResetError("client disconnected while sending the body")
            self.rfile.readline(1024)  # CRLF after the chunk
            yield chunk

    def _handle(self) -> None:
        dispatch = cast(EmulatorHTTPServer, self.server).dispatch
        try:
            body = self._read_body()
        except _BodyError as error:
            # The rest of the body is unread, so the connection cannot be reused.
            self.close_connection = True
            self._write(detail_response(error.status, error.message))
            return
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        request = Request.from_target(self.command, self.path, self.headers.items(), body)
        self._write(dispatch(request))

    # http.server looks a method up per verb; every verb goes to the emulated API, which
    # answers 405 for those it does not route.
    do_GET = do_PUT = do_POST = do_DELETE = _handle  # noqa: N815
    do_PATCH = do_HEAD = do_OPTIONS = _handle  # noqa: N815

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response_headers(response):
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if response.body and response.status != 304 and self.command != "HEAD":
                self.wfile.write(response.body)
        except (ConnectionError, TimeoutError):
            # The client went away mid-response; nothing to tell it.
            self.close_connection = True
