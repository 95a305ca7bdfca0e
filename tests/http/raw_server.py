"""A loopback HTTP/1.1 server that records requests byte for byte and sends scripted bytes.

For the tests of :mod:`syncd.http.direct`, which compare what goes on the wire through
httpx and through syncd's own sockets: every request is kept as the exact bytes received
(head and body) with the number of the connection it came on, and each answer is the
exact bytes scripted, followed by what the server does with the connection then:
keep it, close it, close it without answering, or stall until the server stops.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

Then = Literal["keep", "close", "no-answer", "stall"]


@dataclass(frozen=True)
class RawAnswer:
    """The bytes of one answer, and what the server does with the connection after it."""

    data: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    then: Then = "keep"
    drip: bool = False  # sent a byte at a time (each a read of its own for the client)


@dataclass(frozen=True)
class RawRequest:
    """One request as received: the number of its connection (from 0), head and body."""

    connection: int
    head: bytes
    body: bytes

    @property
    def data(self) -> bytes:
        """The request's bytes, exactly as they came."""
        return self.head + self.body


def answer(status: int, body: bytes = b"{}", *headers: str, then: Then = "keep") -> RawAnswer:
    """An answer with a Content-Length and the given header lines."""
    lines = [f"HTTP/1.1 {status} Scripted", *headers, f"Content-Length: {len(body)}"]
    return RawAnswer(("\r\n".join(lines) + "\r\n\r\n").encode() + body, then)


class RawServer:
    """Serves scripted :class:`RawAnswer` s on 127.0.0.1 (200 ``{}`` once they run out)."""

    def __init__(
        self, tls: ssl.SSLContext | None = None, *, slow_read: tuple[int, float] | None = None
    ) -> None:
        """``slow_read``: read request bodies ``bytes`` at a time with a pause of ``s``
        seconds in between (a server that drains a large body slowly but steadily)."""
        self.requests: list[RawRequest] = []
        self.alpn: list[str | None] = []
        """The protocol each TLS connection negotiated by ALPN, in order."""
        self.connections = 0
        self.echo = False
        """Once the script runs out, answer each request with its own body."""
        self.closed_by_client = threading.Event()
        """Set when a client closed a connection between two requests."""
        self.closed_by_server = threading.Event()
        """Set once the server closed a connection after an answer (``then="close"``)."""
        self._tls = tls
        self._slow_read = slow_read
        self._script: deque[RawAnswer] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        port = self._listener.getsockname()[1]
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"

    def script(self, *answers: RawAnswer) -> None:
        """Queue answers, in order."""
        with self._lock:
            self._script.extend(answers)

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> bool:
        """Wait (bounded) until ``count`` requests came in, so their answers are taken
        from the script; whether they did."""
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count:
            if time.monotonic() >= deadline:
                return False
            self._stop.wait(0.005)
        return True

    def start(self) -> None:
        """Accept connections on a thread of its own."""
        self._accepting.start()

    def stop(self) -> None:
        """Stop accepting, wake stalled answers and wait for every thread."""
        self._stop.set()
        self._accepting.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                number = self.connections
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
                assert isinstance(sock, ssl.SSLSocket)
                with self._lock:
                    self.alpn.append(sock.selected_alpn_protocol())
            sock.settimeout(0.05)
            buffer = b""
            while not self._stop.is_set():
                request, buffer, eof = self._read_request(sock, buffer, number)
                if request is None:
                    if eof:
                        self.closed_by_client.set()
                    return
                with self._lock:
                    self.requests.append(request)
                    if self._script:
                        scripted = self._script.popleft()
                    elif self.echo:
                        scripted = answer(200, request.body)
                    else:
                        scripted = RawAnswer()
                if scripted.then == "no-answer":
                    return
                if scripted.drip:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for offset in range(len(scripted.data)):
                        sock.sendall(scripted.data[offset : offset + 1])
                        self._stop.wait(0.001)
                else:
                    sock.sendall(scripted.data)
                if scripted.then == "stall":
                    self._stop.wait(30)
                    return
                if scripted.then == "close":
                    sock.close()
                    self.closed_by_server.set()
                    return
        except (OSError, ssl.SSLError):
            return  # the client went away, or the handshake failed: its test says so
        finally:
            sock.close()

    def _read_request(
        self, sock: socket.socket, buffer: bytes, number: int
    ) -> tuple[RawRequest | None, bytes, bool]:
        """The next request (None at end of file or stop), what follows it, and whether
        the client closed the connection."""
        while b"\r\n\r\n" not in buffer:
            chunk = self._recv(sock)
            if chunk is None:
                return None, buffer, False
            if not chunk:
                return None, buffer, True
            buffer += chunk
        end = buffer.index(b"\r\n\r\n") + 4
        head, buffer = buffer[:end], buffer[end:]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buffer) < length:
            if self._slow_read is not None:
                self._stop.wait(self._slow_read[1])
            chunk = self._recv(sock, self._slow_read[0] if self._slow_read else 65536)
            if not chunk:
                return None, buffer, chunk is not None
            buffer += chunk
        return RawRequest(number, head, buffer[:length]), buffer[length:], False

    def _recv(self, sock: socket.socket, size: int = 65536) -> bytes | None:
        """Bytes from ``sock`` (b"" at end of file), or None once the server stops."""
        while not self._stop.is_set():
            try:
                return sock.recv(size)
            except TimeoutError:
                continue
        return None
