"""The ``active_directory`` preset through the real LDAP source, against a real Samba AD DC.

The DC (fixture ``samba_dc``) holds the directory of :mod:`tests.sources.ldap.samba_data`;
every read goes through :func:`syncd.sources.build_source`, as a job builds it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from syncd.config import parse_config
from syncd.emulator import PlatformEmulator
from syncd.errors import SourceError, SourceUnavailableError
from syncd.model import RecordProblem, SourceUser
from syncd.runner import RunStatus
from syncd.service import run_job
from syncd.sources import SourceContext, build_source
from syncd.sources.ldap import LdapSourceConfig
from tests.sources.ldap import samba_data as ad
from tests.sources.ldap.proxy import CuttingProxy
from tests.sources.ldap.servers import DirectoryServer

NOT_OLGA = "(!(sAMAccountName=olga))"
"""Olga's account expired before it was created (test data made today): see
:func:`test_an_expired_account_never_reads_as_an_active_user`."""


def ad_config(server: DirectoryServer, **overrides: Any) -> LdapSourceConfig:
    """An ``active_directory`` source on ``server`` over LDAPS, as the service account."""
    settings: dict[str, Any] = {
        "type": "ldap",
        "name": "corp-ad",
        "flavor": "active_directory",
        "urls": (server.ldaps_url,),
        "ca_file": server.ca_file,
        "bind_dn": ad.SERVICE_DN,
        "bind_password": SecretStr(ad.SERVICE_PASSWORD),
        "base_dn": ad.STAFF_DN,
        "id_attribute": "mail",
        "tags": {"department": "department"},
        "active_from_attribute": "whenCreated",
        "active_to_attribute": "accountExpires",
        "page_size": 3,  # Samba does not enforce MaxPageSize: small pages make paging real
        "timeout_s": 10,
    }
    settings.update(overrides)
    return LdapSourceConfig(**settings)


def read(config: LdapSourceConfig) -> tuple[dict[str, SourceUser], list[RecordProblem]]:
    """Everything the source yields: users by ``end_user``, and the problems."""
    users: dict[str, SourceUser] = {}
    problems: list[RecordProblem] = []
    with build_source(config, SourceContext(lowercase=True)) as source:
        for item in source.read():
            if isinstance(item, SourceUser):
                assert item.end_user not in users, f"{item.end_user} read twice"
                users[item.end_user] = item
            else:
                problems.append(item)
    return users, problems


def read_error(config: LdapSourceConfig) -> SourceError:
    """The :class:`SourceError` a read of ``config`` raises."""
    with (
        build_source(config, SourceContext(lowercase=True)) as source,
        pytest.raises(SourceError) as caught,
    ):
        list(source.read())
    return caught.value


def members(server: DirectoryServer, group: str) -> set[str]:
    """The end_users of the scope ``group`` (nested members included) in ``OU=Staff``.

    The base is the OU, not the domain: Samba evaluates the in-chain rule for every entry
    under the base, which takes seconds over the whole domain.
    """
    users, problems = read(ad_config(server, groups=(group,)))
    assert problems == []
    return set(users)


# ------------------------------------------------------------------- mapping


def test_disabled_accounts_read_as_disabled(samba_dc: DirectoryServer) -> None:
    users, problems = read(ad_config(samba_dc, user_filter=NOT_OLGA))
    assert problems == []
    expected = {user.mail: user.enabled for user in ad.STAFF if user is not ad.OLGA}
    assert {name: user.enabled for name, user in users.items()} == expected
    # 514 and 66050 both carry bit 0x2: the rule is the bit, not one value.
    assert not users[ad.BOB.mail].enabled
    assert not users[ad.DINA.mail].enabled
    assert users[ad.ALICE.mail].enabled


def test_account_expires_becomes_active_to(samba_dc: DirectoryServer) -> None:
    users, _ = read(ad_config(samba_dc, user_filter=NOT_OLGA))
    assert users[ad.CAROL.mail].active_to == date(2031, 6, 30)
    assert users[ad.DAVE.mail].active_to is None  # accountExpires: 0
    assert users[ad.ALICE.mail].active_to is None  # accountExpires: never (2**63 - 1)


def test_when_created_becomes_active_from(samba_dc: DirectoryServer) -> None:
    with samba_dc.connect() as connection:
        connection.search(ad.STAFF_DN, "(sAMAccountName=alice)", attributes=["whenCreated"])
        raw = connection.entries[0].whenCreated.raw_values[0].decode()
    created = datetime.strptime(raw, "%Y%m%d%H%M%S.0Z").replace(tzinfo=UTC).date()
    users, _ = read(ad_config(samba_dc, user_filter=NOT_OLGA))
    assert users[ad.ALICE.mail].active_from == created


def test_an_expired_account_never_reads_as_an_active_user(samba_dc: DirectoryServer) -> None:
    users, problems = read(ad_config(samba_dc, user_filter="(sAMAccountName=olga)"))
    if users:
        assert users[ad.OLGA.mail].active_to == date(2020, 1, 1)
    else:
        # Its accountExpires is before its whenCreated: a problem naming the entry.
        assert [problem.origin.dn for problem in problems] == [ad.OLGA.dn]
        assert "accountExpires" in problems[0].message


def test_non_ascii_names_and_values(samba_dc: DirectoryServer) -> None:
    users, _ = read(ad_config(samba_dc, user_filter=NOT_OLGA))
    assert dict(users[ad.LILEI.mail].tags) == {"department": "研发"}
    assert users[ad.LILEI.mail].origin.dn == "CN=李雷,OU=Staff,DC=example,DC=test"
    assert dict(users[ad.JURGEN.mail].tags) == {"department": "Forschung & Entwicklung"}
    assert users[ad.JURGEN.mail].origin.dn == "CN=Jürgen Müller,OU=Staff,DC=example,DC=test"


def test_binary_ids_and_tags_are_decoded(samba_dc: DirectoryServer) -> None:
    # Cross-checked against what the server sends, decoded here independently.
    with samba_dc.connect() as connection:
        connection.search(
            ad.STAFF_DN, "(sAMAccountName=alice)", attributes=["objectGUID", "objectSid"]
        )
        entry = connection.entries[0]
        guid = str(uuid.UUID(bytes_le=entry.objectGUID.raw_values[0]))
        sid_bytes = entry.objectSid.raw_values[0]
    rid = int.from_bytes(sid_bytes[-4:], "little")
    config = ad_config(
        samba_dc,
        user_filter="(sAMAccountName=alice)",
        id_attribute="objectGUID",
        tags={"sid": "objectSid", "upn": "userPrincipalName"},
    )
    users, problems = read(config)
    assert problems == []
    assert list(users) == [guid]
    tags = dict(users[guid].tags)
    assert tags["sid"].startswith("S-1-5-21-")
    assert tags["sid"].endswith(f"-{rid}")
    assert tags["upn"] == ad.ALICE.upn


@pytest.mark.parametrize("page_size", [1, 2, 1000])
def test_every_page_is_read(samba_dc: DirectoryServer, page_size: int) -> None:
    users, _ = read(ad_config(samba_dc, user_filter=NOT_OLGA, page_size=page_size))
    assert len(users) == len(ad.STAFF) - 1


# -------------------------------------------------------------------- groups


def test_groups_nested_three_deep(samba_dc: DirectoryServer) -> None:
    assert members(samba_dc, ad.group_dn("g-platform")) == {ad.ALICE.mail}
    assert members(samba_dc, ad.group_dn("g-eng")) == {ad.ALICE.mail, ad.CAROL.mail}
    # g-all -> g-eng -> g-platform -> alice: alice is three levels down.
    assert members(samba_dc, ad.group_dn("g-all")) == {ad.ALICE.mail, ad.CAROL.mail}


def test_a_group_cycle_ends_and_keeps_both_sides(samba_dc: DirectoryServer) -> None:
    both = {ad.DAVE.mail, ad.JURGEN.mail}
    assert members(samba_dc, ad.group_dn("g-cycle-a")) == both
    assert members(samba_dc, ad.group_dn("g-cycle-b")) == both


def test_several_groups_are_a_union(samba_dc: DirectoryServer) -> None:
    config = ad_config(
        samba_dc, groups=(ad.group_dn("g-platform"), ad.group_dn("g-cycle-b")), page_size=2
    )
    users, _ = read(config)
    assert set(users) == {ad.ALICE.mail, ad.DAVE.mail, ad.JURGEN.mail}


def test_a_group_above_1500_members_is_read_whole(samba_dc: DirectoryServer) -> None:
    config = ad_config(samba_dc, base_dn=ad.BULK_DN, groups=(ad.group_dn("g-big"),), page_size=250)
    users, problems = read(config)
    assert problems == []
    # Counted independently of any range retrieval: the users we loaded into the group.
    expected = {ad.bulk_user(i).mail for i in range(ad.BIG_GROUP_SIZE)}
    assert set(users) == expected
    assert len(users) == ad.BIG_GROUP_SIZE > 1500


# --------------------------------------------------------------------- binds


@pytest.mark.parametrize(
    "bind_name", [ad.SERVICE_DN, ad.SERVICE.upn, "EXAMPLE\\svc-sync"], ids=["dn", "upn", "netbios"]
)
def test_bind_names_ad_accepts(samba_dc: DirectoryServer, bind_name: str) -> None:
    users, _ = read(ad_config(samba_dc, bind_dn=bind_name, user_filter="(sAMAccountName=alice)"))
    assert set(users) == {ad.ALICE.mail}


def test_a_bad_password_is_invalid_credentials_without_the_password(
    samba_dc: DirectoryServer,
) -> None:
    secret = "Wr0ng-Password-7731"
    config = ad_config(samba_dc, bind_password=SecretStr(secret))
    error = read_error(config)
    assert not isinstance(error, SourceUnavailableError)  # retrying will not fix it
    text = str(error)
    assert "invalid credentials" in text
    assert "52e" in text
    assert ad.SERVICE_DN in text
    assert secret not in text
    assert secret not in repr(error)
    assert secret not in repr(config)
    assert secret not in repr(build_source(config, SourceContext(lowercase=True)))


def test_a_locked_out_account_is_reported_as_locked(samba_dc: DirectoryServer) -> None:
    wrong = ad_config(samba_dc, bind_dn=ad.LOCKY.upn, bind_password=SecretStr("Not-It-123!"))
    for _ in range(ad.LOCKOUT_THRESHOLD):
        assert "invalid credentials" in str(read_error(wrong))
    password = ad.LOCKY.password
    assert password is not None
    right = ad_config(samba_dc, bind_dn=ad.LOCKY.upn, bind_password=SecretStr(password))
    text = str(read_error(right))
    assert "locked" in text
    assert "775" in text
    assert password not in text


@pytest.mark.parametrize(
    ("account", "code", "words"),
    [(ad.OLGA, "701", "expired"), (ad.PAT, "773", "must be changed")],
    ids=["account-expired", "password-must-change"],
)
def test_bind_refusals_ad_explains(
    samba_dc: DirectoryServer, account: ad.AdUser, code: str, words: str
) -> None:
    config = ad_config(
        samba_dc, bind_dn=account.dn, bind_password=SecretStr(account.password or "")
    )
    text = str(read_error(config))
    assert code in text
    assert words in text


# ----------------------------------------------------------------------- TLS


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_tls_with_the_right_ca(samba_dc: DirectoryServer, mode: str) -> None:
    url = samba_dc.ldaps_url if mode == "ldaps" else samba_dc.ldap_url
    config = ad_config(samba_dc, urls=(url,), start_tls=mode == "starttls", user_filter=NOT_OLGA)
    users, _ = read(config)
    assert len(users) == len(ad.STAFF) - 1


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_tls_with_a_wrong_ca_is_rejected(
    samba_dc: DirectoryServer, other_ca: Path, mode: str
) -> None:
    url = samba_dc.ldaps_url if mode == "ldaps" else samba_dc.ldap_url
    config = ad_config(samba_dc, urls=(url,), start_tls=mode == "starttls", ca_file=other_ca)
    error = read_error(config)
    assert "certificate" in str(error).lower()
    assert ad.SERVICE_PASSWORD not in str(error)


def test_tls_without_a_ca_file_does_not_trust_the_test_ca(samba_dc: DirectoryServer) -> None:
    error = read_error(ad_config(samba_dc, ca_file=None))
    assert "certificate" in str(error).lower()


# ------------------------------------------------------------ end to end


JOB = """
state_dir: ./state
jobs:
  - name: corp
    target: {base_url: "${URL}", api_key: "${API_KEY}", max_retries: 0}
    sources:
      - type: ldap
        name: corp-ad
        flavor: active_directory
        urls: ["${LDAP_URL}"]
        ca_file: ca.pem
        bind_dn: "${BIND_DN}"
        bind_password_file: bind.pw
        base_dn: "OU=Staff,DC=example,DC=test"
        user_filter: "(!(sAMAccountName=olga))"
        id_attribute: mail
        tags: {department: department}
        active_from_attribute: whenCreated
        active_to_attribute: accountExpires
        page_size: 1
        timeout_s: 5
"""


def test_a_job_syncs_ad_into_the_platform_and_writes_nothing_when_ad_fails(
    samba_dc: DirectoryServer,
    emulator: PlatformEmulator,
    emulator_api_key: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "ca.pem").write_bytes(samba_dc.ca_file.read_bytes())
    (tmp_path / "bind.pw").write_text(ad.SERVICE_PASSWORD + "\n")
    with CuttingProxy((samba_dc.host, samba_dc.ldaps_port)) as proxy:
        config = parse_config(
            JOB,
            origin="test",
            base_dir=tmp_path,
            environ={
                "URL": emulator.url,
                "API_KEY": emulator_api_key,
                "LDAP_URL": f"ldaps://127.0.0.1:{proxy.port}",
                "BIND_DN": ad.SERVICE_DN,
            },
        )
        job = config.jobs[0]

        first = run_job(config, job, apply=True)
        assert first.status is RunStatus.APPLIED, first.error
        enabled = {u.mail for u in ad.STAFF if u.enabled and u is not ad.OLGA}
        assert set(emulator.users()) == enabled  # bob and dina (disabled) not inserted
        assert emulator.users()[ad.CAROL.mail].active_to == "2031-06-30"
        assert emulator.users()[ad.LILEI.mail].tags == {"department": "研发"}
        full_read = proxy.relayed

        emulator.reset_counters()
        again = run_job(config, job, apply=True)
        assert again.status is RunStatus.APPLIED
        assert again.write_calls == 0

        # The directory dies half-way through the read (page size 1: many round trips).
        emulator.reset_counters()
        proxy.relayed, proxy.budget = 0, full_read // 2
        cut = run_job(config, job, apply=True)
        assert proxy.cut
        assert cut.status is RunStatus.HELD  # a source that failed is never "fewer users"
        assert any("corp-ad could not be read" in reason for reason in cut.guard_reasons)
    # And with the directory gone altogether (the proxy is stopped: connection refused).
    gone = run_job(config, job, apply=True)
    assert gone.status is RunStatus.HELD
    assert any("corp-ad could not be read" in reason for reason in gone.guard_reasons)
    assert cut.write_calls == gone.write_calls == 0

    calls = emulator.calls()
    assert (calls["insert"], calls["update"], calls["delete"]) == (0, 0, 0)
    assert set(emulator.users()) == enabled
    assert all(user.active_to in (None, "2031-06-30") for user in emulator.users().values())


def test_the_group_walk_also_works_on_active_directory_groups(samba_dc: DirectoryServer) -> None:
    config = ad_config(
        samba_dc, groups=(ad.group_dn("g-all"), ad.group_dn("g-cycle-a")), group_strategy="walk"
    )
    users, _ = read(config)
    assert set(users) == {ad.ALICE.mail, ad.CAROL.mail, ad.DAVE.mail, ad.JURGEN.mail}


def test_a_missing_in_chain_group_fails_the_read_instead_of_matching_nobody(
    samba_dc: DirectoryServer,
) -> None:
    gone = ad.group_dn("g-renamed-meanwhile")
    with pytest.raises(SourceError, match=r"scope group .*g-renamed-meanwhile.* not found"):
        read(ad_config(samba_dc, groups=(ad.group_dn("g-eng"), gone)))
