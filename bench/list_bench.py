"""The platform list read (GET of every user and its decoding) against its bare floor.

Reads a running emulator (GET only, so a shared benchmark emulator can be used):

    BENCH_API_KEY=KEY .venv/bin/python bench/list_bench.py --url http://127.0.0.1:PORT \\
        --csv bench/out/users-1000000.csv [--rounds 3] [--order sorted --order reversed]

The bearer key is read from ``BENCH_API_KEY`` (never on a command line, where ``ps``
shows it; the memory children inherit it).

Prints, best of ``--rounds`` (wall and CPU seconds, alternating the variants in one
process): the raw GET (body streamed and dropped), the bare floor (the body read whole
and decoded by one typed msgspec call, ``bare_pipeline.py``'s way), and
``PlatformClient.list_users`` without and with ``known`` (the CSV's users, keyed by
normalised end_user, as the runner holds them). Each ``--order`` adds
``list_users(known=ORDER)``: the same users with ``known`` in another order than the
platform lists them (``sorted`` by name, ``reversed``, ``shuffled``, or ``blocks``:
each pair of 10,000-user blocks swapped), as a re-sorted HR export or another paging
order gives it. Then, one fresh process per in-order variant, resident memory: added
by the list (RSS after minus before) and the peak above that (VmHWM, reset before the
list).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import structlog
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.merge import DesiredUsersBuilder
from syncd.model import SourceUser
from syncd.platform.api import FLAVOURS, ApiFlavour, UsersResponse
from syncd.platform.client import PlatformClient
from syncd.sources.csv import CsvSource, CsvSourceConfig

PATH = FLAVOURS[ApiFlavour.PLATFORM_USERS].path
ORDERS = ("sorted", "reversed", "shuffled", "blocks")


def desired(csv: Path) -> dict[str, SourceUser]:
    """The CSV's users as the runner holds them (the CSV source, normalised ids)."""
    config = CsvSourceConfig(
        type="csv",
        path=csv,
        id_column="email",
        tags={"department": "Department", "country": "Country"},
        active_from_column="start_date",
        active_to_column="end_date",
        enabled_column="enabled",
    )
    builder = DesiredUsersBuilder()
    builder.begin_source("csv")
    for item in CsvSource(config, lowercase=True).read():
        builder.add(item)
    builder.end_source()
    return builder.build().users


def reordered(known: dict[str, SourceUser], order: str) -> dict[str, SourceUser]:
    """``known`` with its users in another order (same keys and users)."""
    keys = list(known)
    if order == "sorted":
        keys.sort()
    elif order == "reversed":
        keys.reverse()
    elif order == "shuffled":
        random.Random(1).shuffle(keys)
    else:  # blocks
        size = 10_000
        keys = [
            key
            for start in range(0, len(keys), 2 * size)
            for key in keys[start + size : start + 2 * size] + keys[start : start + size]
        ]
    return {key: known[key] for key in keys}


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def variants(args: argparse.Namespace) -> dict[str, Callable[[], object]]:
    headers = {"Authorization": f"Bearer {args.key}"}
    http = httpx.Client(base_url=args.url, headers=headers, timeout=120)
    client = PlatformClient(
        base_url=args.url, api_key=SecretStr(args.key), flavour="platform-users", timeout_s=120
    )
    orders = args.order or []
    known = desired(args.csv) if args.csv else None

    def raw_get() -> int:
        with http.stream("GET", PATH) as response:
            return sum(len(piece) for piece in response.iter_bytes())

    def bare() -> int:
        return len(msgspec.json.decode(http.get(PATH).content, type=UsersResponse).users)

    found: dict[str, Callable[[], object]] = {
        "raw GET": raw_get,
        "bare GET + typed decode": bare,
        "list_users()": client.list_users,
    }
    if known is not None:
        found["list_users(known=...)"] = lambda: client.list_users(known=known)
        for order in orders:
            other = reordered(known, order)
            found[f"list_users(known={order})"] = lambda other=other: client.list_users(
                known=other
            )
    return found


def timings(args: argparse.Namespace) -> None:
    runs = variants(args)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            result = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            del result
            old = best.get(name, (wall, cpu))
            best[name] = (min(old[0], wall), min(old[1], cpu))
    for name, (wall, cpu) in best.items():
        print(f"{name:30} wall {wall:6.3f} s   cpu {cpu:6.3f} s")


def memory(args: argparse.Namespace) -> None:
    """One variant in this process: print its memory figures as JSON."""
    run = variants(args)[args.memory]
    gc.collect()
    before = rss_mb()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    result = run()
    gc.collect()
    after = rss_mb()
    print(json.dumps({"added": after - before, "peak_above_after": peak_mb() - after}))
    del result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--order", action="append", choices=ORDERS, help="with --csv")
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.key = os.environ.get("BENCH_API_KEY", "")
    if not args.key:
        raise SystemExit("list_bench: set BENCH_API_KEY to the emulator's bearer key")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(20))
    if args.memory:
        memory(args)
        return
    timings(args)
    names = ["list_users()"] + (["list_users(known=...)"] if args.csv else [])
    for name in names:
        command = [sys.executable, __file__, "--url", args.url]  # the key: inherited
        command += ["--csv", str(args.csv)] if args.csv else []
        output = subprocess.run(
            [*command, "--memory", name], check=True, capture_output=True, text=True
        ).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        print(
            f"{name:28} RSS added {figures['added']:6.1f} MB   "
            f"peak above that {figures['peak_above_after']:5.1f} MB"
        )


if __name__ == "__main__":
    main()
