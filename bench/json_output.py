"""Benchmark: encoding the ``--output json`` document, orjson against msgspec.

    python bench/json_output.py --changes 1000000

Builds the document ``syncd apply --output json`` prints for N inserted users (the
same dict shape as ``syncd.render.result_to_json``) and times the indented encoding
with each library, best of 3. It decides whether orjson earns its place as a second
JSON library next to msgspec.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson


def document(changes: int) -> dict[str, Any]:
    """A plan document shaped like syncd's JSON output."""
    tag_sets = [{"department": f"dept{d}", "country": c} for d in range(8) for c in ("DE", "US")]
    rows = [
        {
            "kind": "insert",
            "end_user": f"user{i:07d}@example.com",
            "reason": "in the source, not on the platform",
            "user": {
                "end_user": f"user{i:07d}@example.com",
                "tags": tag_sets[i % len(tag_sets)],
                "active_from": "2026-01-01",
            },
            "fields": [{"field": "active_from", "before": None, "after": "2026-01-01"}],
        }
        for i in range(changes)
    ]
    return {"jobs": [{"job": "bench", "held": False, "changes": rows}]}


def best_of(runs: int, encode: Callable[[], bytes]) -> tuple[float, int]:
    best = float("inf")
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        size = len(encode())
        best = min(best, time.perf_counter() - started)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    args = parser.parse_args()
    data = document(args.changes)
    orjson_s, orjson_size = best_of(3, lambda: orjson.dumps(data, option=orjson.OPT_INDENT_2))
    msgspec_s, msgspec_size = best_of(
        3, lambda: msgspec.json.format(msgspec.json.encode(data), indent=2)
    )
    compact_s, _ = best_of(3, lambda: msgspec.json.encode(data))
    print(f"{args.changes:,} changes")
    print(f"  orjson  indent 2     {orjson_s:6.2f} s  {orjson_size / 1e6:6.0f} MB")
    print(f"  msgspec encode+format {msgspec_s:6.2f} s  {msgspec_size / 1e6:6.0f} MB")
    print(f"  msgspec compact      {compact_s:6.2f} s")
    print(f"  ratio msgspec/orjson (indented): {msgspec_s / orjson_s:.2f}x")


if __name__ == "__main__":
    main()
