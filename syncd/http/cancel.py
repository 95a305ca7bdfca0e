"""Cancelling requests that are already on the wire: :class:`ConnectionTracker`.

A read blocked in ``recv()`` on another thread does not wake when its socket is
``close()``-d on Linux (the descriptor stays referenced by the blocked call); it does
wake at once, with end-of-file, after ``socket.shutdown(SHUT_RDWR)``. httpx offers no
public way to reach its sockets, so the tracker wraps the httpcore network backend of
each pool of an :class:`httpx.Client`: every stream it opens is remembered (weakly,
so nothing accumulates in a long-lived client), sockets opened outside httpx (the
:class:`~syncd.http.direct.DirectSender`'s) are registered with
:meth:`ConnectionTracker.track_socket`, and :meth:`ConnectionTracker.cancel` shuts them
all down and refuses new connections from then on.
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import structlog

__all__ = ["ConnectionTracker", "track_connections"]

log = structlog.get_logger(__name__)


class ConnectionTracker:
    """The streams of one client, and a switch that cuts them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_TrackedStream] = weakref.WeakSet()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._cancelled = False
        self.installed = False
        """True once at least one pool's backend is tracked (False: a custom transport)."""

    @property
    def cancelled(self) -> bool:
        """True after :meth:`cancel`."""
        return self._cancelled

    def cancel(self) -> int:
        """Shut down every open connection and refuse new ones; return how many were cut."""
        with self._lock:
            self._cancelled = True
            streams = list(self._streams)
            sockets = list(self._sockets)
        cut = 0
        for sock in [stream.get_extra_info("socket") for stream in streams] + sockets:
            if isinstance(sock, socket.socket):
                try:
                    # shutdown, not close: only shutdown wakes a recv() blocked elsewhere.
                    # The plain socket's: SSLSocket.shutdown drops its TLS state first,
                    # and a send by the owner in between would go out in clear text.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    cut += 1
                except OSError:
                    pass  # already closed by its owner
        return cut

    def track_socket(self, sock: socket.socket) -> None:
        """Cut ``sock`` on :meth:`cancel` too (a connection opened outside httpx);
        after a cancel, close it and refuse it with :class:`httpx.ConnectError`."""
        with self._lock:
            if not self._cancelled:
                self._sockets.add(sock)
                return
        sock.close()
        raise httpx.ConnectError("the client was cancelled")

    def _register(self, stream: _TrackedStream) -> None:
        with self._lock:
            if self._cancelled:
                stream.close()
                raise httpcore.ConnectError("the client was cancelled")
            self._streams.add(stream)

    def _check(self) -> None:
        if self._cancelled:
            raise httpcore.ConnectError("the client was cancelled")


class _TrackedStream(httpcore.NetworkStream):
    """A stream that delegates to httpcore's, and can be found by the tracker."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The TLS stream owns the socket from now on; keep tracking that one.
        self._inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return self

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _TrackingBackend(httpcore.NetworkBackend):
    """httpcore's backend, with every stream it opens registered with the tracker."""

    def __init__(self, inner: httpcore.NetworkBackend, tracker: ConnectionTracker) -> None:
        self._inner = inner
        self._tracker = tracker

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        self._tracker._check()
        stream = _TrackedStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )
        self._tracker._register(stream)
        return stream

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        self._tracker._check()
        stream = _TrackedStream(self._inner.connect_unix_socket(path, timeout, socket_options))
        self._tracker._register(stream)
        return stream

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def track_connections(client: httpx.Client) -> ConnectionTracker:
    """Track the connections of ``client``'s standard transports (proxies included).

    Call before the first request. A custom transport (a test's MockTransport) has no
    sockets: the tracker then stays un-``installed`` and cancelling only refuses nothing.
    """
    tracker = ConnectionTracker()
    transports: list[object] = [client._transport, *client._mounts.values()]
    for transport in transports:
        if not isinstance(transport, httpx.HTTPTransport):
            continue
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend):
            # httpcore hands the pool's backend to each connection it creates, so the
            # swap covers every connection made from now on.
            pool._network_backend = _TrackingBackend(backend, tracker)  # type: ignore[union-attr]
            tracker.installed = True
    if not tracker.installed:
        log.debug("http connections not tracked (custom transport)")
    return tracker
