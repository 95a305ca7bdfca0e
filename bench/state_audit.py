"""How long the audit log takes to record a first sync: N confirmed inserts in one run.

    python bench/state_audit.py --users 1000000

Builds the plan and the confirmed outcome in memory (names in random order, as a
directory returns them), then times what the runner adds to a run's record: building
the audit batches and ``record_run`` writing them with the run, against a run without
changes. Also times a lookup of one user and pruning everything.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from syncd.audit import audit_batches
from syncd.model import PlatformUser, make_tags
from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import Operation
from syncd.ports import RunRecord, WriteOutcome
from syncd.state import SqliteStateStore


def measure(count: int) -> None:
    """Print the timings for ``count`` confirmed inserts."""
    tags = [make_tags({"department": f"D{i}", "region": "EU"}) for i in range(50)]
    numbers = list(range(count))
    random.Random(1).shuffle(numbers)
    users = [
        PlatformUser(f"user{i:07d}@example.com", tags[i % 50], date(2026, 1, 1)) for i in numbers
    ]
    plan = Plan(inserts=tuple(Change(ChangeKind.INSERT, u, None, "new") for u in users))
    outcome = WriteOutcome(Operation.INSERT, count, confirmed=[u.end_user for u in users])
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStateStore(Path(folder))
        store.ensure_writable()
        clock = time.perf_counter()
        store.record_run(RunRecord("r0", "corp", now, now, "applied", {}))
        empty = time.perf_counter() - clock
        clock = time.perf_counter()
        batches = audit_batches(
            plan,
            [outcome],
            run_id="r1",
            job="corp",
            confirmed_at={Operation.INSERT: now},
            identity=str,
        )
        store.record_run(RunRecord("r1", "corp", now, now, "applied", {}), batches)
        took = time.perf_counter() - clock
        size = (Path(folder) / "syncd.sqlite3").stat().st_size
        clock = time.perf_counter()
        found = store.audit([users[count // 2].end_user])
        lookup = time.perf_counter() - clock
        clock = time.perf_counter()
        pruned = store.prune(datetime.now(UTC))
        prune = time.perf_counter() - clock
    print(
        f"{count:>9} inserts: audit + record {took:6.2f} s (a run without changes "
        f"{empty * 1000:.0f} ms), database {size / 1e6:.0f} MB, one user's audit "
        f"{lookup * 1000:.1f} ms ({len(found)} entry), prune all {prune:.2f} s "
        f"({pruned} runs and entries)"
    )


def main() -> None:
    """Parse the sizes and measure each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    for count in parser.parse_args().users:
        measure(count)


if __name__ == "__main__":
    main()
