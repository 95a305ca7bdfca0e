"""How long the audit log takes to record a first sync: N confirmed inserts in one run.

    python bench/state_audit.py --users 1000000

Builds the plan and the confirmed outcome in memory (names in random order, as a
directory returns them), then times what the runner adds to a run's record: building
the audit batches and ``record_run`` writing them with the run, against a run without
changes. Also times a lookup of one user and pruning everything.

Then the path an applying run takes while it writes: batches of 500 confirmed four at
a time out of order (as four workers answer), each noting its span as the platform
client does, and the audit journal's batches appended every 50,000 users through the
store's appender. It prints the CPU time of that journal + appends, and, for the
reference, of the same with no spans (every change found by name).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from syncd.audit import AUDIT_CHUNK, AuditJournal, audit_batches
from syncd.model import PlatformUser, make_tags
from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import Operation
from syncd.ports import ConfirmedSpan, RunRecord, WriteOutcome
from syncd.state import SqliteStateStore

BATCH = 500
WORKERS = 4


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


def measure_journal(count: int, *, spans: bool) -> float:
    """CPU seconds of the journal and its appends for ``count`` confirmed inserts."""
    tags = [make_tags({"department": f"D{i}", "region": "EU"}) for i in range(50)]
    users = [
        PlatformUser(f"user{i:07d}@example.com", tags[i % 50], date(2026, 1, 1))
        for i in range(count)
    ]
    plan = Plan(inserts=tuple(Change(ChangeKind.INSERT, u, None, "new") for u in users))
    names = [u.end_user for u in users]
    outcome = WriteOutcome(Operation.INSERT, count)
    # Batches in groups of four, the last of a group answered first.
    starts = [
        start
        for group in range(0, count, BATCH * WORKERS)
        for start in reversed(range(group, min(group + BATCH * WORKERS, count), BATCH))
    ]
    now = datetime.now(UTC)
    cpu = 0.0
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStateStore(Path(folder))
        appender = store.start_run(RunRecord("r1", "corp", now, now, "running", {}))
        journal = AuditJournal(plan, run_id="r1", job="corp", identity=str)
        journal.follow(Operation.INSERT, outcome.confirmed, outcome.spans if spans else [])
        for number, start in enumerate(starts, start=1):
            batch = names[start : start + BATCH]
            if spans:
                outcome.spans.append(ConfirmedSpan(len(outcome.confirmed), start, len(batch)))
            outcome.confirmed.extend(batch)
            if len(journal) >= AUDIT_CHUNK or number == len(starts):
                clock = time.process_time()
                pending = journal.pending(now)
                appender.append(journal.batches(pending))
                journal.written(pending)
                cpu += time.process_time() - clock
        appender.close()
        assert len(store.audit([names[-1]])) == 1
    return cpu


def main() -> None:
    """Parse the sizes and measure each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    for count in parser.parse_args().users:
        measure(count)
        by_span = measure_journal(count, spans=True)
        by_name = measure_journal(count, spans=False)
        print(
            f"{count:>9} inserts audited while written: journal + appends {by_span:.2f} s CPU "
            f"(found by name instead: {by_name:.2f} s)"
        )


if __name__ == "__main__":
    main()
