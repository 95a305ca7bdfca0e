"""The test directory servers themselves: they start, speak TLS with their test CA only,
apply their overlays and limits, and leave no process behind when stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import ldap3
import pytest
from ldap3.core.exceptions import (
    LDAPInvalidCredentialsResult,
    LDAPSocketOpenError,
    LDAPStartTLSError,
)

from tests.sources.ldap import samba_data
from tests.sources.ldap.conftest import SlapdFactory
from tests.sources.ldap.servers import (
    SLAPD_PEOPLE_DN,
    DirectoryServer,
    NotOurServerError,
    pid_alive,
    process_group_members,
    wait_ready,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

INNER_TESTS = """
import os
import signal
from pathlib import Path


def test_fails_after_starting_servers(slapd, slapd_factory):
    Path(os.environ["PIDS"]).write_text(f"{slapd.pid} {slapd_factory().pid}")
    raise AssertionError("fails on purpose")


def test_killed_without_finalizers(slapd_factory):
    Path(os.environ["PIDS"]).write_text(str(slapd_factory().pid))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _people_ldif(count: int, *, prefix: str = "p") -> str:
    return "\n".join(
        f"dn: uid={prefix}{i},{SLAPD_PEOPLE_DN}\nobjectClass: inetOrgPerson\n"
        f"uid: {prefix}{i}\ncn: Person {i}\nsn: {i}\nmail: {prefix}{i}@example.com\n"
        for i in range(count)
    )


def _refused(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) != 0


def _root_dse(server: DirectoryServer, attribute: str) -> list[str]:
    connection = ldap3.Connection(ldap3.Server(server.ldap_url, get_info=ldap3.NONE))
    try:
        connection.open()
        assert connection.search("", "(objectClass=*)", ldap3.BASE, attributes=[attribute])
        return [str(value) for value in connection.entries[0][attribute].values]
    finally:
        connection.unbind()


# ------------------------------------------------------------------------ slapd


def test_slapd_answers_with_its_naming_context(slapd: DirectoryServer) -> None:
    assert slapd.kind == "openldap"
    assert slapd.running
    assert _root_dse(slapd, "namingContexts") == [slapd.base_dn]
    assert slapd.ldap_url.startswith("ldap://127.0.0.1:")
    assert slapd.ldaps_url.startswith("ldaps://127.0.0.1:")


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_slapd_tls_with_the_test_ca(slapd: DirectoryServer, tls: str) -> None:
    with slapd.connect(slapd.bind_dn, slapd.bind_password, tls=tls) as connection:
        assert connection.tls_started or tls == "ldaps"
        assert connection.extend.standard.who_am_i() == f"dn:{slapd.bind_dn}"


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_slapd_rejects_a_client_trusting_another_ca(
    slapd: DirectoryServer, other_ca: Path, tls: str
) -> None:
    wrong = replace(slapd, ca_file=other_ca, _process=None)
    with (
        pytest.raises((LDAPSocketOpenError, LDAPStartTLSError), match=r"(?i)certificate"),
        wrong.connect(tls=tls),
    ):
        pass


def test_openldap_ca_is_the_session_servers_ca(slapd: DirectoryServer, openldap_ca: Path) -> None:
    assert openldap_ca == slapd.ca_file
    assert openldap_ca.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_slapd_rejects_a_wrong_password(slapd: DirectoryServer) -> None:
    with (
        pytest.raises(LDAPInvalidCredentialsResult),
        slapd.connect(slapd.bind_dn, "not-the-password"),
    ):
        pass


def test_add_ldif_goes_through_the_memberof_overlay(slapd: DirectoryServer) -> None:
    slapd.add_ldif(
        _people_ldif(2, prefix="overlay")
        + f"\ndn: cn=overlay-group,ou=groups,{slapd.base_dn}\nobjectClass: groupOfNames\n"
        f"cn: overlay-group\nmember: uid=overlay0,{SLAPD_PEOPLE_DN}\n"
    )
    with slapd.connect() as connection:
        connection.search(SLAPD_PEOPLE_DN, "(uid=overlay*)", attributes=["uid", "memberOf"])
        member_of = {str(e.uid): [str(v) for v in e.memberOf.values] for e in connection.entries}
    assert member_of == {
        "overlay0": [f"cn=overlay-group,ou=groups,{slapd.base_dn}"],
        "overlay1": [],
    }


def test_factory_without_memberof_has_no_memberof(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory(memberof=False)
    server.add_ldif(
        _people_ldif(1)
        + f"\ndn: cn=g,ou=groups,{server.base_dn}\nobjectClass: groupOfNames\ncn: g\n"
        f"member: uid=p0,{SLAPD_PEOPLE_DN}\n"
    )
    with server.connect() as connection:
        connection.search(SLAPD_PEOPLE_DN, "(uid=p0)", attributes=["*", "+"])
        assert "memberOf" not in connection.entries[0].entry_attributes


def test_size_limit_applies_to_the_service_account_not_to_root(
    slapd_factory: SlapdFactory,
) -> None:
    server = slapd_factory(size_limit=5, ldif=_people_ldif(7))
    with server.connect(server.bind_dn, server.bind_password) as service:
        # ldap3 does not raise on sizeLimitExceeded: it returns what came, and rc 4.
        service.search(SLAPD_PEOPLE_DN, "(uid=*)", attributes=["uid"])
        assert service.result["result"] == 4
        assert len(service.entries) == 5
        # Paging within the limit reads everything, as against AD's MaxPageSize.
        pages = service.extend.standard.paged_search(
            SLAPD_PEOPLE_DN, "(uid=*)", attributes=["uid"], paged_size=5, generator=True
        )
        assert len([entry for entry in pages if entry["type"] == "searchResEntry"]) == 7
    with server.connect() as root:
        assert root.search(SLAPD_PEOPLE_DN, "(uid=*)", attributes=["uid"])
        assert len(root.entries) == 7


def test_offline_ldif_is_loaded_before_start(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory(ldif=_people_ldif(100))
    with server.connect() as connection:
        connection.search(SLAPD_PEOPLE_DN, "(objectClass=inetOrgPerson)", attributes=["uid"])
        assert len(connection.entries) == 100


def test_stop_ends_slapd_by_pid_and_frees_its_ports(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory()
    pid = server.pid
    assert process_group_members(pid) == [pid]
    server.stop()
    assert not server.running
    assert not Path(f"/proc/{pid}").exists()
    assert process_group_members(pid) == []
    assert _refused("127.0.0.1", server.ldap_port)
    assert _refused("127.0.0.1", server.ldaps_port)
    server.stop()  # idempotent


def test_stop_by_pid_alone_ends_a_server_not_started_here(tmp_path: Path) -> None:
    # A DirectoryServer that only knows the PID (no Popen) still stops the process.
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        server = DirectoryServer(
            kind="openldap", ldap_url="ldap://127.0.0.1:1", ldaps_url="ldaps://127.0.0.1:2",
            base_dn="", admin_dn="", admin_password="", ca_file=tmp_path, pid=sleeper.pid,
        )  # fmt: skip
        assert server.running
        server.stop()
        assert sleeper.wait(5) != 0
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------------ Samba


def test_samba_answers_as_an_ad_dc(samba_dc: DirectoryServer) -> None:
    assert samba_dc.kind == "samba"
    assert _root_dse(samba_dc, "dnsHostName") == ["DC1.example.test"]
    assert _root_dse(samba_dc, "defaultNamingContext") == [samba_dc.base_dn]


@pytest.mark.parametrize(
    "user",
    [samba_data.SERVICE_DN, "svc-sync@example.test", "EXAMPLE\\svc-sync"],
    ids=["dn", "upn", "down-level"],
)
def test_samba_simple_bind_names(samba_dc: DirectoryServer, user: str) -> None:
    with samba_dc.connect(user, samba_dc.bind_password) as connection:
        assert connection.bound


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_samba_tls_with_the_test_ca(samba_dc: DirectoryServer, tls: str) -> None:
    with samba_dc.connect(samba_dc.bind_dn, samba_dc.bind_password, tls=tls) as connection:
        assert connection.bound
        assert connection.search(samba_data.STAFF_DN, "(sAMAccountName=alice)", attributes=["cn"])


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_samba_rejects_a_client_trusting_another_ca(
    samba_dc: DirectoryServer, other_ca: Path, tls: str
) -> None:
    wrong = replace(samba_dc, ca_file=other_ca, _process=None)
    with (
        pytest.raises((LDAPSocketOpenError, LDAPStartTLSError), match=r"(?i)certificate"),
        wrong.connect(tls=tls),
    ):
        pass


def test_samba_workers_share_the_group_that_stop_kills(samba_dc: DirectoryServer) -> None:
    members = process_group_members(samba_dc.pid)
    assert samba_dc.pid in members
    assert len(members) > 1  # the LDAP worker processes, ended with the group


def test_samba_holds_the_seeded_directory(samba_dc: DirectoryServer) -> None:
    with samba_dc.connect() as connection:
        connection.search(samba_data.STAFF_DN, "(objectClass=user)", attributes=["sAMAccountName"])
        assert {str(e.sAMAccountName) for e in connection.entries} == {
            user.sam for user in samba_data.STAFF
        }
        connection.search(
            samba_data.BASE_DN, "(objectClass=*)", ldap3.BASE, attributes=["lockoutThreshold"]
        )
        assert int(str(connection.entries[0].lockoutThreshold)) == samba_data.LOCKOUT_THRESHOLD


def _run_inner_pytest(tmp_path: Path, test_name: str) -> tuple[int, list[int]]:
    """Run one of :data:`INNER_TESTS` in a child pytest; its exit code and server PIDs."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    pids = tmp_path / "pids"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-p", "tests.sources.ldap.conftest", f"--basetemp={tmp_path / 'tmp'}",
        f"{tmp_path / 'test_inner.py'}::{test_name}",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "PIDS": str(pids)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert pids.exists(), result.stdout.decode() + result.stderr.decode()
    return result.returncode, [int(pid) for pid in pids.read_text().split()]


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its new parent counts)."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def test_servers_of_a_failing_test_are_stopped(tmp_path: Path) -> None:
    code, pids = _run_inner_pytest(tmp_path, "test_fails_after_starting_servers")
    assert code == 1  # the inner test failed
    assert len(pids) == 2  # the session slapd and a factory one
    assert all(_gone(pid) for pid in pids)


def test_servers_die_with_a_killed_test_process(tmp_path: Path) -> None:
    # SIGKILL runs no finalizer: the parent-death signal stops the server instead.
    code, pids = _run_inner_pytest(tmp_path, "test_killed_without_finalizers")
    assert code == -9
    assert all(_gone(pid) for pid in pids)


def test_samba_add_ldif_adds_online_with_a_password(samba_dc: DirectoryServer) -> None:
    # Outside OU=Staff, so the reads of the AD tests do not see it.
    user = samba_data.AdUser(
        "online.add", "Online", "Add", password="Online-Passw0rd!", container=samba_data.USERS_DN
    )
    samba_dc.add_ldif(samba_data.user_ldif(user))
    with samba_dc.connect(user.upn, user.password) as connection:
        assert connection.bound
        connection.search(samba_data.USERS_DN, "(sAMAccountName=online.add)", attributes=["cn"])
        assert [entry.entry_dn for entry in connection.entries] == [user.dn]


def test_wait_ready_tells_another_sessions_slapd_from_ours(slapd: DirectoryServer) -> None:
    # What start_slapd sees when another session took the port it had probed free.
    wait_ready(slapd, token=str(slapd.workdir))
    with pytest.raises(NotOurServerError):
        wait_ready(slapd, token="/some/other/session")


def test_wait_ready_tells_another_sessions_samba_from_ours(
    samba_dc: DirectoryServer, other_ca: Path
) -> None:
    wait_ready(samba_dc, verify_tls=True)
    with pytest.raises(NotOurServerError):
        wait_ready(replace(samba_dc, ca_file=other_ca, _process=None), verify_tls=True)
