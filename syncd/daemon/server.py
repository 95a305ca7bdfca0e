"""The daemon's HTTP endpoints, served with the standard library in a thread.

* ``/healthz`` -- liveness: the scheduler loop ticked recently (not LDAP's or Nebuly's
  health: a platform outage must not make Kubernetes restart the daemon);
* ``/readyz`` -- the config is loaded and the state store answers;
* ``/metrics`` -- Prometheus text format;
* ``/status`` -- JSON, per job: last result, counts, reasons, next run;
* ``/`` -- the HTML status page.

With a token, ``/status`` and ``/`` need ``Authorization: Bearer <token>`` (compared in
constant time); the probes and ``/metrics`` stay open, as scrapers and kubelets expect.
"""

from __future__ import annotations

import hmac
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
import structlog

from syncd.daemon.metrics import CONTENT_TYPE

__all__ = ["DaemonView", "StatusServer"]

log = structlog.get_logger(__name__)


class DaemonView(Protocol):
    """What the endpoints read from the daemon."""

    def healthy(self) -> bool:
        """The scheduler loop ticked recently."""
        ...

    def ready(self) -> bool:
        """Config loaded and state store open."""
        ...

    def metrics_text(self) -> bytes:
        """The Prometheus exposition."""
        ...

    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        ...

    def page(self) -> str:
        """The HTML status page."""
        ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds up the daemon's exit
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], view: DaemonView, token: bytes | None) -> None:
        self.view = view
        self.token = token
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "syncd"
    sys_version = ""

    def do_GET(self) -> None:
        """Answer one of the five endpoints."""
        path = self.path.split("?", 1)[0]
        view = self.server.view
        try:
            if path == "/healthz":
                self._probe(view.healthy(), "ok", "scheduler stalled")
            elif path == "/readyz":
                self._probe(view.ready(), "ready", "not ready")
            elif path == "/metrics":
                self._send(HTTPStatus.OK, view.metrics_text(), CONTENT_TYPE)
            elif path in ("/status", "/"):
                if not self._authorized():
                    self._send(
                        HTTPStatus.UNAUTHORIZED,
                        b"unauthorized\n",
                        "text/plain; charset=utf-8",
                        [("WWW-Authenticate", 'Bearer realm="syncd"')],
                    )
                elif path == "/status":
                    body = orjson.dumps(view.status(), option=orjson.OPT_INDENT_2)
                    self._send(HTTPStatus.OK, body, "application/json")
                else:
                    self._send(HTTPStatus.OK, view.page().encode(), "text/html; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        except Exception:
            log.exception("http handler failed", path=path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"error\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        """Probes sometimes use HEAD; answer like GET (the body is small anyway)."""
        self.do_GET()

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        scheme, _, given = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("latin-1", "replace"), token)

    def _probe(self, ok: bool, good: str, bad: str) -> None:
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, f"{good if ok else bad}\n".encode(), "text/plain; charset=utf-8")

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access lines at debug level (scrapes every 15 s would drown the log)."""
        log.debug("http request", request=format % args)


class StatusServer:
    """The endpoints on ``address``, served from a background thread."""

    def __init__(self, address: tuple[str, int], view: DaemonView, token: str | None) -> None:
        self._server = _Server(address, view, token.encode() if token is not None else None)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="syncd-http",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when 0 was asked)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
