"""An in-memory Microsoft Graph (users, groups) with its login endpoints, over HTTPS.

Serves what syncd's Entra source and MSAL use, with Graph's documented behaviour:

* the login side (:mod:`syncd.emulator.graph_login`): tenant discovery and tokens for
  ``https://HOST:PORT/{tenant}``, with a client secret or a certificate;
* ``GET /v1.0/users`` with ``$select``, ``$filter`` (``eq``, ``ne``, ``startswith``,
  ``endswith``, joined by ``and``), ``$top`` (at most 999), ``$count`` and
  ``@odata.nextLink`` paging through an opaque ``$skiptoken``;
* ``GET /v1.0/groups/{id}/transitiveMembers[/microsoft.graph.user]``: nested groups
  resolved, cycles included;
* advanced queries (the OData cast, ``ne``, ``endswith``) refused with 400 unless
  ``ConsistencyLevel: eventual`` and ``$count=true`` come with them, on every page;
* permissions from the token: 403 without ``User.Read.All`` / ``GroupMember.Read.All``,
  ``employeeLeaveDateTime`` null without ``User-LifeCycleInfo.Read.All``;
* faults: the base's (429 + Retry-After, 503, latency, error rate) per operation,
  :meth:`GraphEmulator.fail_page` for a status (and ``Retry-After``) on one page number
  of every listing, nextLinks to another host (``next_link_base``) or repeating
  (``repeat_next_link``), HTML 503 pages from the login side
  (``login.fail_discovery_next`` / ``login.fail_token_next``) and any answer to tenant
  discovery (``login.fail_discovery``: a 404, a 429, an HTML 200 ...).

Counters: :meth:`~GraphEmulator.calls` (Graph operations), :attr:`login_calls`, and
:attr:`queries` (every Graph request's path, parameters and ConsistencyLevel).
"""

from __future__ import annotations

import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlencode

from syncd.emulator.graph_login import DEFAULT_ROLES, GraphApp, LoginService
from syncd.emulator.server import Call, EmulatorServer, Request, Response, Route, json_response

__all__ = ["DEFAULT_ROLES", "GraphApp", "GraphEmulator", "GraphOperation", "RecordedQuery"]

# The properties a user object has; $select of anything else is a 400, as in Graph.
USER_PROPERTIES = frozenset(
    {
        "id", "userPrincipalName", "mail", "displayName", "givenName", "surname",
        "accountEnabled", "userType", "department", "country", "jobTitle", "employeeId",
        "onPremisesSamAccountName", "employeeHireDate", "createdDateTime",
        "employeeLeaveDateTime", "officeLocation", "companyName", "city", "usageLocation",
        "mobilePhone", "businessPhones", "preferredLanguage", "employeeType",
        "onPremisesExtensionAttributes", "employeeOrgData", "identities",
    }
)  # fmt: skip
# What Graph returns without $select (accountEnabled and the dates are not among them).
_DEFAULT_SELECT = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)  # fmt: skip
_LIFECYCLE_PROPERTY = "employeeLeaveDateTime"
_LIFECYCLE_ROLE = "User-LifeCycleInfo.Read.All"
_MEMBER_ROLES = frozenset({"GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"})
_USER_ROLES = frozenset({"User.Read.All", "Directory.Read.All"})
_MAX_TOP = 999
_DEFAULT_TOP = 100
_CURSOR_TTL_S = 600.0
_MAX_CURSORS = 64
_MAX_RECORDED = 10_000
_GROUP_PATH = re.compile(
    r"^/v1\.0/groups/(?P<group>[^/]+)/transitiveMembers(?P<cast>/microsoft\.graph\.user)?$"
)
_CLAUSE = re.compile(
    r"^\s*(?:(?P<prop>\w+)\s+(?P<op>eq|ne)\s+(?P<value>'(?:[^']|'')*'|true|false|null)"
    r"|(?P<fn>startswith|endswith)\(\s*(?P<fprop>\w+)\s*,\s*(?P<fvalue>'(?:[^']|'')*')\s*\))\s*$",
    re.IGNORECASE,
)


class GraphOperation(StrEnum):
    """The Graph operations the emulator serves (counters and faults are per operation)."""

    LIST_USERS = "list_users"
    LIST_MEMBERS = "list_members"


@dataclass(frozen=True, slots=True)
class RecordedQuery:
    """One Graph request as received: for tests asserting what a client sent."""

    operation: GraphOperation
    path: str
    params: Mapping[str, str]
    consistency_level: str | None


@dataclass(slots=True)
class _Cursor:
    items: list[dict[str, Any]]
    offset: int
    top: int
    select: tuple[str, ...]
    advanced: bool
    page: int
    lifecycle: bool
    created: float


class _QueryError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = _graph_error(status, code, message)


def _graph_error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


class GraphEmulator(EmulatorServer[GraphOperation]):
    """Microsoft Graph users and groups plus the tenant's login, in memory on loopback.

    ``ssl_context`` (server side) makes it HTTPS, as MSAL requires. ``api_key`` is the
    bearer key of the ``/_emulator`` control endpoints; Graph calls need a token from
    the token endpoint. Thread-safe: one lock guards the directory and the cursors.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        apps: Iterable[GraphApp],
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        token_lifetime_s: int = 3600,
        domains: Iterable[str] = (),
    ) -> None:
        super().__init__(
            api_key=api_key or secrets.token_urlsafe(16),
            operations=GraphOperation,
            host=host,
            port=port,
            counted_verbs=("GET",),
            ssl_context=ssl_context,
        )
        self.login = LoginService(
            tenant_id=tenant_id,
            apps={app.client_id.lower(): app for app in apps},
            token_lifetime_s=token_lifetime_s,
            domains=tuple(domains),
        )
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, list[str]] = {}
        self._cursors: dict[str, _Cursor] = {}
        self._page_faults: dict[int, tuple[int, int | None, int]] = {}
        self.queries: list[RecordedQuery] = []
        self.count_in_next_link = True
        """False: advanced queries' nextLinks leave ``$count`` out (the client must add it)."""
        self.next_link_base: str | None = None
        """A base URL (``https://other:port``) put into nextLinks instead of the
        emulator's own: a nextLink pointing at another host (a token thief)."""
        self.repeat_next_link = False
        """True: a continuation page answers with the very nextLink it was asked by (a
        listing that would loop forever)."""

    # ------------------------------------------------------------- python control

    @property
    def login_calls(self) -> dict[str, int]:
        """Login requests: ``discovery``, ``instance_discovery``, ``token``."""
        return self.login.counts()

    def set_users(self, users: Iterable[Mapping[str, Any]]) -> None:
        """Replace the directory's users (each needs an ``id``)."""
        with self._lock:
            self._users = {str(user["id"]): dict(user) for user in users}
            self._cursors.clear()

    def update_user(self, user_id: str, **changes: Any) -> None:
        """Change properties of one user (``accountEnabled=False`` disables it)."""
        with self._lock:
            self._users[user_id] = {**self._users[user_id], **changes}

    def set_groups(self, groups: Mapping[str, Iterable[str]]) -> None:
        """Replace the groups: group id -> member ids (users or other groups)."""
        with self._lock:
            self._groups = {gid: list(members) for gid, members in groups.items()}

    def fail_page(
        self, page: int, status: int = 503, times: int | None = None, retry_after: int = 1
    ) -> None:
        """Answer ``status`` to page ``page`` (1-based) of every listing, ``times`` times
        (None: every time); a 429 says ``Retry-After: retry_after``."""
        with self._lock:
            self._page_faults[page] = (status, times, retry_after)

    def clear_page_faults(self) -> None:
        """Remove every page fault."""
        with self._lock:
            self._page_faults.clear()

    def reset(self) -> None:
        """Empty the directory, forget tokens, faults, queries and counters."""
        with self._lock:
            self._users, self._groups, self._cursors = {}, {}, {}
            self._page_faults.clear()
            self.queries = []
            self.count_in_next_link = True
            self.next_link_base = None
            self.repeat_next_link = False
        self.clear_faults()
        self.reset_counters()
        self.login.reset_counters()
        self.login.revoke_all()
        self.login.clear_discovery_faults()

    def extra_stats(self) -> dict[str, object]:
        """Users, groups and login counters for ``GET /_emulator/stats``."""
        with self._lock:
            sizes = {"users": len(self._users), "groups": len(self._groups)}
        return {**sizes, "login_calls": self.login_calls}

    # ---------------------------------------------------------------- dispatch

    def dispatch(self, request: Request) -> Response:
        """Login paths without a token; everything else through the base (auth, faults)."""
        if self.login.handles(request.path):
            return self.login.answer(request, self.url)
        if request.path.startswith("/v1.0/") and self._grant(request) is None:
            route = self.route(request.path)
            if route is not None:
                return _graph_error(
                    401, "InvalidAuthenticationToken", "Access token is empty, invalid or expired."
                )
        return super().dispatch(request)

    def _authorized(self, header: str | None) -> bool:
        # The control key, or a live token from the token endpoint.
        return super()._authorized(header) or self._grant_of(header) is not None

    def _grant_of(self, header: str | None) -> Any:
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.login.grant(token.strip())

    def _grant(self, request: Request) -> Any:
        return self._grant_of(request.header("Authorization"))

    def route(self, path: str) -> Route[GraphOperation] | None:
        """``/v1.0/users`` and ``/v1.0/groups/{id}/transitiveMembers[/microsoft.graph.user]``."""
        if path == "/v1.0/users":
            return Route({"GET": GraphOperation.LIST_USERS})
        match = _GROUP_PATH.match(path)
        if match is None:
            return None
        params = {"group": match["group"], "cast": "1" if match["cast"] else ""}
        return Route({"GET": GraphOperation.LIST_MEMBERS}, params)

    def handle(self, call: Call[GraphOperation]) -> Response:
        """Answer one listing page (a new listing, or a ``$skiptoken`` continuation)."""
        request = call.request
        params = {k: v[0] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
        consistency = request.header("ConsistencyLevel")
        with self._lock:
            if len(self.queries) < _MAX_RECORDED:
                self.queries.append(
                    RecordedQuery(call.operation, request.path, params, consistency)
                )
        grant = self._grant(request)
        roles: frozenset[str] = grant.roles if grant is not None else frozenset(DEFAULT_ROLES)
        needed = _USER_ROLES if call.operation is GraphOperation.LIST_USERS else _MEMBER_ROLES
        if not roles & needed:
            return _graph_error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        eventual = (consistency or "").lower() == "eventual" and params.get("$count") == "true"
        try:
            with self._lock:
                cursor = self._cursor(call, params, roles, eventual)
                fault = self._page_fault(cursor.page + 1)
                if fault is not None:
                    return fault
                return self._page(cursor, params, request.path)
        except _QueryError as error:
            return error.response

    # ----------------------------------------------------------------- listings

    def _cursor(
        self,
        call: Call[GraphOperation],
        params: Mapping[str, str],
        roles: frozenset[str],
        eventual: bool,
    ) -> _Cursor:
        token = params.get("$skiptoken")
        if token is not None:
            cursor = self._cursors.get(token)
            if cursor is None:
                raise _QueryError(400, "Directory_ExpiredPageToken", "The page token expired.")
            if cursor.advanced and not eventual:
                raise _QueryError(
                    400, "Request_UnsupportedQuery",
                    "This page of an advanced query needs ConsistencyLevel: eventual and $count.",
                )  # fmt: skip
            return cursor
        select = _parse_select(params.get("$select"))
        top = _parse_top(params.get("$top"))
        clauses, advanced_filter = _parse_filter(params.get("$filter"))
        cast = call.params.get("cast") == "1"
        advanced = advanced_filter or cast
        if advanced and not eventual:
            raise _QueryError(
                400, "Request_UnsupportedQuery",
                "Unsupported query: it needs advanced query support (ConsistencyLevel: eventual "
                "header and $count=true).",
            )  # fmt: skip
        if call.operation is GraphOperation.LIST_USERS:
            items = list(self._users.values())
        else:
            items = self._transitive(call.params["group"], users_only=cast)
        items = [item for item in items if all(clause(item) for clause in clauses)]
        return _Cursor(
            items, 0, top, select, advanced, 0, _LIFECYCLE_ROLE in roles, time.monotonic()
        )

    def _page_fault(self, page: int) -> Response | None:
        fault = self._page_faults.get(page)
        if fault is None:
            return None
        status, times, retry_after = fault
        if times is not None:
            if times <= 1:
                del self._page_faults[page]
            else:
                self._page_faults[page] = (status, times - 1, retry_after)
        headers = [("Retry-After", str(retry_after))] if status == 429 else []
        return Response(
            status,
            json_response(status, {"error": {"code": "emulated", "message": f"page {page}"}}).body,
            headers,
        )

    def _page(self, cursor: _Cursor, params: Mapping[str, str], path: str) -> Response:
        chunk = cursor.items[cursor.offset : cursor.offset + cursor.top]
        body: dict[str, Any] = {"@odata.context": f"{self.url}/v1.0/$metadata#{path}"}
        if cursor.page == 0 and params.get("$count") == "true":
            body["@odata.count"] = len(cursor.items)
        body["value"] = [
            _project(item, cursor.select, lifecycle=cursor.lifecycle) for item in chunk
        ]
        # A page fault answered above leaves the cursor where it was: the client may retry.
        old_token = params.get("$skiptoken")
        base = self.next_link_base or self.url
        if old_token is not None and self.repeat_next_link:
            query = {"$skiptoken": old_token}
            if cursor.advanced and self.count_in_next_link:
                query["$count"] = "true"
            body["@odata.nextLink"] = f"{base}{path}?{urlencode(query)}"
            return json_response(200, body)
        if old_token is not None:
            self._cursors.pop(old_token, None)
        end = cursor.offset + len(chunk)
        if end < len(cursor.items):
            following = _Cursor(
                cursor.items, end, cursor.top, cursor.select, cursor.advanced,
                cursor.page + 1, cursor.lifecycle, time.monotonic(),
            )  # fmt: skip
            token = secrets.token_urlsafe(12)
            self._store_cursor(token, following)
            query = {"$skiptoken": token}
            if cursor.advanced and self.count_in_next_link:
                query["$count"] = "true"
            body["@odata.nextLink"] = f"{base}{path}?{urlencode(query)}"
        return json_response(200, body)

    def _store_cursor(self, token: str, cursor: _Cursor) -> None:
        now = time.monotonic()
        self._cursors = {k: c for k, c in self._cursors.items() if now - c.created < _CURSOR_TTL_S}
        while len(self._cursors) >= _MAX_CURSORS:
            self._cursors.pop(next(iter(self._cursors)))
        self._cursors[token] = cursor

    def _transitive(self, group: str, *, users_only: bool) -> list[dict[str, Any]]:
        if group not in self._groups:
            raise _QueryError(
                404, "Request_ResourceNotFound",
                f"Resource '{group}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )  # fmt: skip
        found: list[dict[str, Any]] = []
        seen: set[str] = {group}  # a cycle back to the group does not list it as a member
        pending = [group]
        visited: set[str] = set()
        while pending:
            current = pending.pop(0)
            if current in visited:
                continue  # a cycle, or a group reached twice
            visited.add(current)
            for member in self._groups.get(current, ()):
                if member in self._groups:
                    if not users_only and member not in seen:
                        seen.add(member)
                        found.append({"@odata.type": "#microsoft.graph.group", "id": member})
                    pending.append(member)
                elif member in self._users and member not in seen:
                    seen.add(member)
                    found.append(self._users[member])
        return found


def _project(
    user: Mapping[str, Any], select: tuple[str, ...], *, lifecycle: bool
) -> dict[str, Any]:
    if user.get("@odata.type") == "#microsoft.graph.group":
        return dict(user)
    fields = select or _DEFAULT_SELECT
    projected = {name: user.get(name) for name in fields}
    if _LIFECYCLE_PROPERTY in projected and not lifecycle:
        projected[_LIFECYCLE_PROPERTY] = None  # hidden without the permission, as in Graph
    return projected


def _parse_select(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    for name in names:
        if name not in USER_PROPERTIES:
            raise _QueryError(
                400, "Request_BadRequest",
                f"Could not find a property named '{name}' on type 'microsoft.graph.user'.",
            )  # fmt: skip
    return names


def _parse_top(value: str | None) -> int:
    if value is None:
        return _DEFAULT_TOP
    try:
        top = int(value)
    except ValueError:
        raise _QueryError(400, "Request_BadRequest", f"Invalid $top {value!r}") from None
    if not 1 <= top <= _MAX_TOP:
        raise _QueryError(
            400, "Request_BadRequest", f"Invalid page size {top}: it must be 1 to {_MAX_TOP}."
        )
    return top


def _parse_filter(text: str | None) -> tuple[list[Any], bool]:
    """The clauses of a ``$filter`` as predicates, and whether it is an advanced query."""
    if text is None:
        return [], False
    clauses = []
    advanced = False
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.match(part)
        if match is None:
            raise _QueryError(
                400, "Request_UnsupportedQuery", f"Unsupported filter clause {part!r}"
            )
        if match["fn"]:
            fn = match["fn"].lower()
            advanced = advanced or fn == "endswith"
            clauses.append(_text_clause(match["fprop"], fn, _literal(match["fvalue"])))
        else:
            op = match["op"].lower()
            advanced = advanced or op == "ne"
            clauses.append(_compare_clause(match["prop"], op, _literal(match["value"])))
    return clauses, advanced


def _literal(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    return text[1:-1].replace("''", "'")


def _text_clause(prop: str, fn: str, value: object) -> Any:
    wanted = str(value).lower()

    def matches(user: Mapping[str, Any]) -> bool:
        actual = user.get(prop)
        if not isinstance(actual, str):
            return False
        text = actual.lower()
        return text.startswith(wanted) if fn == "startswith" else text.endswith(wanted)

    return matches


def _compare_clause(prop: str, op: str, value: object) -> Any:
    def equal(actual: object) -> bool:
        if isinstance(actual, str) and isinstance(value, str):
            return actual.lower() == value.lower()
        return actual == value

    def matches(user: Mapping[str, Any]) -> bool:
        result = equal(user.get(prop))
        return result if op == "eq" else not result

    return matches
