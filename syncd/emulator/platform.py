"""An in-memory, Nebuly-compatible platform-users API: a store plus routes.

Serves both flavours at once (``platform-users`` and ``eligible-users``, whose
insert/update verbs are swapped; see ``docs/nebuly-api.md``) over one shared user store.
Auth, counters, fault injection, the ``/_emulator/...`` control endpoints and the
lifecycle come from :class:`~syncd.emulator.server.EmulatorServer`.

It answers a full GET of a million users in a few seconds by caching the encoded list
until the next write, and can persist the store to a JSON data file between runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec

from syncd.emulator.server import (
    CONTROL_PREFIX,
    Call,
    EmulatorServer,
    EndpointFaults,
    Response,
    Route,
    detail_response,
    json_response,
)
from syncd.files import write_atomically
from syncd.model import parse_api_date
from syncd.platform.api import FLAVOURS, DeleteBody, Operation, WireUser

__all__ = ["CONTROL_PREFIX", "EndpointFaults", "PlatformEmulator"]

# Page cursors stay valid (and re-usable, so a client can retry a page) for a while;
# the number of concurrent walks is bounded because each holds a snapshot of the store.
_CURSOR_TTL_S = 600.0
_MAX_WALKS = 16

# Every verb either flavour uses, listed in calls() even at zero.
_VERBS = ("GET", "PUT", "POST", "DELETE")


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


class _BadBodyError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class PlatformEmulator(EmulatorServer[Operation]):
    """An in-memory Nebuly platform-users API served over HTTP on loopback.

    Use as a context manager (``with PlatformEmulator(api_key=...) as emu:``) or call
    :meth:`start` / :meth:`stop`; :meth:`mock_transport` serves the same store without
    sockets. Thread-safe: one lock guards the store (the base guards counters/faults).
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
        """Configure and load ``data_file`` if it exists; nothing is bound yet.

        Insert/update/delete batches above ``max_batch_size`` answer 413; with
        ``page_size`` GET is paginated with cursors; ``data_file`` is saved on stop();
        ``seed`` makes ``error_rate`` faults reproducible.
        """
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be >= 1 or None")
        super().__init__(
            api_key=api_key,
            operations=Operation,
            host=host,
            port=port,
            seed=seed,
            counted_verbs=_VERBS,
        )
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
        # Both flavours, one store: the operation a verb means depends on the path only.
        self._routes = {
            spec.path: Route({spec.method(op): op for op in Operation})
            for spec in FLAVOURS.values()
        }

        if self.data_file is not None and self.data_file.exists():
            self._load(self.data_file)

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        # The API key is masked: reprs end up in logs and test failure output.
        return f"PlatformEmulator({where}, users={len(self._users)}, api_key='***')"

    # ------------------------------------------------------------- python control

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

    # ------------------------------------------------------------ server hooks

    def route(self, path: str) -> Route[Operation] | None:
        """The route of either flavour's path, or None."""
        return self._routes.get(path)

    def handle(self, call: Call[Operation]) -> Response:
        """Run one list/insert/update/delete against the store."""
        operation, request = call.operation, call.request
        if operation is Operation.LIST:
            return self._list(request.query_value("page_cursor"), request.header("If-None-Match"))
        if operation is Operation.DELETE:
            return self._delete(request.body)
        return self._upsert(operation, request.body, call.refused)

    def extra_stats(self) -> dict[str, object]:
        """The number of users, for ``GET /_emulator/stats``."""
        with self._lock:
            return {"users": len(self._users)}

    def after_stop(self) -> None:
        """Save ``data_file``, if one is set."""
        if self.data_file is not None:
            self._save(self.data_file)

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
        write_atomically(path, payload)

    # ---------------------------------------------------------------- operations

    def _bump(self) -> None:
        """Record a change of the store (caller holds the lock)."""
        self._version += 1
        self._list_cache = None

    def _etag(self, version: int) -> str:
        return f'"{version}"'

    def _list(self, cursor: str | None, if_none_match: str | None) -> Response:
        if cursor is not None:
            return self._next_page(cursor)
        with self._lock:
            version = self._version
            etag = self._etag(version)
            if _etag_matches(if_none_match, etag):
                return Response(304, headers=[("ETag", etag)], content_type=None)
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
        return Response(200, cached, headers)

    def _first_page(
        self, snapshot: list[_User], version: int, headers: list[tuple[str, str]]
    ) -> Response:
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
        return Response(200, msgspec.json.encode(page), headers)

    def _next_page(self, cursor: str) -> Response:
        if self.page_size is None:
            return detail_response(400, "page_cursor given but this server does not paginate")
        walk_id, _, offset_text = cursor.partition(".")
        with self._lock:
            self._expire_walks()
            walk = self._walks.get(walk_id)
        if walk is None or not offset_text.isdigit():
            return detail_response(400, "unknown or expired page_cursor")
        offset = int(offset_text)
        if not 0 < offset < len(walk.users):
            return detail_response(400, "unknown or expired page_cursor")
        end = offset + self.page_size
        next_cursor = f"{walk_id}.{end}" if end < len(walk.users) else None
        page = _Page(walk.users[offset:end], _PageInfo(next_cursor))
        return Response(200, msgspec.json.encode(page), [("ETag", self._etag(walk.version))])

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
            raise _BadBodyError(detail_response(422, f"invalid request body: {exc}")) from None
        except msgspec.DecodeError as exc:
            raise _BadBodyError(detail_response(422, f"malformed JSON body: {exc}")) from None
        count = len(decoded.users)
        if count > self.max_batch_size:
            self.count_fired("batch_too_large")
            message = f"batch of {count} users exceeds the maximum of {self.max_batch_size}"
            raise _BadBodyError(detail_response(413, message))
        return decoded

    def _upsert(self, operation: Operation, body: bytes, refused: frozenset[str]) -> Response:
        try:
            request = cast(_UsersBody, self._decode_body(body, _UsersBody))
        except _BadBodyError as bad:
            return bad.response
        # Validation (date parsing) happens outside the lock.
        if refused and (left_out := sum(u.end_user in refused for u in request.users)):
            self.count_fired("refused_user", left_out)
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
        return json_response(200, _UsersBody(users=done))

    def _delete(self, body: bytes) -> Response:
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
        return json_response(200, {"message": f"Deleted {deleted} users"})
