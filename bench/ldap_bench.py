"""Benchmark: read N users from a real slapd with syncd, raw ldap3, and ldapsearch.

    python bench/ldap_bench.py --users 100000 [--page-size 1000]

N inetOrgPerson entries are bulk-loaded with ``slapadd -q`` into a throwaway slapd on
127.0.0.1 (stopped by PID at the end). Then, in the same run, each reader runs in its
own process so its peak RSS is its own:

* ``syncd``: :class:`~syncd.sources.ldap.LdapSource` read + map (id, two tags, the
  creation date), every ``SourceUser`` counted and dropped, as the runner consumes them;
* ``ldap3``: ldap3's own paged-search generator over the same filter and attributes,
  the entries counted and dropped (the floor for anything built on ldap3);
* ``ldapsearch -E pr=N/noprompt``: the OpenLDAP C client, output to /dev/null;
* ``ldap3 unpaged``, optional (``--unpaged``): one search holding every entry, to show
  what streaming saves (run as the root DN, which no size limit applies to).

Printed: wall seconds, entries per second, peak RSS, and syncd's ratios to the others.
Goal: syncd <= 1.3x raw ldap3, peak RSS bounded by the page size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.sources.ldap.servers import SLAPD_PEOPLE_DN, DirectoryServer, start_slapd  # noqa: E402

ATTRIBUTES = ["mail", "departmentNumber", "l", "createTimestamp"]
FILTER = "(objectClass=inetOrgPerson)"


def _ldif(count: int) -> str:
    departments = ["Sales", "Research", "Legal", "Support", "Finance", "Operations"]
    cities = ["Paris", "Berlin", "Milan", "Madrid", "Boston"]
    return "".join(
        f"dn: uid=u{i:07d},{SLAPD_PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: u{i:07d}\n"
        f"cn: User {i}\nsn: User\nmail: User{i:07d}@Example.com\n"
        f"departmentNumber: {departments[i % 6]}\nl: {cities[i % 5]}\n\n"
        for i in range(count)
    )


# ----------------------------------------------------------------- workers (one process each)


def _worker_syncd(args: argparse.Namespace) -> Callable[[], int]:
    from syncd.model import SourceUser  # noqa: PLC0415 - only the measured process imports it
    from syncd.sources.ldap import LdapSource, LdapSourceConfig  # noqa: PLC0415

    config = LdapSourceConfig.model_validate(
        {
            "type": "ldap",
            "flavor": "openldap",
            "urls": [args.url],
            "bind_dn": args.bind_dn,
            "bind_password": args.bind_password,
            "base_dn": args.base_dn,
            "id_attribute": "mail",
            "tags": {"department": "departmentNumber", "city": "l"},
            "active_from_attribute": "createTimestamp",
            "page_size": args.page_size,
        }
    )

    def read() -> int:
        users = 0
        with LdapSource(config, lowercase=True) as source:
            for item in source.read():
                users += isinstance(item, SourceUser)
        return users

    return read


def _worker_ldap3(args: argparse.Namespace) -> Callable[[], int]:
    import ldap3  # noqa: PLC0415 - only the measured process imports it

    def read() -> int:
        server = ldap3.Server(args.url, get_info=ldap3.NONE)
        connection = ldap3.Connection(server, args.bind_dn, args.bind_password, auto_bind=True)
        entries = 0
        for item in connection.extend.standard.paged_search(
            args.base_dn,
            FILTER,
            attributes=ATTRIBUTES,
            paged_size=args.page_size,
            dereference_aliases=ldap3.DEREF_NEVER,
            generator=True,
        ):
            entries += item["type"] == "searchResEntry"
        connection.unbind()
        return entries

    return read


def _worker_unpaged(args: argparse.Namespace) -> Callable[[], int]:
    import ldap3  # noqa: PLC0415 - only the measured process imports it

    def read() -> int:
        server = ldap3.Server(args.url, get_info=ldap3.NONE)
        connection = ldap3.Connection(server, args.bind_dn, args.bind_password, auto_bind=True)
        connection.search(args.base_dn, FILTER, attributes=ATTRIBUTES)
        entries = sum(item["type"] == "searchResEntry" for item in connection.response)
        connection.unbind()
        return entries

    return read


_WORKERS = {"syncd": _worker_syncd, "ldap3": _worker_ldap3, "unpaged": _worker_unpaged}


def _run_worker(args: argparse.Namespace) -> None:
    read = _WORKERS[args.worker](args)  # imports and set-up are not timed
    started = time.perf_counter()
    count = read()
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"count": count, "seconds": seconds, "rss_mb": peak_kb / 1024}))


# ----------------------------------------------------------------- driver


def _measure(
    worker: str, server: DirectoryServer, page_size: int, *, root: bool = False
) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--worker", worker, "--url", server.ldap_url,
        "--base-dn", server.base_dn, "--page-size", str(page_size),
        "--bind-dn", server.admin_dn if root else server.bind_dn,
        "--bind-password", server.admin_password if root else server.bind_password,
    ]  # fmt: skip
    result = subprocess.run(
        _clean(command), capture_output=True, text=True, check=True, timeout=900
    )
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def _measure_ldapsearch(server: DirectoryServer, page_size: int) -> dict[str, Any]:
    command = [
        "ldapsearch", "-LLL", "-x", "-H", server.ldap_url, "-D", server.bind_dn,
        "-w", server.bind_password, "-b", server.base_dn, "-E", f"pr={page_size}/noprompt",
        FILTER, *ATTRIBUTES,
    ]  # fmt: skip
    started = time.perf_counter()
    with subprocess.Popen(_clean(command), stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        count = sum(line.startswith(b"dn: ") for line in process.stdout)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    # wait4 reports the larger of sh and ldapsearch; sh's figure includes this process's
    # memory at the moment it was started, so this is an upper bound.
    return {"count": count, "seconds": seconds, "rss_mb": usage.ru_maxrss / 1024}


def _clean(command: list[str]) -> list[str]:
    """``command`` run by a shell that forks it, so its peak RSS is its own.

    Linux counts a process's memory before ``exec`` in its peak RSS; a process forked
    from this one would start with this driver's (the LDIF text, the test helpers). A
    shell started from here forks the real command from its own small memory instead.
    """
    return ["sh", "-c", '"$@"; exit $?', "sh", *command]


def main() -> None:
    """Parse the arguments; run the benchmark (or, with --worker, one measured reader)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--unpaged", action="store_true", help="also time an unpaged search")
    parser.add_argument("--worker", choices=sorted(_WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--base-dn", help=argparse.SUPPRESS)
    parser.add_argument("--bind-dn", help=argparse.SUPPRESS)
    parser.add_argument("--bind-password", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _run_worker(args)
        return

    with tempfile.TemporaryDirectory(prefix="ldap-bench-") as folder:
        clock = time.perf_counter()
        # size_limit None: the service account reads every page (paging still applies).
        server = start_slapd(Path(folder), size_limit=None, ldif=_ldif(args.users))
        print(f"slapd with {args.users:,} users loaded by slapadd in "
              f"{time.perf_counter() - clock:.1f} s", flush=True)  # fmt: skip
        try:
            results = {
                "ldapsearch -E pr": _measure_ldapsearch(server, args.page_size),
                "ldap3 paged": _measure("ldap3", server, args.page_size),
                "syncd": _measure("syncd", server, args.page_size),
            }
            if args.unpaged:
                results["ldap3 unpaged"] = _measure("unpaged", server, args.page_size, root=True)
        finally:
            server.stop()

    print(f"\npage size {args.page_size}, {args.users:,} entries\n")
    print(f"{'reader':<18} {'entries':>9} {'wall s':>8} {'entries/s':>10} {'peak RSS MB':>12}")
    for name, data in results.items():
        rate = data["count"] / data["seconds"] if data["seconds"] else 0
        # ldapsearch's figure is an upper bound (see _measure_ldapsearch).
        rss = (
            f"<= {data['rss_mb']:.0f}" if name.startswith("ldapsearch") else f"{data['rss_mb']:.0f}"
        )
        print(f"{name:<18} {data['count']:>9,} {data['seconds']:>8.2f} {rate:>10,.0f} {rss:>12}")
    syncd = results["syncd"]["seconds"]
    print(
        f"\nsyncd / ldap3 paged:  {syncd / results['ldap3 paged']['seconds']:.2f}x (goal <= 1.3x)"
    )
    print(f"syncd / ldapsearch:   {syncd / results['ldapsearch -E pr']['seconds']:.2f}x")
    counts = {data["count"] for data in results.values()}
    if counts != {args.users}:
        print(f"WARNING: the readers saw different counts: {counts}")


if __name__ == "__main__":
    main()
