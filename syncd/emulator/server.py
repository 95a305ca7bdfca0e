"""An in-memory, Nebuly-compatible platform-users API on loopback.

Serves both flavours of BRIEF section 2 at once (``platform-users`` and
``eligible-users``, whose insert/update verbs are swapped) over one shared user store,
plus a few ``/_emulator/...`` control endpoints. Faults (503, 429, latency, random
errors, partial success) can be injected per operation from Python or over HTTP.

It is built on the standard library's threading HTTP server with HTTP/1.1 keep-alive
and msgspec for JSON, and answers a full GET of a million users in a few seconds by
caching the encoded list until the next write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import msgspec

from syncd.model import parse_api_date
from syncd.platform.api import (
    FLAVOURS,
    DeleteBody,
    Operation,
    WireUser,
)

__all__ = ["EndpointFaults", "PlatformEmulator"]

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator"
_STATS_PATH = f"{CONTROL_PREFIX}/stats"
_RESET_PATH = f"{CONTROL_PREFIX}/reset-counters"
_FAULTS_PATH = f"{CONTROL_PREFIX}/faults"

_VERBS = ("GET", "PUT", "POST", "DELETE")
_API_ALLOW = ", ".join(_VERBS)

# Insert/update batches are capped by max_batch_size, so a legitimate body is small;
# the cap only protects the emulator from a runaway client.
_MAX_BODY_BYTES = 256 * 1024 * 1024

# Page cursors stay valid (and re-usable, so a client can retry a page) for a while;
# the number of concurrent walks is bounded because each holds a snapshot of the store.
_CURSOR_TTL_S = 600.0
_MAX_WALKS = 16

# How long stop() waits for in-flight requests to finish after their sockets are shut.
_DRAIN_TIMEOUT_S = 5.0


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
    """Insert/update silently leave these end_users out (partial success)."""

    def validate(self) -> None:
        """Raise ``ValueError`` if a field is out of range."""
        if self.fail_next < 0 or self.throttle_next < 0:
            raise ValueError("fail_next and throttle_next must be >= 0")
        if self.retry_after_s < 0 or self.latency_ms < 0:
            raise ValueError("retry_after_s and latency_ms must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")


class _FaultsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_emulator/faults``."""

    operation: Operation
    fail_next: int = 0
    throttle_next: int = 0
    retry_after_s: float = 1.0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    refuse_users: list[str] = msgspec.field(default_factory=list)


class _User(msgspec.Struct, omit_defaults=True, gc=False):
    """A user as the emulator reads, stores and sends it.

    Unlike the shared :class:`WireUser` (which omits empty tags), ``tags`` is always sent,
    as the platform documents it, and a request that leaves ``tags`` out is detectable
    (UNSET) so that user is refused like any other invalid user.
    """

    end_user: str
    tags: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    active_from: str | None = None
    active_to: str | None = None

    def to_wire(self) -> WireUser:
        tags = self.tags if isinstance(self.tags, dict) else {}
        return WireUser(self.end_user, tags, self.active_from, self.active_to)

    @classmethod
    def from_wire(cls, user: WireUser) -> _User:
        return cls(user.end_user, user.tags, user.active_from, user.active_to)


class _UsersBody(msgspec.Struct):
    """Insert/update request and response, and the data file: ``{"users": [...]}``."""

    users: list[_User]


class _PageInfo(msgspec.Struct):
    # Not omit_defaults: the last page must say ``"next_page_cursor": null`` explicitly.
    next_page_cursor: str | None


class _Page(msgspec.Struct):
    users: list[_User]
    pagination: _PageInfo


@dataclass(slots=True)
class _Walk:
    """A paginated GET in progress: a snapshot of the store taken at its first page."""

    users: list[_User]
    version: int
    created: float


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"


def _json(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> _Response:
    return _Response(status, msgspec.json.encode(payload), headers or [])


def _detail(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> _Response:
    return _json(status, {"detail": message}, headers)


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _user_is_valid(user: _User) -> bool:
    """The per-user rules of insert/update; invalid users are left out, not a 422."""
    if not user.end_user.strip() or user.tags is msgspec.UNSET or user.active_from is None:
        return False
    try:
        parse_api_date(user.active_from)
        if user.active_to is not None:
            parse_api_date(user.active_to)
    except ValueError:
        return False
    return True


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/")
        if tag == etag:
            return True
    return False


class PlatformEmulator:
    """An in-memory Nebuly platform-users API served over HTTP on loopback.

    Use as a context manager (``with PlatformEmulator(api_key=...) as emu:``) or call
    :meth:`start` / :meth:`stop`. Thread-safe: one lock guards the store, the counters
    and the faults.
    """

    def __init__(
        self,
        *,
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_batch_size: int = 1000,
        page_size: int | None = None,
        data_file: Path | None = None,
        seed: int = 0,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be >= 1 or None")
        self._api_key = api_key.encode()
        self._host = host
        self._port = port
        self.max_batch_size = max_batch_size
        self.page_size = page_size
        self.data_file = Path(data_file) if data_file is not None else None

        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}
        # Start versions from the clock so a restarted emulator (same data_file, same
        # port) never hands out an ETag a client cached from an earlier run.
        self._version = time.time_ns() // 1000
        self._list_cache: bytes | None = None
        self._list_cache_version = -1
        self._walks: OrderedDict[str, _Walk] = OrderedDict()
        self._faults: dict[Operation, EndpointFaults] = {}
        self._random = random.Random(seed)  # noqa: S311 -- reproducible faults, not crypto
        self._op_calls: dict[Operation, int] = dict.fromkeys(Operation, 0)
        self._verb_calls: dict[str, int] = dict.fromkeys(_VERBS, 0)

        self._lifecycle = threading.Lock()
        self._server: _EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

        if self.data_file is not None and self.data_file.exists():
            self._load(self.data_file)

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
        return f"http://{host_text}:{port}"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    def start(self) -> PlatformEmulator:
        """Bind and serve in a daemon thread; returns self. A restart reuses the port."""
        with self._lifecycle:
            if self._server is not None:
                return self
            server = _EmulatorHTTPServer((self._host, self._port), _Handler, self)
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
        """Shut down, close open connections, join the thread, save ``data_file``."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            server.shutdown()
            server.close_connections(_DRAIN_TIMEOUT_S)
            server.server_close()
            if thread is not None:
                thread.join()
            if self.data_file is not None:
                self._save(self.data_file)

    def __enter__(self) -> PlatformEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop. For the CLI; prints the URL once."""
        stop_requested = threading.Event()

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            stop_requested.set()

        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            # The one print of the library: a parent process reads this line for the URL.
            print(f"syncd emulator listening on {self.url}", flush=True)
            # wait() with a timeout so signal handlers get to run promptly.
            while not stop_requested.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        # The API key is masked: reprs end up in logs and test failure output.
        return f"PlatformEmulator({where}, users={len(self._users)}, api_key='***')"

    # ------------------------------------------------------------- python control

    def set_faults(self, operation: Operation, faults: EndpointFaults) -> None:
        """Replace the faults of ``operation`` (a copy is stored)."""
        faults.validate()
        stored = dataclasses.replace(faults, refuse_users=frozenset(faults.refuse_users))
        with self._lock:
            self._faults[Operation(operation)] = stored

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def faults(self, operation: Operation) -> EndpointFaults:
        """A copy of the faults currently set on ``operation`` (remaining counts)."""
        with self._lock:
            current = self._faults.get(Operation(operation))
            return dataclasses.replace(current) if current else EndpointFaults()

    def calls(self) -> dict[str, int]:
        """Counts per operation (faulted calls included) and per HTTP verb on API paths."""
        with self._lock:
            counts = {op.value: n for op, n in self._op_calls.items()}
            counts.update(self._verb_calls)
            return counts

    def reset_counters(self) -> None:
        """Set every call counter back to zero."""
        with self._lock:
            self._op_calls = dict.fromkeys(Operation, 0)
            self._verb_calls = dict.fromkeys(_VERBS, 0)

    def seed_users(self, users: Iterable[WireUser]) -> None:
        """Add or replace users directly: no validation, no counters."""
        with self._lock:
            seeded = 0
            for user in users:
                self._users[user.end_user] = _User.from_wire(user)
                seeded += 1
            if seeded:
                self._bump()

    def users(self) -> dict[str, WireUser]:
        """Snapshot copy of the store, keyed by end_user (tag dicts are shared: read-only)."""
        with self._lock:
            stored = list(self._users.values())
        return {user.end_user: user.to_wire() for user in stored}

    # --------------------------------------------------------------- persistence

    def _load(self, path: Path) -> None:
        try:
            body = msgspec.json.decode(path.read_bytes(), type=_UsersBody)
        except (OSError, msgspec.DecodeError) as exc:
            raise ValueError(f"cannot load emulator data file {path}: {exc}") from exc
        # A hand-written file may leave tags out; the store always holds a dict.
        self._users = {
            user.end_user: user if isinstance(user.tags, dict) else _User.from_wire(user.to_wire())
            for user in body.users
        }

    def _save(self, path: Path) -> None:
        with self._lock:
            snapshot = list(self._users.values())
        payload = msgspec.json.encode(_UsersBody(users=snapshot))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same directory + os.replace: a crash never leaves half a file.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise

    # ------------------------------------------------------------------- routing

    def _bump(self) -> None:
        """Record a change of the store (caller holds the lock)."""
        self._version += 1
        self._list_cache = None

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # http.client decodes header bytes as latin-1; undo that to compare raw bytes.
        received = token.strip().encode("latin-1", errors="replace")
        return hmac.compare_digest(received, self._api_key)

    def _dispatch(self, method: str, target: str, headers: Message, body: bytes) -> _Response:
        """Answer one request. Pure of socket concerns so it is easy to reason about."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        operation: Operation | None = None
        flavour_spec = next((s for s in FLAVOURS.values() if s.path == path), None)
        if flavour_spec is None and path not in (_STATS_PATH, _RESET_PATH, _FAULTS_PATH):
            return _detail(404, "Not Found")
        if not self._authorized(headers.get("Authorization")):
            return _detail(
                401, "Invalid or missing API key", [("WWW-Authenticate", 'Bearer realm="api"')]
            )
        if flavour_spec is None:
            return self._control(method, path, body)
        operation = flavour_spec.operation(method)
        if operation is None:
            return _detail(405, "Method Not Allowed", [("Allow", _API_ALLOW)])

        with self._lock:
            self._op_calls[operation] += 1
            self._verb_calls[method] += 1
            faults = self._faults.get(operation)
            latency_ms = faults.latency_ms if faults is not None else 0.0
        if latency_ms > 0:
            time.sleep(latency_ms / 1000.0)
        with self._lock:
            faults = self._faults.get(operation)
            refused: frozenset[str] = frozenset()
            if faults is not None:
                if faults.throttle_next > 0:
                    faults.throttle_next -= 1
                    retry_after = _format_retry_after(faults.retry_after_s)
                    return _detail(429, "Too Many Requests", [("Retry-After", retry_after)])
                if faults.fail_next > 0:
                    faults.fail_next -= 1
                    return _detail(503, "Service Unavailable (emulated fault)")
                if faults.error_rate > 0 and self._random.random() < faults.error_rate:
                    return _detail(503, "Service Unavailable (emulated random error)")
                refused = faults.refuse_users

        if operation is Operation.LIST:
            query = parse_qs(parts.query, keep_blank_values=True)
            cursor = query.get("page_cursor", [None])[0]
            return self._list(cursor, headers.get("If-None-Match"))
        if operation is Operation.DELETE:
            return self._delete(body)
        return self._upsert(operation, body, refused)

    # ---------------------------------------------------------------- operations

    def _etag(self, version: int) -> str:
        return f'"{version}"'

    def _list(self, cursor: str | None, if_none_match: str | None) -> _Response:
        if cursor is not None:
            return self._next_page(cursor)
        with self._lock:
            version = self._version
            etag = self._etag(version)
            if _etag_matches(if_none_match, etag):
                return _Response(304, headers=[("ETag", etag)], content_type=None)
            cached = self._list_cache if self._list_cache_version == version else None
            # A snapshot of references is cheap (tens of ms for a million users) and
            # consistent: the emulator replaces user objects, it never mutates them.
            need_snapshot = cached is None or self.page_size is not None
            snapshot = list(self._users.values()) if need_snapshot else []
        headers = [("ETag", etag)]
        if self.page_size is not None:
            return self._first_page(snapshot, version, headers)
        if cached is None:
            # Encode outside the lock (a million users take a fraction of a second) and
            # keep the bytes until the next write: repeated full GETs cost only the send.
            cached = msgspec.json.encode(_UsersBody(users=snapshot))
            with self._lock:
                if self._version == version:
                    self._list_cache, self._list_cache_version = cached, version
        return _Response(200, cached, headers)

    def _first_page(
        self, snapshot: list[_User], version: int, headers: list[tuple[str, str]]
    ) -> _Response:
        assert self.page_size is not None
        next_cursor: str | None = None
        if len(snapshot) > self.page_size:
            walk_id = os.urandom(12).hex()
            with self._lock:
                self._expire_walks()
                self._walks[walk_id] = _Walk(snapshot, version, time.monotonic())
                while len(self._walks) > _MAX_WALKS:
                    self._walks.popitem(last=False)
            next_cursor = f"{walk_id}.{self.page_size}"
        page = _Page(snapshot[: self.page_size], _PageInfo(next_cursor))
        return _Response(200, msgspec.json.encode(page), headers)

    def _next_page(self, cursor: str) -> _Response:
        if self.page_size is None:
            return _detail(400, "page_cursor given but this server does not paginate")
        walk_id, _, offset_text = cursor.partition(".")
        with self._lock:
            self._expire_walks()
            walk = self._walks.get(walk_id)
        if walk is None or not offset_text.isdigit():
            return _detail(400, "unknown or expired page_cursor")
        offset = int(offset_text)
        if not 0 < offset < len(walk.users):
            return _detail(400, "unknown or expired page_cursor")
        end = offset + self.page_size
        next_cursor = f"{walk_id}.{end}" if end < len(walk.users) else None
        page = _Page(walk.users[offset:end], _PageInfo(next_cursor))
        return _Response(200, msgspec.json.encode(page), [("ETag", self._etag(walk.version))])

    def _expire_walks(self) -> None:
        """Drop walks older than the cursor TTL (caller holds the lock)."""
        deadline = time.monotonic() - _CURSOR_TTL_S
        while self._walks:
            oldest = next(iter(self._walks.values()))
            if oldest.created >= deadline:
                break
            self._walks.popitem(last=False)

    def _decode_body(self, body: bytes, kind: type[Any]) -> Any:
        """Decode a request body or raise ``_BadBodyError`` with a 422/413 response."""
        try:
            decoded = msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as exc:
            raise _BadBodyError(_detail(422, f"invalid request body: {exc}")) from None
        except msgspec.DecodeError as exc:
            raise _BadBodyError(_detail(422, f"malformed JSON body: {exc}")) from None
        count = len(decoded.users)
        if count > self.max_batch_size:
            message = f"batch of {count} users exceeds the maximum of {self.max_batch_size}"
            raise _BadBodyError(_detail(413, message))
        return decoded

    def _upsert(self, operation: Operation, body: bytes, refused: frozenset[str]) -> _Response:
        try:
            request = cast(_UsersBody, self._decode_body(body, _UsersBody))
        except _BadBodyError as bad:
            return bad.response
        # Validation (date parsing) happens outside the lock.
        candidates = [u for u in request.users if u.end_user not in refused and _user_is_valid(u)]
        done: list[_User] = []
        with self._lock:
            changed = False
            for user in candidates:
                existing = self._users.get(user.end_user)
                if operation is Operation.INSERT:
                    if existing is not None:
                        continue  # insert never overwrites: left out of the response
                elif existing is None:
                    continue  # update of a missing user: left out of the response
                if existing != user:
                    # The whole object is replaced: an absent active_to clears it.
                    self._users[user.end_user] = user
                    changed = True
                done.append(user)
            if changed:
                self._bump()
        return _json(200, _UsersBody(users=done))

    def _delete(self, body: bytes) -> _Response:
        try:
            request = cast(DeleteBody, self._decode_body(body, DeleteBody))
        except _BadBodyError as bad:
            return bad.response
        with self._lock:
            deleted = 0
            for end_user in request.users:
                if self._users.pop(end_user, None) is not None:
                    deleted += 1
            if deleted:
                self._bump()
        return _json(200, {"message": f"Deleted {deleted} users"})

    # ------------------------------------------------------------------ control

    def _control(self, method: str, path: str, body: bytes) -> _Response:
        if path == _STATS_PATH:
            if method != "GET":
                return _detail(405, "Method Not Allowed", [("Allow", "GET")])
            calls = self.calls()
            with self._lock:
                count = len(self._users)
            return _json(200, {"calls": calls, "users": count})
        if path == _RESET_PATH:
            if method != "POST":
                return _detail(405, "Method Not Allowed", [("Allow", "POST")])
            self.reset_counters()
            return _json(200, {"message": "counters reset"})
        # _FAULTS_PATH
        if method == "DELETE":
            self.clear_faults()
            return _json(200, {"message": "faults cleared"})
        if method != "POST":
            return _detail(405, "Method Not Allowed", [("Allow", "POST, DELETE")])
        try:
            request = msgspec.json.decode(body, type=_FaultsBody)
            faults = EndpointFaults(
                fail_next=request.fail_next,
                throttle_next=request.throttle_next,
                retry_after_s=request.retry_after_s,
                latency_ms=request.latency_ms,
                error_rate=request.error_rate,
                refuse_users=frozenset(request.refuse_users),
            )
            self.set_faults(request.operation, faults)
        except (msgspec.DecodeError, ValueError) as exc:
            return _detail(422, f"invalid faults body: {exc}")
        payload = msgspec.structs.asdict(request)
        payload["refuse_users"] = sorted(faults.refuse_users)
        return _json(200, payload)


class _BadBodyError(Exception):
    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


class _BodyError(Exception):
    """The request body could not be read; answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _EmulatorHTTPServer(ThreadingHTTPServer):
    """Threading HTTP server that tracks its connections so stop() can close them."""

    daemon_threads = True
    # Keep a burst of benchmark connections from being refused.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        emulator: PlatformEmulator,
    ) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_changed = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

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
        # Quiet: a client that goes away is normal; anything else goes to logging only.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        logger.error("emulator connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, hands it to :meth:`PlatformEmulator._dispatch`, writes the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive: a sync makes thousands of calls
    server_version = "syncd-emulator"
    sys_version = ""
    disable_nagle_algorithm = True  # small responses must not wait for delayed ACKs
    timeout = 300  # idle keep-alive connections are dropped eventually

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: nothing is printed per request."""

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

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
        emulator = cast(_EmulatorHTTPServer, self.server).emulator
        try:
            body = self._read_body()
        except _BodyError as error:
            # The rest of the body is unread, so the connection cannot be reused.
            self.close_connection = True
            self._write(_detail(error.status, error.message))
            return
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        try:
            response = emulator._dispatch(self.command, self.path, self.headers, body)
        except Exception:
            logger.exception("emulator handler failed on %s %s", self.command, self.path)
            response = _detail(500, "Internal emulator error")
        self._write(response)

    def _write(self, response: _Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type is not None:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            if response.status != 304:
                self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if response.body and response.status != 304 and self.command != "HEAD":
                self.wfile.write(response.body)
        except (ConnectionError, TimeoutError):
            # The client went away mid-response; nothing to tell it.
            self.close_connection = True
