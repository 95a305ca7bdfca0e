"""The Entra ID source: Graph listings read page by page over the shared HTTP layer.

Each page is decoded, mapped and yielded before the next is asked for, so memory is
bounded by a page (999 users) plus, with several scope groups, the object ids seen.
``@odata.nextLink`` is followed verbatim, and only while it points at the configured
Graph host (the token must never go anywhere else). Throttling (429) and 5xx answers
are retried by :class:`~syncd.http.RetryingCaller` honouring ``Retry-After``, within a
time budget per page (:data:`GRAPH_RETRIES`, :data:`PAGE_BUDGET_S`); a page that still
fails raises after the users already yielded, so the run never takes a cut listing for
the directory.
"""

from __future__ import annotations

import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import structlog

from syncd.errors import SourceError, SourceUnavailableError, SyncdError
from syncd.http import ApiPolicy, RetryingCaller, RetrySettings, make_http_client
from syncd.http.pages import DEFAULT_MAX_PAGES
from syncd.model import RecordProblem, SourceUser
from syncd.sources.entra.auth import GraphAuth, PinnedCaSession, TokenProvider
from syncd.sources.entra.config import Credential, EntraSourceConfig, trusted_context
from syncd.sources.entra.graph import (
    GraphQuery,
    GraphUserMapper,
    build_queries,
    null_property_warning,
)

__all__ = ["EXPIRY_WARNING_DAYS", "GRAPH_POLICY", "GRAPH_RETRIES", "PAGE_BUDGET_S", "EntraSource"]

log = structlog.get_logger(__name__)

EXPIRY_WARNING_DAYS = 30
"""A credential expiring within this many days logs a warning on every run."""

PAGE_BUDGET_S = 30.0
"""The most one Graph page may take, every attempt and wait included."""

# At most 4 retries within the page's budget: each attempt's timeout is what is left of
# it, a Retry-After is waited out in full when it fits and fails the read at once when
# it does not (cutting it short would only be throttled again).
GRAPH_RETRIES = RetrySettings(
    max_retries=4,
    backoff_base_s=0.5,
    backoff_max_s=5.0,
    max_retry_after_s=PAGE_BUDGET_S,
    deadline_s=PAGE_BUDGET_S,
)


def _source_error(message: str, /, *, status_code: int | None = None) -> SyncdError:
    return SourceError(message)


def _source_unavailable(message: str, /, *, status_code: int | None = None) -> SyncdError:
    return SourceUnavailableError(message)


GRAPH_POLICY = ApiPolicy(
    name="graph",
    subject="Microsoft Graph",
    retryable_statuses=frozenset({429, 500, 502, 503, 504}),
    # 401/403 are explained per listing (which permission is missing), not generically.
    auth_statuses=frozenset(),
    unavailable=_source_unavailable,
    error=_source_error,
    auth_error=_source_error,
)


class _Tally:
    """Counts a read's Graph attempts (the HTTP layer's CallTally)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0


class _Page(msgspec.Struct):
    value: list[dict[str, Any]]
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")


_PAGE_DECODER = msgspec.json.Decoder(_Page)


class EntraSource:
    """Streams the users of an Entra ID tenant (see :class:`~syncd.ports.Source`).

    Nothing is opened by ``__enter__``: the first :meth:`read` builds the MSAL app
    (tenant discovery) and the HTTP client, and keeps them for the next reads, so
    MSAL's token cache serves a daemon's runs. A failure there fails that read (the run
    is held), not the opening of the job.
    """

    def __init__(
        self,
        config: EntraSourceConfig,
        *,
        lowercase: bool,
        credential: Credential | None = None,
        retry: RetrySettings = GRAPH_RETRIES,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """Build from a validated config; ``credential`` defaults to reading the config's.

        ``retry`` bounds the retries of each Graph page, in number and in time (its
        ``deadline_s``; each attempt's timeout is at most ``timeout_s``); ``now`` is
        the clock the expiry checks use.
        """
        self._config = config
        self._endpoints = config.endpoints()
        self._credential = credential if credential is not None else config.credential()
        self._retry = retry
        self._now = now or (lambda: datetime.now(UTC))
        self._mapper = GraphUserMapper(
            label=config.label,
            id_attribute=config.id_attribute,
            tags=config.tags,
            active_from_attribute=config.active_from_attribute,
            active_to_attribute=config.active_to_attribute,
            include_guests=config.include_guests,
            lowercase=lowercase,
        )
        self._queries = build_queries(
            select=self._mapper.select(),
            page_size=config.page_size,
            groups=config.groups,
            user_filter=config.filter,
        )
        self._lock = threading.Lock()
        self._session: PinnedCaSession | None = None
        self._http: httpx.Client | None = None
        self._caller: RetryingCaller | None = None
        self._read_warnings: list[str] = []
        self._expiry_failed_read = False
        self._tally = _Tally()

    def __repr__(self) -> str:
        return (
            f"EntraSource({self.label!r}, tenant={self._config.tenant_id!r}, "
            f"graph={self._endpoints.graph!r}, credential={self._credential!r})"
        )

    @property
    def label(self) -> str:
        """The configured source name, or ``entra:<tenant>``."""
        return self._config.label

    @property
    def requests(self) -> int:
        """Graph requests sent by the last read (attempts, retries included)."""
        return self._tally.calls

    @property
    def queries(self) -> list[GraphQuery]:
        """The listings each read sends."""
        return list(self._queries)

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        """Nothing to open yet (see the class docstring)."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the HTTP clients (the MSAL app and its token cache go with them)."""
        with self._lock:
            if self._http is not None:
                self._http.close()
            if self._session is not None:
                self._session.close()
            self._http = self._session = self._caller = None

    def _open(self) -> RetryingCaller:
        with self._lock:
            if self._caller is not None:
                return self._caller
            config = self._config
            context = trusted_context(config.ca_file) if config.ca_file is not None else None
            session = PinnedCaSession(ssl_context=context, timeout_s=config.timeout_s)
            provider = TokenProvider(
                tenant_id=config.tenant_id,
                client_id=config.client_id,
                credential=self._credential,
                endpoints=self._endpoints,
                http_client=session,
            )
            auth = GraphAuth(provider)
            http = make_http_client(
                self._endpoints.graph,
                auth=auth,
                timeout_s=config.timeout_s,
                transport=_transport(self._endpoints.graph, context),
            )
            self._session, self._http = session, http
            self._caller = RetryingCaller(http, GRAPH_POLICY, self._retry, secrets=auth.secrets)
            return self._caller

    # ------------------------------------------------------------------ expiry

    def credential_expiry(self) -> datetime | None:
        """When the certificate or client secret expires (None: not known)."""
        return self._credential.expires_at

    def diagnostics(self) -> list[str]:
        """Warnings an operator should see: credential expiry, and the last read's.

        The expiry is left out when it is what failed the last read (an expired
        certificate): the read's error says it already, once is enough.
        """
        messages = []
        expiry = self._expiry_message()
        if expiry is not None and not self._expiry_failed_read:
            messages.append(expiry)
        return messages + self._read_warnings

    def _expiry_message(self) -> str | None:
        expires = self._credential.expires_at
        if expires is None:
            return None
        left = expires - self._now()
        what = self._credential_name()
        if left <= timedelta(0):
            return f"the {what} expired on {expires:%Y-%m-%d %H:%M} UTC"
        if left <= timedelta(days=EXPIRY_WARNING_DAYS):
            return (
                f"the {what} expires on {expires:%Y-%m-%d %H:%M} UTC, in {left.days} days: "
                "add a new one to the app registration and to this config before then"
            )
        return None

    def _credential_name(self) -> str:
        if self._credential.kind == "certificate":
            return f"certificate (thumbprint {self._credential.thumbprint})"
        return "client secret"

    # -------------------------------------------------------------------- read

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        """Stream a SourceUser per user in scope, a problem per unusable one.

        Raises :class:`SourceError` when iterated (Unavailable when transient), after
        the users already yielded.
        """
        self._read_warnings = []
        self._expiry_failed_read = False
        self._tally = _Tally()
        self._check_credential()
        caller = self._open()
        mapper = self._mapper
        mapper.start_read()
        seen: set[str] | None = set() if len(self._queries) > 1 else None
        for query in self._queries:
            for user in self._listing(caller, query):
                if seen is not None:
                    object_id = user.get("id")
                    if isinstance(object_id, str):
                        if object_id in seen:
                            continue  # a member of several scope groups: once
                        seen.add(object_id)
                item = mapper.map(user)
                if item is not None:
                    yield item
        for prop in mapper.never_filled():
            is_start = prop == self._config.active_from_attribute
            message = null_property_warning(prop, mapper.users_seen, is_date=is_start)
            self._read_warnings.append(message)
            log.warning("entra.property_always_null", source=self.label, detail=message)

    def _check_credential(self) -> None:
        message = self._expiry_message()
        if message is None:
            return
        expires = self._credential.expires_at
        if self._credential.kind == "certificate" and expires and expires <= self._now():
            # notAfter is authoritative: Entra refuses it; say so without asking.
            self._expiry_failed_read = True
            raise SourceError(
                f"Entra source {self.label}: {message}; upload a new certificate to the "
                "app registration and point certificate.path at it"
            )
        log.warning("entra.credential_expiry", source=self.label, detail=message)

    def _listing(self, caller: RetryingCaller, query: GraphQuery) -> Iterator[dict[str, Any]]:
        """Every object of one listing, page by page, following nextLink verbatim."""
        what = f"group {query.group}" if query.group else "users"
        link: str | None = None
        seen: set[str] = set()
        pages = 0
        while True:
            path = query.path if link is None else _with_count(link, query)
            response = self._get(caller, query, path, first=link is None)
            try:
                page = _PAGE_DECODER.decode(response.content)
            except msgspec.DecodeError as error:
                raise SourceError(
                    f"Graph listing of {what} on {self.label}: page {pages + 1} is not a Graph "
                    f"collection ({error})"
                ) from None
            pages += 1
            yield from page.value
            link = page.next_link
            if link is None:
                return
            self._check_link(link, what)
            if link in seen or pages >= DEFAULT_MAX_PAGES:
                raise SourceError(
                    f"Graph listing of {what} on {self.label}: nextLink repeats or never ends "
                    f"(after {pages} pages); stopping instead of looping"
                )
            seen.add(link)

    def _get(
        self, caller: RetryingCaller, query: GraphQuery, path: str, *, first: bool
    ) -> httpx.Response:
        # The nextLink carries the query; the headers are not in it and go on every page.
        response = caller.call(
            "list",
            "GET",
            path,
            params=query.params if first else None,
            headers=query.headers,
            tally=self._tally,
        )
        status = response.status_code
        if status == 200:
            return response
        reason = caller.failure_reason(response)
        where = f"group {query.group}" if query.group else "/users"
        if status == 403:
            raise SourceError(
                f"Graph refused the listing of {where} on {self.label} ({reason}): the app "
                f"needs the application permission {query.permission}"
                + (" (and User.Read.All)" if query.group else "")
                + " with admin consent"
            )
        if status == 401:
            raise SourceError(
                f"Graph refused the access token for {where} on {self.label} ({reason}): "
                "check that cloud / graph_url match the tenant's cloud"
            )
        if status == 404 and query.group:
            raise SourceError(
                f"Entra source {self.label}: scope group {query.group} not found ({reason})"
            )
        if status == 400 and query.params.get("$filter"):
            raise SourceError(
                f"Graph refused the query on {self.label} ({reason}): check filter "
                f"{query.params['$filter']!r}"
            )
        raise SourceError(f"Graph listing of {where} on {self.label} failed: {reason}")

    def _check_link(self, link: str, what: str) -> None:
        expected = urlsplit(self._endpoints.graph)
        actual = urlsplit(link)
        if (actual.scheme, actual.netloc.lower()) != (expected.scheme, expected.netloc.lower()):
            raise SourceError(
                f"Graph listing of {what} on {self.label}: nextLink points at "
                f"{actual.scheme}://{actual.netloc}, not at {self._endpoints.graph}; stopping "
                "(the token is only sent to Graph)"
            )


def _with_count(link: str, query: GraphQuery) -> str:
    """``link`` as given, plus ``$count=true`` if an advanced query's link dropped it.

    Graph keeps its query options in nextLink, so this normally adds nothing; an
    advanced query's page without ``$count`` would be refused (or, worse, answered
    without advanced semantics), so it is never sent without.
    """
    if not query.advanced or "$count" in parse_qs(urlsplit(link).query):
        return link
    return f"{link}{'&' if '?' in link else '?'}%24count=true"


def _transport(graph_url: str, context: ssl.SSLContext | None) -> httpx.HTTPTransport | None:
    """With a context (``ca_file``): a transport verifying with it; else None (httpx's).

    A transport given to httpx turns off its own proxy variables, so the proxy for
    Graph's host is looked up here the way urllib does (``HTTPS_PROXY``, ``NO_PROXY``).
    """
    if context is None:
        return None
    host = urlsplit(graph_url).hostname or ""
    proxy = None
    if not urllib.request.proxy_bypass(host):
        proxy = urllib.request.getproxies().get("https")
    return httpx.HTTPTransport(verify=context, proxy=proxy, retries=0)
