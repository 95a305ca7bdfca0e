"""Benchmark: sync N users into an empty emulator, re-sync unchanged, re-sync with churn.

    python bench/sync_bench.py --users 100000 1000000

For each N it prints, per scenario, the wall time of ``syncd apply`` (a separate process,
as in production), its peak RSS, the write calls the emulator saw, and syncd's own phase
timings. The emulator runs in its own process so its memory and CPU are not counted.

Reference, measured in the same run: the one-request-per-user approach of tools such as
awslabs/ssosync, timed on a sample against the same emulator and extrapolated to N;
the ratio says how much faster the batched sync is.

Targets on a 2-core machine: 1M initial sync <= 60 s and <= 2 GB peak RSS; the no-change
re-sync of 1M <= 15 s with 0 writes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from emulator_child import EmulatorChild  # noqa: E402 - a sibling module

CONFIG = """
state_dir: ./state
log: {{format: json, level: info}}
jobs:
  - name: bench
    target:
      base_url: {url}
      api: platform-users
      api_key: ${{BENCH_API_KEY}}
      batch_size: {batch}
      concurrency: {concurrency}
    sources:
      - type: csv
        path: {csv}
        id_column: email
        tags: {{department: Department, country: Country}}
        active_from_column: start_date
        active_to_column: end_date
        enabled_column: enabled
    guard:  # the churn is legitimate: measure the writes, not the holds
      max_removals: null
      max_removal_ratio: 0.10
      max_removals_per_day: null
      max_updates: null
      max_destructive_updates: null
      max_destructive_update_ratio: null
"""


@dataclass
class Measure:
    scenario: str
    users: int
    wall_s: float
    peak_rss_mb: float
    writes: dict[str, int]
    timings: dict[str, float]
    exit_code: int


def run_apply(
    config: Path, key: str, scenario: str, users: int, emulator: EmulatorChild
) -> Measure:
    """Run ``syncd apply`` as a child process; wall time, peak RSS, writes, phase timings."""
    emulator.reset_counters()
    env = os.environ | {"BENCH_API_KEY": key}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "apply", "-c", str(config), "--limit", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=config.parent,
    )  # fmt: skip
    assert process.stderr is not None
    log = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    timings: dict[str, float] = {}
    for line in log.splitlines():
        if line.startswith("{") and '"run.finished"' in line:
            timings = json.loads(line).get("timings_s", {})
    if process.returncode != 0:
        print(log[-3000:], file=sys.stderr)
    calls = emulator.stats()["calls"]
    assert isinstance(calls, dict)
    return Measure(
        scenario=scenario,
        users=users,
        wall_s=wall,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        writes={op: int(calls[op]) for op in ("insert", "update", "delete")},
        timings=timings,
        exit_code=process.returncode,
    )


def per_user_reference(emulator: EmulatorChild, sample: int) -> float:
    """Seconds per user when each user costs one HTTP call (the ssosync pattern)."""
    with httpx.Client(
        base_url=emulator.url, headers={"Authorization": f"Bearer {emulator.key}"}
    ) as client:
        started = time.perf_counter()
        for i in range(sample):
            body = {"users": [{"end_user": f"ref{i}@example.com", "tags": {"d": "x"},
                               "active_from": "2026-01-01"}]}  # fmt: skip
            client.put("/api/external/platform-users", json=body).raise_for_status()
        elapsed = time.perf_counter() - started
        names = [f"ref{i}@example.com" for i in range(sample)]
        for start in range(0, sample, 500):  # under the emulator's max batch size
            client.request(
                "DELETE", "/api/external/platform-users", json={"users": names[start : start + 500]}
            ).raise_for_status()
    return elapsed / sample


def generate(users: int, workdir: Path) -> tuple[Path, Path]:
    base = workdir / f"users-{users}.csv"
    churned = workdir / f"users-{users}-churn.csv"
    gen = [sys.executable, str(HERE / "gen_csv.py"), "--as-of", "2026-11-01"]
    if not base.exists():
        subprocess.run([*gen, "--users", str(users), "--out", str(base), "--seed", "1"], check=True)
    if not churned.exists():
        subprocess.run(
            [*gen, "--churn-from", str(base), "--churn", "0.01", "--out", str(churned),
             "--seed", "2"],
            check=True,
        )  # fmt: skip
    return base, churned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--reference-sample", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    results: list[Measure] = []
    reference_s_per_user = None
    for users in args.users:
        base, churned = generate(users, args.workdir)
        emulator = EmulatorChild(
            secrets.token_urlsafe(16),
            "platform",
            "--max-batch-size",
            str(max(1000, args.batch_size)),
        )
        try:
            if reference_s_per_user is None:
                reference_s_per_user = per_user_reference(emulator, args.reference_sample)
            run_dir = args.workdir / f"run-{users}"
            run_dir.mkdir(exist_ok=True)
            for stale in run_dir.glob("state/*"):
                stale.unlink()
            config = run_dir / "syncd.yaml"
            for scenario, csv in (
                ("initial", base), ("no change", base), ("1% churn", churned),
            ):  # fmt: skip
                config.write_text(
                    CONFIG.format(url=emulator.url, batch=args.batch_size,
                                  concurrency=args.concurrency, csv=csv)
                )  # fmt: skip
                measure = run_apply(config, emulator.key, scenario, users, emulator)
                results.append(measure)
                print(
                    f"{users:>9,} {scenario:<10} wall {measure.wall_s:7.2f} s  "
                    f"peak RSS {measure.peak_rss_mb:7.0f} MB  writes {measure.writes}  "
                    f"exit {measure.exit_code}  phases {measure.timings}",
                    flush=True,
                )
        finally:
            emulator.close()

    assert reference_s_per_user is not None
    print()
    print(f"reference: one HTTP call per user = {reference_s_per_user * 1000:.2f} ms/user "
          f"(measured on {args.reference_sample} users against the same emulator)")  # fmt: skip
    print()
    print("| users | scenario | wall s | peak RSS MB | insert | update | delete "
          "| one-call-per-user estimate s | speed-up |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in results:
        changed = m.users if m.scenario == "initial" else None
        estimate = f"{changed * reference_s_per_user:.0f}" if changed is not None else "–"
        speedup = (
            f"{changed * reference_s_per_user / m.wall_s:.0f}x" if changed is not None else "–"
        )
        print(
            f"| {m.users:,} | {m.scenario} | {m.wall_s:.1f} | {m.peak_rss_mb:.0f} "
            f"| {m.writes['insert']} | {m.writes['update']} | {m.writes['delete']} "
            f"| {estimate} | {speedup} |"
        )
    return 0 if all(m.exit_code == 0 for m in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
