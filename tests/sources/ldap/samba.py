"""The Samba AD DC of the tests: provisioned from scratch, loaded offline, LDAP only.

Samba's LDAP ports are fixed at 389 / 636, so the DC binds another loopback address
(:func:`samba_host`: 127.0.0.2, or the next free one when another test session already
runs a DC there). Provisioning takes most of the start-up (about 6 s on an idle
2-core machine); the fixture pays it once per session.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tests.sources.ldap.servers import (
    DirectoryServer,
    NotOurServerError,
    can_bind,
    run_command,
    spawn,
    wait_ready,
    write_certificates,
)

SAMBA_REALM = "EXAMPLE.TEST"
SAMBA_DOMAIN = "EXAMPLE"
SAMBA_BASE_DN = "DC=example,DC=test"
SAMBA_ADMIN_DN = "CN=Administrator,CN=Users,DC=example,DC=test"
SAMBA_ADMIN_PASSWORD = "Passw0rd!Passw0rd"

SAMBA_HOSTS = tuple(f"127.0.0.{n}" for n in range(2, 12))
"""Where a test DC may listen, in order: the fixed ports 389 / 636 stay off 127.0.0.1,
and two test sessions on one machine each get their own address."""


def samba_host(exclude: Sequence[str] = ()) -> str:
    """The first address of :data:`SAMBA_HOSTS` (not in ``exclude``) with 389 and 636 free.

    Falls back to 127.0.0.1 where the loopback net is only 127.0.0.1. Raises
    ``RuntimeError`` when none is free (a system Samba or slapd on 0.0.0.0:389).
    """
    candidates = SAMBA_HOSTS if can_bind("127.0.0.2", 0) else ("127.0.0.1",)
    for host in candidates:
        if host not in exclude and can_bind(host, 389) and can_bind(host, 636):
            return host
    raise RuntimeError(
        f"ports 389/636 are in use on {', '.join(candidates)}: stop the other LDAP "
        "server or Samba DC (`pgrep -a samba`, `pgrep -a slapd`) before the Samba tests"
    )


def _samba_env() -> dict[str, str]:
    """A throwaway DC needs no durable writes (Samba's own test suite runs like this)."""
    return {**os.environ, "TDB_NO_FSYNC": "1"}


def samba_config(root: Path, host: str) -> str:
    """The ``smb.conf`` of a test DC in ``root``: only the LDAP service, on ``host``."""
    return f"""\
[global]
 netbios name = DC1
 workgroup = {SAMBA_DOMAIN}
 realm = {SAMBA_REALM}
 server role = active directory domain controller
 server services = ldap
 interfaces = {host}/8
 bind interfaces only = yes
 ldap server require strong auth = no
 idmap_ldb:use rfc2307 = yes
 tls enabled = yes
 tls keyfile = {root}/server.key
 tls certfile = {root}/server.pem
 tls cafile = {root}/ca.pem
 private dir = {root}/private
 lock directory = {root}
 state directory = {root}/state
 cache directory = {root}/cache
 binddns dir = {root}/bind-dns
 pid directory = {root}/run
 ncalrpc dir = {root}/run/ncalrpc
 winbindd socket directory = {root}/run/winbindd
 ntp signd socket directory = {root}/run/ntp_signd
 log file = {root}/log/samba.log
 logging = file
[sysvol]
 path = {root}/state/sysvol
[netlogon]
 path = {root}/state/sysvol/example.test/scripts
"""


def start_samba(
    root: Path,
    *,
    ldif_batches: Sequence[str] = (),
    modify_ldif: str = "",
    host: str | None = None,
) -> DirectoryServer:
    """Provision a Samba AD DC in the (new or empty) folder ``root``, load it, start it.

    ``ldif_batches`` are added offline with ``ldbadd`` (one call each; keep them to a
    few hundred entries), then ``modify_ldif`` is applied with ``ldbmodify`` (links that
    need both ends to exist, domain settings such as ``lockoutThreshold``).
    ``host`` defaults to :func:`samba_host` (a loopback address with 389 and 636 free);
    the server certificate names it, 127.0.0.1, ``localhost`` and ``dc1.example.test``.
    """
    env = _samba_env()
    for sub in ("etc", "log", "run", "cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    empty = root / "empty.conf"
    empty.write_text("")
    provision = [
        *("samba-tool", "domain", "provision", "-s", str(empty), f"--targetdir={root}"),
        *(f"--realm={SAMBA_REALM}", f"--domain={SAMBA_DOMAIN}", "--host-name=DC1"),
        *("--server-role=dc", "--dns-backend=NONE", "--use-rfc2307"),
        f"--adminpass={SAMBA_ADMIN_PASSWORD}",
    ]
    run_command(provision, env=env, log=root / "log" / "provision.log")
    conf = root / "etc" / "smb.conf"
    # provision writes its own smb.conf without our paths and options: replace it.
    conf.write_text(samba_config(root, host or SAMBA_HOSTS[0]))
    sam = str(root / "private" / "sam.ldb")
    for index, batch in enumerate(ldif_batches):
        batch_file = root / f"batch-{index:03d}.ldif"
        batch_file.write_text(batch)
        run_command(
            ["ldbadd", "--nosync", "-H", sam, f"--configfile={conf}", str(batch_file)],
            env=env,
        )
    if modify_ldif.strip():
        modify_file = root / "modify.ldif"
        modify_file.write_text(modify_ldif)
        run_command(["ldbmodify", "-H", sam, f"--configfile={conf}", str(modify_file)], env=env)

    log = root / "log" / "samba.stdout"
    tried: list[str] = []
    last_error: NotOurServerError | None = None
    # Two test sessions may pick the same free address at once: the loser moves on.
    for _attempt in range(3):
        address = host or samba_host(exclude=tried)
        tried.append(address)
        names = (address, "127.0.0.1", "localhost", "dc1.example.test")
        ca_file = write_certificates(root, names)
        conf.write_text(samba_config(root, address))
        # -F: foreground (our child); -l is required; no -i, which wants a terminal.
        command = ["samba", "-s", str(conf), "-l", str(root / "log"), "-F", "--no-process-group"]
        process = spawn(command, log, env=env)
        server = DirectoryServer(
            kind="samba",
            ldap_url=f"ldap://{address}:389",
            ldaps_url=f"ldaps://{address}:636",
            base_dn=SAMBA_BASE_DN,
            admin_dn=SAMBA_ADMIN_DN,
            admin_password=SAMBA_ADMIN_PASSWORD,
            ca_file=ca_file,
            pid=process.pid,
            workdir=root,
            _process=process,
        )
        try:
            wait_ready(server, log, root / "log" / "samba.log", verify_tls=True)
        except NotOurServerError as error:
            server.stop()
            if host is not None:
                raise
            last_error = error
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise RuntimeError(f"no free loopback address for a Samba DC (tried {tried})") from last_error
