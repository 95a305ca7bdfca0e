"""An in-memory analytics active-users API (Windsurf / Devin style), and activity to serve.

Serves ``GET /api/v2alpha/analytics/active-users`` as ``docs/analytics-api.md``
describes it: bearer auth (from :class:`~syncd.emulator.server.EmulatorServer`),
``start_date`` / ``end_date`` (inclusive, at most 90 days, else 400), ``granularity``
``daily`` | ``monthly``, ``group_by=user``, ``page_size`` 1..10000 and ``page_cursor``
cursors that expire, ``ETag`` / ``If-None-Match`` -> 304, and the rate limit: a
sliding window of initial queries (cursor follows are not counted) answering 429 with
``Retry-After`` beyond it.

:func:`generate_activity` makes realistic activity for a list of users: a share of them
use the tool, each with a habit (daily users, weekly users, triers who stop), less on
weekends.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

import msgspec

from syncd.emulator.server import Call, EmulatorServer, Request, Response, Route, detail_response

__all__ = [
    "ACTIVE_USERS_PATH",
    "AnalyticsEmulator",
    "AnalyticsOperation",
    "generate_activity",
]

ACTIVE_USERS_PATH = "/api/v2alpha/analytics/active-users"
_MAX_DAYS = 90
_MAX_PAGE_SIZE = 10_000
_DEFAULT_PAGE_SIZE = 1_000
_MAX_WALKS = 64
DEFAULT_PRODUCT = "windsurf"


class AnalyticsOperation(StrEnum):
    """The one operation of this API (counters and faults are kept per operation)."""

    ACTIVE_USERS = "active-users"


class _Row(msgspec.Struct, omit_defaults=True, gc=False):
    active_users: int
    timestamp: str
    user_id: str | None = None


class _Pagination(msgspec.Struct):
    next_page_cursor: str | None  # always sent: null on the last page


class _Metadata(msgspec.Struct):
    data_freshness: str
    query_time_ms: int
    team_id: str


class _Page(msgspec.Struct):
    data: list[_Row]
    pagination: _Pagination
    metadata: _Metadata


@dataclass(slots=True)
class _Walk:
    rows: list[_Row]
    created: float
    etag: str


class _BadQueryError(Exception):
    pass


def _parse_day(text: str | None, name: str) -> date:
    if text is None:
        raise _BadQueryError(f"{name} is required (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _BadQueryError(f"{name} must be YYYY-MM-DD, got {text!r}") from None


class AnalyticsEmulator(EmulatorServer[AnalyticsOperation]):
    """The active-users endpoint over an in-memory store of (user, day, product) events.

    ``rate_limit`` initial queries per ``rate_window_s`` (the vendor: 10 per hour per
    team; one emulator is one team); ``cursor_ttl_s`` (the vendor: 24 h); ``page_cap``
    makes pages shorter than asked while they still carry a cursor, as a server may.
    """

    def __init__(
        self,
        *,
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int = 10,
        rate_window_s: float = 3600.0,
        cursor_ttl_s: float = 24 * 3600.0,
        page_cap: int | None = None,
        team_id: str = "team-emulated",
        data_freshness: datetime | None = None,
    ) -> None:
        """Configure; nothing is bound before :meth:`start`."""
        if rate_limit < 1 or rate_window_s <= 0 or cursor_ttl_s <= 0:
            raise ValueError("rate_limit, rate_window_s and cursor_ttl_s must be positive")
        super().__init__(
            api_key=api_key,
            operations=AnalyticsOperation,
            host=host,
            port=port,
            counted_verbs=("GET",),
        )
        self.rate_limit = rate_limit
        self.rate_window_s = rate_window_s
        self.cursor_ttl_s = cursor_ttl_s
        self.page_cap = page_cap
        self.team_id = team_id
        self._freshness = data_freshness
        self._lock = threading.Lock()
        # product -> day -> user ids active that day
        self._events: dict[str, dict[date, set[str]]] = {}
        self._version = time.time_ns()
        self._sent: deque[float] = deque()  # monotonic times of the counted queries
        self._walks: OrderedDict[str, _Walk] = OrderedDict()
        self._stats = dict.fromkeys(("queries", "throttled", "not_modified", "cursor_follows"), 0)

    # ------------------------------------------------------------- python control

    def add_activity(
        self, events: Iterable[tuple[str, date]], product: str = DEFAULT_PRODUCT
    ) -> None:
        """Record that each ``(user_id, day)`` had a billing event (no counters)."""
        with self._lock:
            days = self._events.setdefault(product, {})
            for user_id, day in events:
                days.setdefault(day, set()).add(user_id)
            self._version += 1

    def expire_cursors(self) -> None:
        """Make every cursor handed out so far expired (as if 24 h had passed)."""
        with self._lock:
            for walk in self._walks.values():
                walk.created = -math.inf

    def reset_rate_limit(self) -> None:
        """Forget the queries counted in the current window."""
        with self._lock:
            self._sent.clear()

    def stats(self) -> dict[str, int]:
        """Counted queries, 429s, 304s and cursor follows since start."""
        with self._lock:
            return dict(self._stats)

    # ------------------------------------------------------------ server hooks

    def route(self, path: str) -> Route[AnalyticsOperation] | None:
        """The active-users path, GET only."""
        if path == ACTIVE_USERS_PATH:
            return Route({"GET": AnalyticsOperation.ACTIVE_USERS})
        return None

    def extra_stats(self) -> dict[str, object]:
        """Adds ``analytics``: queries, throttled, not_modified, cursor_follows."""
        return {"analytics": self.stats()}

    def handle(self, call: Call[AnalyticsOperation]) -> Response:
        """Answer one active-users query or cursor follow."""
        request = call.request
        started = time.perf_counter()
        cursor = request.query_value("page_cursor")
        try:
            page_size = self._page_size(request.query_value("page_size"))
        except _BadQueryError as error:
            return detail_response(400, str(error))
        if cursor is not None:
            return self._follow(cursor, page_size, started)
        throttled = self._admit_query()
        if throttled is not None:
            return throttled
        try:
            rows, query_key = self._query(request)
        except _BadQueryError as error:
            return detail_response(400, str(error))
        with self._lock:
            etag = f'"{hashlib.sha256(f"{query_key}|{self._version}".encode()).hexdigest()[:20]}"'
        if_none_match = request.header("If-None-Match")
        if if_none_match and etag in [
            tag.strip().removeprefix("W/") for tag in if_none_match.split(",")
        ]:
            with self._lock:
                self._stats["not_modified"] += 1
            return Response(304, headers=[("ETag", etag)], content_type=None)
        return self._page(_Walk(rows, time.monotonic(), etag), 0, page_size, started, new=True)

    # ---------------------------------------------------------------- internals

    def _page_size(self, text: str | None) -> int:
        if text is None:
            return _DEFAULT_PAGE_SIZE
        if not text.isdigit() or not 1 <= int(text) <= _MAX_PAGE_SIZE:
            raise _BadQueryError(f"page_size must be an integer from 1 to {_MAX_PAGE_SIZE}")
        return int(text)

    def _admit_query(self) -> Response | None:
        now = time.monotonic()
        with self._lock:
            while self._sent and self._sent[0] <= now - self.rate_window_s:
                self._sent.popleft()
            if len(self._sent) >= self.rate_limit:
                self._stats["throttled"] += 1
                wait = max(1, math.ceil(self._sent[0] + self.rate_window_s - now))
                return detail_response(
                    429,
                    f"rate limit of {self.rate_limit} queries per window exceeded",
                    [("Retry-After", str(wait))],
                )
            self._sent.append(now)
            self._stats["queries"] += 1
        return None

    def _query(self, request: Request) -> tuple[list[_Row], str]:
        get = request.query_value
        start = _parse_day(get("start_date"), "start_date")
        end = _parse_day(get("end_date"), "end_date")
        if end < start:
            raise _BadQueryError("end_date is before start_date")
        if (end - start).days + 1 > _MAX_DAYS:
            raise _BadQueryError(f"the date range must not exceed {_MAX_DAYS} days")
        granularity = get("granularity") or "daily"
        if granularity not in ("daily", "monthly"):
            raise _BadQueryError("granularity must be daily or monthly")
        group_by = get("group_by")
        if group_by not in (None, "user"):
            raise _BadQueryError("group_by must be user")
        product = get("product")
        buckets: dict[str, set[str]] = {}
        with self._lock:
            products = [product] if product else list(self._events)
            for name in products:
                for day, users in self._events.get(name, {}).items():
                    if start <= day <= end:
                        label = day.isoformat() if granularity == "daily" else day.isoformat()[:7]
                        buckets.setdefault(label, set()).update(users)
        rows: list[_Row] = []
        for label in sorted(buckets):
            users = buckets[label]
            if group_by == "user":
                rows.extend(_Row(1, label, user) for user in sorted(users))
            else:
                rows.append(_Row(len(users), label))
        key = f"{start}|{end}|{granularity}|{group_by}|{product}"
        return rows, key

    def _follow(self, cursor: str, page_size: int, started: float) -> Response:
        walk_id, _, offset_text = cursor.partition(".")
        with self._lock:
            self._stats["cursor_follows"] += 1
            walk = self._walks.get(walk_id)
        expired = walk is None or time.monotonic() - walk.created > self.cursor_ttl_s
        if expired or not offset_text.isdigit() or walk is None:
            return detail_response(400, "invalid or expired page_cursor")
        return self._page(walk, int(offset_text), page_size, started, walk_id=walk_id)

    def _page(
        self,
        walk: _Walk,
        offset: int,
        page_size: int,
        started: float,
        *,
        new: bool = False,
        walk_id: str | None = None,
    ) -> Response:
        size = min(page_size, self.page_cap) if self.page_cap else page_size
        end = offset + size
        next_cursor: str | None = None
        if end < len(walk.rows):
            if walk_id is None:
                walk_id = os.urandom(9).hex()
                with self._lock:
                    self._walks[walk_id] = walk
                    while len(self._walks) > _MAX_WALKS:
                        self._walks.popitem(last=False)
            next_cursor = f"{walk_id}.{end}"
        freshness = self._freshness or datetime.now(UTC).replace(microsecond=0)
        page = _Page(
            walk.rows[offset:end],
            _Pagination(next_cursor),
            _Metadata(
                freshness.isoformat().replace("+00:00", "Z"),
                round((time.perf_counter() - started) * 1000),
                self.team_id,
            ),
        )
        return Response(200, msgspec.json.encode(page), [("ETag", walk.etag)])


def generate_activity(
    user_ids: Sequence[str],
    start: date,
    end: date,
    *,
    share_active: float = 0.6,
    seed: int = 0,
) -> Iterator[tuple[str, date]]:
    """Realistic ``(user_id, day)`` events of ``[start, end]`` for ``user_ids``.

    About ``share_active`` of the users use the tool at all. Of those, a fifth are daily
    users (most workdays), half weekly users (a day or two a week), and the rest triers
    who use it for a couple of weeks and stop; weekends see a tenth of the weekday use.
    Deterministic for a given ``seed``.
    """
    rng = random.Random(seed)  # noqa: S311 -- synthetic data, not crypto
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    weekend = [day.weekday() >= 5 for day in days]
    for user_id in user_ids:
        if rng.random() >= share_active:
            continue
        habit = rng.random()
        if habit < 0.2:
            chance, first, last = 0.8, 0, len(days)
        elif habit < 0.7:
            chance, first, last = 0.3, 0, len(days)
        else:
            first = rng.randrange(len(days))
            chance, last = 0.5, min(len(days), first + 14)
        fired = False
        for i in range(first, last):
            factor = 0.1 if weekend[i] else 1.0
            if rng.random() < chance * factor:
                fired = True
                yield user_id, days[i]
        if not fired:
            # An active user is active at least once.
            yield user_id, days[rng.randrange(first, last)]
