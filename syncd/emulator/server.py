"""The reusable half of every emulator: an HTTP server on loopback around a store.

An emulated API is a subclass of :class:`EmulatorServer` that adds a store and two
methods: :meth:`~EmulatorServer.route` (which paths exist, and which operation each
verb means there) and :meth:`~EmulatorServer.handle` (answer one call of an operation).
The base does the rest, the same way for every emulator:

* lifecycle: :meth:`~EmulatorServer.start` / :meth:`~EmulatorServer.stop`, context
  manager, :attr:`~EmulatorServer.url`, a restart keeps the port, stop() closes idle
  keep-alive connections, and :meth:`~EmulatorServer.serve_forever` for the CLI;
* bearer-key authentication (constant-time compare, the key is never echoed);
* call counters per operation and per HTTP verb;
* fault injection per operation (:class:`EndpointFaults`: 503, 429 + Retry-After,
  any other status, latency, seeded random errors, partial success, and answers that
  never come: a connection dropped or a reply held past the client's timeout, before
  or *after* the call was applied) from Python or over HTTP;
* the control endpoints under ``/_emulator``: ``stats``, ``reset-counters``, ``faults``;
* :meth:`~EmulatorServer.mock_transport`: the same dispatch in process, without sockets.

Served with the standard library's threading HTTP server (HTTP/1.1 keep-alive, see
:mod:`syncd.emulator._http`), and with TLS when an :class:`ssl.SSLContext` is given.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import random
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Generic, Self, TypeVar

import httpx
import msgspec

from syncd.emulator._http import (
    EmulatorHTTPServer,
    Request,
    Response,
    detail_response,
    json_response,
    response_headers,
)
from syncd.signals import wait_for_stop

__all__ = [
    "CONTROL_PREFIX",
    "LISTENING_PREFIX",
    "Call",
    "EmulatorServer",
    "EndpointFaults",
    "Request",
    "Response",
    "Route",
    "detail_response",
    "json_response",
]

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator"
_STATS_PATH = f"{CONTROL_PREFIX}/stats"
_RESET_PATH = f"{CONTROL_PREFIX}/reset-counters"
_FAULTS_PATH = f"{CONTROL_PREFIX}/faults"
_CONTROL_PATHS = frozenset({_STATS_PATH, _RESET_PATH, _FAULTS_PATH})

LISTENING_PREFIX = "syncd emulator listening on "
"""What :meth:`EmulatorServer.serve_forever` prints before the URL (parents read it)."""

# How long stop() waits for in-flight requests to finish after their sockets are shut.
_DRAIN_TIMEOUT_S = 5.0

OpT = TypeVar("OpT", bound=StrEnum)


@dataclass
class EndpointFaults:
    """Faults injected into one operation; mutable, set with ``set_faults`` or over HTTP."""

    fail_next: int = 0
    """The next N calls of this operation answer 503."""
    throttle_next: int = 0
    """The next N calls answer 429 with a Retry-After header."""
    retry_after_s: float = 1.0
    """Value of the Retry-After header (integer seconds if whole, else decimal)."""
    latency_ms: float = 0.0
    """Added to every call of this operation."""
    error_rate: float = 0.0
    """Probability of a 503 on each call (seeded, so runs are reproducible)."""
    refuse_users: frozenset[str] = frozenset()
    """Ids a write silently leaves out (partial success). The emulated API decides what
    an id is and which operations honour it (the platform emulator: insert and update,
    by ``end_user``); the base only hands the set to :meth:`EmulatorServer.handle`."""
    status_next: int = 0
    """The next N calls answer ``status_code`` without being handled (a permanent error
    such as 400, 404 or 405, or any 5xx)."""
    status_code: int = 400
    """The status of ``status_next`` answers (400-599)."""
    drop_next: int = 0
    """The next N calls get no answer: the connection is closed before the call is
    handled (a reset before the server did anything)."""
    drop_after_apply_next: int = 0
    """The next N calls are handled (a write is applied), then the connection is closed
    without an answer: the client cannot know the write happened."""
    stall_next: int = 0
    """The next N calls are held for ``stall_s`` without being handled, then the
    connection is closed (a client with a shorter timeout sees a read timeout)."""
    stall_after_apply_next: int = 0
    """The next N calls are handled (a write is applied), then the answer is held for
    ``stall_s`` before it is sent: too late for a client with a shorter timeout."""
    stall_s: float = 5.0
    """How long ``stall_next`` / ``stall_after_apply_next`` hold a call (cut short when
    the server stops). Over :meth:`EmulatorServer.mock_transport` nothing waits: the
    client gets ``httpx.ReadTimeout`` at once."""

    def validate(self) -> None:
        """Raise ``ValueError`` if a field is out of range."""
        if self.fail_next < 0 or self.throttle_next < 0:
            raise ValueError("fail_next and throttle_next must be >= 0")
        if self.retry_after_s < 0 or self.latency_ms < 0:
            raise ValueError("retry_after_s and latency_ms must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        counts = (
            self.status_next,
            self.drop_next,
            self.drop_after_apply_next,
            self.stall_next,
            self.stall_after_apply_next,
        )
        if min(counts) < 0:
            raise ValueError(
                "status_next, drop_next, drop_after_apply_next, stall_next and "
                "stall_after_apply_next must be >= 0"
            )
        if not 400 <= self.status_code <= 599:
            raise ValueError("status_code must be between 400 and 599")
        if self.stall_s < 0:
            raise ValueError("stall_s must be >= 0")


class _NoAnswerError(Exception):
    """A fault: the client gets no answer in time (raised inside the dispatch).

    ``late`` is the answer of a call that was handled and is sent after the stall
    (None: the connection is closed without one); ``stall_s`` is how long to hold the
    call first (0: at once).
    """

    def __init__(self, *, stall_s: float = 0.0, late: Response | None = None) -> None:
        super().__init__("no answer (emulated fault)")
        self.stall_s = stall_s
        self.late = late


class _ConnectionDroppedError(ConnectionAbortedError):
    """Raised out of :meth:`EmulatorServer.dispatch` so the socket server closes the
    connection without writing an answer (it treats a ConnectionError quietly)."""


class _FaultsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_emulator/faults``; ``operation`` is checked against the API's enum."""

    operation: str
    fail_next: int = 0
    throttle_next: int = 0
    retry_after_s: float = 1.0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    refuse_users: list[str] = msgspec.field(default_factory=list)
    status_next: int = 0
    status_code: int = 400
    drop_next: int = 0
    drop_after_apply_next: int = 0
    stall_next: int = 0
    stall_after_apply_next: int = 0
    stall_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Route(Generic[OpT]):
    """What :meth:`EmulatorServer.route` finds at a path."""

    methods: Mapping[str, OpT]
    """Verb -> operation. Other verbs answer 405 with these in the Allow header."""
    params: Mapping[str, str] = field(default_factory=dict)
    """Values taken from the path (e.g. a user id), handed to the handler."""


@dataclass(frozen=True, slots=True)
class Call(Generic[OpT]):
    """One authorised, counted call that got past the faults, for :meth:`handle`."""

    operation: OpT
    request: Request
    params: Mapping[str, str]
    refused: frozenset[str]
    """``EndpointFaults.refuse_users`` of the operation at the time of the call."""


class EmulatorServer(ABC, Generic[OpT]):
    """An emulated HTTP API on loopback: subclass it with a store, :meth:`route`, :meth:`handle`.

    Use as a context manager (``with MyEmulator(...) as emu:``) or call :meth:`start` /
    :meth:`stop`. Thread-safe: one lock guards the counters, the faults and their random
    generator; the subclass guards its own store.
    """

    def __init__(
        self,
        *,
        api_key: str,
        operations: type[OpT],
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        counted_verbs: Iterable[str] = ("GET", "PUT", "POST", "PATCH", "DELETE"),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Configure; nothing is bound before :meth:`start`.

        ``operations`` is the API's operation enum (counters and faults are kept per
        member). ``counted_verbs`` are listed in :meth:`calls` even at zero. With
        ``ssl_context`` (server side, certificate loaded) the server speaks HTTPS and
        :attr:`url` starts with ``https://``; the TLS handshake runs in the connection's
        own thread, so a slow or broken client never stalls the accept loop.
        """
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._api_key = api_key.encode()
        self._operations = operations
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._counted_verbs = tuple(counted_verbs)

        self._control_lock = threading.Lock()
        self._faults: dict[OpT, EndpointFaults] = {}
        self._random = random.Random(seed)  # noqa: S311 -- reproducible faults, not crypto
        self._op_calls: dict[OpT, int] = dict.fromkeys(operations, 0)
        self._verb_calls: dict[str, int] = dict.fromkeys(self._counted_verbs, 0)
        # Faults that fired (one set but never reached is not met): fired_faults().
        self._fired: Counter[str] = Counter()

        self._lifecycle = threading.Lock()
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Set by stop(): calls held by a stall fault wake up instead of delaying it.
        self._stopping = threading.Event()

    # ------------------------------------------------------------ what subclasses add

    @abstractmethod
    def route(self, path: str) -> Route[OpT] | None:
        """What is served at ``path`` (normalised, no query), or None for a 404.

        Called before authentication, so it must not reveal anything but existence.
        """

    @abstractmethod
    def handle(self, call: Call[OpT]) -> Response:
        """Answer one call. Auth, counters and faults have been applied already."""

    def extra_stats(self) -> dict[str, object]:
        """Fields added to ``GET /_emulator/stats`` next to ``calls`` (e.g. a store size)."""
        return {}

    def after_stop(self) -> None:
        """Called by :meth:`stop` once the server is closed (e.g. to save a data file)."""

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43123`` (known once started)."""
        server = self._server
        if server is None:
            raise RuntimeError("the emulator is not started; call start() first")
        host, port = server.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        if ":" in host_text:
            host_text = f"[{host_text}]"
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host_text}:{port}"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self. A restart reuses the port."""
        with self._lifecycle:
            if self._server is not None:
                return self
            self._stopping.clear()
            server = EmulatorHTTPServer(
                (self._host, self._port), self._serve_http, self._ssl_context
            )
            # Remember the port a port-0 bind got, so stop()/start() keeps the URL.
            self._port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"syncd-emulator:{self._port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()
            return self

    def stop(self) -> None:
        """Shut down, close open connections, join the thread, then :meth:`after_stop`."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            self._stopping.set()
            server.shutdown()
            server.close_connections(_DRAIN_TIMEOUT_S)
            server.server_close()
            if thread is not None:
                thread.join()
            self.after_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop. For the CLI; prints the URL once.

        Must run in the main thread (signal handlers can only be installed there).
        """
        with wait_for_stop() as stop_requested:
            self.start()
            try:
                # The one print of the library: a parent process reads this line.
                print(f"{LISTENING_PREFIX}{self.url}", flush=True)
                while not stop_requested.wait(0.5):
                    pass
            finally:
                self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        # The API key is masked: reprs end up in logs and test failure output.
        return f"{type(self).__name__}({where}, api_key='***')"

    # ------------------------------------------------------------- python control

    def set_faults(self, operation: OpT, faults: EndpointFaults) -> None:
        """Replace the faults of ``operation`` (a copy is stored)."""
        faults.validate()
        stored = dataclasses.replace(faults, refuse_users=frozenset(faults.refuse_users))
        with self._control_lock:
            self._faults[self._operations(operation)] = stored

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._control_lock:
            self._faults.clear()

    def faults(self, operation: OpT) -> EndpointFaults:
        """A copy of the faults currently set on ``operation`` (remaining counts)."""
        with self._control_lock:
            current = self._faults.get(self._operations(operation))
            return dataclasses.replace(current) if current else EndpointFaults()

    def calls(self) -> dict[str, int]:
        """Counts per operation (faulted calls included) and per HTTP verb on API paths."""
        with self._control_lock:
            counts = {op.value: n for op, n in self._op_calls.items()}
            counts.update(self._verb_calls)
            return counts

    def reset_counters(self) -> None:
        """Set every call counter (and the fired-fault counts) back to zero."""
        with self._control_lock:
            self._op_calls = dict.fromkeys(self._operations, 0)
            self._verb_calls = dict.fromkeys(self._counted_verbs, 0)
            self._fired.clear()

    def fired_faults(self) -> dict[str, int]:
        """Faults that fired, by kind (``throttle``, ``fail``, ``random_error``, ``status``,
        ``drop``, ``stall``, ``drop_after_apply``, ``stall_after_apply``, and the API's
        own: :meth:`count_fired`). Kept by clear_faults(), zeroed by reset_counters()."""
        with self._control_lock:
            return dict(self._fired)

    def count_fired(self, kind: str, count: int = 1) -> None:
        """Count a fault of the emulated API's own (e.g. a 413, a refused user)."""
        with self._control_lock:
            self._fired[kind] += count

    # ------------------------------------------------------------------ dispatch

    def mock_transport(self) -> httpx.MockTransport:
        """An httpx transport that answers through :meth:`dispatch`, without sockets.

        Auth, counters, faults and the store are the same as over HTTP, and it works
        whether or not the server is started. Injected latency sleeps the calling
        thread (also under an async client, whose loop it blocks).
        """

        def answer(request: httpx.Request) -> httpx.Response:
            emulated = Request.from_target(
                request.method,
                request.url.raw_path.decode("ascii"),
                ((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw),
                request.read(),
            )
            try:
                response = self.dispatch(emulated)
            except _NoAnswerError as no_answer:
                # No socket to hold or close: raise what a client would have seen.
                if no_answer.stall_s > 0:
                    raise httpx.ReadTimeout("timed out (emulated stall)", request=request) from None
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response. (emulated fault)",
                    request=request,
                ) from None
            headers = response_headers(response)
            without_body = response.status == 304 or emulated.method == "HEAD"
            content = b"" if without_body else response.body
            return httpx.Response(response.status, headers=headers, content=content)

        return httpx.MockTransport(answer)

    def dispatch(self, request: Request) -> Response:
        """Answer one request; a failing handler becomes a 500, logged with its traceback.

        A fault that sends no answer raises instead (an internal exception, which a
        subclass that overrides this method lets through): the socket server and the
        mock transport each turn it into what a client of theirs would see.
        """
        try:
            return self._dispatch(request)
        except _NoAnswerError:
            raise
        except Exception:
            logger.exception("emulator handler failed on %s %s", request.method, request.path)
            return detail_response(500, "Internal emulator error")

    def _serve_http(self, request: Request) -> Response:
        """:meth:`dispatch` for the socket server: a fault without an answer holds the
        call for its stall (woken by stop()), then sends the late answer or raises a
        ConnectionError, which the server takes as "close without a reply"."""
        try:
            return self.dispatch(request)
        except _NoAnswerError as no_answer:
            if no_answer.stall_s > 0:
                self._stopping.wait(no_answer.stall_s)
            if no_answer.late is not None:
                return no_answer.late
            raise _ConnectionDroppedError("connection dropped (emulated fault)") from None

    def _dispatch(self, request: Request) -> Response:
        is_control = request.path in _CONTROL_PATHS
        route = None if is_control else self.route(request.path)
        if route is None and not is_control:
            return detail_response(404, "Not Found")
        if not self._authorized(request.header("Authorization")):
            return detail_response(
                401, "Invalid or missing API key", [("WWW-Authenticate", 'Bearer realm="api"')]
            )
        if route is None:
            return self._control(request)
        operation = route.methods.get(request.method)
        if operation is None:
            return detail_response(405, "Method Not Allowed", [("Allow", ", ".join(route.methods))])
        refused = self._admit(operation, request.method)
        if isinstance(refused, Response):
            return refused
        response = self.handle(Call(operation, request, route.params, refused))
        after = self._after_handle(operation)
        if after is not None:
            raise _NoAnswerError(stall_s=after, late=response if after > 0 else None)
        return response

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Header values are latin-1 text (see Request); compare the bytes on the wire.
        received = token.strip().encode("latin-1", errors="replace")
        return hmac.compare_digest(received, self._api_key)

    def _admit(self, operation: OpT, method: str) -> frozenset[str] | Response:
        """Count the call, add latency, apply faults: a fault response or the refused ids."""
        with self._control_lock:
            self._op_calls[operation] += 1
            self._verb_calls[method] = self._verb_calls.get(method, 0) + 1
            faults = self._faults.get(operation)
            latency_ms = faults.latency_ms if faults is not None else 0.0
        if latency_ms > 0:
            # Outside the lock: a slow operation must not hold up the others.
            time.sleep(latency_ms / 1000.0)
        with self._control_lock:
            faults = self._faults.get(operation)
            if faults is None:
                return frozenset()
            if faults.throttle_next > 0:
                faults.throttle_next -= 1
                self._fired["throttle"] += 1
                retry_after = _format_retry_after(faults.retry_after_s)
                return detail_response(429, "Too Many Requests", [("Retry-After", retry_after)])
            if faults.fail_next > 0:
                faults.fail_next -= 1
                self._fired["fail"] += 1
                return detail_response(503, "Service Unavailable (emulated fault)")
            if faults.status_next > 0:
                faults.status_next -= 1
                self._fired["status"] += 1
                return detail_response(
                    faults.status_code, f"HTTP {faults.status_code} (emulated fault)"
                )
            if faults.drop_next > 0:
                faults.drop_next -= 1
                self._fired["drop"] += 1
                raise _NoAnswerError()
            if faults.stall_next > 0:
                faults.stall_next -= 1
                self._fired["stall"] += 1
                raise _NoAnswerError(stall_s=faults.stall_s)
            if faults.error_rate > 0 and self._random.random() < faults.error_rate:
                self._fired["random_error"] += 1
                return detail_response(503, "Service Unavailable (emulated random error)")
            return faults.refuse_users

    def _after_handle(self, operation: OpT) -> float | None:
        """A fault that withholds the answer of a handled call: None (answer now), 0
        (drop the connection) or the seconds to hold the answer."""
        with self._control_lock:
            faults = self._faults.get(operation)
            if faults is None:
                return None
            if faults.drop_after_apply_next > 0:
                faults.drop_after_apply_next -= 1
                self._fired["drop_after_apply"] += 1
                return 0.0
            if faults.stall_after_apply_next > 0:
                faults.stall_after_apply_next -= 1
                self._fired["stall_after_apply"] += 1
                # A zero stall still answers (late by nothing), unlike a drop.
                return max(faults.stall_s, 1e-9)
            return None

    def _control(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path == _STATS_PATH:
            if method != "GET":
                return detail_response(405, "Method Not Allowed", [("Allow", "GET")])
            return json_response(200, {"calls": self.calls(), **self.extra_stats()})
        if path == _RESET_PATH:
            if method != "POST":
                return detail_response(405, "Method Not Allowed", [("Allow", "POST")])
            self.reset_counters()
            return json_response(200, {"message": "counters reset"})
        # _FAULTS_PATH
        if method == "DELETE":
            self.clear_faults()
            return json_response(200, {"message": "faults cleared"})
        if method != "POST":
            return detail_response(405, "Method Not Allowed", [("Allow", "POST, DELETE")])
        try:
            body = msgspec.json.decode(request.body, type=_FaultsBody)
            faults = EndpointFaults(
                fail_next=body.fail_next,
                throttle_next=body.throttle_next,
                retry_after_s=body.retry_after_s,
                latency_ms=body.latency_ms,
                error_rate=body.error_rate,
                refuse_users=frozenset(body.refuse_users),
                status_next=body.status_next,
                status_code=body.status_code,
                drop_next=body.drop_next,
                drop_after_apply_next=body.drop_after_apply_next,
                stall_next=body.stall_next,
                stall_after_apply_next=body.stall_after_apply_next,
                stall_s=body.stall_s,
            )
            # The enum lookup raises ValueError for an operation this API does not have.
            self.set_faults(self._operations(body.operation), faults)
        except (msgspec.DecodeError, ValueError) as exc:
            return detail_response(422, f"invalid faults body: {exc}")
        payload = msgspec.structs.asdict(body)
        payload["refuse_users"] = sorted(faults.refuse_users)
        return json_response(200, payload)


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)
