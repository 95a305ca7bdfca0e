"""The paged search loop, on scripted server answers a real slapd cannot be made to give.

Real servers always send the paged-results control back; these answers (a page without
the control, a cookie repeated forever) come from broken proxies and servers, and must
fail the read instead of ending it short or looping.
"""

from __future__ import annotations

from typing import Any

import pytest

from syncd.errors import SourceError
from syncd.sources.ldap import LdapSource, LdapSourceConfig
from syncd.sources.ldap.source import PAGED_RESULTS_OID


class ScriptedConnection:
    """Answers each ``search`` with the next scripted page (entries, control or None)."""

    def __init__(self, pages: list[tuple[list[str], bytes | None]]) -> None:
        self.pages = pages
        self.calls = 0
        self.result: dict[str, Any] = {}
        self.response: list[dict[str, Any]] = []

    def search(self, *args: Any, **kwargs: Any) -> bool:
        names, cookie = self.pages[min(self.calls, len(self.pages) - 1)]
        self.calls += 1
        controls = {} if cookie is None else {PAGED_RESULTS_OID: {"value": {"cookie": cookie}}}
        self.result = {"result": 0, "description": "success", "controls": controls}
        self.response = [
            {"type": "searchResEntry", "dn": f"uid={n},dc=x", "raw_attributes": {}} for n in names
        ]
        return True


def _source() -> LdapSource:
    config = LdapSourceConfig.model_validate(
        {
            "type": "ldap",
            "flavor": "openldap",
            "urls": ["ldap://127.0.0.1:1"],
            "base_dn": "dc=x",
            "id_attribute": "mail",
        }
    )
    return LdapSource(config, lowercase=True)


def _search(connection: ScriptedConnection) -> list[str]:
    found: list[str] = []
    found.extend(
        dn
        for dn, _ in _source()._search(connection, "dc=x", "(objectClass=*)", ["mail"])  # type: ignore[arg-type]
    )
    return found


def test_pages_are_followed_to_the_empty_cookie() -> None:
    connection = ScriptedConnection([(["a", "b"], b"c1"), (["c"], b"c2"), (["d"], b"")])
    assert _search(connection) == ["uid=a,dc=x", "uid=b,dc=x", "uid=c,dc=x", "uid=d,dc=x"]


def test_a_page_without_the_paging_control_fails_the_read() -> None:
    connection = ScriptedConnection([(["a", "b"], b"c1"), (["c"], None)])
    with pytest.raises(SourceError, match="without the paged-results control"):
        _search(connection)


def test_a_repeated_cookie_is_fine_while_pages_bring_entries() -> None:
    # Samba answers every page of a search with the same cookie.
    connection = ScriptedConnection([(["a"], b"same"), (["b"], b"same"), (["c"], b"")])
    assert _search(connection) == ["uid=a,dc=x", "uid=b,dc=x", "uid=c,dc=x"]


def test_a_repeated_cookie_with_no_entries_fails_instead_of_looping() -> None:
    connection = ScriptedConnection([(["a"], b"same"), ([], b"same")])
    with pytest.raises(SourceError, match="same page cookie again with no entries"):
        _search(connection)
    assert connection.calls == 2
