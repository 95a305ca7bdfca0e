"""Benchmark: how long the ``syncd`` command takes to start, against a bare interpreter.

    python bench/startup_bench.py [--runs 7] [--compare OTHER_TREE]

Each command runs as a fresh process (``python -m syncd ...`` with the same interpreter
as the reference); the best of ``--runs`` wall times is kept, so the figures are the
cost of the code, not of the machine's noise. The references, measured in the same run,
are the bare interpreter (``python -c pass``) and the floors a typer app cannot go
below: ``import typer`` + building and printing the help of a two-command app, running
one of its subcommands (typer coerces every option, ``--help`` included, with a pydantic
``TypeAdapter``, so any subcommand loads pydantic), and printing a subcommand's help
(both: pydantic, and rich's markdown and traceback modules for the help).

The plan / apply path is timed twice: ``import syncd.cli_sync`` (what ``plan`` and
``apply`` import before they read anything) and a whole ``syncd plan`` of a one-user
CSV against a refused port on 127.0.0.1 (``max_retries: 0``: it fails at once, so the
figure is start-up, config, the CSV read and one refused connection).

``--compare DIR`` times every syncd command against a second source tree as well (a
copy of the repository with the files of a change reverted, for a before/after in the
same run); the trees are run alternately, so load on the machine hits both alike.

The goal of ``syncd --help`` is at most 0.2 s over the bare interpreter.
"""

from __future__ import annotations

import argparse
import compileall
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_OVER_BARE_S = 0.2
REPOSITORY = Path(__file__).resolve().parent.parent


def byte_compile(tree: Path = REPOSITORY) -> None:
    """Write the ``.pyc`` files of ``tree``'s ``syncd`` package, as ``pip install`` does.

    An editable checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (or from a read-only
    tree) would otherwise compile every module of syncd's on every start, which no
    installed syncd does (50-100 ms of every command here).
    """
    compileall.compile_dir(tree / "syncd", quiet=1)


TYPER_APP = """
import typer
app = typer.Typer(add_completion=False)
@app.command()
def one(x: int = 1) -> None: "One."
@app.command()
def two(x: int = 1) -> None: "Two."
"""
TYPER_HELP = TYPER_APP + 'app(args=["--help"])\n'
TYPER_SUBCOMMAND = TYPER_APP + 'app(args=["one", "--x", "2"])\n'
TYPER_SUBCOMMAND_HELP = TYPER_APP + 'app(args=["one", "--help"])\n'

CONFIG = """
jobs:
  - name: bench
    target: {{base_url: "http://127.0.0.1:9", api_key: bench-key, max_retries: 0,
              timeout_s: 2}}
    sources:
      - {{type: csv, path: {csv}, id_column: email}}
"""

REFERENCES = (
    "python -c pass (reference)",
    "typer app --help (floor)",
    "typer subcommand (floor)",
    "typer subcommand --help",
)


def best_wall(argv: list[str], runs: int, env: dict[str, str], cwd: Path) -> float:
    """The fastest of ``runs`` wall times of ``argv`` as a new process, in seconds."""
    best = float("inf")
    for _ in range(runs):
        best = min(best, wall(argv, env, cwd))
    return best


def wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """The wall time of one run of ``argv`` as a new process, in seconds."""
    started = time.perf_counter()
    subprocess.run(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - started


def tree_env(base: dict[str, str], tree: Path) -> dict[str, str]:
    """The environment that makes ``python -m syncd`` import syncd from ``tree``.

    The editable install's finder comes after ``sys.path``, so a tree on PYTHONPATH
    (and the working directory) wins over the installed one.
    """
    return {**base, "PYTHONPATH": str(tree)}


def syncd_commands(python: str, config: Path) -> dict[str, list[str]]:
    """The syncd commands to time, by name."""
    syncd = [python, "-m", "syncd"]
    return {
        "syncd --help": [*syncd, "--help"],
        "syncd version": [*syncd, "version"],
        "syncd plan --help": [*syncd, "plan", "--help"],
        "syncd report --help": [*syncd, "report", "activation", "--help"],
        "syncd check-config": [*syncd, "check-config", "-c", str(config)],
        "import syncd.cli_sync": [python, "-c", "import syncd.cli_sync"],
        "syncd plan (refused port)": [*syncd, "plan", "-c", str(config)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (best kept)")
    parser.add_argument(
        "--compare", type=Path, help="a second source tree to time the syncd commands with"
    )
    args = parser.parse_args()
    python = sys.executable
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("SYNCD_CONFIG", None)
    trees = {"this": REPOSITORY}
    if args.compare is not None:
        trees["other"] = args.compare.resolve()
    for tree in trees.values():
        byte_compile(tree)
    with tempfile.TemporaryDirectory() as folder:
        users = Path(folder, "users.csv")
        users.write_text("email\nada@example.com\n", encoding="utf-8")
        config = Path(folder, "syncd.yaml")
        config.write_text(CONFIG.format(csv=users), encoding="utf-8")
        references = {
            REFERENCES[0]: [python, "-c", "pass"],
            REFERENCES[1]: [python, "-c", TYPER_HELP],
            REFERENCES[2]: [python, "-c", TYPER_SUBCOMMAND],
            REFERENCES[3]: [python, "-c", TYPER_SUBCOMMAND_HELP],
        }
        walls = {
            name: best_wall(argv, args.runs, env, REPOSITORY) for name, argv in references.items()
        }
        tree_walls: dict[str, dict[str, float]] = {tree: {} for tree in trees}
        for name, argv in syncd_commands(python, config).items():
            best = dict.fromkeys(trees, float("inf"))
            for _ in range(args.runs):  # alternately, so both trees see the same load
                for tree, path in trees.items():
                    best[tree] = min(best[tree], wall(argv, tree_env(env, path), path))
            for tree in trees:
                tree_walls[tree][name] = best[tree]
    bare = walls[REFERENCES[0]]
    print(f"best of {args.runs} runs per command, {os.cpu_count()} CPUs")
    header = f"{'command':<30} {'wall s':>8} {'over bare s':>12}"
    if "other" in trees:
        header += f" {'other tree s':>13} {'other over bare':>16}"
    print(header)
    for name, value in walls.items():
        print(f"{name:<30} {value:>8.3f} {value - bare:>12.3f}")
    for name, value in tree_walls["this"].items():
        line = f"{name:<30} {value:>8.3f} {value - bare:>12.3f}"
        if "other" in trees:
            other = tree_walls["other"][name]
            line += f" {other:>13.3f} {other - bare:>16.3f}"
        print(line)
    over = tree_walls["this"]["syncd --help"] - bare
    verdict = "meets" if over <= GOAL_OVER_BARE_S else "misses"
    print(
        f"syncd --help: {over:.3f} s over the bare interpreter ({verdict} the goal of "
        f"{GOAL_OVER_BARE_S} s)"
    )


if __name__ == "__main__":
    main()
