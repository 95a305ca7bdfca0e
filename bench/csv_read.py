"""Benchmark: reading a CSV export into the desired users: row by row, whole or in two
parts at once, and by columns (Arrow), here or in two parts.

    python bench/csv_read.py --users 1000000 --rounds 3

Each variant runs in a fresh child interpreter, alternately, best of ``--rounds`` by
wall time: the bare read of the same-run references (``bench/bare_pipeline.py``:
``csv.reader`` into a dict, collector off), syncd's CSV source read whole and merged
(:class:`~syncd.merge.DesiredUsersBuilder`) row by row, the same read in two parts (the
second by a forked child: ``syncd/sources/csv/parts.py``), and the plain file read by
columns (``syncd/sources/csv/arrow.py``): here, and in two parts with the child reading
its part by columns; ``default`` is the read syncd chooses by its own limits (by
columns in two parts from 16 MB, in two parts row by row below). CPU time counts the
forked child too; peak RSS is the reading process's (and, apart, its child's). The users
of every one of syncd's reads are checked to be the same (a digest of every user and
problem).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
VARIANTS = ("bare", "whole", "parts", "columns", "columns-parts", "default")
# Each syncd variant: (parts_min_bytes, columns_min_bytes, columns_in_parts_min_bytes)
# of the CSV source.
_LIMITS = {
    "whole": (1 << 62, 1 << 62, 1 << 62),
    "parts": (0, 1 << 62, 1 << 62),
    "columns": (1 << 62, 0, 0),
    "columns-parts": (0, 0, 0),
    "default": None,  # syncd's own limits: the read `syncd apply` makes of this file
}


def child(variant: str, csv_path: Path) -> dict[str, object]:
    """Run one variant in this process; its figures."""
    started = time.perf_counter()
    digest = ""
    if variant == "bare":
        sys.path.insert(0, str(HERE))
        # Each variant imports only what it runs, like the process it stands for.
        import gc  # noqa: PLC0415

        from bare_pipeline import Spec, read_csv  # noqa: PLC0415

        gc.disable()
        count = len(read_csv(Spec(csv=str(csv_path), url="http://unused")))
        wall = time.perf_counter() - started
    else:
        from syncd.merge import DesiredUsersBuilder  # noqa: PLC0415
        from syncd.sources.csv import CsvSource, CsvSourceConfig  # noqa: PLC0415

        config = CsvSourceConfig(
            type="csv",
            path=csv_path,
            id_column="email",
            tags={"department": "Department", "country": "Country"},
            active_from_column="start_date",
            active_to_column="end_date",
            enabled_column="enabled",
        )
        limits = _LIMITS[variant]
        if limits is None:
            source = CsvSource(config, lowercase=True)
        else:
            parts_min, columns_min, columns_in_parts_min = limits
            source = CsvSource(
                config,
                lowercase=True,
                parts_min_bytes=parts_min,
                columns_min_bytes=columns_min,
                columns_in_parts_min_bytes=columns_in_parts_min,
            )
        builder = DesiredUsersBuilder()
        builder.begin_source(config.label)
        builder.add_all(source.read())
        builder.end_source()
        desired = builder.build()
        count = len(desired.users)
        wall = time.perf_counter() - started
        hashed = hashlib.sha256()
        for user in desired.users.values():
            hashed.update(repr(user).encode())
        for problem in desired.problems:
            hashed.update(repr(problem).encode())
        digest = hashed.hexdigest()[:16]  # after the clock stopped
    own = resource.getrusage(resource.RUSAGE_SELF)
    forked = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "variant": variant,
        "wall_s": wall,
        "cpu_s": own.ru_utime + own.ru_stime + forked.ru_utime + forked.ru_stime,
        "rss_mb": own.ru_maxrss / 1024,
        "child_rss_mb": forked.ru_maxrss / 1024,
        "users": count,
        "digest": digest,
    }


def main() -> int:
    """Alternate the variants, print each run and the best of each with its ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    csv_path = args.workdir / f"users-{args.users}.csv"
    if not csv_path.exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(HERE / "gen_csv.py"), "--users", str(args.users),
             "--out", str(csv_path), "--seed", "1", "--as-of", "2026-11-01"],
            check=True,
        )  # fmt: skip
    runs: dict[str, list[dict[str, object]]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            output = subprocess.run(
                [sys.executable, __file__, "--child", variant, str(csv_path)],
                check=True, capture_output=True, text=True, env=os.environ,
            ).stdout  # fmt: skip
            figures = json.loads(output.splitlines()[-1])  # after any log line
            runs[variant].append(figures)
            print(
                f"{variant:<13} wall {figures['wall_s']:6.2f} s  CPU {figures['cpu_s']:6.2f} s  "
                f"peak RSS {figures['rss_mb']:5.0f} MB (child {figures['child_rss_mb']:.0f} MB)  "
                f"users {figures['users']}",
                flush=True,
            )
    walls = {
        variant: min(float(str(run["wall_s"])) for run in runs[variant]) for variant in VARIANTS
    }
    cpus = {variant: min(float(str(run["cpu_s"])) for run in runs[variant]) for variant in VARIANTS}
    print()
    for variant in VARIANTS:
        print(
            f"best {variant:<13} wall {walls[variant]:6.2f} s = "
            f"{walls[variant] / walls['bare']:.2f}x the bare read; CPU {cpus[variant]:6.2f} s"
        )
    digests = {run["digest"] for variant in _LIMITS for run in runs[variant]}
    if len(digests) != 1:
        print(f"FAILED: the reads gave different users: {sorted(map(str, digests))}")
        return 1
    print(f"every syncd read gave the same users and problems (digest {digests.pop()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
