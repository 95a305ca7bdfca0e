"""Benchmark: read N users from the Graph emulator (HTTPS, added latency) with the Entra source.

    python bench/entra_bench.py --users 100000 [--latency-ms 20] [--page-size 999]

The emulator runs in its own process (``syncd emulator graph``), over HTTPS with a CA
made here by trustme, serving N synthetic users and sleeping ``--latency-ms`` in every
Graph listing request. This process reads them with
:class:`~syncd.sources.entra.EntraSource` through the real MSAL (tenant discovery,
client-credentials token) and httpx: read + map of id, three tags and the hire date,
every user counted and dropped as the runner consumes them.

The reference, measured in the same run against the same emulator: raw httpx paging of
the same listing (same ``$select``, ``$top``, TLS and latency) with a token fetched by
one plain POST, each page decoded and its users counted, no MSAL, no mapping. The ratio
source / reference is the cost of everything syncd adds on top of the HTTP.

Printed: wall seconds and users per second of both, their ratio, the Graph requests
sent (must be ceil(N / page size) = 101 for 100,000 users at 999), the token requests
of the source's read (1: MSAL's cache serves the rest), peak RSS.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import msgspec  # noqa: E402
import trustme  # noqa: E402

from syncd.emulator.server import LISTENING_PREFIX  # noqa: E402
from syncd.logs import configure_logging  # noqa: E402
from syncd.model import SourceUser  # noqa: E402
from syncd.sources.entra import EntraSourceConfig  # noqa: E402
from syncd.sources.entra.source import EntraSource  # noqa: E402

TENANT = "00000000-0000-0000-0000-000000000000"
CLIENT_ID = "11111111-1111-1111-1111-111111111111"
SECRET = "bench-Entra-Secret-1"  # noqa: S105 - the emulator's fake app secret


def start_emulator(
    directory: Path, users: int, latency_ms: float
) -> tuple[subprocess.Popen[str], str, Path]:
    """Start ``syncd emulator graph`` in its own process group; return it, its URL, the CA."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))
    command = [
        sys.executable, "-m", "syncd", "emulator", "graph",
        "--tls-cert", str(cert_file), "--tls-key", str(key_file), "--port", "0",
        "--tenant-id", TENANT, "--client-id", CLIENT_ID, "--client-secret", SECRET,
        "--users", str(users), "--latency-ms", str(latency_ms),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith(LISTENING_PREFIX):
            return process, line[len(LISTENING_PREFIX) :].strip(), ca_file
    stop(process)
    raise RuntimeError("the Graph emulator did not start")


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM the emulator's process group, SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def reference_read(url: str, ca_file: Path, params: dict[str, str]) -> tuple[int, int, str]:
    """Raw httpx: one token POST, then every page of ``/v1.0/users``, users counted.

    Returns the users, the Graph requests and the token (for the stats endpoint).
    """
    with httpx.Client(base_url=url, verify=str(ca_file), timeout=30.0) as http:
        answer = http.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_id": CLIENT_ID,
                  "client_secret": SECRET, "scope": f"{url}/.default"},
        )  # fmt: skip
        answer.raise_for_status()
        token = str(answer.json()["access_token"])
        headers = {"Authorization": f"Bearer {token}"}
        users = requests = 0
        response = http.get("/v1.0/users", params=params, headers=headers)
        while True:
            requests += 1
            response.raise_for_status()
            page = msgspec.json.decode(response.content)
            users += len(page["value"])
            link = page.get("@odata.nextLink")
            if link is None:
                return users, requests, token
            response = http.get(link, headers=headers)


def token_requests(url: str, ca_file: Path, token: str) -> int:
    """The emulator's count of token requests (``GET /_emulator/stats``)."""
    with httpx.Client(base_url=url, verify=str(ca_file), timeout=30.0) as http:
        stats = http.get("/_emulator/stats", headers={"Authorization": f"Bearer {token}"})
        stats.raise_for_status()
        return int(stats.json()["login_calls"]["token"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--page-size", type=int, default=999)
    args = parser.parse_args()
    configure_logging("console", "warning")  # per-call debug lines would be timed too

    with tempfile.TemporaryDirectory(prefix="entra-bench-") as tmp:
        process, url, ca_file = start_emulator(Path(tmp), args.users, args.latency_ms)
        try:
            config = EntraSourceConfig.model_validate(
                {
                    "type": "entra",
                    "name": "bench",
                    "tenant_id": TENANT,
                    "client_id": CLIENT_ID,
                    "client_secret": SECRET,
                    "authority_url": url,
                    "graph_url": url,
                    "ca_file": str(ca_file),
                    "tags": {"department": "department", "country": "country",
                             "title": "jobTitle"},
                    "page_size": args.page_size,
                }
            )  # fmt: skip
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            source = EntraSource(config, lowercase=True)
            params = dict(source.queries[0].params)
            # The reference first: its token reads the stats; the source's read is then
            # measured from a cold start (tenant discovery and its own token included).
            ref_started = time.perf_counter()
            ref_users, ref_requests, token = reference_read(url, ca_file, params)
            ref_seconds = time.perf_counter() - ref_started
            tokens_before = token_requests(url, ca_file, token)
            started = time.perf_counter()
            users = problems = 0
            with source:
                for item in source.read():
                    if isinstance(item, SourceUser):
                        users += 1
                    else:
                        problems += 1
                requests = source.requests
            seconds = time.perf_counter() - started
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            tokens = token_requests(url, ca_file, token) - tokens_before
        finally:
            stop(process)
    expected = math.ceil(args.users / args.page_size)
    print(f"users read:        {users:,} ({problems} problems)")
    print(f"wall time:         {seconds:.2f} s ({users / seconds:,.0f} users/s)")
    ceiling = f"ceil({args.users}/{args.page_size}) = {expected}"
    print(f"reference (httpx): {ref_seconds:.2f} s ({ref_users / ref_seconds:,.0f} users/s), "
          f"{ref_requests} requests, {ref_users:,} users")  # fmt: skip
    print(f"ratio:             {seconds / ref_seconds:.2f} x the reference")
    print(f"graph requests:    {requests} (expected {ceiling})")
    print(f"token requests:    {tokens} (expected 1)")
    print(f"added latency:     {args.latency_ms:.0f} ms x {requests} = "
          f"{args.latency_ms * requests / 1000:.2f} s of the wall time")  # fmt: skip
    print(f"peak RSS:          {peak / 1024:.0f} MB (before the read: {rss_before / 1024:.0f} MB)")
    if requests != expected or users != args.users or ref_users != users or tokens != 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
