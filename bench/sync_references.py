"""The same-run references of ``bench/sync_bench.py`` (issue #8), on the parent's side.

Each reference runs ``bench/bare_pipeline.py`` as a child process, timed like ``syncd
apply`` (:func:`run_child`: wall time from before the fork to the reaped exit, peak RSS
and CPU from ``wait4``), so start-up and memory are counted the same way on both sides.

* :func:`bare_diff`: the no-change reference (CSV read, raw GET, one typed decode, a
  plain dict diff), best of ``runs``; it also reports the differences it counted, which
  the benchmark checks against syncd's own plan.
* :func:`apply_floor`: the initial-sync floor (pre-encoded insert batches pushed by
  ``concurrency`` threads on keep-alive connections) into a fresh, empty emulator per
  run, best of ``runs``; the emulator's user count afterwards is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Literal

from emulator_child import EmulatorChild

HERE = Path(__file__).resolve().parent
BARE = HERE / "bare_pipeline.py"

CHANGE_KINDS = ("insert", "update", "reactivate", "end", "delete")
"""The plan counts (``run.finished``) that are writes; their sum is what the bare diff counts."""


@dataclass(frozen=True)
class ChildRun:
    """One child process: wall time, peak RSS, CPU time, exit code, captured output."""

    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    exit_code: int
    output: str


def run_child(
    argv: list[str], env: dict[str, str], cwd: Path, capture: Literal["stdout", "stderr"]
) -> ChildRun:
    """Run ``argv``, capturing one stream (the other is dropped or inherited), and time it.

    The clock starts before the fork and stops when ``wait4`` reaps the child, so the
    figure includes interpreter start-up and teardown, as an operator would see them.
    """
    started = perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, text=True,
        stdout=subprocess.PIPE if capture == "stdout" else subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture == "stderr" else None,
    )  # fmt: skip
    stream = process.stdout if capture == "stdout" else process.stderr
    assert stream is not None
    try:
        output = stream.read()
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()  # interrupted (Ctrl-C): never leave the child behind
        process.wait(timeout=30)
        raise
    wall = perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        wall_s=wall,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        cpu_s=usage.ru_utime + usage.ru_stime,
        exit_code=process.returncode,
        output=output,
    )


def _bare(mode: str, spec: dict[str, object], key: str) -> tuple[ChildRun, dict[str, object]]:
    """One run of ``bare_pipeline.py MODE SPEC``; its JSON line (empty if it failed)."""
    run = run_child(
        [sys.executable, str(BARE), mode, json.dumps(spec)],
        os.environ | {"BENCH_API_KEY": key},
        HERE,
        "stdout",
    )
    figures: dict[str, object] = {}
    if run.exit_code == 0:
        figures = json.loads(run.output.strip().splitlines()[-1])
    return run, figures


@dataclass
class BareRun:
    """The best of several runs of one bare mode.

    ``metric`` is what "best" means: ``"wall"``, the process's wall time, or the name of
    a figure the child printed (the floor times its push alone, so ``"push_s"``).
    """

    metric: str = "wall"
    values: list[float] = field(default_factory=list)  # the metric of every run
    best: ChildRun | None = None
    figures: dict[str, object] = field(default_factory=dict)  # of the best run
    min_read_s: float = float("inf")  # the CSV read alone, best over all runs
    failure: str | None = None

    def add(self, run: ChildRun, figures: dict[str, object]) -> None:
        """Keep ``run`` if it is the best so far; note a failure."""
        if run.exit_code != 0:
            self.failure = self.failure or f"bare_pipeline exited with {run.exit_code}"
            self.values.append(float("inf"))
            return
        value = run.wall_s if self.metric == "wall" else _seconds(figures, self.metric)
        self.values.append(value)
        self.min_read_s = min(self.min_read_s, _seconds(figures, "read_s"))
        if self.best is None or value < self.value:
            self.best, self.figures = run, figures

    @property
    def value(self) -> float:
        """The best value of the metric (infinite when every run failed)."""
        if self.best is None:
            return float("inf")
        return self.best.wall_s if self.metric == "wall" else _seconds(self.figures, self.metric)

    def phases_s(self, names: Iterable[str]) -> float:
        """The sum of the best run's figures ``names``: its work without its process's
        start and exit (infinite when every run failed)."""
        if self.best is None:
            return float("inf")
        return sum(_seconds(self.figures, name) for name in names)

    def count(self, name: str) -> int:
        """A count the best run printed (``differences``, ``inserts``, ...); -1 if none."""
        value = self.figures.get(name, -1)
        return value if isinstance(value, int) else -1


def bare_diff(spec: dict[str, object], key: str, runs: int) -> BareRun:
    """The no-change reference, best of ``runs``; every run must count the same."""
    result = BareRun()
    for _ in range(runs):
        run, figures = _bare("diff", spec, key)
        if result.figures and figures and figures["differences"] != result.count("differences"):
            result.failure = "the bare diff counted differently from one run to the next"
        result.add(run, figures)
    return result


def apply_floor(
    spec: dict[str, object], start_emulator: Callable[[], EmulatorChild], runs: int
) -> BareRun:
    """The initial-sync floor, best of ``runs``, each into a fresh, empty emulator."""
    result = BareRun(metric="push_s")
    for _ in range(runs):
        emulator = start_emulator()
        try:
            run, figures = _bare("push", spec | {"url": emulator.url}, emulator.key)
            stored = emulator.stats().get("users")
        finally:
            emulator.close()
        if run.exit_code == 0 and stored != figures["inserts"]:
            result.failure = f"the emulator holds {stored} users after pushing {figures['inserts']}"
        result.add(run, figures)
    return result


def _seconds(figures: dict[str, object], name: str) -> float:
    value = figures[name]
    assert isinstance(value, int | float), f"{name} is not a number: {value!r}"
    return float(value)


def describe(label: str, users: int, bare: BareRun, phases: tuple[str, ...]) -> str:
    """One line of output for a reference, like the lines printed for syncd's runs."""
    values = " ".join(f"{value:.2f}" for value in bare.values)
    if bare.best is None:
        return f"{users:>9,} {label:<10} FAILED ({bare.failure}); runs {values}"
    figures = "  ".join(f"{name} {_seconds(bare.figures, name):.2f}" for name in phases)
    counts = {
        name: bare.figures[name]
        for name in ("inserts", "updates", "removals", "differences", "batches")
        if name in bare.figures
    }
    if bare.metric == "wall":  # the rest: interpreter start-up, imports, teardown
        rest = bare.best.wall_s - sum(_seconds(bare.figures, name) for name in phases)
        figures += f"  rest {rest:.2f}"
        process = ""
    else:
        process = f"process wall {bare.best.wall_s:.2f} s  "
    return (
        f"{users:>9,} {label:<10} {bare.metric} {bare.value:7.2f} s  (best of {values})  "
        f"{process}peak RSS {bare.best.peak_rss_mb:.0f} MB  CPU {bare.best.cpu_s:.2f} s  "
        f"{figures}  {counts}"
    )
