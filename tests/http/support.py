"""Helpers of the tests of :mod:`syncd.http`: a scripted loopback server, a second API.

The platform emulator speaks Nebuly; the generic layer is tested against any API, so
its tests script the answers (status, headers, body) of a real HTTP server on
127.0.0.1 and read back what was sent. ``GRAPH_LIKE`` is a second API policy with other
retryable statuses and other error types, as Microsoft Graph's will be.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from syncd.errors import SourceError, SourceUnavailableError, SyncdError
from syncd.http import ApiPolicy


@dataclass(frozen=True)
class Answer:
    """One scripted answer."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Script = Answer | Callable[[Seen], Answer]


class ScriptedServer:
    """Answers each request with the next scripted answer (200 ``{}`` once they run out)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._script: deque[Script] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                headers = {name.lower(): value for name, value in self.headers.items()}
                seen = Seen(self.command, self.path, headers, self.rfile.read(length))
                answer = server._next(seen)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests read ``seen`` instead."""

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>``."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *answers: Script) -> None:
        """Queue answers; a callable builds its answer from the request."""
        with self._lock:
            self._script.extend(answers)

    def _next(self, seen: Seen) -> Answer:
        with self._lock:
            self.seen.append(seen)
            script = self._script.popleft() if self._script else Answer()
        return script if isinstance(script, Answer) else script(seen)

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._http.shutdown()
        self._http.server_close()


class DirectoryAuthError(SourceError):
    """The directory refused the credentials (a test-only error type)."""


def _source_error(message: str, /, *, status_code: int | None = None) -> SyncdError:
    return SourceError(message)  # SourceError takes no status code


def _source_unavailable(message: str, /, *, status_code: int | None = None) -> SyncdError:
    return SourceUnavailableError(message)


def _directory_auth_error(message: str, /, *, status_code: int | None = None) -> SyncdError:
    return DirectoryAuthError(message)


GRAPH_LIKE = ApiPolicy(
    name="graph",
    subject="Microsoft Graph",
    retryable_statuses=frozenset({429, 503}),  # not 500, 502, 504, 408: unlike the platform
    auth_statuses=frozenset({401}),  # 403 is a missing permission here: a plain error
    unavailable=_source_unavailable,
    error=_source_error,
    auth_error=_directory_auth_error,
    auth_message="Microsoft Graph refused the token (HTTP {status}) at {target}",
)
