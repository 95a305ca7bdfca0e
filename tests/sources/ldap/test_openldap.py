"""The LDAP source against a real OpenLDAP slapd on 127.0.0.1 (see ``conftest.py``).

The session slapd (memberof overlay on) holds each test's entries under its own OU;
tests that need another server set-up (no overlay, many entries, a server to kill)
start their own with ``slapd_factory``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import structlog

from syncd.config import parse_config
from syncd.emulator import PlatformEmulator, make_users
from syncd.errors import SourceError, SourceUnavailableError
from syncd.exitcodes import ExitCode
from syncd.model import RecordProblem, SourceUser
from syncd.service import run_job
from syncd.sources.ldap import LdapSource, LdapSourceConfig
from syncd.sources.ldap.connection import Connector
from syncd.sources.ldap.values import normalize_dn
from tests.sources.ldap.servers import SLAPD_GROUPS_DN, SLAPD_PEOPLE_DN, DirectoryServer, free_port

SlapdFactory = Callable[..., DirectoryServer]
_ou_numbers = count()


def _config(server: DirectoryServer, **values: Any) -> LdapSourceConfig:
    fields: dict[str, Any] = {
        "type": "ldap",
        "name": "corp",
        "flavor": "openldap",
        "urls": [server.ldap_url],
        "start_tls": True,
        "ca_file": server.ca_file,
        "bind_dn": server.admin_dn,
        "bind_password": server.admin_password,
        "base_dn": server.base_dn,
        "id_attribute": "mail",
        "tags": {"department": "departmentNumber"},
        **values,
    }
    return LdapSourceConfig.model_validate(fields)


def _read(config: LdapSourceConfig, *, lowercase: bool = True) -> list[SourceUser | RecordProblem]:
    with LdapSource(config, lowercase=lowercase) as source:
        return list(source.read())


def _users(items: list[SourceUser | RecordProblem]) -> dict[str, SourceUser]:
    return {item.end_user: item for item in items if isinstance(item, SourceUser)}


def person(uid: str, ou: str, *, mail: str | None = None, extra: str = "") -> str:
    """The LDIF of an inetOrgPerson ``uid`` under ``ou`` (mail: uid@example.com)."""
    mail_line = "" if mail == "" else f"mail: {mail or uid + '@Example.com'}\n"
    return (
        f"dn: uid={uid},{ou}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
        f"{mail_line}departmentNumber: D-{uid}\n{extra}\n"
    )


def group(name: str, members: list[str]) -> str:
    """The LDIF of a groupOfNames under ou=groups."""
    lines = "".join(f"member: {member}\n" for member in members)
    return f"dn: cn={name},{SLAPD_GROUPS_DN}\nobjectClass: groupOfNames\ncn: {name}\n{lines}\n"


@pytest.fixture
def ou(slapd: DirectoryServer) -> str:
    """A fresh, empty OU of the session slapd for one test's people."""
    dn = f"ou=t{next(_ou_numbers)}-{time.monotonic_ns()},{SLAPD_PEOPLE_DN}"
    name = dn[3:].split(",", maxsplit=1)[0]
    slapd.add_ldif(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n")
    return dn


def _many(ou: str, number: int) -> str:
    return "".join(person(f"user{i:05d}", ou) for i in range(number))


# ------------------------------------------------------------------ reading


def test_reads_people_mapped_like_csv(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou) + person("alan", ou, extra="departmentNumber: second\n"))
    items = _read(_config(slapd, base_dn=ou, active_from_attribute="createTimestamp"))
    users = _users(items)
    assert sorted(users) == ["ada@example.com", "alan@example.com"]
    ada = users["ada@example.com"]
    assert dict(ada.tags) == {"department": "D-ada"}
    assert ada.enabled
    assert ada.active_from is not None  # GeneralizedTime from the server, parsed
    assert str(ada.origin) == f"corp: uid=ada,{ou}"
    assert dict(users["alan@example.com"].tags)["department"] in {"D-alan", "second"}


def test_missing_id_attribute_is_a_problem_naming_the_dn(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou) + person("nomail", ou, mail="") + person("bob", ou))
    items = _read(_config(slapd, base_dn=ou))
    problems = [item for item in items if isinstance(item, RecordProblem)]
    assert [str(p) for p in problems] == [f"corp: uid=nomail,{ou}: no attribute 'mail'"]
    assert sorted(_users(items)) == ["ada@example.com", "bob@example.com"]


def test_multi_valued_attributes_first_or_joined(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(
        person("ada", ou, extra="ou: Research\nou: Engineering\n")
        + group(f"join-a-{ou[3:8]}", [f"uid=ada,{ou}"])
        + group(f"join-b-{ou[3:8]}", [f"uid=ada,{ou}"])
    )
    config = _config(
        slapd,
        base_dn=ou,
        tags={"units": {"attribute": "ou", "join": ";"}, "unit": "ou"},
    )
    (ada,) = _users(_read(config)).values()
    assert dict(ada.tags)["units"] == "Engineering;Research"
    assert dict(ada.tags)["unit"] in {"Engineering", "Research"}
    groups = _config(slapd, base_dn=ou, tags={"groups": {"attribute": "memberOf", "join": "|"}})
    (ada,) = _users(_read(groups)).values()
    assert dict(ada.tags)["groups"].lower().split("|") == sorted(
        f"cn=join-{x}-{ou[3:8]},{SLAPD_GROUPS_DN}" for x in "ab"
    )


def test_user_filter_and_a_list_of_bases(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou, extra="title: boss\n") + person("bob", ou) + person("cid", ou))
    filtered = _read(_config(slapd, base_dn=ou, user_filter="(title=boss)"))
    assert sorted(_users(filtered)) == ["ada@example.com"]
    # Overlapping bases give each entry once.
    both = _read(_config(slapd, base_dn=[ou, f"uid=bob,{ou}"]))
    assert sorted(_users(both)) == ["ada@example.com", "bob@example.com", "cid@example.com"]


def test_disabled_filter_marks_entries_disabled(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou) + person("old", ou, extra="employeeType: disabled\n"))
    users = _users(_read(_config(slapd, base_dn=ou, disabled_filter="(employeeType=disabled)")))
    assert users["ada@example.com"].enabled
    assert not users["old@example.com"].enabled
    # The openldap preset has none: everyone is enabled.
    assert all(u.enabled for u in _users(_read(_config(slapd, base_dn=ou))).values())


def test_filter_values_are_escaped_in_group_dns(slapd: DirectoryServer, ou: str) -> None:
    name = f"R&D (lab) * {ou[3:8]}"
    dn = f"cn={name},{SLAPD_GROUPS_DN}"
    slapd.add_ldif(
        person("ada", ou)
        + person("bob", ou)
        + f"dn: {dn}\nobjectClass: groupOfNames\ncn: {name}\nmember: uid=ada,{ou}\n\n"
    )
    users = _users(_read(_config(slapd, base_dn=ou, groups=[dn])))
    assert sorted(users) == ["ada@example.com"]


# ------------------------------------------------------------------ groups


def _nested_groups(ou: str, tag: str) -> tuple[str, str]:
    """LDIF: g1 = {a, g2}, g2 = {b, g1} (a cycle), g3 = {c}; returns (ldif, g1 DN)."""
    g1, g2, g3 = (f"{tag}-g{i}" for i in (1, 2, 3))
    dn = lambda name: f"cn={name},{SLAPD_GROUPS_DN}"  # noqa: E731
    ldif = (
        person("a", ou)
        + person("b", ou)
        + person("c", ou)
        + group(g1, [f"uid=a,{ou}", dn(g2)])
        + group(g2, [f"uid=b,{ou}", dn(g1)])
        + group(g3, [f"uid=c,{ou}"])
    )
    return ldif, dn(g1)


def test_nested_groups_and_cycles_with_the_memberof_overlay(
    slapd: DirectoryServer, ou: str
) -> None:
    ldif, g1 = _nested_groups(ou, ou[3:12])
    slapd.add_ldif(ldif)
    config = _config(slapd, base_dn=ou, groups=[g1])
    assert sorted(_users(_read(config))) == ["a@example.com", "b@example.com"]
    # Membership comes from the walk even with the overlay: memberOf values written
    # before the overlay was turned on would be missing, and cannot be checked.
    with LdapSource(config, lowercase=True) as source:
        scope = source._scope(source._connect()[0])
    assert scope.server_filter is None
    assert scope.member_dns is not None
    assert len(scope.member_dns) == 2


def test_nested_groups_and_cycles_without_the_overlay(slapd_factory: SlapdFactory) -> None:
    ldif, g1 = _nested_groups(SLAPD_PEOPLE_DN, "plain")
    server = slapd_factory(memberof=False, ldif=ldif)
    config = _config(server, base_dn=SLAPD_PEOPLE_DN, groups=[g1])
    assert sorted(_users(_read(config))) == ["a@example.com", "b@example.com"]
    with LdapSource(config, lowercase=True) as source:
        scope = source._scope(source._connect()[0])
    assert scope.server_filter is None  # a memberOf filter would match nothing here
    assert scope.member_dns == {normalize_dn(f"uid={u},{SLAPD_PEOPLE_DN}") for u in "ab"}


def test_a_missing_scope_group_fails_the_read(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou))
    config = _config(slapd, base_dn=ou, groups=[f"cn=nope,{SLAPD_GROUPS_DN}"])
    with pytest.raises(SourceError, match="scope group 'cn=nope,ou=groups,dc=example,dc=com'"):
        _read(config)


# ------------------------------------------------------------------ paging and limits


def test_paging_reads_past_the_server_size_limit(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory(ldif=_many(SLAPD_PEOPLE_DN, 2500))
    # The service account is bound by the size limit (1000); the root DN is not.
    config = _config(
        server, bind_dn=server.bind_dn, bind_password=server.bind_password, page_size=400
    )
    items = _read(config)
    assert len(items) == 2500
    assert len(_users(items)) == 2500


def test_a_page_above_the_server_limit_fails_instead_of_ending_short(
    slapd_factory: SlapdFactory,
) -> None:
    server = slapd_factory(ldif=_many(SLAPD_PEOPLE_DN, 1200))
    config = _config(
        server, bind_dn=server.bind_dn, bind_password=server.bind_password, page_size=1100
    )
    received: list[SourceUser | RecordProblem] = []
    with LdapSource(config, lowercase=True) as source, pytest.raises(SourceError) as caught:
        received.extend(source.read())
    assert "failed" in str(caught.value)
    assert len(received) < 1200


def test_server_killed_mid_read_raises_after_the_entries_read(
    slapd_factory: SlapdFactory,
) -> None:
    server = slapd_factory(ldif=_many(SLAPD_PEOPLE_DN, 3000))
    config = _config(server, page_size=100, timeout_s=5)
    received: list[SourceUser | RecordProblem] = []

    def read_and_kill(source: LdapSource) -> None:
        for item in source.read():
            received.append(item)
            if len(received) == 250:
                server.stop()  # SIGTERM, then SIGKILL: the server is gone mid-read

    with LdapSource(config, lowercase=True) as source, pytest.raises(SourceError):
        read_and_kill(source)
    assert 250 <= len(received) < 3000


def test_the_source_reconnects_on_the_next_read(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory(ldif=person("ada", SLAPD_PEOPLE_DN))
    config = _config(server)
    with LdapSource(config, lowercase=True) as source:
        assert len(list(source.read())) == 1
        assert source._connection is not None
        source._connection.unbind()  # closed between two runs
        assert len(list(source.read())) == 1
        # Dead without ldap3 knowing (a server restart, an idle timeout): replaced once.
        assert source._connection is not None
        source._connection.socket.shutdown(socket.SHUT_RDWR)
        assert len(list(source.read())) == 1


# ------------------------------------------------------------------ TLS


def test_ldaps_with_the_test_ca(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou))
    config = _config(slapd, urls=[slapd.ldaps_url], start_tls=False, base_dn=ou)
    assert sorted(_users(_read(config))) == ["ada@example.com"]


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_a_wrong_ca_is_rejected(slapd: DirectoryServer, other_ca: Path, mode: str) -> None:
    url = slapd.ldaps_url if mode == "ldaps" else slapd.ldap_url
    config = _config(slapd, urls=[url], start_tls=mode == "starttls", ca_file=other_ca)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        _read(config)
    assert "certificate" in str(caught.value).lower()
    assert not isinstance(caught.value, SourceUnavailableError)  # retrying will not help
    assert time.monotonic() - started < 5  # not retried for rounds


def test_tls_verify_off_works_and_warns_every_read(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou))
    config = _config(slapd, ca_file=None, tls_verify=False, base_dn=ou)
    with LdapSource(config, lowercase=True) as source, structlog.testing.capture_logs() as logs:
        for _ in range(2):
            assert len(list(source.read())) == 1
    assert [e["event"] for e in logs].count("ldap.tls_verify_off") == 2


def test_cleartext_bind_warns(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou))
    config = _config(slapd, start_tls=False, ca_file=None, base_dn=ou)
    with structlog.testing.capture_logs() as logs:
        assert len(_read(config)) == 1
    assert "ldap.cleartext_bind" in [e["event"] for e in logs]
    assert all(slapd.admin_password not in repr(e) for e in logs)


# ------------------------------------------------------------------ failures


def test_failover_from_a_dead_url(slapd: DirectoryServer, ou: str) -> None:
    slapd.add_ldif(person("ada", ou))
    dead = f"ldap://127.0.0.1:{free_port()}"
    config = _config(slapd, urls=[dead, slapd.ldap_url], base_dn=ou)
    assert sorted(_users(_read(config))) == ["ada@example.com"]


def test_bad_password_names_the_cause_not_the_password(slapd: DirectoryServer) -> None:
    config = _config(slapd, bind_password="not-the-password-42")
    with pytest.raises(SourceError) as caught:
        _read(config)
    message = str(caught.value)
    assert "invalid credentials" in message
    assert slapd.admin_dn in message
    assert "not-the-password-42" not in message
    assert "not-the-password-42" not in repr(LdapSource(config, lowercase=True))


def test_a_missing_base_dn_fails(slapd: DirectoryServer) -> None:
    with pytest.raises(SourceError, match=r"noSuchObject.*check base_dn"):
        _read(_config(slapd, base_dn="ou=nowhere,dc=example,dc=com"))


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_every_url_refusing_fails_fast_at_the_default_settings() -> None:
    urls = [f"ldap://127.0.0.1:{free_port()}", f"ldaps://127.0.0.1:{free_port()}"]
    config = LdapSourceConfig.model_validate(
        {"type": "ldap", "urls": urls, "base_dn": "dc=x", "id_attribute": "mail"}
    )
    started = time.monotonic()
    with (
        LdapSource(config, lowercase=True) as source,
        pytest.raises(SourceUnavailableError) as caught,
    ):
        list(source.read())
    assert time.monotonic() - started < 10  # three rounds, 1 s and 2 s apart
    message = str(caught.value)
    assert "cannot connect to any LDAP server" in message
    assert all(url in message for url in urls)


def test_servers_that_never_answer_fail_within_the_bound(silent_listener: int) -> None:
    urls = [
        f"ldap://127.0.0.1:{free_port()}",  # refused
        f"ldaps://127.0.0.1:{silent_listener}",  # the TLS handshake is never answered
        f"ldap://127.0.0.1:{silent_listener}",  # the bind is never answered
    ]
    config = LdapSourceConfig.model_validate(
        {
            "type": "ldap",
            "urls": urls,
            "base_dn": "dc=x",
            "id_attribute": "mail",
            "bind_dn": "cn=x",
            "bind_password": "p",
            "timeout_s": 1,
        }
    )
    started = time.monotonic()
    with (
        LdapSource(config, lowercase=True) as source,
        pytest.raises(SourceUnavailableError, match="timed out"),
    ):
        list(source.read())
    # 3 rounds x 2 silent servers x 1 s + pauses of 1 s and 2 s, well under 30 s.
    assert time.monotonic() - started < 15


# ------------------------------------------------------------------ in a run


def test_an_unreachable_directory_holds_the_run_and_writes_nothing(
    tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    emulator.seed_users(make_users(5))
    before = emulator.users()
    text = f"""\
state_dir: {tmp_path / "state"}
jobs:
  - name: corp
    target: {{base_url: "{emulator.url}", api_key: {emulator_api_key}}}
    sources:
      - type: ldap
        urls: ["ldap://127.0.0.1:{free_port()}"]
        base_dn: "dc=x"
        id_attribute: mail
"""
    config = parse_config(text, origin="t.yaml", base_dir=tmp_path)
    report = run_job(config, config.jobs[0], apply=True)
    assert report.exit_code is ExitCode.HELD
    assert any("cannot connect to any LDAP server" in reason for reason in report.guard_reasons)
    assert emulator.users() == before


def test_connection_attempts_stop_at_the_time_budget() -> None:
    urls = [f"ldap://127.0.0.1:{free_port()}" for _ in range(4)]
    config = LdapSourceConfig.model_validate(
        {"type": "ldap", "urls": urls, "base_dn": "dc=x", "id_attribute": "mail"}
    )
    ticks = count()
    sleeps: list[float] = []
    # Every look at the clock is 9 s later: as if each attempt took 9 s.
    connector = Connector(config, sleep=sleeps.append, clock=lambda: 9.0 * next(ticks))
    with structlog.testing.capture_logs() as logs, pytest.raises(SourceUnavailableError):
        connector.open()
    attempts = [e for e in logs if e["event"] == "ldap.connect_failed"]
    assert len(attempts) == 2  # started at 0 s: attempts at 9 s and 18 s, none at 27 s
    assert sleeps == []  # no pause once the budget is spent


def test_referrals_are_skipped_in_a_subtree_and_fail_as_a_base(
    slapd_factory: SlapdFactory,
) -> None:
    referral = f"ou=elsewhere,{SLAPD_PEOPLE_DN}"
    server = slapd_factory(
        ldif=person("ada", SLAPD_PEOPLE_DN)
        + f"dn: {referral}\nobjectClass: referral\nobjectClass: extensibleObject\n"
        "ou: elsewhere\nref: ldap://other.example:389/ou=elsewhere,dc=other,dc=com\n"
    )
    # Under the subtree, the referral is a searchResRef continuation: skipped.
    assert sorted(_users(_read(_config(server, base_dn=SLAPD_PEOPLE_DN)))) == ["ada@example.com"]
    # As the base itself, the search cannot be done here: it fails, naming the referral.
    with pytest.raises(SourceError, match=r"referral \(code 10\).*ldap://other\.example:389"):
        _read(_config(server, base_dn=referral))


def test_a_missing_in_chain_scope_group_fails_the_read_instead_of_matching_nobody(
    slapd: DirectoryServer, ou: str
) -> None:
    slapd.add_ldif(person("ada", ou))
    config = _config(
        slapd, base_dn=ou, groups=[f"cn=renamed,{SLAPD_GROUPS_DN}"], group_strategy="in_chain"
    )
    with pytest.raises(SourceError, match="scope group 'cn=renamed,ou=groups"):
        _read(config)


def test_an_in_chain_scope_that_names_an_ou_instead_of_a_group_fails_the_read(
    slapd: DirectoryServer, ou: str
) -> None:
    slapd.add_ldif(person("ada", ou))
    config = _config(slapd, base_dn=ou, groups=[ou], group_strategy="in_chain")
    with pytest.raises(SourceError, match="not found \\(or not a group\\)"):
        _read(config)
