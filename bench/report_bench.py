"""Benchmark: the activation report over 180 days, daily, for 100,000 eligible users.

    python bench/report_bench.py [--users 100000] [--share-active 0.6] [--days 180]

Two emulators run in their own processes (their memory and CPU are not counted): the
platform with ``--users`` synthetic users, and the analytics API with generated daily
activity for ``--share-active`` of them. ``syncd report activation`` runs as a child
process, twice: first with an empty cache, then again (answered from the cache). For
each run it prints the wall time, the peak RSS of the report process, and the requests
the emulators saw (budgeted analytics queries, cursor follows, platform GETs).

A reference is measured in the same run, in this process: the same analytics pages
walked with plain httpx and ``json``, the platform list read once, and the totals
computed naively, day by day with sets. The ratios say what syncd's client, cache and
bit-mask computation cost or save against that; the reference's totals must equal the
report's.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr

from syncd.logs import configure_logging
from syncd.platform.api import ApiFlavour
from syncd.platform.client import PlatformClient
from syncd.report.client import ACTIVE_USERS_PATH, PAGE_SIZE, PARAMS
from syncd.report.compute import split_range

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from emulator_child import EmulatorChild  # noqa: E402 - a sibling module

CONFIG = """
state_dir: ./state
log: {{format: json, level: warning}}
jobs:
  - name: bench
    target: {{base_url: "{platform}", api_key: "${{BENCH_KEY}}", timeout_s: 300}}
    sources: [{{type: csv, path: unused.csv, id_column: email}}]
analytics:
  base_url: "{analytics}"
  service_key: "${{BENCH_KEY}}"
  timeout_s: 300
"""


def run_report(
    config: Path, key: str, start: date, end: date, out: Path
) -> tuple[float, float, int]:
    """One ``syncd report activation`` child: wall time, peak RSS (MB), exit code."""
    env = os.environ | {"BENCH_KEY": key}
    command = [
        sys.executable, "-m", "syncd", "report", "activation", "-c", str(config),
        "--from", start.isoformat(), "--to", end.isoformat(), "--granularity", "daily",
        "--by", "department", "--output", "json", "--out", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env=env, cwd=config.parent
    )
    assert process.stderr is not None
    log = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(log[-3000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, code


def reference(
    platform_url: str, analytics_url: str, key: str, start: date, end: date
) -> tuple[dict[str, float], dict[str, int]]:
    """The naive report's totals and wall times (pages, platform, computation)."""
    times: dict[str, float] = {}
    began = time.perf_counter()
    active_days: dict[str, set[str]] = {}
    with httpx.Client(
        base_url=analytics_url, headers={"Authorization": f"Bearer {key}"}, timeout=300
    ) as http:
        for first, last in split_range(start, end):
            params = {
                PARAMS.start_date: first.isoformat(),
                PARAMS.end_date: last.isoformat(),
                PARAMS.granularity: "daily",
                PARAMS.group_by: "user",
                PARAMS.page_size: str(PAGE_SIZE),
            }
            cursor = None
            while True:
                query = params if cursor is None else {**params, PARAMS.page_cursor: cursor}
                answer = http.get(ACTIVE_USERS_PATH, params=query)
                answer.raise_for_status()
                page = json.loads(answer.content)
                for row in page["data"]:
                    if row.get("user_id") and row.get("active_users", 1) > 0:
                        active_days.setdefault(row["timestamp"][:10], set()).add(row["user_id"])
                cursor = (page.get("pagination") or {}).get("next_page_cursor")
                if cursor is None:
                    break
    times["pages"] = time.perf_counter() - began
    began = time.perf_counter()
    with PlatformClient(
        base_url=platform_url,
        api_key=SecretStr(key),
        flavour=ApiFlavour.PLATFORM_USERS,
        timeout_s=300,
    ) as client:
        users = client.list_users()
    times["platform"] = time.perf_counter() - began
    began = time.perf_counter()
    eligible: set[str] = set()
    active: set[str] = set()
    both: set[str] = set()
    day = start
    while day <= end:
        today = {
            u.end_user.lower()
            for u in users
            if u.active_from <= day and (u.active_to is None or day <= u.active_to)
        }
        seen = active_days.get(day.isoformat(), set())
        eligible |= today
        active |= seen
        both |= today & seen
        day += timedelta(days=1)
    totals = {"eligible": len(eligible), "active": len(active), "active_eligible": len(both)}
    times["compute"] = time.perf_counter() - began
    return times, totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--share-active", type=float, default=0.6)
    parser.add_argument("--days", type=int, default=180)
    args = parser.parse_args()
    configure_logging("console", "warning")  # the reference's client logs nothing else
    start = date(2026, 1, 1)
    end = start + timedelta(days=args.days - 1)
    key = secrets.token_urlsafe(16)
    print(f"starting emulators: {args.users} platform users, activity for ~{args.share_active:.0%}")
    began = time.perf_counter()
    children: list[EmulatorChild] = []
    try:
        # Each child is closed in the finally, also when a later one fails to start.
        platform = EmulatorChild(key, "platform", "--users", str(args.users))
        children.append(platform)
        analytics = EmulatorChild(
            key, "analytics", "--users", str(args.users), "--share-active", str(args.share_active),
            "--activity-from", start.isoformat(), "--activity-to", end.isoformat(),
        )  # fmt: skip
        children.append(analytics)
        print(f"emulators ready in {time.perf_counter() - began:.1f} s")
        with tempfile.TemporaryDirectory(prefix="syncd-report-bench-") as tmp:
            config = Path(tmp) / "bench.yaml"
            config.write_text(CONFIG.format(platform=platform.url, analytics=analytics.url))
            out = Path(tmp) / "report.json"
            previous = {"queries": 0, "cursor_follows": 0, "GET": 0}
            walls: dict[str, float] = {}
            print(f"{'run':<8} {'wall s':>7} {'peak RSS MB':>12} {'queries':>8} {'follows':>8} "
                  f"{'platform GETs':>14}")  # fmt: skip
            for name in ("cold", "cached"):
                wall, rss, code = run_report(config, key, start, end, out)
                if code != 0:
                    print(f"{name}: exit {code}")
                    return 1
                stats = analytics.stats()["analytics"]
                assert isinstance(stats, dict)
                calls = platform.stats()["calls"]
                assert isinstance(calls, dict)
                now = {
                    "queries": stats["queries"],
                    "cursor_follows": stats["cursor_follows"],
                    "GET": calls["GET"],
                }
                walls[name] = wall
                delta = {k: int(now[k]) - previous[k] for k in now}
                previous = {k: int(v) for k, v in now.items()}
                print(f"{name:<8} {wall:>7.2f} {rss:>12.0f} {delta['queries']:>8} "
                      f"{delta['cursor_follows']:>8} {delta['GET']:>14}")  # fmt: skip
            document = json.loads(out.read_text())
            total = document["total"]
            print(
                f"report: {len(document['periods'])} periods; eligible {total['eligible']}, "
                f"active {total['active']}, rate {total['activation_rate']}"
            )
            ref_times, ref_totals = reference(platform.url, analytics.url, key, start, end)
            ref_wall = sum(ref_times.values())
            print(
                f"reference (raw httpx pages + day-by-day sets, in-process): {ref_wall:.2f} s "
                f"(pages {ref_times['pages']:.2f}, platform {ref_times['platform']:.2f}, "
                f"computation {ref_times['compute']:.2f}); "
                f"cold / reference {walls['cold'] / ref_wall:.2f}, "
                f"cached / reference {walls['cached'] / ref_wall:.2f}"
            )
            mine = {k: int(total[k]) for k in ref_totals}
            if mine != ref_totals:
                print(f"totals differ: report {mine}, reference {ref_totals}")
                return 1
            print(f"reference totals equal the report's: {ref_totals}")
    finally:
        for child in reversed(children):
            child.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
