"""One HTTP request with retries: :class:`RetryingCaller`.

The retry loop is tenacity's rather than a hand-written one: stop, wait (jitter or
``Retry-After``) and the before-sleep log are small, separately testable policies, and
tenacity gets the attempt bookkeeping right. What the loop retries, and which syncd
errors come out of it, is the :class:`~syncd.http.policy.ApiPolicy` of the API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from syncd.errors import SyncdError
from syncd.http.direct import DirectSender
from syncd.http.policy import ApiPolicy
from syncd.http.requests import RequestBuilder
from syncd.http.responses import failure_reason
from syncd.http.retry_after import parse_retry_after

__all__ = [
    "CallTally",
    "RequestObserver",
    "RetrySettings",
    "RetryingCaller",
    "parse_retry_after",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How hard to retry: ``max_retries`` after the first attempt, then give up.

    Backoff is full jitter (AWS architecture blog): uniform(0, min(backoff_max_s,
    backoff_base_s * 2**attempt)), so many clients throttled together do not come back
    in lockstep. A server's ``Retry-After`` replaces it, capped at ``max_retry_after_s``.

    ``deadline_s`` (None: no bound but the attempts') bounds one call in time, every
    attempt and wait included: each attempt's timeout is at most what is left, a wait
    is cut to fit, and a ``Retry-After`` longer than what is left fails the call at
    once (the next run retries) instead of being cut short and ignored.
    """

    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if min(self.backoff_base_s, self.backoff_max_s, self.max_retry_after_s) < 0:
            raise ValueError("backoff_base_s, backoff_max_s and max_retry_after_s must be >= 0")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError("deadline_s must be > 0 (or None)")

    @property
    def attempts(self) -> int:
        """The most attempts one call makes."""
        return self.max_retries + 1


class CallTally(Protocol):
    """Counts HTTP calls: ``calls`` grows by one per attempt, retries included."""

    calls: int


class RequestObserver(Protocol):
    """Sees every HTTP attempt: its verb and status (None when no answer came).

    Called on the requesting thread after each attempt, retries included (metrics);
    it must be quick, and an exception it raises is logged, never raised to the caller.
    """

    def __call__(self, method: str, status: int | None, /) -> None: ...


class _RetryableError(Exception):
    """One attempt failed in a way worth retrying (internal to the retry loop)."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


# Time an attempt needs at the least: a wait that would leave less is not slept.
_MIN_ATTEMPT_S = 0.2


class _Deadline(stop_base):
    """The time budget of one call (:attr:`RetrySettings.deadline_s`); as a tenacity
    stop: the budget is spent, or the server asks to wait longer than is left."""

    __slots__ = ("ends", "refused_wait", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.refused_wait: float | None = None
        """A ``Retry-After`` that did not fit: the call failed without waiting it out."""

    def left(self) -> float:
        return self.ends - time.monotonic()

    def __call__(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome is not None else None
        left = self.left()
        asked = error.retry_after if isinstance(error, _RetryableError) else None
        if asked is not None and asked > left - _MIN_ATTEMPT_S:
            self.refused_wait = asked
            return True
        return left <= _MIN_ATTEMPT_S

    def cap_wait(self, seconds: float) -> float:
        return max(0.0, min(seconds, self.left() - _MIN_ATTEMPT_S))

    def timeout(self, configured: httpx.Timeout) -> httpx.Timeout:
        """The client's timeouts, none longer than what is left."""
        left = max(self.left(), 0.001)

        def cap(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=cap(configured.connect),
            read=cap(configured.read),
            write=cap(configured.write),
            pool=cap(configured.pool),
        )


class RetryingCaller:
    """Sends requests through one :class:`httpx.Client`, retrying what ``policy`` allows.

    Thread-safe (the client is, and each call builds its own retry state). Retry
    sleeps wait on ``stop``: once it is set (Ctrl-C, SIGTERM), a sleeping retry wakes
    and gives up at once instead of sitting out a five-minute ``Retry-After``.
    ``secrets`` returns what must be masked in error bodies (the auth's secrets);
    ``target`` names the server in auth errors (default: the client's base URL).
    ``observer`` sees every attempt (see :class:`RequestObserver`). ``direct`` sends
    the plain requests httpx would send the same way (writes, with their bodies read
    whole; streamed reads stay with httpx), for less CPU.
    Whoever built ``http`` and ``direct`` closes them.
    """

    def __init__(
        self,
        http: httpx.Client,
        policy: ApiPolicy,
        settings: RetrySettings | None = None,
        *,
        stop: threading.Event | None = None,
        secrets: Callable[[], Iterable[str]] = tuple,
        target: str | None = None,
        observer: RequestObserver | None = None,
        direct: DirectSender | None = None,
    ) -> None:
        self.http = http
        self.direct = direct
        self.observer = observer
        self.policy = policy
        self.settings = settings if settings is not None else RetrySettings()
        self.stop = stop if stop is not None else threading.Event()
        self._secrets = secrets
        self._target = target if target is not None else str(http.base_url).rstrip("/")
        self._backoff = wait_random_exponential(
            multiplier=self.settings.backoff_base_s, max=self.settings.backoff_max_s
        )
        # The event names are fixed per API; built once, not per call.
        self._call_event = f"{policy.name} call"
        # What a request without an answer can raise: transient, or any other httpx error.
        self._unanswered: tuple[type[Exception], ...] = (*policy.retryable_errors, httpx.HTTPError)
        self._failed_event = f"{policy.name} call failed"
        self._retry_event = f"{policy.name} call failed; retrying"
        self.requests = RequestBuilder(http)

    def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        tally: CallTally | None = None,
        **log_fields: object,
    ) -> httpx.Response:
        """Send one request, retrying transient failures; return the final response.

        ``operation`` names the call in logs and errors ("list", "insert"); a ``content``
        is sent as JSON. ``log_fields`` (such as ``batch_size``) are added to the
        per-attempt debug lines, under names those lines do not use already. Any answer
        that is not retryable is returned, whatever its status (see
        :meth:`raise_for_status`). Raises ``policy.unavailable`` once every attempt
        failed or ``stop`` cut the retries short, ``policy.error`` for a transport error
        waiting cannot fix.
        """
        request_headers = dict(headers or {})
        if content is not None:
            request_headers["Content-Type"] = "application/json"

        def send(attempt: int, timeout: httpx.Timeout | None) -> httpx.Response:
            return self._attempt(
                operation,
                method,
                path,
                content=content,
                params=params,
                headers=request_headers,
                attempt=attempt,
                tally=tally,
                log_fields=log_fields,
                timeout=timeout,
            )

        return self._with_retries(operation, method, path, send)

    def call_streamed(
        self,
        operation: str,
        method: str,
        path: str,
        read: Callable[[httpx.Response], _T],
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        tally: CallTally | None = None,
        **log_fields: object,
    ) -> _T:
        """Like :meth:`call`, but the body is not loaded: ``read(response)`` consumes it.

        ``read`` gets every answer that is not retryable, as soon as its headers
        arrived, with the body still on the wire (``response.iter_bytes()``); for an
        error status it reads the body itself (``response.read()``) before
        :meth:`raise_for_status`. What it returns is returned. A transport error while
        it reads the body (a reset connection, a read timeout, a connection cut by
        :func:`~syncd.http.track_connections`) fails the attempt like a failure
        before the answer: the request is sent again, from the start, within the same
        attempts, and ``read`` is called afresh with the new answer, so it must start
        over too (drop what it took from the broken body). A SyncdError from ``read``
        is raised as it is, without a retry.
        """
        request_headers = dict(headers or {})

        def send(attempt: int, timeout: httpx.Timeout | None) -> _T:
            return self._attempt_streamed(
                operation,
                method,
                path,
                read,
                params=params,
                headers=request_headers,
                attempt=attempt,
                tally=tally,
                log_fields=log_fields,
                timeout=timeout,
            )

        return self._with_retries(operation, method, path, send)

    def _with_retries(
        self,
        operation: str,
        method: str,
        path: str,
        send: Callable[[int, httpx.Timeout | None], _T],
    ) -> _T:
        """Run ``send(attempt, timeout)`` until it returns, retrying a _RetryableError.

        The first attempt runs bare: most calls succeed at once, and building the
        tenacity loop for each of them costs more than the bookkeeping it does. Only a
        first attempt that failed in a retryable way sets up the loop, whose attempt 1
        is that failure replayed (not sent again), so stop, wait, the before-sleep log
        and the attempt numbers are exactly those of a loop that ran from the start.
        """
        deadline = _Deadline(self.settings.deadline_s) if self.settings.deadline_s else None
        try:
            return send(1, deadline.timeout(self.http.timeout) if deadline else None)
        except _RetryableError as error:
            failed = error
        return self._retry_after_first(operation, method, path, send, deadline, failed)

    def _retry_after_first(
        self,
        operation: str,
        method: str,
        path: str,
        send: Callable[[int, httpx.Timeout | None], _T],
        deadline: _Deadline | None,
        first: _RetryableError,
    ) -> _T:
        """The retries of a call whose first attempt failed with ``first``."""
        stop = stop_after_attempt(self.settings.attempts) | stop_when_event_set(self.stop)
        if deadline is not None:
            stop = stop | deadline

        def wait(state: RetryCallState) -> float:
            seconds = self._wait(state)
            return seconds if deadline is None else deadline.cap_wait(seconds)

        retrying = Retrying(
            stop=stop,
            wait=wait,
            sleep=self._sleep,
            retry=retry_if_exception_type(_RetryableError),
            before_sleep=lambda state: self._log_retry(operation, method, path, state),
            reraise=True,
        )
        failed = first
        replay: _RetryableError | None = first
        sent = 1
        try:
            for attempt in retrying:
                with attempt:
                    if replay is not None:
                        # Attempt 1 was sent already: hand its failure to tenacity.
                        replay = None
                        raise failed
                    if self.stop.is_set():
                        # Woken from a retry sleep by ``stop``: give up without sending
                        # again (tenacity's stop is only asked after an attempt).
                        raise failed
                    sent += 1
                    try:
                        return send(sent, deadline.timeout(self.http.timeout) if deadline else None)
                    except _RetryableError as error:
                        failed = error
                        raise
        except _RetryableError as error:
            if deadline is not None and deadline.refused_wait is not None:
                raise self.policy.unavailable(
                    f"{operation}: {method} {path}: {self.policy.subject} asks to wait "
                    f"{deadline.refused_wait:g} s ({error.reason} with Retry-After), more than "
                    f"this request's {deadline.seconds:g} s allow; the next run retries"
                ) from error.__cause__
            raise self.policy.unavailable(
                f"{operation}: {method} {path} still failing after {sent} attempt"
                f"{'s' if sent != 1 else ''}; last error: {error.reason}"
            ) from error.__cause__
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    def raise_for_status(
        self, response: httpx.Response, operation: str, method: str, path: str
    ) -> None:
        """Raise ``policy.auth_error`` for an auth status, ``policy.error`` for any other
        non-2xx answer (with its masked body); return for a 2xx."""
        status = response.status_code
        if status in self.policy.auth_statuses:
            raise self.refused(status)
        if not 200 <= status < 300:
            raise self.policy.error(
                f"{operation}: {method} {path} answered {self.failure_reason(response)}",
                status_code=status,
            )

    def refused(self, status: int) -> SyncdError:
        """The auth error for an answer with one of ``policy.auth_statuses``."""
        return self.policy.refused(status, self._target)

    def failure_reason(self, response: httpx.Response) -> str:
        """``HTTP <code>: <detail>`` with the auth's secrets masked, should a proxy echo them."""
        return failure_reason(response, self._secrets())

    def _attempt(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        content: bytes | None,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
        attempt: int,
        tally: CallTally | None,
        log_fields: Mapping[str, object],
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        started = time.perf_counter()
        if tally is not None:
            tally.calls += 1
        try:
            request = self.requests.build(method, path, content, params, headers, timeout)
            direct = self.direct
            if direct is not None and direct.takes(request):
                response = direct.send(request)
            else:
                response = self.http.send(request)
        except self._unanswered as error:
            raise self._unsent(
                operation, method, path, error, started, attempt, log_fields
            ) from error
        self._answered(operation, method, path, response, started, attempt, log_fields)
        return response

    def _attempt_streamed(
        self,
        operation: str,
        method: str,
        path: str,
        read: Callable[[httpx.Response], _T],
        *,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
        attempt: int,
        tally: CallTally | None,
        log_fields: Mapping[str, object],
        timeout: httpx.Timeout | None = None,
    ) -> _T:
        """One attempt of :meth:`call_streamed`: headers as in :meth:`_attempt`, then
        ``read`` on the open body; the connection is released whatever happens."""
        started = time.perf_counter()
        if tally is not None:
            tally.calls += 1
        try:
            request = self.requests.build(method, path, None, params, headers, timeout)
            response = self.http.send(request, stream=True)
        except self._unanswered as error:
            raise self._unsent(
                operation, method, path, error, started, attempt, log_fields
            ) from error
        try:
            self._answered(operation, method, path, response, started, attempt, log_fields)
            return read(response)
        except self.policy.retryable_errors as error:
            # The answer broke off in its body: what was read of it is worth nothing.
            raise self._transient(
                operation, method, path, error, started, attempt, log_fields, in_body=True
            ) from error
        except httpx.HTTPError as error:
            raise self.policy.error(
                f"{operation}: {method} {path}: reading the answer failed: "
                f"{type(error).__name__}: {error}",
                status_code=response.status_code,
            ) from error
        finally:
            response.close()

    def _unsent(
        self,
        operation: str,
        method: str,
        path: str,
        error: Exception,
        started: float,
        attempt: int,
        log_fields: Mapping[str, object],
    ) -> Exception:
        """The exception to raise, ``from error``, for a request that got no answer: a
        _RetryableError for a transient transport error, else ``policy.error``."""
        self._observe(method, None)
        if isinstance(error, self.policy.retryable_errors):
            failure: Exception = self._transient(
                operation, method, path, error, started, attempt, log_fields
            )
        else:
            # Not transient (bad URL scheme, proxy refused us ...): fail with a SyncdError
            # rather than leak an httpx exception to the caller.
            failure = self.policy.error(
                f"{operation}: {method} {path} failed: {type(error).__name__}: {error}",
                status_code=None,
            )
        return failure

    def _answered(
        self,
        operation: str,
        method: str,
        path: str,
        response: httpx.Response,
        started: float,
        attempt: int,
        log_fields: Mapping[str, object],
    ) -> None:
        """Count and log an answer; raise _RetryableError for a status worth a retry."""
        self._observe(method, response.status_code)
        log.debug(
            self._call_event,
            operation=operation,
            method=method,
            path=path,
            status=response.status_code,
            **log_fields,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            attempt=attempt,
        )
        if response.status_code in self.policy.retryable_statuses:
            raise _RetryableError(
                f"HTTP {response.status_code}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )

    def _transient(
        self,
        operation: str,
        method: str,
        path: str,
        error: Exception,
        started: float,
        attempt: int,
        log_fields: Mapping[str, object],
        *,
        in_body: bool = False,
    ) -> _RetryableError:
        """Log a transport failure worth a retry; the _RetryableError to raise for it."""
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if in_body:
            reason += " (while reading the answer's body)"
        log.debug(
            self._failed_event,
            operation=operation,
            method=method,
            path=path,
            error=reason,
            **log_fields,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            attempt=attempt,
        )
        return _RetryableError(reason)

    def _observe(self, method: str, status: int | None) -> None:
        if self.observer is None:
            return
        try:
            self.observer(method, status)
        except Exception:
            # Metrics must never fail a sync.
            log.exception("request observer failed")

    def _sleep(self, seconds: float) -> None:
        """Wait before a retry, but wake at once when ``stop`` is set."""
        self.stop.wait(seconds)

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After if the server sent one (capped), else jittered exponential backoff."""
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _RetryableError) and error.retry_after is not None:
            return min(error.retry_after, self.settings.max_retry_after_s)
        return float(self._backoff(state))

    def _log_retry(self, operation: str, method: str, path: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        reason = error.reason if isinstance(error, _RetryableError) else repr(error)
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            self._retry_event,
            operation=operation,
            method=method,
            path=path,
            reason=reason,
            delay_s=round(delay, 3),
            attempt=state.attempt_number,
            max_attempts=self.settings.attempts,
        )
