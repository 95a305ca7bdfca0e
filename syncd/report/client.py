"""Client of the analytics active-users API, with its response cache and query budget.

Wire format and limits: ``docs/analytics-api.md``. Policy, in one place:

* a report range longer than 90 days is asked as consecutive queries of at most 90
  days; each follows ``pagination.next_page_cursor`` until it is null (a short page may
  still name a next one);
* each query's decoded answer is cached in the state store with the first page's
  ``ETag``: within ``cache_ttl`` nothing is sent, later ``If-None-Match`` is sent and a
  304 reuses the cached answer;
* the budget (``rate_limit`` initial queries per ``rate_window``, 10 per hour at the
  vendor; cursor follows are free) is spent in the state store before every query, in
  one transaction that counts the window and records the query as pending: a query
  the budget does not allow is never sent, two reports sharing a state folder cannot
  both take the last one, and a report killed mid-request has still spent it. A 429
  (someone else spent the team's budget) is not retried blindly: the client waits for
  ``Retry-After`` when told to wait, else stops with the time the next query is allowed;
* an expired cursor (410 on a follow, or a 400 / 404 whose body names the cursor or
  its expiry) restarts that query, through the budget; any other refusal of a follow
  stops with the API's message;
* 5xx and network errors of a follow are retried (free); of an initial query, each
  attempt goes through the budget again.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

import httpx
import msgspec
import pydantic
import structlog

from syncd.http import (
    ApiPolicy,
    BearerAuth,
    RetryingCaller,
    RetrySettings,
    make_http_client,
    parse_retry_after,
)
from syncd.ports import ApiLedger, CachedResponse
from syncd.report.compute import Granularity, bit_mapper, bucket_label, split_range
from syncd.report.errors import (
    AnalyticsAuthError,
    AnalyticsError,
    AnalyticsUnavailableError,
    BudgetExhaustedError,
)

__all__ = [
    "ACTIVE_USERS_PATH",
    "ANALYTICS_API",
    "PARAMS",
    "Activity",
    "AnalyticsClient",
    "QueryParams",
]

log = structlog.get_logger(__name__)

ACTIVE_USERS_PATH = "/api/v2alpha/analytics/active-users"
PAGE_SIZE = 10_000
_MAX_RESTARTS = 3  # an expired cursor restarts its query at most this often
_MAX_ATTEMPTS = 3  # attempts of one initial query on 5xx / network errors
_MIN_CACHE_KEEP = timedelta(days=7)  # cache entries older than max(cache_ttl, this) go
_CURSOR_WORDS = ("cursor", "expired")  # a 400 / 404 body naming these is an expired cursor


@dataclass(frozen=True, slots=True)
class QueryParams:
    """The query parameter names of the API, in one place so they can be corrected.

    The vendor's docs name ``granularity``, ``group_by`` and ``page_cursor``; the
    others are read from its examples.
    """

    start_date: str = "start_date"
    end_date: str = "end_date"
    product: str = "product"
    granularity: str = "granularity"
    group_by: str = "group_by"
    page_size: str = "page_size"
    page_cursor: str = "page_cursor"


PARAMS = QueryParams()

ANALYTICS_API = ApiPolicy(
    name="analytics",
    subject="the analytics API",
    # 429 is not here: it is the team's hourly budget, handled by the client itself.
    retryable_statuses=frozenset({408, 500, 502, 503, 504}),
    auth_statuses=frozenset({401, 403}),
    unavailable=AnalyticsUnavailableError,
    error=AnalyticsError,
    auth_error=AnalyticsAuthError,
    auth_message=(
        "the analytics API rejected the service key (HTTP {status}) for {target}; it needs "
        "a service key with the Analytics Read permission"
    ),
)


class _Row(msgspec.Struct, gc=False):
    timestamp: str
    active_users: int = 1
    user_id: str | None = None


class _Pagination(msgspec.Struct):
    next_page_cursor: str | None = None


class _Metadata(msgspec.Struct):
    data_freshness: str | None = None


class _Page(msgspec.Struct):
    data: list[_Row]
    pagination: _Pagination | None = None
    metadata: _Metadata | None = None


class _Cached(msgspec.Struct):
    """A query's answer as cached: period labels and per-user bit masks over them (hex)."""

    labels: list[str]
    users: dict[str, str]
    freshness: str | None = None


@dataclass(slots=True)
class Activity:
    """Who was active when: raw API ``user_id`` -> set of period labels (as a bit mask
    over ``labels``), plus the data freshness the API reported."""

    labels: list[str] = field(default_factory=list)
    users: dict[str, int] = field(default_factory=dict)
    freshness: str | None = None
    queries: int = 0
    """Budgeted requests this fetch sent."""
    cached: int = 0
    """Queries answered from the cache (fresh, or revalidated with a 304)."""

    def label_bit(self, label: str, index: dict[str, int]) -> int:
        """The bit of ``label``, adding it when new."""
        position = index.get(label)
        if position is None:
            position = index[label] = len(self.labels)
            self.labels.append(label)
        return 1 << position

    def merge(self, other: Activity) -> None:
        """Add another query's answer (a bucket split across two queries is united)."""
        index = {label: i for i, label in enumerate(self.labels)}
        move = bit_mapper([self.label_bit(label, index).bit_length() - 1 for label in other.labels])
        users = self.users
        for user, other_mask in other.users.items():
            users[user] = users.get(user, 0) | move(other_mask)
        if other.freshness is not None and (
            self.freshness is None or other.freshness < self.freshness
        ):
            # The oldest freshness of the parts is what the whole report can claim.
            self.freshness = other.freshness
        self.queries += other.queries
        self.cached += other.cached


Waiter = Callable[[datetime, str], None]
"""Waits until the given time, showing the reason (``--wait``); may raise to give up."""

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AnalyticsClient:
    """Fetches activity from one team's analytics API, through the cache and the budget.

    ``waiter`` None means "do not wait": a spent budget raises
    :class:`BudgetExhaustedError` at once. The service key is only ever put in the
    Authorization header; the ledger (cache and budget in the state folder) sees a
    short digest of it (the budget is per team, and a key belongs to one team), never
    the key.
    """

    def __init__(
        self,
        *,
        base_url: str,
        service_key: pydantic.SecretStr,
        ledger: ApiLedger,
        product: str | None = None,
        cache_ttl: timedelta = timedelta(hours=3),
        rate_limit: int = 10,
        rate_window: timedelta = timedelta(hours=1),
        timeout_s: float = 60.0,
        waiter: Waiter | None = None,
        clock: Clock = _utcnow,
        transport: httpx.BaseTransport | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        auth = BearerAuth(service_key, name="the service key")
        self._base_url = base_url.rstrip("/")
        self._http = make_http_client(
            self._base_url, auth=auth, timeout_s=timeout_s, transport=transport
        )
        self._stop = stop if stop is not None else threading.Event()
        self._initial = RetryingCaller(
            self._http,
            ANALYTICS_API,
            RetrySettings(max_retries=0),
            stop=self._stop,
            secrets=auth.secrets,
        )
        self._follow = RetryingCaller(
            self._http,
            ANALYTICS_API,
            RetrySettings(max_retries=5),
            stop=self._stop,
            secrets=auth.secrets,
        )
        fingerprint = hashlib.sha256(service_key.get_secret_value().encode()).hexdigest()[:12]
        self._api = f"analytics {self._base_url} key:{fingerprint}"
        self._ledger = ledger
        self._product = product
        self._ttl = cache_ttl
        self._limit = rate_limit
        self._window = rate_window
        self._waiter = waiter
        self._clock = clock

    def __repr__(self) -> str:
        return f"AnalyticsClient({self._base_url!r})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> AnalyticsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public

    def fetch(self, start: date, end: date, granularity: Granularity) -> Activity:
        """Who was active in each bucket of ``[start, end]``, by raw ``user_id``."""
        activity = Activity()
        for first, last in split_range(start, end):
            activity.merge(self._query(first, last, granularity))
        return activity

    def budget_left(self) -> int:
        """Initial queries the budget still allows now."""
        sent = self._ledger.api_requests_since(self._api, self._clock() - self._window)
        return max(0, self._limit - len(sent))

    # --------------------------------------------------------------- one query

    def _params(self, start: date, end: date, granularity: Granularity) -> dict[str, str]:
        params = {
            PARAMS.start_date: start.isoformat(),
            PARAMS.end_date: end.isoformat(),
            PARAMS.granularity: granularity.value,
            PARAMS.group_by: "user",
            PARAMS.page_size: str(PAGE_SIZE),
        }
        if self._product is not None:
            params[PARAMS.product] = self._product
        return params

    def _query(self, start: date, end: date, granularity: Granularity) -> Activity:
        params = self._params(start, end, granularity)
        url = f"{self._base_url}{ACTIVE_USERS_PATH}?{urlencode(sorted(params.items()))}"
        key = hashlib.sha256(f"{self._api}|{url}".encode()).hexdigest()
        cached = self._ledger.cached_response(key)
        decoded = _decode_cached(cached.body) if cached is not None else None
        if decoded is None:
            cached = None  # a damaged cache entry costs a query, never the report
        elif cached is not None and self._clock() - cached.fetched_at < self._ttl:
            log.info("analytics.cache_hit", start=str(start), end=str(end))
            return decoded
        sent = 0
        for _ in range(_MAX_RESTARTS + 1):
            etag = cached.etag if cached is not None else None
            response = self._send_query(params, etag)
            sent += 1
            if response.status_code == 304 and cached is not None and decoded is not None:
                log.info("analytics.not_modified", start=str(start), end=str(end))
                self._store(key, CachedResponse(url, etag, cached.body, self._clock()))
                decoded.queries = sent
                return decoded
            self._initial.raise_for_status(response, "active-users", "GET", ACTIVE_USERS_PATH)
            try:
                activity = self._read_pages(response, params, granularity)
            except _CursorExpiredError:
                log.warning("analytics.cursor_expired; restarting the query", start=str(start))
                continue
            activity.queries = sent
            fetched = CachedResponse(
                url, response.headers.get("ETag"), _encode_cached(activity), self._clock()
            )
            self._store(key, fetched)
            return activity
        raise AnalyticsError(
            f"active-users {start}..{end}: page cursors kept expiring; gave up after "
            f"{_MAX_RESTARTS} restarts"
        )

    def _store(self, key: str, entry: CachedResponse) -> None:
        self._ledger.store_response(key, entry, keep=max(self._ttl, _MIN_CACHE_KEEP))

    def _send_query(self, params: Mapping[str, str], etag: str | None) -> httpx.Response:
        """Send one initial query through the budget; every attempt is counted.

        Returns the first answer that is neither a 429 nor a transient failure (those
        wait or stop, or are tried again, at most ``_MAX_ATTEMPTS`` times).
        """
        headers = {"If-None-Match": etag} if etag else {}
        attempts = 0
        while True:
            request_id = self._spend_budget()
            status: int | None = None
            try:
                response = self._initial.call(
                    "active-users", "GET", ACTIVE_USERS_PATH, params=params, headers=headers
                )
                status = response.status_code
            except AnalyticsUnavailableError:
                attempts += 1
                if attempts >= _MAX_ATTEMPTS or self._stop.is_set():
                    raise
                self._stop.wait(2.0**attempts)  # 2 s, then 4 s; Ctrl-C ends it
                continue
            finally:
                self._ledger.finish_request(request_id, status)
            if status != 429:
                return response
            self._throttled(response)

    def _read_pages(
        self, response: httpx.Response, params: Mapping[str, str], granularity: Granularity
    ) -> Activity:
        activity = Activity()
        index: dict[str, int] = {}
        seen: set[str] = set()
        page = self._decode_page(response)
        while True:
            self._absorb(page, activity, index, granularity)
            if page.metadata is not None and page.metadata.data_freshness:
                activity.freshness = page.metadata.data_freshness
            cursor = page.pagination.next_page_cursor if page.pagination is not None else None
            if cursor is None:
                return activity
            if cursor in seen:
                raise AnalyticsError(
                    f"active-users: the analytics API returned page cursor {cursor!r} twice; "
                    "stopping instead of looping"
                )
            seen.add(cursor)
            follow = {**params, PARAMS.page_cursor: cursor}
            answer = self._follow.call("active-users page", "GET", ACTIVE_USERS_PATH, params=follow)
            if _cursor_refused(answer):
                raise _CursorExpiredError
            self._follow.raise_for_status(answer, "active-users page", "GET", ACTIVE_USERS_PATH)
            page = self._decode_page(answer)

    @staticmethod
    def _decode_page(response: httpx.Response) -> _Page:
        try:
            return msgspec.json.decode(response.content, type=_Page)
        except msgspec.DecodeError as error:
            raise AnalyticsError(
                f"active-users: the analytics API answered a body that is not the documented "
                f"shape: {error}"
            ) from None

    @staticmethod
    def _absorb(
        page: _Page, activity: Activity, index: dict[str, int], granularity: Granularity
    ) -> None:
        # The hot loop of a large report (millions of rows): rows come sorted by bucket,
        # so the bucket's bit is looked up only when the timestamp changes.
        users = activity.users
        get = users.get
        timestamp, bit = "", 0
        for row in page.data:
            user_id = row.user_id
            if user_id is None or row.active_users <= 0:
                continue
            if row.timestamp != timestamp:
                timestamp = row.timestamp
                bit = activity.label_bit(bucket_label(timestamp, granularity), index)
            users[user_id] = get(user_id, 0) | bit

    # ------------------------------------------------------------------ budget

    def _spend_budget(self) -> int:
        """Reserve one query of the budget (its ledger id); wait (with ``waiter``) or
        raise when none is left."""
        while True:
            taken = self._ledger.reserve_request(
                self._api, self._clock(), window=self._window, limit=self._limit
            )
            if isinstance(taken, int):
                return taken
            reason = f"analytics budget of {self._limit} queries per {_human(self._window)} spent"
            self._wait_or_stop(taken, reason)

    def _throttled(self, response: httpx.Response) -> None:
        delay = parse_retry_after(response.headers.get("Retry-After"))
        allowed_at = self._clock() + timedelta(seconds=delay if delay is not None else 60.0)
        self._wait_or_stop(allowed_at, "the analytics API answered 429 (rate limit)")

    def _wait_or_stop(self, allowed_at: datetime, reason: str) -> None:
        if self._waiter is None:
            raise BudgetExhaustedError(reason, allowed_at, self._clock())
        log.info("analytics.waiting", until=allowed_at.isoformat(), reason=reason)
        self._waiter(allowed_at, reason)


class _CursorExpiredError(Exception):
    """A follow was refused: the query must start again."""


def _cursor_refused(answer: httpx.Response) -> bool:
    """Whether a follow's answer says the cursor expired (410 Gone; or a 400 / 404 whose
    body names the cursor), rather than refusing the request for another reason."""
    if answer.status_code == 410:
        return True
    if answer.status_code not in (400, 404):
        return False
    body = answer.text[:2000].lower()
    return any(word in body for word in _CURSOR_WORDS)


def _human(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _encode_cached(activity: Activity) -> bytes:
    payload = _Cached(
        activity.labels,
        {user: format(mask, "x") for user, mask in activity.users.items()},
        activity.freshness,
    )
    return zlib.compress(msgspec.json.encode(payload), 6)


def _decode_cached(body: bytes) -> Activity | None:
    """A cached answer as activity (counted as one cached query), None if unreadable."""
    try:
        payload = msgspec.json.decode(zlib.decompress(body), type=_Cached)
        users = {user: int(mask, 16) for user, mask in payload.users.items()}
    except (zlib.error, msgspec.DecodeError, ValueError):
        return None
    return Activity(payload.labels, users, payload.freshness, 0, 1)
