"""A TCP forwarder that can cut a directory off mid-read.

Samba's LDAP ports are fixed, so a test cannot stop the session DC without breaking
every later test. Reads go through this proxy instead: it relays bytes both ways
between a loopback port and the real server, and after ``budget`` bytes from the
server it drops every connection at once, which the client sees exactly like a
directory that died half-way through a reply. :meth:`CuttingProxy.stop` makes the
"directory" unreachable (connection refused). Threads and sockets are all closed by
:meth:`~CuttingProxy.stop`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self


class CuttingProxy:
    """Relay ``127.0.0.1:<port>`` to ``target``; cut everything after ``budget`` bytes."""

    def __init__(self, target: tuple[str, int], *, budget: int | None = None) -> None:
        self.target = target
        self.budget = budget
        """Bytes from the server relayed before every connection is dropped (None: no cut)."""
        self.relayed = 0
        """Bytes from the server relayed so far, over all connections."""
        self.cut = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        """Every relayed socket: shut down by a cut, closed by :meth:`stop` (after the
        relay threads ended, so no thread uses a closed descriptor)."""
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()

    def __enter__(self) -> Self:
        self._spawn(self._accept_loop)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self.cut or self._stopping.is_set():
                    client.close()
                    upstream.close()
                    continue
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, False)
            self._spawn(self._pump, upstream, client, True)

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        source.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if from_server:
                with self._lock:
                    allowed = len(data)
                    if self.budget is not None:
                        allowed = max(0, min(allowed, self.budget - self.relayed))
                    self.relayed += allowed
                    data = data[:allowed]
                    over = self.budget is not None and self.relayed >= self.budget
                if data:
                    with contextlib.suppress(OSError):
                        sink.sendall(data)
                if over:
                    self._cut_all()
                    break
                continue
            try:
                sink.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _cut_all(self) -> None:
        """Drop every relayed connection now (both ends), and refuse new ones."""
        with self._lock:
            self.cut = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Stop listening, drop every connection, and join the relay threads."""
        self._stopping.set()
        self._listener.close()
        self._cut_all()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()
