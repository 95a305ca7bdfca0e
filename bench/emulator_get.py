"""Benchmark: a full GET of N users from the platform emulator.

    .venv/bin/python bench/emulator_get.py --users 1000000
    .venv/bin/python bench/emulator_get.py --users 1000000 --separate-process

Prints the seed time, the GET wall time (request sent to last byte read by httpx; the
client's JSON decode is timed separately), the response size in MB and the peak RSS.
In-process, emulator and client share one process, so its peak RSS is an upper bound;
``--separate-process`` runs ``syncd emulator platform`` (the way benchmarks use it) and
reports the child's own peak RSS (RUSAGE_CHILDREN after it exits).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec

# Run from a checkout without installing: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncd.emulator import PlatformEmulator, make_users
from syncd.platform.api import FLAVOURS, ApiFlavour, UsersResponse

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
PATH = FLAVOURS[ApiFlavour.ELIGIBLE_USERS].path
URL_LINE = "syncd emulator listening on "


def rss_mb(who: int) -> float:
    """Peak resident set size in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def timed_gets(url: str, users: int, repeat: int) -> None:
    """GET every user ``repeat`` times and print wall time, size and client decode time."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for attempt in range(1, repeat + 1):
            started = time.perf_counter()
            response = client.get(PATH)
            get_s = time.perf_counter() - started
            response.raise_for_status()
            started = time.perf_counter()
            body = msgspec.json.decode(response.content, type=UsersResponse)
            decode_s = time.perf_counter() - started
            if len(body.users) != users:
                raise SystemExit(f"expected {users} users, got {len(body.users)}")
            size_mb = len(response.content) / 1e6
            label = "first (encodes)" if attempt == 1 else "cached body"
            print(
                f"GET #{attempt} {label:16s} {get_s:.2f} s wall, {size_mb:.1f} MB, "
                f"client decode {decode_s:.2f} s",
                flush=True,
            )
            del body, response


def in_process(users: int, repeat: int) -> None:
    """Emulator in this process, as ``syncd demo`` and the integration tests use it."""
    with PlatformEmulator(api_key=API_KEY) as emulator:
        started = time.perf_counter()
        emulator.seed_users(make_users(users))
        print(f"seed:             {time.perf_counter() - started:.2f} s")
        print(f"peak RSS seeded:  {rss_mb(resource.RUSAGE_SELF):.0f} MB (emulator only so far)")
        timed_gets(emulator.url, users, repeat)
    print(f"peak RSS:         {rss_mb(resource.RUSAGE_SELF):.0f} MB (emulator + client)")


def separate_process(users: int, repeat: int) -> None:
    """Emulator as a child process, as the benchmarks start it."""
    env = {**os.environ, "SYNCD_EMULATOR_API_KEY": API_KEY}
    command = [
        sys.executable, "-m", "syncd", "emulator", "platform", "--port", "0",
        "--users", str(users),
    ]  # fmt: skip
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            if not line.startswith(URL_LINE):
                raise SystemExit(f"unexpected emulator output: {line!r}")
            print(f"start + seed:     {time.perf_counter() - started:.2f} s (includes imports)")
            timed_gets(line.removeprefix(URL_LINE), users, repeat)
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
    print(f"emulator peak RSS: {rss_mb(resource.RUSAGE_CHILDREN):.0f} MB (child process)")
    print(f"client peak RSS:   {rss_mb(resource.RUSAGE_SELF):.0f} MB")


def main() -> None:
    """Parse arguments and run one of the two modes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="GETs to time (2nd+ is cached)")
    parser.add_argument("--separate-process", action="store_true")
    args = parser.parse_args()
    print(f"users:            {args.users:,}")
    if args.separate_process:
        separate_process(args.users, args.repeat)
    else:
        in_process(args.users, args.repeat)


if __name__ == "__main__":
    main()
