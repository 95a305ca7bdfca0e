"""Benchmark: how long the ``syncd`` command takes to start, against a bare interpreter.

    python bench/startup_bench.py [--runs 7]

Each command runs as a fresh process (``python -m syncd ...`` with the same interpreter
as the reference); the best of ``--runs`` wall times is kept, so the figures are the
cost of the code, not of the machine's noise. The reference, measured in the same run,
is the bare interpreter (``python -c pass``) and the floor a typer app cannot go below
(``import typer`` + building and printing the help of a two-command app). The goal of
``syncd --help`` is at most 0.2 s over the bare interpreter.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_OVER_BARE_S = 0.2

TYPER_FLOOR = """
import typer
app = typer.Typer(add_completion=False)
@app.command()
def one(x: int = 1) -> None: "One."
@app.command()
def two(x: int = 1) -> None: "Two."
app(args=["--help"])
"""

CONFIG = """
jobs:
  - name: bench
    target: {{base_url: "http://127.0.0.1:9", api_key: bench-key}}
    sources:
      - {{type: csv, path: {csv}, id_column: email}}
"""


def best_wall(argv: list[str], runs: int, env: dict[str, str]) -> float:
    """The fastest of ``runs`` wall times of ``argv`` as a new process, in seconds."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (best kept)")
    args = parser.parse_args()
    python = sys.executable
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("SYNCD_CONFIG", None)
    with tempfile.TemporaryDirectory() as folder:
        users = Path(folder, "users.csv")
        users.write_text("email\nada@example.com\n", encoding="utf-8")
        config = Path(folder, "syncd.yaml")
        config.write_text(CONFIG.format(csv=users), encoding="utf-8")
        commands = {
            "python -c pass (reference)": [python, "-c", "pass"],
            "typer app --help (floor)": [python, "-c", TYPER_FLOOR],
            "syncd --help": [python, "-m", "syncd", "--help"],
            "syncd version": [python, "-m", "syncd", "version"],
            "syncd plan --help": [python, "-m", "syncd", "plan", "--help"],
            "syncd check-config": [python, "-m", "syncd", "check-config", "-c", str(config)],
        }
        walls = {name: best_wall(argv, args.runs, env) for name, argv in commands.items()}
    bare = walls["python -c pass (reference)"]
    print(f"best of {args.runs} runs per command, {os.cpu_count()} CPUs")
    print(f"{'command':<30} {'wall s':>8} {'over bare s':>12}")
    for name, wall in walls.items():
        print(f"{name:<30} {wall:>8.3f} {wall - bare:>12.3f}")
    over = walls["syncd --help"] - bare
    verdict = "meets" if over <= GOAL_OVER_BARE_S else "misses"
    print(
        f"syncd --help: {over:.3f} s over the bare interpreter ({verdict} the goal of "
        f"{GOAL_OVER_BARE_S} s)"
    )


if __name__ == "__main__":
    main()
