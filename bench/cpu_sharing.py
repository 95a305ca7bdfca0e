"""Benchmark: how much of a first sync's apply is the platform sharing syncd's CPUs.

    python bench/cpu_sharing.py --users 1000000

On a two-CPU machine the emulator (the platform) needs one CPU to take a first sync's
inserts in, and syncd's HTTP workers and audit thread run on the same two. This runs
the 1M initial sync of ``bench/sync_bench.py`` (``syncd apply`` into a fresh, empty
emulator and state) and the bare apply floor (``bare_pipeline.py push``), alternating,
best of ``--runs`` each, in two layouts:

* ``shared``: as sync_bench runs them, every process free to use every CPU;
* ``pinned``: the emulator, all its threads, on the last CPU; syncd or the bare push on
  the others (with two CPUs, one: syncd then reads its CSV file whole, on one CPU, so
  compare the apply phases, not the whole runs).

For each it prints syncd's apply phase (``run.finished`` timings), the floor's push,
and their ratio, with the CPU seconds of each side and of the emulator. A ratio near
1.0 when pinned and well above it when shared says the gap is the CPUs the platform
shares with syncd, not syncd's wait for its answers.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Sibling modules: bench/ is on sys.path.
from emulator_child import EmulatorChild, taskset
from sync_bench import CONFIG, generate
from sync_references import BARE, HERE, run_child

from syncd.cpus import usable_cpus

LAYOUTS = ("shared", "pinned")


@dataclass
class Run:
    """One push of the inserts: how long it took and the CPU each side spent."""

    push_s: float
    wall_s: float
    cpu_s: float
    platform_cpu_s: float


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads (``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(who: str, csv: Path, layout: str, workdir: Path) -> Run:
    """The inserts of ``csv`` pushed by ``who`` (``syncd`` or ``bare``) into a fresh emulator."""
    allowed = sorted(os.sched_getaffinity(0))
    platform: set[int] | None = None
    mine: set[int] | None = None
    if layout == "pinned":
        platform, mine = {allowed[-1]}, set(allowed[:-1])
    key = secrets.token_urlsafe(16)
    emulator = EmulatorChild(key, "platform", "--max-batch-size", "1000", cpus=platform)
    try:
        before = _process_cpu_s(emulator.process.pid)
        env = os.environ | {"BENCH_API_KEY": key}
        if who == "bare":
            spec = {"csv": str(csv), "url": emulator.url, "batch_size": 500, "concurrency": 4}
            run = run_child(
                [*taskset(mine), sys.executable, str(BARE), "push", json.dumps(spec)],
                env, HERE, "stdout",
            )  # fmt: skip
            if run.exit_code != 0:
                raise SystemExit(f"bare_pipeline push exited with {run.exit_code}")
            push_s = float(json.loads(run.output.strip().splitlines()[-1])["push_s"])
        else:
            folder = workdir / "syncd"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            config = folder / "syncd.yaml"
            config.write_text(CONFIG.format(url=emulator.url, batch=500, concurrency=4, csv=csv))
            run = run_child(
                [*taskset(mine), sys.executable, "-m", "syncd", "apply", "-c", str(config),
                 "--limit", "0"],
                env, folder, "stderr",
            )  # fmt: skip
            finished = [line for line in run.output.splitlines() if '"run.finished"' in line]
            if run.exit_code != 0 or not finished:
                print(run.output[-3000:], file=sys.stderr)
                raise SystemExit(f"syncd apply exited with {run.exit_code}")
            push_s = float(json.loads(finished[-1])["timings_s"]["apply"])
        platform_cpu = _process_cpu_s(emulator.process.pid) - before
    finally:
        emulator.close()
    return Run(push_s, run.wall_s, run.cpu_s, platform_cpu)


def main() -> int:
    """Run both layouts, print each run and the best ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each side per layout")
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if usable_cpus() < 2 or shutil.which("taskset") is None:
        print("needs two usable CPUs and taskset (util-linux)", file=sys.stderr)
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    csv, _ = generate(args.users, args.workdir)
    best: dict[tuple[str, str], Run] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        for attempt in range(args.runs):
            for layout in LAYOUTS:
                for who in ("syncd", "bare"):
                    run = one_run(who, csv, layout, Path(scratch))
                    print(
                        f"{layout:<6} {who:<5} run {attempt + 1}: push {run.push_s:5.2f} s  "
                        f"wall {run.wall_s:5.2f} s  CPU {run.cpu_s:5.2f} s  "
                        f"platform CPU {run.platform_cpu_s:5.2f} s",
                        flush=True,
                    )
                    kept = best.get((layout, who))
                    if kept is None or run.push_s < kept.push_s:
                        best[(layout, who)] = run
    print()
    print(f"{args.users:,} inserts, best of {args.runs}: syncd's apply phase / the floor's push")
    for layout in LAYOUTS:
        syncd, bare = best[(layout, "syncd")], best[(layout, "bare")]
        print(
            f"  {layout:<6} syncd {syncd.push_s:5.2f} s (CPU {syncd.cpu_s:5.2f} s for the whole "
            f"run)  floor {bare.push_s:5.2f} s  ratio {syncd.push_s / bare.push_s:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
