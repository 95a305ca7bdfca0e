"""HTTP client of the Nebuly platform-users API (wire format: ``docs/nebuly-api.md``).

One :class:`PlatformClient` per target: it lists the project's users and writes
insert / update / delete changes in batches, concurrently, with retries. It never
assumes success: every write fills a :class:`~syncd.ports.WriteOutcome` that says which
users the platform confirmed and which failed, and why. The HTTP machinery is
:mod:`syncd.http`; this module holds the wire decoding and the list / write logic.

Error policy, in one place:

* connection errors, timeouts and the statuses of :data:`PLATFORM_API`: retried with
  exponential backoff and full jitter (or the server's ``Retry-After``); after the last
  retry a :class:`~syncd.errors.PlatformUnavailableError`.
* 401 / 403: :class:`~syncd.errors.AuthenticationError` at once (retrying cannot help).
* 413 on a write: the batch is split in half and each half sent again.
* any other 4xx / 5xx on a write: every user of that batch is a :class:`WriteFailure`;
  the other batches go on. On a list: :class:`~syncd.errors.PlatformError`.
* a 2xx body that is not JSON or not the documented shape:
  :class:`~syncd.errors.PlatformError` naming the operation.

A write that raises has filled the caller's outcome first: what was confirmed before
the error, and every other requested user as a failure.
"""

from __future__ import annotations

import contextvars
import math
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import httpx
import msgspec
import pydantic
import structlog

from syncd.errors import AuthenticationError, PlatformError, PlatformUnavailableError, SyncdError
from syncd.http import (
    ApiPolicy,
    BearerAuth,
    RequestObserver,
    RetryingCaller,
    RetrySettings,
    make_http_client,
    parse_retry_after,
    track_connections,
    walk_cursors,
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
    outgoing_user,
)
from syncd.ports import ProgressCallback, WriteFailure, WriteOutcome

__all__ = ["PLATFORM_API", "PlatformClient", "WriteFailure", "WriteOutcome", "parse_retry_after"]

log = structlog.get_logger(__name__)

PLATFORM_API = ApiPolicy(
    name="platform",  # log events "platform call", "platform call failed; retrying" ...
    subject="the platform",
    # Every operation of this API is idempotent (insert leaves existing users out,
    # update replaces, delete of a missing user is a no-op), so a retry is safe, even
    # of a write that timed out after the platform applied it: at worst its users are
    # reported "not confirmed", which the next run's list settles.
    retryable_statuses=frozenset(
        {
            408,  # the server gave up waiting for a slow request: try again
            429,  # throttled: wait (Retry-After if sent) and try again
            500,  # overloaded gateways answer a bare 500; a deterministic one costs
            # at most max_retries extra calls before "platform unavailable"
            502,  # a gateway could not reach the backend (restart, deploy)
            503,  # the backend is overloaded or in maintenance
            504,  # a gateway timed out waiting for the backend
        }
    ),
    auth_statuses=frozenset({401, 403}),  # the key is refused: retrying cannot help
    unavailable=PlatformUnavailableError,
    error=PlatformError,
    auth_error=AuthenticationError,
    auth_message="the platform rejected the API key (HTTP {status}) for {target}",
)

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


@dataclass(slots=True)
class _BatchResult:
    """What one batch (and its 413 halves) did; merged by the calling thread."""

    size: int
    confirmed: list[str] = field(default_factory=list)
    failures: list[WriteFailure] = field(default_factory=list)
    calls: int = 0  # counted by RetryingCaller, one per attempt
    error: SyncdError | None = None


def _encode_users(batch: Sequence[PlatformUser]) -> bytes:
    return msgspec.json.encode(OutgoingBody(users=[outgoing_user(user) for user in batch]))


def _encode_names(batch: Sequence[str]) -> bytes:
    return msgspec.json.encode(DeleteBody(users=list(batch)))


def _user_name(user: PlatformUser) -> str:
    return user.end_user


def _same(name: str) -> str:
    return name


class PlatformClient:
    """Synchronous client of one Nebuly project's platform users.

    Thread-safe; writes run their batches on a small thread pool. Use as a context
    manager or call :meth:`close`. The API key is only ever put in the Authorization
    header (:class:`~syncd.http.BearerAuth`): it is not logged and not part of
    ``repr`` or of any error message.

    ``cache_list`` keeps the last full list with its ``ETag`` and asks the next
    :meth:`list_users` with ``If-None-Match``, so an unchanged project answers 304
    without a body. That pays only in a long-lived client (the daemon, which reuses a
    job's client across runs), and costs the memory of the last list while the client
    lives: about 240 MB at a million users with two tags each (measured with
    tracemalloc). A one-shot run never lists twice; so off by default.

    ``observer`` sees every HTTP attempt (the daemon's request metrics). :meth:`cancel`
    (from any thread) ends the client's work at once: no new batch starts, retry sleeps
    wake, and requests on the wire fail because their sockets are shut down.
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
        cache_list: bool = False,
        observer: RequestObserver | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        retry = RetrySettings(max_retries, backoff_base_s, backoff_max_s, max_retry_after_s)
        auth = BearerAuth(api_key, name="the API key")
        self._base_url = base_url.rstrip("/")
        self._flavour = ApiFlavour(flavour)
        self._spec = FLAVOURS[self._flavour]
        self._batch_size = batch_size
        self._concurrency = concurrency
        http = make_http_client(
            self._base_url,
            auth=auth,
            timeout_s=timeout_s,
            concurrency=concurrency,
            transport=transport,
        )
        self._connections = track_connections(http)
        self._cancelled = threading.Event()
        self._caller = RetryingCaller(
            http,
            PLATFORM_API,
            retry,
            secrets=auth.secrets,
            target=self._base_url,
            observer=observer,
        )
        self._cache_list = cache_list
        self._cache_lock = threading.Lock()
        self._etag: str | None = None
        self._cached_users: list[PlatformUser] | None = None

    def __repr__(self) -> str:
        return f"PlatformClient(base_url={self._base_url!r}, flavour={self._flavour.value!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._caller.http.close()

    def cancel(self) -> None:
        """Stop every call of this client now, from any thread (a daemon's shutdown).

        No new batch starts and retry sleeps wake, so a write raises a PlatformError
        after its batches in flight ended, with the caller's outcome holding what the
        platform confirmed. Requests on the wire do not sit out ``timeout_s``: their
        sockets are shut down, which wakes a blocked read at once. Final: the client
        refuses every later call; close it afterwards.
        """
        self._cancelled.set()
        self._caller.stop.set()
        cut = self._connections.cancel()
        log.info("platform client cancelled", connections_cut=cut)

    @property
    def cancelled(self) -> bool:
        """True after :meth:`cancel`."""
        return self._cancelled.is_set()

    @staticmethod
    def _cancelled_error(operation: Operation, cause: SyncdError) -> PlatformError:
        return PlatformError(f"{operation}: stopped, the client was cancelled (shutdown): {cause}")

    def _refuse_if_cancelled(self, operation: Operation) -> None:
        if self._cancelled.is_set():
            raise PlatformError(f"{operation}: not sent, the client was cancelled (shutdown)")

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------------- list

    def list_users(self) -> list[PlatformUser]:
        """Every user of the project (one GET, following cursors if the server pages).

        With ``cache_list``, a list that came whole in one response with an ``ETag`` is
        kept, and the next call sends ``If-None-Match``; a 304 then returns the kept
        list. With pagination nothing is kept: a first page's ETag says nothing about
        later pages. Duplicate end_users keep the last occurrence (and log a warning).
        """
        self._refuse_if_cancelled(Operation.LIST)
        cached: tuple[str, list[PlatformUser]] | None = None
        if self._cache_list:
            with self._cache_lock:
                if self._etag is not None and self._cached_users is not None:
                    cached = (self._etag, self._cached_users)
        if_none_match = {"If-None-Match": cached[0]} if cached is not None else None
        method, path = self._spec.method(Operation.LIST), self._spec.path
        by_name: dict[str, PlatformUser] = {}
        duplicates: list[str] = []
        first_etag: str | None = None
        not_modified = False

        def read_page(cursor: str | None) -> str | None:
            nonlocal first_etag, not_modified
            headers = if_none_match if cursor is None else None
            response = self._caller.call(
                Operation.LIST.value,
                method,
                path,
                params={"page_cursor": cursor} if cursor is not None else None,
                headers=headers,
                batch_size=None,
            )
            if response.status_code == 304 and headers is not None:
                not_modified = True
                return None
            self._caller.raise_for_status(response, Operation.LIST.value, method, path)
            if cursor is None:
                first_etag = response.headers.get("ETag")
            # The body (150 MB for a million users) is dropped on return, before the
            # next page is asked for.
            return _read_page(response.content, by_name, duplicates)

        # The documented API does not paginate; should a server page, its cursors are
        # followed, and walk_cursors stops a repeated cursor or a runaway page count.
        try:
            pages = walk_cursors(read_page, policy=PLATFORM_API, operation=Operation.LIST.value)
        except SyncdError as error:
            if self._cancelled.is_set():
                # The cut connection is the symptom; the cancellation is the cause.
                raise self._cancelled_error(Operation.LIST, error) from error
            raise
        if not_modified and cached is not None:
            log.debug("platform list not modified", etag=cached[0], users=len(cached[1]))
            return list(cached[1])
        if duplicates:
            log.warning(
                "platform list has duplicate end_users; keeping the last of each",
                count=len(duplicates),
                examples=duplicates[:5],
            )
        users = list(by_name.values())
        by_name.clear()  # its table (~40 MB at a million users) is not needed any more
        log.debug("platform list read", users=len(users), pages=pages)
        if not self._cache_list:
            return users
        with self._cache_lock:
            if pages == 1 and first_etag:
                self._etag, self._cached_users = first_etag, users
            else:
                self._etag = self._cached_users = None
        return list(users)  # the caller's list is its own: changing it spares the cache

    # -------------------------------------------------------------------- writes

    def insert(
        self,
        users: Sequence[PlatformUser],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
    ) -> WriteOutcome:
        """Insert ``users`` in batches; users left out of a response are failures.

        Fills ``outcome`` (made here if None; else an empty one for this operation and
        ``len(users)``) and returns it. ``progress(n)`` is called from the calling
        thread with the size of each batch as it finishes (confirmed or not). Raises
        AuthenticationError, PlatformUnavailableError or PlatformError after in-flight
        batches finished, and re-raises an interruption (KeyboardInterrupt ...) the
        same way; ``outcome`` then holds what was confirmed and lists every other
        requested user as a failure.
        """
        return self._write(Operation.INSERT, users, _encode_users, _user_name, progress, outcome)

    def update(
        self,
        users: Sequence[PlatformUser],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
    ) -> WriteOutcome:
        """Update (replace) ``users`` in batches; same contract as :meth:`insert`."""
        return self._write(Operation.UPDATE, users, _encode_users, _user_name, progress, outcome)

    def delete(
        self,
        end_users: Sequence[str],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
    ) -> WriteOutcome:
        """Delete ``end_users`` in batches; a 2xx confirms its whole batch.

        Same outcome, progress and error contract as :meth:`insert`.
        """
        return self._write(Operation.DELETE, end_users, _encode_names, _same, progress, outcome)

    def _write(
        self,
        operation: Operation,
        items: Sequence[_Item],
        encode: Callable[[Sequence[_Item]], bytes],
        key: Callable[[_Item], str],
        progress: ProgressCallback | None,
        outcome: WriteOutcome | None,
    ) -> WriteOutcome:
        filled = _outcome_for(operation, len(items), outcome)
        names = [key(item) for item in items]
        if len(set(names)) != len(names):
            # Confirmation matches by end_user; two entries for one user are ambiguous.
            raise ValueError(f"{operation}: the same end_user is given more than once")
        if not items:
            return filled
        self._refuse_if_cancelled(operation)
        size = self._batch_size
        batches = (items[start : start + size] for start in range(0, len(items), size))
        error: SyncdError | None = None
        workers = min(self._concurrency, math.ceil(len(items) / size))

        def absorb(result: _BatchResult) -> None:
            nonlocal error
            filled.calls += result.calls
            filled.confirmed.extend(result.confirmed)
            filled.failures.extend(result.failures)
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
                    if self._cancelled.is_set():
                        # cancel() from another thread: this batch and the rest are
                        # not sent, and are accounted as not written below.
                        error = PlatformError(f"{operation}: stopped, the client was cancelled")
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
            # (within timeout_s); what they confirmed goes into the caller's outcome.
            self._caller.stop.set()
            try:
                pool.shutdown(wait=True, cancel_futures=True)
            finally:
                # No batch of this write is left to wake (even if a second Ctrl-C cut
                # the wait short); a client kept across runs (the daemon) must retry
                # again in its next write, unless it was cancelled.
                if not self._cancelled.is_set():
                    self._caller.stop.clear()
            for future in in_flight:
                if future.done() and not future.cancelled():
                    absorb(future.result())
            _account_unfinished(filled, names, interrupt)
            raise
        finally:
            pool.shutdown(wait=True)
        if error is not None:
            if self._cancelled.is_set() and "cancelled" not in str(error):
                error = self._cancelled_error(operation, error)
            _account_unfinished(filled, names, error)
            raise error
        return filled

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
        response = self._caller.call(
            operation.value,
            self._spec.method(operation),
            self._spec.path,
            content=encode(batch),
            tally=result,
            batch_size=len(batch),
        )
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
        if status in PLATFORM_API.auth_statuses:
            raise self._caller.refused(status)
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
        reason = self._caller.failure_reason(response)
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


def _outcome_for(operation: Operation, requested: int, given: WriteOutcome | None) -> WriteOutcome:
    """The caller's outcome, checked to be a new one for this write; else a new one."""
    if given is None:
        return WriteOutcome(operation=operation, requested=requested)
    if given.operation != operation or given.requested != requested:
        raise ValueError(
            f"{operation}: the outcome passed in is for {given.operation} of "
            f"{given.requested} users, not {operation} of {requested}"
        )
    if given.confirmed or given.failures or given.calls:
        raise ValueError(f"{operation}: the outcome passed in is already filled")
    return given


def _account_unfinished(outcome: WriteOutcome, names: list[str], error: BaseException) -> None:
    """Make confirmed + failures cover every requested user after an early stop."""
    finished = set(outcome.confirmed)
    finished.update(failure.end_user for failure in outcome.failures)
    reason = f"not written: the operation stopped ({type(error).__name__})"
    outcome.failures.extend(WriteFailure(name, reason) for name in names if name not in finished)


# ------------------------------------------------------------------- list decoding


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
