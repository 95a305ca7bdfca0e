"""A loopback HTTP server whose answers can break off in their body, for streamed reads.

Each request gets the next scripted :class:`Body`: a status and a body, sent whole, or
only its first ``cut`` bytes before the connection is closed (the client sees a body
shorter than its Content-Length), or its first ``stall_after`` bytes and then nothing
until the server stops (a read that would hang until its timeout).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Body:
    """One scripted answer."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cut: int | None = None
    stall_after: int | None = None


class BodyServer:
    """Serves scripted :class:`Body` answers on 127.0.0.1; the last one repeats."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._script: deque[Body] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while not server._stop.is_set():
                    request_line = self.rfile.readline()
                    if not request_line:
                        return
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # headers; GET requests have no body
                    if not server._answer(request_line.decode().strip(), self.connection):
                        return

        self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._tcp.daemon_threads = True
        self._thread = threading.Thread(
            target=self._tcp.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>``."""
        host, port = self._tcp.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *answers: Body) -> None:
        """Queue answers, in order; the last one is repeated once the queue is empty."""
        with self._lock:
            self._script.extend(answers)

    def _answer(self, request_line: str, connection: socket.socket) -> bool:
        """Send the next answer; False when the connection is done."""
        with self._lock:
            self.requests.append(request_line)
            answer = self._script.popleft() if len(self._script) > 1 else self._script[0]
        head = [f"HTTP/1.1 {answer.status} X", f"Content-Length: {len(answer.body)}"]
        head += [f"{name}: {value}" for name, value in answer.headers.items()]
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if answer.stall_after is not None:
            connection.sendall(answer.body[: answer.stall_after])
            self._stop.wait(30)  # hang, until the test stops the server
            return False
        if answer.cut is not None:
            connection.sendall(answer.body[: answer.cut])
            connection.shutdown(socket.SHUT_RDWR)
            return False
        connection.sendall(answer.body)
        return True

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Wake stalled answers, stop serving and close the socket."""
        self._stop.set()
        self._tcp.shutdown()
        self._tcp.server_close()
        self._thread.join(timeout=5)


@contextmanager
def running_body_server() -> Iterator[BodyServer]:
    """A started :class:`BodyServer`, stopped even when the block fails."""
    served = BodyServer()
    served.start()
    try:
        yield served
    finally:
        served.stop()
