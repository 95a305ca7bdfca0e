"""Fixtures of the LDAP tests: real slapd and Samba AD servers on loopback.

* ``slapd`` -- one slapd per session (``memberof`` on, size limit 1000) holding only
  :data:`~tests.sources.ldap.servers.SLAPD_BASE_LDIF`; tests add what they need online;
* ``slapd_factory(*, memberof=True, size_limit=1000, ldif="")`` -- a fresh slapd per
  call, stopped after the test;
* ``samba_dc`` -- one Samba AD DC per session, loaded with the directory of
  :mod:`tests.sources.ldap.samba_data` (start-up 10-20 s on 2 cores, paid once);
* ``openldap_ca`` -- the CA of the session slapd; ``other_ca`` -- a CA that signed
  nothing, to check that a wrong CA is rejected.

Every server is stopped by its PID in a ``finally``, also when the test fails; if the
test process is killed outright, the servers get SIGTERM from Linux (parent-death signal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sources.ldap import samba_data
from tests.sources.ldap.samba import start_samba
from tests.sources.ldap.servers import DirectoryServer, other_ca_pem, start_slapd

SlapdFactory = Callable[..., DirectoryServer]


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    """A session-wide slapd: memberof overlay on, size limit 1000, base entries only."""
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slapd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdFactory]:
    """Start fresh slapds for one test; each is stopped when the test ends."""
    started: list[DirectoryServer] = []

    def start(
        *, memberof: bool = True, size_limit: int | None = 1000, ldif: str = ""
    ) -> DirectoryServer:
        server = start_slapd(
            tmp_path_factory.mktemp("slapd-f"), memberof=memberof, size_limit=size_limit,
            ldif=ldif,
        )  # fmt: skip
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    """A session-wide Samba AD DC loaded with :mod:`tests.sources.ldap.samba_data`."""
    server = start_samba(
        tmp_path_factory.mktemp("samba"),
        ldif_batches=samba_data.add_batches(),
        modify_ldif=samba_data.modify_ldif(),
    )
    server.bind_dn = samba_data.SERVICE_DN
    server.bind_password = samba_data.SERVICE_PASSWORD
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openldap_ca(slapd: DirectoryServer) -> Path:
    """The PEM of the CA that signed the session slapd's certificate."""
    return slapd.ca_file


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PEM of a CA that signed none of the test servers."""
    return other_ca_pem(tmp_path_factory.mktemp("other-ca") / "other-ca.pem")
