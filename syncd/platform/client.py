"""HTTP client of the Nebuly platform-users API (BRIEF section 2).

One :class:`PlatformClient` per target: it lists the project's users and writes
insert / update / delete changes in batches, concurrently, with retries. It never
assumes success: every write returns a :class:`WriteOutcome` that says which users the
platform confirmed and which failed, and why.

Error policy, in one place:

* connection errors, timeouts, 408, 429, 500, 502, 503, 504: retried with exponential
  backoff and full jitter (or the server's ``Retry-After``); after the last retry a
  :class:`~syncd.errors.PlatformUnavailableError`.
* 401 / 403: :class:`~syncd.errors.AuthenticationError` at once (retrying cannot help).
* 413 on a write: the batch is split in half and each half sent again.
* any other 4xx / 5xx on a write: every user of that batch is a :class:`WriteFailure`;
  the other batches go on. On a list: :class:`~syncd.errors.PlatformError`.
* a 2xx body that is not JSON or not the documented shape:
  :class:`~syncd.errors.PlatformError` naming the operation.

An error raised by a write carries what was confirmed before it (``error.outcome``,
typed access through :func:`partial_outcome`), so that the caller records it.
"""

from __future__ import annotations

import contextvars
import email.utils
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx
import msgspec
import pydantic
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_random_exponential,
)

from syncd import __version__
from syncd.errors import (
    AuthenticationError,
    ConfigError,
    PlatformError,
    PlatformUnavailableError,
    SyncdError,
)
from syncd.model import PlatformUser, make_tags, parse_api_date
from syncd.platform.api import (
    FLAVOURS,
    ApiFlavour,
    DeleteBody,
    Operation,
    OutgoingBody,
    Pagination,
    WireUser,
    api_key_problem,
    outgoing_user,
)

__all__ = [
    "PlatformClient",
    "WriteFailure",
    "WriteOutcome",
    "parse_retry_after",
    "partial_outcome",
]

log = structlog.get_logger(__name__)

# 500 is retried too: every operation of this API is idempotent (insert leaves existing
# users out, update replaces, delete of a missing user is a no-op), so a retry is safe,
# and overloaded gateways often answer a bare 500. A deterministic 500 costs at most
# max_retries extra calls before the run stops as "platform unavailable".
# 408 is the server giving up on a slow request: the same kind of transient failure.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# Network-level failures worth another attempt. Not every httpx.TransportError is:
# UnsupportedProtocol or a ProxyError from a bad proxy setting will not heal by waiting.
# A write retried after a read timeout may already have been applied; the retry is still
# safe (see above), and at worst its users are reported "not confirmed" (insert leaves
# existing users out), which the next run's GET settles.
_RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

_AUTH_STATUS = frozenset({401, 403})

# The documented API does not paginate; a paginating server with pages of 100 still
# lists ten million users within this bound, and a runaway cursor loop stops here.
_MAX_PAGES = 100_000

# Error details from response bodies end up in reports and logs: keep them short.
_MAX_DETAIL_CHARS = 300

# A listed page is first split into raw user objects (views into the body, ~50 bytes
# each), then decoded and converted this many at a time. Decoding a million users into
# WireUser objects at once would hold ~400 MB of dicts and strings next to the body;
# chunks keep that to a few hundred kB, and are faster than one decode call per user.
_DECODE_CHUNK = 500

# msgspec names the failing element of a decoded chunk as ``$[12]`` in its messages.
_ITEM_PATH = re.compile(r"\$\[(\d+)\]([^`\s]*)")

_Item = TypeVar("_Item")


class _RawPage(msgspec.Struct):
    """A list response with its users left undecoded (see _DECODE_CHUNK)."""

    users: list[msgspec.Raw]
    pagination: Pagination | None = None


class _ConfirmedUser(msgspec.Struct):
    """Only what confirmation needs from an insert/update response user."""

    end_user: str


class _ConfirmResponse(msgspec.Struct):
    """Insert/update response, read leniently: extra fields and odd tags do not matter."""

    users: list[_ConfirmedUser]


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """A user the platform did not confirm, and why."""

    end_user: str
    reason: str


@dataclass(slots=True)
class WriteOutcome:
    """What one insert / update / delete did.

    ``confirmed`` holds the end_users the platform confirmed (for delete: every user of
    a batch answered with 2xx); ``failures`` the rest, with a reason. ``calls`` counts
    every HTTP write call, retries and 413 splits included.
    """

    operation: Operation
    requested: int
    confirmed: list[str] = field(default_factory=list)
    failures: list[WriteFailure] = field(default_factory=list)
    calls: int = 0

    @property
    def ok(self) -> bool:
        """True if every requested user was confirmed."""
        return not self.failures and len(self.confirmed) == self.requested


def partial_outcome(error: BaseException) -> WriteOutcome | None:
    """The :class:`WriteOutcome` attached to an error raised by a write, if any."""
    outcome = getattr(error, "outcome", None)
    return outcome if isinstance(outcome, WriteOutcome) else None


class _RetryableError(Exception):
    """One attempt failed in a way worth retrying (internal to the retry loop)."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(slots=True)
class _BatchResult:
    """What one batch (and its 413 halves) did; merged by the calling thread."""

    size: int
    confirmed: list[str] = field(default_factory=list)
    failures: list[WriteFailure] = field(default_factory=list)
    calls: int = 0
    error: SyncdError | None = None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    Returns None when the header is absent or unreadable (the caller then uses its own
    backoff); a date in the past means 0.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_MASK = b"**********"


def _detail(response: httpx.Response, secret: str = "") -> str:
    """A short, human-readable reason from an error response body.

    ``secret`` is masked in the whole body before anything is cut, so no part of it can
    survive truncation (a proxy may echo the Authorization header).
    """
    content = response.content
    if secret:
        raw = secret.encode()
        escaped = msgspec.json.encode(secret)[1:-1]  # as it appears inside a JSON string
        content = content.replace(raw, _MASK).replace(escaped, _MASK)
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        text = content.decode("utf-8", errors="replace").strip()
        return " ".join(text.split())[:_MAX_DETAIL_CHARS]
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "errors"):
            if key in body:
                body = body[key]
                break
    text = body if isinstance(body, str) else msgspec.json.encode(body).decode()
    return text[:_MAX_DETAIL_CHARS]


def _failure_reason(response: httpx.Response, secret: str = "") -> str:
    detail = _detail(response, secret)
    return f"HTTP {response.status_code}: {detail}" if detail else f"HTTP {response.status_code}"


def _encode_users(batch: Sequence[PlatformUser]) -> bytes:
    return msgspec.json.encode(OutgoingBody(users=[outgoing_user(user) for user in batch]))


def _encode_names(batch: Sequence[str]) -> bytes:
    return msgspec.json.encode(DeleteBody(users=list(batch)))


def _user_name(user: PlatformUser) -> str:
    return user.end_user


def _same(name: str) -> str:
    return name


def _parse_date(wire: WireUser, name: str, value: str) -> date:
    try:
        return parse_api_date(value)
    except ValueError as error:
        raise PlatformError(
            f"list: the platform returned user {wire.end_user!r} with an invalid {name}: {error}"
        ) from None


def _from_wire(wire: WireUser) -> PlatformUser:
    """Convert a listed user; a missing or bad date is a PlatformError naming the user."""
    if wire.active_from is None:
        raise PlatformError(
            f"list: the platform returned user {wire.end_user!r} without active_from"
        )
    active_from = _parse_date(wire, "active_from", wire.active_from)
    active_to = None if wire.active_to is None else _parse_date(wire, "active_to", wire.active_to)
    return PlatformUser(wire.end_user, make_tags(wire.tags), active_from, active_to)


class PlatformClient:
    """Synchronous client of one Nebuly project's platform users.

    Thread-safe; writes run their batches on a small thread pool. Use as a context
    manager or call :meth:`close`. The API key is only ever put in the Authorization
    header: it is not logged and not part of ``repr`` or of any error message.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: pydantic.SecretStr,
        flavour: ApiFlavour,
        batch_size: int = 500,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 300.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if min(backoff_base_s, backoff_max_s, max_retry_after_s) < 0:
            raise ValueError("backoff_base_s, backoff_max_s and max_retry_after_s must be >= 0")
        key = api_key.get_secret_value()
        problem = api_key_problem(key)
        if problem is not None:
            raise ValueError(problem)
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._flavour = ApiFlavour(flavour)
        self._spec = FLAVOURS[self._flavour]
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._max_retries = max_retries
        self._max_retry_after_s = max_retry_after_s
        # Full jitter (AWS architecture blog): uniform(0, min(cap, base * 2**attempt)),
        # so many clients throttled together do not come back in lockstep.
        self._backoff = wait_random_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        try:
            self._http = self._make_http_client(key, timeout_s, transport, concurrency)
        except (httpx.InvalidURL, ValueError, TypeError) as error:
            # Typically a malformed proxy variable (HTTPS_PROXY ...): a setting to fix.
            raise ConfigError(
                f"cannot set up HTTP for {self._base_url}: {type(error).__name__}: {error} "
                "(check the proxy environment variables)"
            ) from None
        self._stop = threading.Event()
        self._cache_lock = threading.Lock()
        self._etag: str | None = None
        self._cached_users: list[PlatformUser] | None = None

    def _make_http_client(
        self,
        key: str,
        timeout_s: float,
        transport: httpx.BaseTransport | None,
        concurrency: int,
    ) -> httpx.Client:
        return httpx.Client(
            base_url=self._base_url,
            headers={
                "Authorization": f"Bearer {key}",
                "User-Agent": f"syncd/{__version__}",
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            # Redirects would be followed without the Authorization header (cross-origin)
            # or silently change the target; a moved API is a configuration problem.
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max(100, concurrency + 1),
                max_keepalive_connections=concurrency + 1,
            ),
        )

    def __repr__(self) -> str:
        return f"PlatformClient(base_url={self._base_url!r}, flavour={self._flavour.value!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------------- list

    def list_users(self) -> list[PlatformUser]:
        """Every user of the project (one GET, following cursors if the server pages).

        When the whole list came in one response with an ``ETag``, the list is kept and
        the next call sends ``If-None-Match``; a 304 then returns the kept list. With
        pagination nothing is kept: a first page's ETag says nothing about later pages.
        Duplicate end_users keep the last occurrence (and log a warning).
        """
        with self._cache_lock:
            etag, cached = self._etag, self._cached_users
        by_name: dict[str, PlatformUser] = {}
        duplicates: list[str] = []
        seen_cursors: set[str] = set()
        cursor: str | None = None
        first_etag: str | None = None
        pages = 0
        while True:
            headers = {}
            if cursor is None and etag is not None and cached is not None:
                headers["If-None-Match"] = etag
            params = {"page_cursor": cursor} if cursor is not None else None
            response = self._call(Operation.LIST, params=params, headers=headers)
            status = response.status_code
            if status == 304 and headers:
                log.debug("platform list not modified", etag=etag, users=len(cached or ()))
                return list(cached or ())
            self._check_list_status(response)
            if pages == 0:
                first_etag = response.headers.get("ETag")
            cursor = _read_page(response.content, by_name, duplicates)
            del response  # the body (150 MB for a million users) is no longer needed
            pages += 1
            if cursor is None:
                break
            if cursor in seen_cursors:
                raise PlatformError(
                    f"list: the platform returned page cursor {cursor!r} twice; "
                    "stopping instead of looping"
                )
            if pages >= _MAX_PAGES:
                raise PlatformError(f"list: more than {_MAX_PAGES} pages; stopping")
            seen_cursors.add(cursor)
        if duplicates:
            log.warning(
                "platform list has duplicate end_users; keeping the last of each",
                count=len(duplicates),
                examples=duplicates[:5],
            )
        users = list(by_name.values())
        del by_name
        with self._cache_lock:
            if pages == 1 and first_etag:
                self._etag, self._cached_users = first_etag, users
            else:
                self._etag = self._cached_users = None
        log.debug("platform list read", users=len(users), pages=pages)
        return list(users)

    def _check_list_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in _AUTH_STATUS:
            raise self._auth_error(status)
        if not 200 <= status < 300:
            raise PlatformError(
                f"list: {self._spec.method(Operation.LIST)} {self._spec.path} answered "
                f"{self._failure_reason(response)}",
                status_code=status,
            )

    # -------------------------------------------------------------------- writes

    def insert(
        self, users: Sequence[PlatformUser], progress: Callable[[int], None] | None = None
    ) -> WriteOutcome:
        """Insert ``users`` in batches; users left out of a response are failures.

        ``progress(n)`` is called from the calling thread with the size of each batch
        as it finishes (confirmed or not). Raises AuthenticationError,
        PlatformUnavailableError or PlatformError after in-flight batches finished, with
        the partial outcome attached (:func:`partial_outcome`).
        """
        return self._write(Operation.INSERT, users, _encode_users, _user_name, progress)

    def update(
        self, users: Sequence[PlatformUser], progress: Callable[[int], None] | None = None
    ) -> WriteOutcome:
        """Update (replace) ``users`` in batches; same contract as :meth:`insert`."""
        return self._write(Operation.UPDATE, users, _encode_users, _user_name, progress)

    def delete(
        self, end_users: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> WriteOutcome:
        """Delete ``end_users`` in batches; a 2xx confirms its whole batch.

        Same progress and error contract as :meth:`insert`.
        """
        return self._write(Operation.DELETE, end_users, _encode_names, _same, progress)

    def _write(
        self,
        operation: Operation,
        items: Sequence[_Item],
        encode: Callable[[Sequence[_Item]], bytes],
        key: Callable[[_Item], str],
        progress: Callable[[int], None] | None,
    ) -> WriteOutcome:
        names = [key(item) for item in items]
        if len(set(names)) != len(names):
            # Confirmation matches by end_user; two entries for one user are ambiguous.
            raise ValueError(f"{operation}: the same end_user is given more than once")
        outcome = WriteOutcome(operation=operation, requested=len(items))
        if not items:
            return outcome
        size = self._batch_size
        batches = (items[start : start + size] for start in range(0, len(items), size))
        error: SyncdError | None = None
        workers = min(self._concurrency, math.ceil(len(items) / size))

        def absorb(result: _BatchResult) -> None:
            nonlocal error
            outcome.calls += result.calls
            outcome.confirmed.extend(result.confirmed)
            outcome.failures.extend(result.failures)
            if result.error is not None and error is None:
                error = result.error

        in_flight: set[Future[_BatchResult]] = set()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="syncd-platform")
        try:
            # At most `concurrency` batches are submitted at a time, so after an error
            # no new batch starts and only those in flight run to their end.
            while True:
                while error is None and len(in_flight) < self._concurrency:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    # Each batch runs in a copy of the caller's context, so its log lines
                    # carry the run's job and run_id like every other line.
                    context = contextvars.copy_context()
                    in_flight.add(
                        pool.submit(context.run, self._run_batch, operation, batch, encode, key)
                    )
                if not in_flight:
                    break
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    absorb(result)
                    if progress is not None:
                        progress(result.size)
        except BaseException as interrupt:
            # Ctrl-C / SIGTERM (or a failing progress callback): stop at once. Retry
            # sleeps wake up and give up, so only requests already on the wire finish
            # (within timeout_s); what they confirmed is kept for the caller to record.
            self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for future in in_flight:
                if future.done() and not future.cancelled():
                    absorb(future.result())
            self._account_unfinished(outcome, names, interrupt)
            interrupt.outcome = outcome  # type: ignore[attr-defined]  # partial_outcome()
            raise
        finally:
            pool.shutdown(wait=True)
        if error is not None:
            self._account_unfinished(outcome, names, error)
            error.outcome = outcome
            raise error
        return outcome

    @staticmethod
    def _account_unfinished(outcome: WriteOutcome, names: list[str], error: BaseException) -> None:
        """Make confirmed + failures cover every requested user after an early stop."""
        finished = set(outcome.confirmed)
        finished.update(failure.end_user for failure in outcome.failures)
        reason = f"not written: the operation stopped ({type(error).__name__})"
        outcome.failures.extend(
            WriteFailure(name, reason) for name in names if name not in finished
        )

    def _run_batch(
        self,
        operation: Operation,
        batch: Sequence[_Item],
        encode: Callable[[Sequence[_Item]], bytes],
        key: Callable[[_Item], str],
    ) -> _BatchResult:
        """Runs on a pool thread; never raises a SyncdError, returns it instead."""
        result = _BatchResult(size=len(batch))
        try:
            self._write_batch(operation, batch, encode, key, result)
        except SyncdError as error:
            result.error = error
        return result

    def _write_batch(
        self,
        operation: Operation,
        batch: Sequence[_Item],
        encode: Callable[[Sequence[_Item]], bytes],
        key: Callable[[_Item], str],
        result: _BatchResult,
    ) -> None:
        response = self._call(operation, content=encode(batch), batch_size=len(batch), tally=result)
        status = response.status_code
        if 200 <= status < 300:
            names = [key(item) for item in batch]
            if operation is Operation.DELETE:
                self._check_delete_body(response)
                result.confirmed.extend(names)
                return
            confirmed = self._confirmed_names(operation, response)
            for name in names:
                if name in confirmed:
                    result.confirmed.append(name)
                else:
                    result.failures.append(WriteFailure(name, "not confirmed by the platform"))
            return
        if status in _AUTH_STATUS:
            raise self._auth_error(status)
        if status == 413:
            if len(batch) == 1:
                result.failures.append(WriteFailure(key(batch[0]), "rejected with 413 even alone"))
                return
            half = len(batch) // 2
            log.debug(
                "platform batch too large; splitting",
                operation=str(operation),
                batch_size=len(batch),
            )
            self._write_batch(operation, batch[:half], encode, key, result)
            self._write_batch(operation, batch[half:], encode, key, result)
            return
        reason = self._failure_reason(response)
        log.warning(
            "platform refused a batch",
            operation=str(operation),
            status=status,
            batch_size=len(batch),
            reason=reason,
        )
        result.failures.extend(WriteFailure(key(item), reason) for item in batch)

    def _confirmed_names(self, operation: Operation, response: httpx.Response) -> set[str]:
        try:
            body = msgspec.json.decode(response.content, type=_ConfirmResponse)
        except msgspec.DecodeError as error:  # ValidationError is a DecodeError
            raise self._bad_body_error(operation, response, error) from None
        return {user.end_user for user in body.users}

    def _check_delete_body(self, response: httpx.Response) -> None:
        if not response.content.strip():
            return  # 204 No Content, or an empty 200: the status is the confirmation
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError as error:
            raise self._bad_body_error(Operation.DELETE, response, error) from None
        if not isinstance(body, dict):
            raise self._bad_body_error(
                Operation.DELETE, response, f"expected a JSON object, got {type(body).__name__}"
            )

    def _bad_body_error(
        self, operation: Operation, response: httpx.Response, problem: object
    ) -> PlatformError:
        content_type = response.headers.get("Content-Type", "no content type")
        return PlatformError(
            f"{operation}: {self._spec.method(operation)} {self._spec.path} answered "
            f"HTTP {response.status_code} with an unexpected body ({content_type}): {problem}",
            status_code=response.status_code,
        )

    def _failure_reason(self, response: httpx.Response) -> str:
        """``HTTP <code>: <detail>`` with the API key masked, should a proxy echo it."""
        return _failure_reason(response, self._api_key.get_secret_value())

    def _auth_error(self, status: int) -> AuthenticationError:
        return AuthenticationError(
            f"the platform rejected the API key (HTTP {status}) for {self._base_url}",
            status_code=status,
        )

    # --------------------------------------------------------------- HTTP + retry

    def _call(
        self,
        operation: Operation,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        batch_size: int | None = None,
        tally: _BatchResult | None = None,
    ) -> httpx.Response:
        """Send one request, retrying transient failures; return the final response.

        Retries use tenacity rather than a hand-written loop: stop, wait (jitter or
        Retry-After) and the before-sleep log are small, separately testable policies,
        and tenacity gets the attempt bookkeeping right.
        """
        method = self._spec.method(operation)
        path = self._spec.path
        request_headers = dict(headers or {})
        if content is not None:
            request_headers["Content-Type"] = "application/json"
        retrying = Retrying(
            stop=stop_after_attempt(self._max_retries + 1) | stop_when_event_set(self._stop),
            wait=self._wait,
            sleep=self._sleep,
            retry=retry_if_exception_type(_RetryableError),
            before_sleep=lambda state: self._log_retry(operation, method, path, state),
            reraise=True,
        )
        response: httpx.Response | None = None
        try:
            for attempt in retrying:
                with attempt:
                    response = self._attempt(
                        operation,
                        method,
                        path,
                        content=content,
                        params=params,
                        headers=request_headers,
                        batch_size=batch_size,
                        attempt=attempt.retry_state.attempt_number,
                        tally=tally,
                    )
        except _RetryableError as error:
            attempts = self._max_retries + 1
            raise PlatformUnavailableError(
                f"{operation}: {method} {path} still failing after {attempts} attempt"
                f"{'s' if attempts != 1 else ''}; last error: {error.reason}"
            ) from error.__cause__
        assert response is not None  # the loop either set it or raised
        return response

    def _attempt(
        self,
        operation: Operation,
        method: str,
        path: str,
        *,
        content: bytes | None,
        params: dict[str, str] | None,
        headers: dict[str, str],
        batch_size: int | None,
        attempt: int,
        tally: _BatchResult | None,
    ) -> httpx.Response:
        started = time.perf_counter()
        if tally is not None:
            tally.calls += 1
        try:
            response = self._http.request(
                method, path, content=content, params=params, headers=headers
            )
        except _RETRYABLE_ERRORS as error:
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            log.debug(
                "platform call failed",
                operation=str(operation),
                method=method,
                path=path,
                error=reason,
                batch_size=batch_size,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                attempt=attempt,
            )
            raise _RetryableError(reason) from error
        except httpx.HTTPError as error:
            # Not transient (bad URL scheme, proxy refused us ...): fail the run with a
            # SyncdError rather than leak an httpx exception to the caller.
            raise PlatformError(
                f"{operation}: {method} {path} failed: {type(error).__name__}: {error}"
            ) from error
        log.debug(
            "platform call",
            operation=str(operation),
            method=method,
            path=path,
            status=response.status_code,
            batch_size=batch_size,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            attempt=attempt,
        )
        if response.status_code in _RETRYABLE_STATUS:
            raise _RetryableError(
                f"HTTP {response.status_code}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return response

    def _sleep(self, seconds: float) -> None:
        """Wait before a retry, but wake at once when a write is interrupted (SIGTERM
        must not sit out a five-minute Retry-After)."""
        self._stop.wait(seconds)

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After if the server sent one (capped), else jittered exponential backoff."""
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _RetryableError) and error.retry_after is not None:
            return min(error.retry_after, self._max_retry_after_s)
        return float(self._backoff(state))

    def _log_retry(
        self, operation: Operation, method: str, path: str, state: RetryCallState
    ) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        reason = error.reason if isinstance(error, _RetryableError) else repr(error)
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "platform call failed; retrying",
            operation=str(operation),
            method=method,
            path=path,
            reason=reason,
            delay_s=round(delay, 3),
            attempt=state.attempt_number,
            max_attempts=self._max_retries + 1,
        )


def _read_page(
    content: bytes, by_name: dict[str, PlatformUser], duplicates: list[str]
) -> str | None:
    """Decode one list response into ``by_name`` (last one wins); return the next cursor."""
    try:
        page = msgspec.json.decode(content, type=_RawPage)
    except msgspec.ValidationError as error:
        raise PlatformError(
            f"list: the platform's response has an unexpected shape: {error}"
        ) from None
    except msgspec.DecodeError as error:
        raise PlatformError(f"list: the platform's response is not valid JSON ({error})") from None
    decoder = msgspec.json.Decoder(list[WireUser])
    raws = page.users
    for start in range(0, len(raws), _DECODE_CHUNK):
        chunk = raws[start : start + _DECODE_CHUNK]
        try:
            wire_users = decoder.decode(b"[" + b",".join(chunk) + b"]")
        except msgspec.ValidationError as error:
            raise _invalid_user_error(chunk, start, error) from None
        for wire in wire_users:
            name = wire.end_user
            if name in by_name:
                duplicates.append(name)
            by_name[name] = _from_wire(wire)
    return page.pagination.next_page_cursor if page.pagination is not None else None


def _invalid_user_error(
    chunk: list[msgspec.Raw], offset: int, error: msgspec.ValidationError
) -> PlatformError:
    """A PlatformError naming the listed user (and field) msgspec could not decode."""
    message = str(error)
    match = _ITEM_PATH.search(message)
    if match is None:
        return PlatformError(f"list: the platform's response has an unexpected shape: {message}")
    index = int(match.group(1))
    field_path = match.group(2).lstrip(".") or "user object"
    reason = message.split(" - at ", 1)[0]
    # Only on this error path: decode the one user without a schema to find its name
    # and, for tags (msgspec reports ``tags[...]``), which tag is wrong.
    name: Any = None
    try:
        user = msgspec.json.decode(chunk[index])
        name = user.get("end_user")
        if field_path.startswith("tags["):
            bad = [key for key, value in user["tags"].items() if not isinstance(value, str)]
            field_path = f"tags.{bad[0]}" if bad else "tags"
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, AttributeError):
        pass
    who = f"user {name!r}" if isinstance(name, str) else f"user #{offset + index} (no end_user)"
    return PlatformError(
        f"list: the platform returned {who} with an invalid {field_path}: {reason}"
    )
