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
* any other 4xx / 5xx on a write is permanent (404, 405, 400 ...): every batch would get
  it, so the write stops at once with one :class:`~syncd.errors.PlatformError` saying
  what to check; batches not yet sent are not sent. On a list: a PlatformError too.
* a 2xx body that is not JSON or not the documented shape:
  :class:`~syncd.errors.PlatformError` naming the operation.

A write that raises has filled the caller's outcome first: what was confirmed before
the error, and every other requested user as a failure. A failure whose write may have
been applied (sent, then a timeout or a lost connection; left out after a retry; a 2xx
with an unreadable body) is an :class:`~syncd.platform.outcome.UncertainFailure`: the
runner re-reads the platform to settle it (:mod:`syncd.platform.outcome`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeVar

import httpx
import msgspec
import pydantic
import structlog

from syncd.errors import AuthenticationError, PlatformError, PlatformUnavailableError, SyncdError
from syncd.http import (
    ApiPolicy,
    BearerAuth,
    DirectSender,
    RequestObserver,
    RetryingCaller,
    RetrySettings,
    make_http_client,
    parse_retry_after,
    track_connections,
    walk_cursors,
)
from syncd.model import PlatformUser, SourceUser
from syncd.platform.answers import answered_names, check_delete_body
from syncd.platform.api import (
    FLAVOURS,
    ApiFlavour,
    DeleteBody,
    Operation,
    UsersBodyEncoder,
)
from syncd.platform.batches import BatchResult, dispatch_batches
from syncd.platform.listed import ListedUsers
from syncd.platform.outcome import (
    UncertainFailure,
    account_unfinished,
    doubtful,
    outcome_for,
    permanent_error_message,
)
from syncd.ports import ConfirmedSpan, ProgressCallback, SentBody, WriteFailure, WriteOutcome

__all__ = ["PLATFORM_API", "PlatformClient", "WriteFailure", "WriteOutcome", "parse_retry_after"]

log = structlog.get_logger(__name__)

PLATFORM_API = ApiPolicy(
    name="platform",  # log events "platform call", "platform call failed; retrying" ...
    subject="the platform",
    # Every operation of this API is idempotent (insert leaves existing users out,
    # update replaces, delete of a missing user is a no-op), so a retry is safe, even
    # of a write that timed out after the platform applied it: its users are reported
    # uncertain, and the runner's re-read of the list settles them.
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

_Item = TypeVar("_Item")


@dataclass(slots=True)
class _Attempts:
    """Counts the attempts of one request (a :class:`~syncd.http.CallTally`)."""

    calls: int = 0


_encode_delete = msgspec.json.Encoder().encode


def _encode_names(batch: Sequence[str]) -> bytes:
    return _encode_delete(DeleteBody(users=list(batch)))


def _body_size(response: httpx.Response) -> int | None:
    """The body's size in bytes if the headers tell it (Content-Length, not encoded)."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None  # the length is the compressed one
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


# C-level: a million users are named without a Python call each.
_user_name: Callable[[PlatformUser], str] = attrgetter("end_user")


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
    lives: at a million users with two tags each about 150 MB of resident memory, or
    about 65 MB when listed with ``known`` (the names are the caller's; measured with
    ``bench/list_bench.py``). A one-shot run never lists twice; so off by default.

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
        # Writes skip httpx's pool when it would send them the same way: half the CPU
        # per call, on the two thousand calls of a million-user first sync.
        self._direct = DirectSender.for_client(http, self._connections)
        self._cancelled = threading.Event()
        self._caller = RetryingCaller(
            http,
            PLATFORM_API,
            retry,
            secrets=auth.secrets,
            target=self._base_url,
            observer=observer,
            direct=self._direct,
        )
        self._cache_list = cache_list
        self._cache_lock = threading.Lock()
        self._etag: str | None = None
        self._cached_users: list[PlatformUser] | None = None

    def __repr__(self) -> str:
        return f"PlatformClient(base_url={self._base_url!r}, flavour={self._flavour.value!r})"

    def close(self) -> None:
        """Close the connection pools."""
        if self._direct is not None:
            self._direct.close()
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

    def list_users(self, *, known: Mapping[str, SourceUser] | None = None) -> list[PlatformUser]:
        """Every user of the project (one GET, following cursors if the server pages).

        The body is decoded while it arrives, never held whole (:mod:`.listing`). A
        body that breaks off (a reset connection, a timeout) is asked for again, from
        the start, within the retries; the users read from it are dropped, so a cut
        list is never returned. ``known`` (the desired users, keyed by normalised
        end_user): a listed name equal to a key is stored as that user's ``end_user``
        string, so a million names are not held twice.

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
        listing = ListedUsers(known)
        first_etag: str | None = None
        not_modified = False

        def read_page(cursor: str | None) -> str | None:
            headers = if_none_match if cursor is None else None

            def read(response: httpx.Response) -> str | None:
                nonlocal first_etag, not_modified
                if response.status_code == 304 and headers is not None:
                    not_modified = True
                    return None
                if not 200 <= response.status_code < 300:
                    response.read()  # an error body is short: its detail goes in the error
                    self._caller.raise_for_status(response, Operation.LIST.value, method, path)
                if cursor is None:
                    first_etag = response.headers.get("ETag")
                # A new reader per attempt: a retried body starts from nothing.
                page = listing.page(expected_size=_body_size(response))
                for data in response.iter_bytes():
                    page.feed(data)
                return page.finish()

            return self._caller.call_streamed(
                Operation.LIST.value,
                method,
                path,
                read,
                params={"page_cursor": cursor} if cursor is not None else None,
                headers=headers,
                batch_size=None,
            )

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
        users, duplicates = listing.result()
        if duplicates:
            log.warning(
                "platform list has duplicate end_users; keeping the last of each",
                count=len(duplicates),
                examples=duplicates[:5],
            )
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
        distinct: bool = False,
    ) -> WriteOutcome:
        """Insert ``users`` in batches; users left out of a response are failures.

        Fills ``outcome`` (made here if None; else an empty one for this operation and
        ``len(users)``) and returns it. ``progress(n)`` is called from the calling
        thread with the size of each batch as it finishes (confirmed or not). Raises
        AuthenticationError, PlatformUnavailableError or PlatformError after in-flight
        batches finished, and re-raises an interruption (KeyboardInterrupt ...) the
        same way; ``outcome`` then holds what was confirmed and lists every other
        requested user as a failure. An end_user given twice is a ValueError before any
        request, unless ``distinct`` says the caller's names are distinct by
        construction (a plan's changes): then the check is skipped.
        """
        # One encoder per write: its caches (tag sets, dates) live as long as the write.
        encode = UsersBodyEncoder().encode
        return self._write(Operation.INSERT, users, encode, _user_name, progress, outcome, distinct)

    def update(
        self,
        users: Sequence[PlatformUser],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Update (replace) ``users`` in batches; same contract as :meth:`insert`."""
        encode = UsersBodyEncoder().encode
        return self._write(Operation.UPDATE, users, encode, _user_name, progress, outcome, distinct)

    def delete(
        self,
        end_users: Sequence[str],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Delete ``end_users`` in batches; a 2xx confirms its whole batch.

        Same outcome, progress and error contract as :meth:`insert`.
        """
        return self._write(
            Operation.DELETE, end_users, _encode_names, _same, progress, outcome, distinct
        )

    def _write(
        self,
        operation: Operation,
        items: Sequence[_Item],
        encode: Callable[[Sequence[_Item]], bytes],
        key: Callable[[_Item], str],
        progress: ProgressCallback | None,
        outcome: WriteOutcome | None,
        distinct: bool,
    ) -> WriteOutcome:
        filled = outcome_for(operation, len(items), outcome)
        # Confirmation matches by end_user; two entries for one user are ambiguous. The
        # names and a set of them cost ~0.2 s for a million users before the first
        # batch: spared when the caller's names are distinct by construction (each
        # batch then names its own users, on its worker).
        names: list[str] | None = None
        if not distinct:
            names = list(map(key, items))
            if len(set(names)) != len(names):
                raise ValueError(f"{operation}: the same end_user is given more than once")
        if not items:
            return filled

        def all_names() -> list[str]:
            return names if names is not None else list(map(key, items))

        self._refuse_if_cancelled(operation)
        size = self._batch_size
        workers = min(self._concurrency, math.ceil(len(items) / size))
        error: SyncdError | None = None
        # Only an insert's body is its audit entries (an update's also need "before").
        keep_sent = filled.keep_sent and operation is Operation.INSERT

        def run(start: int) -> BatchResult:
            end = start + size
            batch = items[start:end]
            named = names[start:end] if names is not None else list(map(key, batch))
            result = self._run_batch(operation, batch, named, encode)
            result.start = start
            return result

        def absorb(result: BatchResult) -> None:
            nonlocal error
            filled.calls += result.calls
            if len(result.confirmed) == result.size:
                # The whole batch, in its order (413 halves in turn): say where it sits
                # among the items, before its names (a reader of the names relies on that).
                sent = SentBody(result.sent) if keep_sent and result.sent is not None else None
                filled.spans.append(
                    ConfirmedSpan(len(filled.confirmed), result.start, result.size, sent)
                )
            filled.confirmed.extend(result.confirmed)
            filled.failures.extend(result.failures)
            if result.error is not None and error is None:
                error = result.error

        saw_cancel = dispatch_batches(
            range(0, len(items), size),
            run,
            absorb,
            workers=workers,
            progress=progress,
            cancelled=self._cancelled,
            stop=self._caller.stop,
            # Interrupted (or a bug raised on a worker): the caller's outcome still
            # covers every requested user before the exception goes on.
            interrupted=lambda interrupt: account_unfinished(filled, all_names(), interrupt),
        )
        if error is None and saw_cancel:
            error = PlatformError(f"{operation}: stopped, the client was cancelled")
        if error is not None:
            if self._cancelled.is_set() and "cancelled" not in str(error):
                error = self._cancelled_error(operation, error)
            account_unfinished(filled, all_names(), error)
            raise error
        return filled

    def _run_batch(
        self,
        operation: Operation,
        batch: Sequence[_Item],
        names: list[str],
        encode: Callable[[Sequence[_Item]], bytes],
    ) -> BatchResult:
        """Runs on a pool thread; never raises a SyncdError, returns it instead."""
        result = BatchResult(size=len(batch))
        try:
            self._write_batch(operation, batch, names, encode, result)
        except SyncdError as error:
            result.error = error
        return result

    @staticmethod
    def _confirm_all(names: list[str], content: bytes, result: BatchResult) -> None:
        result.confirmed.extend(names)
        if len(names) == result.size:
            # One request wrote the whole batch (not 413 halves): its body is its users.
            result.sent = content

    def _write_batch(
        self,
        operation: Operation,
        batch: Sequence[_Item],
        names: list[str],
        encode: Callable[[Sequence[_Item]], bytes],
        result: BatchResult,
        in_doubt: bool = False,
    ) -> None:
        """Write one batch (``names``: its end_users, in order); ``in_doubt``: an earlier
        request carrying these users (the batch a 413 split) got no clear answer, so it
        may have applied them."""
        method, path = self._spec.method(operation), self._spec.path
        # This request's own attempts: more than one means an earlier attempt got no
        # clear answer and may have been applied.
        attempts = _Attempts()
        content = encode(batch)
        try:
            response = self._caller.call(
                operation.value,
                method,
                path,
                content=content,
                tally=attempts,
                batch_size=len(batch),
            )
        except PlatformUnavailableError as error:
            # Sent, and never answered clearly: a timeout or a lost connection after the
            # request left may hide a write the platform applied.
            reason = doubtful(f"no clear answer after {attempts.calls} attempt(s): {error}")
            result.failures.extend(UncertainFailure(name, reason) for name in names)
            raise
        finally:
            result.calls += attempts.calls
        # A 413 half inherits the doubt of the batch it was split from.
        retried = in_doubt or attempts.calls > 1
        status = response.status_code
        if 200 <= status < 300:
            try:
                if operation is Operation.DELETE:
                    check_delete_body(self._spec, response)
                    answered: list[str] | None = None
                else:
                    answered = answered_names(self._spec, operation, response)
            except PlatformError:
                # A 2xx says the platform took the batch; only its answer is unreadable.
                reason = doubtful(f"HTTP {status} with an unreadable body")
                result.failures.extend(UncertainFailure(name, reason) for name in names)
                raise
            if answered is None or answered == names:
                # The usual answer: the batch itself, in its order (one list comparison,
                # no set); a delete's 2xx confirms its whole batch.
                self._confirm_all(names, content, result)
                return
            confirmed = set(answered)
            if confirmed.issuperset(names):
                # Every user confirmed, in another order or among extra users.
                self._confirm_all(names, content, result)
                return
            for name in names:
                if name in confirmed:
                    result.confirmed.append(name)
                elif retried:
                    # An earlier attempt may have inserted it: "left out" now means
                    # "exists", which a refusal looks exactly like.
                    result.failures.append(
                        UncertainFailure(name, doubtful("not confirmed after a retry"))
                    )
                else:
                    result.failures.append(WriteFailure(name, "not confirmed by the platform"))
            return
        if status in PLATFORM_API.auth_statuses:
            raise self._caller.refused(status)
        if status == 413:
            if len(batch) == 1:
                alone = "rejected with 413 even alone"
                result.failures.append(
                    UncertainFailure(names[0], doubtful(alone))
                    if retried
                    else WriteFailure(names[0], alone)
                )
                return
            half = len(batch) // 2
            log.debug(
                "platform batch too large; splitting",
                operation=str(operation),
                batch_size=len(batch),
            )
            self._write_batch(operation, batch[:half], names[:half], encode, result, retried)
            self._write_batch(operation, batch[half:], names[half:], encode, result, retried)
            return
        # Any other answer is permanent (retryable statuses never get here): every batch
        # would get it too, so the operation stops at once with one error instead of
        # failing each remaining batch in turn.
        reason = self._caller.failure_reason(response)
        log.error(
            "platform refused a batch; stopping",
            operation=str(operation),
            status=status,
            batch_size=len(batch),
            reason=reason,
        )
        refused = f"refused: {reason}"
        result.failures.extend(
            UncertainFailure(name, doubtful(refused)) if retried else WriteFailure(name, refused)
            for name in names
        )
        raise PlatformError(
            permanent_error_message(operation, method, path, reason, status),
            status_code=status,
        )
