"""The LDAP source: a paged, streamed read of the person entries, mapped like CSV rows.

Failing loudly is the point of most of this module. With ``raise_exceptions=False``
ldap3 reports a failed search only in ``connection.result``; its paged-search helper
then simply stops, as if the directory had ended. Here every page's result code is
checked, and an error, a size or time limit, a referral, or a connection lost half-way
raises :class:`SourceError` after the entries already yielded, never a short list.

Memory is bounded by one page: each page's entries are mapped and yielded before the
next page is asked for. The sets built besides the stream hold DNs only: the disabled
entries, the members of the scope groups when the server cannot filter on them, and,
with several (possibly overlapping) bases, the entries already seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import structlog

from syncd.sources.ldap import _ldap3  # noqa: F401 - before any ldap3 import

# isort: split
from ldap3 import BASE, DEREF_NEVER, SUBTREE, Connection
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

from syncd.errors import SourceError, SourceUnavailableError
from syncd.mapping import RecordMapper
from syncd.model import Origin, RecordProblem, SourceUser
from syncd.sources.ldap.config import GroupStrategy, LdapSourceConfig
from syncd.sources.ldap.connection import Connector, close_quietly
from syncd.sources.ldap.values import (
    and_filters,
    attribute_text,
    in_chain_filter,
    normalize_dn,
    parse_directory_date,
)

log = structlog.get_logger(__name__)

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
_NO_ATTRIBUTES = ["1.1"]
# groupOfNames / groupOfUniqueNames (OpenLDAP, FreeIPA) and AD's group, which also lists
# its members in ``member``: the walk works on either kind of directory.
_GROUP_FILTER = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))"
_MEMBER_ATTRIBUTES = ("member", "uniquemember")
# Result codes worth a later retry: timeLimitExceeded, busy, unavailable, unwillingToPerform
# is not one of them (a policy), nor are the rest.
_TRANSIENT_CODES = {3: "the server's time limit was exceeded", 51: "busy", 52: "unavailable"}


@dataclass(frozen=True, slots=True)
class _Scope:
    """Which entries of the person search are in scope."""

    server_filter: str | None = None
    """Added to the search filter (in-chain rule, or memberOf with the overlay)."""
    member_dns: frozenset[str] | None = None
    """Normalised DNs to keep, when the server cannot filter (no memberOf)."""


class LdapSource:
    """Streams the users of an LDAP directory (see :class:`~syncd.ports.Source`).

    ``__enter__`` connects and binds; a failure there is kept and raised by the next
    :meth:`read`, so an unreachable directory fails the read (the run is held) rather
    than the opening of the job. A connection that breaks is dropped and reopened by
    the next read, so a daemon survives a directory restart.
    """

    def __init__(
        self, config: LdapSourceConfig, *, lowercase: bool, connector: Connector | None = None
    ) -> None:
        self._config = config
        self._settings = config.settings()
        self._connector = connector or Connector(config)
        self._connection: Connection | None = None
        self._tag_rules = config.tag_rules()
        self._mapper = RecordMapper(
            id_field=config.id_attribute,
            tag_fields={rule.tag: rule.attribute for rule in self._tag_rules},
            active_from_field=config.active_from_attribute,
            active_to_field=config.active_to_attribute,
            lowercase=lowercase,
            kind="attribute",
        )
        names = [config.id_attribute, *(rule.attribute for rule in self._tag_rules)]
        names += [a for a in (config.active_from_attribute, config.active_to_attribute) if a]
        self._attributes = list(dict.fromkeys(names))

    def __repr__(self) -> str:
        return f"LdapSource({self.label!r}, urls={list(self._config.urls)!r})"

    @property
    def label(self) -> str:
        """The configured source name, or the first server's host name."""
        return self._config.label

    def __enter__(self) -> Self:
        """Nothing is opened yet: the first :meth:`read` connects and binds.

        A daemon enters its sources at start-up; connecting there would delay its
        readiness (and its reaction to SIGTERM) by up to the failover budget, and a
        failure belongs to a run, which holds its plan, not to the start.
        """
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Unbind."""
        self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            close_quietly(self._connection)
            self._connection = None

    def _connect(self) -> tuple[Connection, bool]:
        """The open connection, or a new one; True when it was just opened."""
        if self._connection is not None and not self._connection.closed:
            return self._connection, False
        self._drop()
        self._connection = self._connector.open()
        return self._connection, True

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        """Stream a :class:`SourceUser` per person entry in scope, a problem per bad one.

        Raises :class:`SourceError` (:class:`SourceUnavailableError` when the server is
        unreachable or times out) when iterated, after the entries already yielded. A
        kept connection that turns out dead before anything was read (a server restart
        or idle timeout between two runs of a daemon) is replaced once.
        """
        self._warn()
        while True:
            connection, fresh = self._connect()
            started = False
            try:
                for item in self._read(connection):
                    started = True
                    yield item
                return
            except LDAPException as error:
                self._drop()
                if not (fresh or started):
                    log.info("ldap.reconnect", source=self.label, error=_describe(error))
                    continue
                raise SourceUnavailableError(
                    f"LDAP read from {self.label} failed: {_describe(error)}"
                ) from None
            except SourceUnavailableError as error:
                self._drop()
                if not (fresh or started):
                    log.info("ldap.reconnect", source=self.label, error=str(error))
                    continue
                raise
            except SourceError:
                self._drop()
                raise

    def _warn(self) -> None:
        if not self._config.tls_verify:
            log.warning(
                "ldap.tls_verify_off",
                source=self.label,
                detail="TLS certificates are not verified (tls_verify: false)",
            )
        if self._connector.cleartext_bind:
            log.warning(
                "ldap.cleartext_bind",
                source=self.label,
                detail="the bind password is sent unencrypted (ldap:// without start_tls)",
            )

    def _read(self, connection: Connection) -> Iterator[SourceUser | RecordProblem]:
        scope = self._scope(connection)
        if scope.member_dns is not None and not scope.member_dns:
            return  # the scope groups have no members: an empty source, for the guard
        user_filter = and_filters(
            [self._settings.person_filter, self._config.user_filter, scope.server_filter]
        )
        disabled = self._disabled(connection, user_filter)
        several_bases = len(self._config.base_dn) > 1
        seen: set[str] = set()
        for base in self._config.base_dn:
            for dn, attributes in self._search(connection, base, user_filter, self._attributes):
                key = normalize_dn(dn) if (several_bases or scope.member_dns or disabled) else ""
                if scope.member_dns is not None and key not in scope.member_dns:
                    continue
                if several_bases:
                    if key in seen:
                        continue  # overlapping bases: the same entry once
                    seen.add(key)
                yield self._entry(dn, attributes, disabled=key in disabled)

    def _entry(
        self, dn: str, raw: dict[str, list[bytes]], *, disabled: bool
    ) -> SourceUser | RecordProblem:
        origin = Origin(self.label, None, dn)
        values = {name.lower(): value for name, value in raw.items()}
        config = self._config
        try:
            ids = values.get(config.id_attribute.lower())
            if not ids:
                return RecordProblem(origin, f"no attribute {config.id_attribute!r}")
            tag_values = [
                attribute_text(rule.attribute, values.get(rule.attribute.lower(), ()), rule.join)
                for rule in self._tag_rules
            ]
            return self._mapper.build(
                origin,
                attribute_text(config.id_attribute, ids),
                tag_values,
                active_from=self._date(values, config.active_from_attribute),
                active_to=self._date(values, config.active_to_attribute),
                enabled="false" if disabled else None,
            )
        except ValueError as error:
            return RecordProblem(origin, str(error))

    @staticmethod
    def _date(values: dict[str, list[bytes]], attribute: str | None) -> str | None:
        if attribute is None:
            return None
        text = attribute_text(attribute, values.get(attribute.lower(), ()))
        try:
            parsed = parse_directory_date(text)
        except ValueError as error:
            raise ValueError(f"attribute {attribute!r}: {error}") from None
        return "" if parsed is None else parsed.isoformat()

    # ------------------------------------------------------------------ searches

    def _search(
        self, connection: Connection, base: str, search_filter: str, attributes: Sequence[str]
    ) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """Every entry under ``base``, page by page, each page's result checked."""
        cookie: bytes | None = None
        while True:
            previous = cookie
            connection.search(
                base,
                search_filter,
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=list(attributes),
                paged_size=self._config.page_size,
                paged_cookie=cookie,
                paged_criticality=True,
                time_limit=int(self._config.timeout_s),
            )
            result = connection.result
            self._check(result, f"search of {base!r} with filter {search_filter}")
            entries = 0
            for item in connection.response or ():
                if item.get("type") == "searchResEntry":  # searchResRef items are skipped
                    entries += 1
                    yield item["dn"], item["raw_attributes"]
            cookie = _cookie(result)
            if cookie is None:
                # A server that drops the paging control mid-search may have stopped
                # early: an end we cannot tell from a cut is never read as the end.
                raise SourceError(
                    f"LDAP search of {base!r} on {self.label}: a page came back without the "
                    "paged-results control, so the end of the results cannot be told from "
                    "a cut; the read is not used"
                )
            if not cookie:
                return  # the empty cookie: the server's own "no more pages"
            if entries == 0 and cookie == previous:
                # Samba repeats one cookie for a whole search, so a repeat alone is fine;
                # a repeat that brings nothing is a server going round in circles.
                raise SourceError(
                    f"LDAP search of {base!r} on {self.label}: the server sent the same page "
                    "cookie again with no entries; stopping instead of looping"
                )

    def _check(self, result: dict[str, Any] | None, what: str) -> None:
        if not result or "result" not in result:
            raise SourceUnavailableError(
                f"LDAP {what} on {self.label}: no result from the server (connection lost?)"
            )
        code = int(result["result"])
        if code == 0:
            return
        detail = f"{result.get('description', '')} (code {code})"
        message = str(result.get("message") or "").strip()
        if message:
            detail += f": {message}"
        if code == 10:
            referrals = ", ".join(result.get("referrals") or []) or "another server"
            detail += f"; the server refers to {referrals}: point base_dn at this server's data"
        elif code == 4:
            detail += "; the server did not page the results (is paging disabled?)"
        elif code == 32:
            detail += "; check base_dn"
        if code in _TRANSIENT_CODES:
            raise SourceUnavailableError(f"LDAP {what} on {self.label} failed: {detail}")
        raise SourceError(f"LDAP {what} on {self.label} failed: {detail}")

    def _disabled(self, connection: Connection, user_filter: str) -> frozenset[str]:
        """The normalised DNs of the disabled entries (the disabled filter's matches)."""
        disabled_filter = self._settings.disabled_filter
        if disabled_filter is None:
            return frozenset()
        search_filter = and_filters([user_filter, disabled_filter])
        return frozenset(
            normalize_dn(dn)
            for base in self._config.base_dn
            for dn, _ in self._search(connection, base, search_filter, _NO_ATTRIBUTES)
        )

    # -------------------------------------------------------------------- groups

    def _scope(self, connection: Connection) -> _Scope:
        groups = self._config.groups
        if not groups:
            return _Scope()
        if self._settings.groups is GroupStrategy.IN_CHAIN:
            # The in-chain rule matches nothing for a group that does not exist (renamed,
            # moved, a typo): its members would look gone. Each group must be there.
            for group in groups:
                self._require_entry(connection, group)
            return _Scope(server_filter=in_chain_filter(groups))
        # The walk has every member DN already; a memberOf filter would depend on the
        # overlay having been on when every membership was written, which cannot be
        # checked entry by entry. Membership is decided from the walk alone.
        _, members = self._walk_groups(connection, groups)
        return _Scope(member_dns=frozenset(members))

    def _require_entry(self, connection: Connection, dn: str) -> None:
        """Raise SourceError unless ``dn`` names an entry (a BASE search of it)."""
        connection.search(
            dn,
            _GROUP_FILTER,  # a DN that exists but is no group (an OU, a user) is wrong too
            search_scope=BASE,
            dereference_aliases=DEREF_NEVER,
            attributes=["1.1"],
            time_limit=int(self._config.timeout_s),
        )
        result = connection.result
        if result and result.get("result") == 32:
            raise SourceError(f"LDAP source {self.label}: scope group {dn!r} not found")
        self._check(result, f"read of scope group {dn!r}")
        if not any(item.get("type") == "searchResEntry" for item in connection.response or ()):
            raise SourceError(
                f"LDAP source {self.label}: scope group {dn!r} not found (or not a group)"
            )

    def _walk_groups(
        self, connection: Connection, groups: Sequence[str]
    ) -> tuple[dict[str, str], set[str]]:
        """Every group reachable from ``groups`` (normalised -> DN) and the other members.

        Reads all groups of the naming contexts of ``groups`` in one paged search, then
        walks them in memory; a visited set stops cycles (A in B, B in A).
        """
        members_of: dict[str, tuple[str, list[str]]] = {}
        for base in dict.fromkeys(_naming_context(dn) for dn in groups):
            for dn, raw in self._search(connection, base, _GROUP_FILTER, _MEMBER_ATTRIBUTES):
                values = [
                    value.decode("utf-8", "replace")
                    for name, items in raw.items()
                    if name.lower() in _MEMBER_ATTRIBUTES
                    for value in items
                ]
                members_of[normalize_dn(dn)] = (dn, values)
        nested: dict[str, str] = {}
        members: set[str] = set()
        pending = []
        for dn in groups:
            key = normalize_dn(dn)
            if key not in members_of:
                raise SourceError(
                    f"LDAP source {self.label}: scope group {dn!r} not found (or not a "
                    "groupOfNames, groupOfUniqueNames or group)"
                )
            pending.append(key)
        while pending:
            key = pending.pop()
            if key in nested:
                continue  # already walked: a cycle or a group reached twice
            dn, values = members_of[key]
            nested[key] = dn
            for value in values:
                # groupOfUniqueNames members may carry "#'0101'B" (a unique identifier).
                member = normalize_dn(value.split("#", 1)[0] if "#" in value else value)
                if member in members_of:
                    pending.append(member)
                else:
                    members.add(member)
        return nested, members


def _cookie(result: dict[str, Any]) -> bytes | None:
    control = (result.get("controls") or {}).get(PAGED_RESULTS_OID)
    if not control:
        return None
    cookie: bytes | None = control.get("value", {}).get("cookie")
    return cookie


def _naming_context(dn: str) -> str:
    """The ``dc=`` suffix of ``dn`` (where its directory's groups live), else ``dn``."""
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except LDAPException:
        return dn
    suffix = []
    for name, value, _ in reversed(parts):
        if name.lower() != "dc":
            break
        suffix.append(f"{name}={value}")
    return ",".join(reversed(suffix)) if suffix else dn


def _describe(error: LDAPException) -> str:
    return " ".join((str(error).strip() or type(error).__name__).split())
