"""Throwaway directory servers for the LDAP tests: OpenLDAP ``slapd`` and a Samba AD DC.

Each server lives in its own temporary folder, with its own test CA (made with
``trustme``) that signed a server certificate for ``127.0.0.1`` / ``localhost``, and
listens on loopback only:

* :func:`start_slapd` -- slapd on two free ports of 127.0.0.1 (``ldap://`` with StartTLS,
  and ``ldaps://``), the ``memberof`` overlay on or off, a global size limit like AD's
  MaxPageSize, the root account and a non-root service account (``cn=sync``) to which the
  size limit really applies (the rootdn ignores limits);
* :func:`tests.sources.ldap.samba.start_samba` -- a Samba 4 AD DC provisioned from
  scratch (only its LDAP service runs), loaded offline with ``ldbadd`` before it starts,
  on a loopback address of its own (its LDAP ports are fixed at 389 / 636).

Both run in the foreground as children of the test process, in their own process group,
and :meth:`DirectoryServer.stop` ends the group by PID (SIGTERM, then SIGKILL after a
bound), so nothing outlives a run. The servers are started by the fixtures of
``conftest.py``; this module has no pytest dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import trustme
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError
from ldap3.utils.conv import escape_filter_chars

# ------------------------------------------------------------------------ slapd

SLAPD_BASE_DN = "dc=example,dc=com"
SLAPD_ADMIN_DN = "cn=admin,dc=example,dc=com"
SLAPD_ADMIN_PASSWORD = "secret"
SLAPD_SERVICE_DN = "cn=sync,dc=example,dc=com"
"""A non-root bind account: the ``limits`` (size limit, paging) apply to it."""
SLAPD_SERVICE_PASSWORD = "sync-Secret-4711"
SLAPD_PEOPLE_DN = "ou=people,dc=example,dc=com"
SLAPD_GROUPS_DN = "ou=groups,dc=example,dc=com"

SLAPD_BASE_LDIF = f"""\
dn: {SLAPD_BASE_DN}
objectClass: top
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {SLAPD_SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: sync
userPassword: {SLAPD_SERVICE_PASSWORD}

dn: {SLAPD_PEOPLE_DN}
objectClass: organizationalUnit
ou: people

dn: {SLAPD_GROUPS_DN}
objectClass: organizationalUnit
ou: groups
"""
"""The entries every slapd starts with (the suffix, the service account, two OUs)."""

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass
class DirectoryServer:
    """A running directory server started by the tests, and how to reach it."""

    kind: str
    """``"openldap"`` or ``"samba"``."""
    ldap_url: str
    """``ldap://HOST:PORT``; StartTLS is available on it."""
    ldaps_url: str
    """``ldaps://HOST:PORT``."""
    base_dn: str
    admin_dn: str
    admin_password: str = field(repr=False)
    ca_file: Path
    """PEM of the test CA that signed the server certificate."""
    pid: int
    workdir: Path = field(default=Path())
    """The server's temporary folder (config, database, certificates, logs)."""
    bind_dn: str = ""
    """A non-administrator service account, for binds that must obey server limits."""
    bind_password: str = field(default="", repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """The loopback address the server listens on."""
        return self.ldap_url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def ldap_port(self) -> int:
        """The port of :attr:`ldap_url`."""
        return int(self.ldap_url.rsplit(":", 1)[1])

    @property
    def ldaps_port(self) -> int:
        """The port of :attr:`ldaps_url`."""
        return int(self.ldaps_url.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        """True while the server process exists (and is not a zombie)."""
        if self._process is not None:
            return self._process.poll() is None
        return pid_alive(self.pid)

    def add_ldif(self, ldif: str) -> None:
        """Add (or, with ``changetype:`` records, modify) entries online, as the admin.

        Goes through the running server, so overlays apply (slapd's ``memberof`` fills
        ``memberOf``; Samba computes SIDs and checks passwords). It uses LDAPS, because
        AD only accepts ``unicodePwd`` over an encrypted connection.
        """
        password_file = self.workdir / "admin.pw"
        if not password_file.exists():
            password_file.write_text(self.admin_password)
            password_file.chmod(0o600)
        command = [
            "ldapmodify", "-a", "-x", "-H", self.ldaps_url,
            "-D", self.admin_dn, "-y", str(password_file),
        ]  # fmt: skip
        run_command(command, stdin=ldif, env=_ldap_client_env(self.ca_file))

    @contextlib.contextmanager
    def connect(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        tls: str = "none",
    ) -> Iterator[ldap3.Connection]:
        """A context with an ldap3 connection bound as ``user`` (default: the admin).

        ``tls`` is ``"none"`` (plain ``ldap://``), ``"ldaps"`` or ``"starttls"``; both TLS
        modes verify the server certificate against :attr:`ca_file`. Bind and TLS failures
        raise ldap3's exceptions; the socket is closed in every case.
        """
        tls_config = ldap3.Tls(ca_certs_file=str(self.ca_file), validate=ssl.CERT_REQUIRED)
        url = self.ldaps_url if tls == "ldaps" else self.ldap_url
        server = ldap3.Server(url, get_info=ldap3.NONE, tls=tls_config, connect_timeout=5)
        connection = ldap3.Connection(
            server,
            user=self.admin_dn if user is None else user,
            password=self.admin_password if password is None else password,
            receive_timeout=30,
            raise_exceptions=True,
        )
        try:
            with warnings.catch_warnings():
                # ldap3 2.9 checks the host name with ssl.match_hostname (deprecated, but
                # still correct); the warning is about ldap3's code.
                warnings.filterwarnings("ignore", "ssl.match_hostname", DeprecationWarning)
                connection.open()
                if tls == "starttls":
                    connection.start_tls()
            connection.bind()
            yield connection
        finally:
            _close(connection)

    def stop(self) -> None:
        """Stop the server by its PID (its whole process group); idempotent."""
        if self._process is not None:
            _stop_group(self._process)
        elif pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            _wait_gone(self.pid, STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


# ------------------------------------------------------------------ slapd start


def slapd_config(root: Path, *, memberof: bool = True, size_limit: int | None = 1000) -> str:
    """The ``slapd.conf`` text of a test server living in ``root``.

    ``size_limit`` is the global ``sizelimit`` and the service account's limits (like
    AD's MaxPageSize: an unpaged search above it fails with rc 4, a page size above it
    gives rc 11); ``None`` means unlimited.
    """
    limit = "unlimited" if size_limit is None else str(size_limit)
    memberof_module = "moduleload memberof\n" if memberof else ""
    memberof_overlay = "overlay memberof\nmemberof-refint TRUE\n" if memberof else ""
    return f"""\
include   /etc/ldap/schema/core.schema
include   /etc/ldap/schema/cosine.schema
include   /etc/ldap/schema/inetorgperson.schema
include   /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
{memberof_module}pidfile   {root}/slapd.pid
argsfile  {root}/slapd.args
sizelimit {limit}
TLSCACertificateFile  {root}/ca.pem
TLSCertificateFile    {root}/server.pem
TLSCertificateKeyFile {root}/server.key
database  mdb
maxsize   4294967296
suffix    "{SLAPD_BASE_DN}"
rootdn    "{SLAPD_ADMIN_DN}"
rootpw    {SLAPD_ADMIN_PASSWORD}
directory {root}/db
dbnosync
limits dn.exact="{SLAPD_SERVICE_DN}" size.soft={limit} size.hard={limit} size.pr={limit} \
size.prtotal=unlimited
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
index objectClass eq
index uid,cn,mail eq
index member{",memberOf" if memberof else ""} eq
{memberof_overlay}"""


def start_slapd(
    root: Path, *, memberof: bool = True, size_limit: int | None = 1000, ldif: str = ""
) -> DirectoryServer:
    """Create, load and start a slapd in the (new or empty) folder ``root``.

    The database holds :data:`SLAPD_BASE_LDIF` and then ``ldif``, loaded offline with
    ``slapadd`` (fast: 100k entries in about 2 s). slapadd bypasses overlays, so an
    ``ldif`` meant for ``memberof=True`` must carry its ``memberOf`` values itself; use
    :meth:`DirectoryServer.add_ldif` on the running server to have them computed.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "db").mkdir(exist_ok=True)
    ca_file = write_certificates(root, ("127.0.0.1", "localhost"))
    conf = root / "slapd.conf"
    conf.write_text(slapd_config(root, memberof=memberof, size_limit=size_limit))
    run_command(["slaptest", "-Q", "-u", "-f", str(conf)])
    data = root / "data.ldif"
    # The suffix entry names this server's folder: wait_ready checks it is ours.
    base = SLAPD_BASE_LDIF.replace("o: Example\n", f"o: Example\ndescription: {root}\n", 1)
    data.write_text(base + ("\n" + ldif if ldif.strip() else ""))
    run_command(["slapadd", "-q", "-f", str(conf), "-l", str(data)])

    # A free port can be taken between probing and binding: try again with new ones.
    last_error: RuntimeError | None = None
    for _attempt in range(3):
        ldap_port, ldaps_port = free_port(), free_port()
        server = DirectoryServer(
            kind="openldap",
            ldap_url=f"ldap://127.0.0.1:{ldap_port}",
            ldaps_url=f"ldaps://127.0.0.1:{ldaps_port}",
            base_dn=SLAPD_BASE_DN,
            admin_dn=SLAPD_ADMIN_DN,
            admin_password=SLAPD_ADMIN_PASSWORD,
            ca_file=ca_file,
            pid=0,
            workdir=root,
            bind_dn=SLAPD_SERVICE_DN,
            bind_password=SLAPD_SERVICE_PASSWORD,
        )
        urls = f"{server.ldap_url}/ {server.ldaps_url}/"
        # -d 0 keeps slapd in the foreground (no fork), so it is our child and its PID
        # is known without racing on the pidfile.
        process = spawn(["slapd", "-f", str(conf), "-h", urls, "-d", "0"], root / "slapd.log")
        server.pid, server._process = process.pid, process
        try:
            wait_ready(server, root / "slapd.log", token=str(root))
        except RuntimeError as error:
            server.stop()
            last_error = error
            continue
        return server
    raise RuntimeError(f"slapd did not start in {root}") from last_error


# ------------------------------------------------------------------ plumbing


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def other_ca_pem(path: Path) -> Path:
    """Write the PEM of a fresh CA that signed none of the test servers, for rejections."""
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def write_certificates(root: Path, names: Sequence[str]) -> Path:
    """A new CA, and a server certificate for ``names`` signed by it; returns the CA PEM."""
    ca = trustme.CA(organization_name="syncd tests")
    certificate = ca.issue_cert(*names)
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    key_file = root / "server.key"
    certificate.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)  # Samba refuses a key file others can read
    with (root / "server.pem").open("wb") as chain:
        for blob in certificate.cert_chain_pems:
            chain.write(blob.bytes())
    return ca_file


def _ldap_client_env(ca_file: Path) -> dict[str, str]:
    """The environment of an OpenLDAP client tool that trusts exactly ``ca_file``."""
    return {**os.environ, "LDAPTLS_CACERT": str(ca_file), "LDAPTLS_REQCERT": "demand"}


def run_command(
    command: Sequence[str],
    *,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> None:
    """Run a set-up command; raise with its output if it fails."""
    result = subprocess.run(
        command,
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    if log is not None:
        log.write_bytes(result.stdout + result.stderr)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")[-4000:]
        raise RuntimeError(f"{command[0]} failed (exit {result.returncode}):\n{output}")


def spawn(
    command: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in the foreground, in a new process group, output to ``log``.

    The server also gets SIGTERM if the test process dies without running its
    finalizers (SIGKILL, a CI timeout): no server outlives the run. Linux sends it when
    the *thread* that started the server ends, so start servers from a thread that
    outlives them (the main thread, as fixtures do).
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        )


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child only calls it


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent thread ends."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class NotOurServerError(RuntimeError):
    """Another server (of another test session) answers on the address we started on."""


def wait_ready(
    server: DirectoryServer, *logs: Path, token: str | None = None, verify_tls: bool = False
) -> None:
    """Poll until the server answers; raise with its logs if it exits or never answers.

    A port or address probed free can be taken by another test session's server before
    ours binds it, so an answer must prove it comes from ours, else this raises
    :class:`NotOurServerError`: with ``token``, the base entry's ``description`` must be
    ``token``; with ``verify_tls``, the probe goes over LDAPS and the certificate must
    verify against the server's own, freshly made, CA.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    delay = 0.02
    base, search_filter = ("", "(objectClass=*)")
    if token is not None:
        base, search_filter = (server.base_dn, f"(description={escape_filter_chars(token)})")
    url, tls = server.ldap_url, None
    if verify_tls:
        url = server.ldaps_url
        tls = ldap3.Tls(ca_certs_file=str(server.ca_file), validate=ssl.CERT_REQUIRED)
    while True:
        if not server.running:
            raise RuntimeError(f"{server.kind} exited while starting:\n{_tail(logs)}")
        probe = ldap3.Connection(
            ldap3.Server(url, get_info=ldap3.NONE, tls=tls, connect_timeout=1),
            receive_timeout=2,
        )
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "ssl.match_hostname", DeprecationWarning)
                probe.open()
            if probe.search(base, search_filter, ldap3.BASE, attributes=["1.1"]):
                return
            if token is not None and probe.result.get("result") in (0, 32):
                raise NotOurServerError(f"another directory answers on {url}")
        except LDAPSocketOpenError as error:
            if verify_tls and "CERTIFICATE_VERIFY_FAILED" in str(error):
                raise NotOurServerError(f"another server answers on {url}") from None
        except LDAPException:
            pass
        finally:
            _close(probe)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.kind} not ready after {STARTUP_TIMEOUT_S}s:\n{_tail(logs)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _close(connection: ldap3.Connection) -> None:
    """Unbind and close ``connection`` whatever state a failure left it in."""
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()
    # unbind() skips the socket of a connection that failed before it was "bound".
    socket_ = getattr(connection, "socket", None)
    if socket_ is not None:
        with contextlib.suppress(OSError):
            socket_.close()


def _tail(logs: Sequence[Path]) -> str:
    """The last lines of each log that exists, for a failed start."""
    parts = []
    for log in logs:
        if log.exists():
            parts.append(f"--- {log}\n" + log.read_text(errors="replace")[-3000:])
    return "\n".join(parts) or "(no log)"


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group led by ``process``, SIGKILL it after a bound, reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT_S)
    # Kill what is left of the group too (Samba's worker processes), then reap.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while process_group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def process_group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of the process group ``pgid``, from ``/proc``."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # the process ended while we looked
        # After the command: state, ppid, pgrp (proc(5)).
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until ``pid`` has exited (bounded)."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def can_bind(host: str, port: int) -> bool:
    """True if a listening socket could take ``host:port`` now (0: any port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server will: a port in TIME_WAIT from an earlier run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
