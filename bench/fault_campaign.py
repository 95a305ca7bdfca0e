"""Fault campaign: random churn and platform faults against the emulator, invariants
checked after every run.

    python bench/fault_campaign.py --schedules 1000 --seed 1
    python bench/fault_campaign.py --replay 1:417          # one schedule, with its log

A *schedule* is a small random directory (a CSV) and an emulated platform, then one to
three runs of ``apply``, each after random churn (joiners, leavers, department changes,
returners) and under random platform faults:

* 5xx bursts (some longer than the retries), seeded random 503s, 429 with Retry-After;
* 413 (the platform's batch limit lowered under the client's batch size);
* timeouts before the write was applied and *after* it was applied;
* connection resets before and after the write was applied;
* partial success (users left out of an answer), permanent errors (400, 404, 405);
* the ``syncd apply`` process killed with SIGKILL in the middle of its writes.

Then the faults are cleared and fault-free runs follow. Invariants, checked after
every run (the checks are in ``bench/campaign_checks.py``):

1. no wrongful removal: nobody present and enabled in the source, and active on the
   platform before the run, is ended or deleted by it (and no plan ends or deletes one);
2. the report tells the truth: no user reported as applied that the platform does not
   hold as written, none reported as failed that it does hold; once the platform was
   re-read (or nothing was in doubt), no user is left "may have been applied"; an
   ``applied`` run holds its whole plan, a ``failed`` or ``partial`` one does not
   (unless its re-read failed);
3. the audit rows of the run are exactly the users the platform confirmed to it;
4. at most 2 fault-free runs converge to the desired state (every source user present
   with its tags and no end date, every other user ended or deleted);
5. the converged state then makes zero writes.

Faults are counted twice: the runs each kind was set up for, and the runs in which it
fired (the emulator's ``fired_faults()``); a fault set on an operation the run never
calls does not fire.

Everything random comes from the seed: a schedule's seed is ``SEED:INDEX``, printed
with every violation, and ``--replay SEED:INDEX`` runs that schedule alone. (Which of
several concurrent batches meets a fault is up to thread timing; the schedule is not.)
The emulator and the in-process runs share this process; a killed run is a real
``python -m syncd apply`` subprocess, stopped by its process group.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from syncd.config import parse_config
from syncd.emulator import EndpointFaults, PlatformEmulator
from syncd.guard import Override
from syncd.platform.api import Operation, WireUser
from syncd.platform.client import PlatformClient
from syncd.runner import RunStatus
from syncd.service import JobReport, JobResources, run_job
from syncd.sources import SourceContext, build_source
from syncd.state import SqliteStateStore

# Run as a script, bench/ is on the path already; loaded from a file (the tests), not.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from campaign_checks import (
    FIRED_BY_KIND,
    Directory,
    Problem,
    audit_lies,
    report_lies,
    wrongful_removals,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-campaign-not-a-secret-7c1d"
TODAY = date(2026, 11, 22)
WRITES = (Operation.INSERT, Operation.UPDATE, Operation.DELETE)

# The client's timeout, and how long a stall fault holds a call (longer, so it times out).
TIMEOUT_S = 0.2
STALL_S = 0.45
# How long the requests of a SIGKILLed apply may still take to land (5x their latency).
KILLED_REQUESTS_LAND_S = 0.3

CONFIG = """
state_dir: ./state
log: {{format: json, level: error}}
jobs:
  - name: campaign
    target:
      base_url: ${{CAMPAIGN_URL}}
      api_key: ${{CAMPAIGN_KEY}}
      batch_size: {batch_size}
      concurrency: {concurrency}
      max_retries: 2
      timeout_s: {timeout}
    sources:
      - {{type: csv, path: users.csv, id_column: email, tags: {{department: Department}}}}
    policy: {{on_missing: {on_missing}}}
    guard: {{max_removals: null, max_removal_ratio: null}}
"""

FAULT_KINDS = (
    "5xx_burst",
    "random_5xx",
    "429",
    "413",
    "timeout_before",
    "timeout_after",
    "reset_before",
    "reset_after",
    "partial",
    "permanent",
    "kill",
)


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with the schedule that broke it (replayable)."""

    schedule: str
    run: int
    invariant: str
    detail: str

    def __str__(self) -> str:
        return (
            f"schedule {self.schedule} run {self.run}: {self.invariant}: {self.detail}\n"
            f"  replay: python bench/fault_campaign.py --replay {self.schedule}"
        )


@dataclass
class Totals:
    """What a campaign did."""

    schedules: int = 0
    runs: int = 0
    faulty_runs: int = 0
    fault_free_runs: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    """Runs each kind of fault was set up for."""
    faults_fired: Counter[str] = field(default_factory=Counter)
    """Of those, runs in which the fault fired at least once (the emulator's counters):
    a fault set on an operation the run does not call, or after the writes it would
    have hit, never fires."""
    statuses: Counter[str] = field(default_factory=Counter)
    settled_applied: int = 0
    """Users a re-read found applied although no answer had confirmed them."""
    converged_after: Counter[int] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures, for ``--json`` and the tests."""
        return {
            "schedules": self.schedules,
            "runs": self.runs,
            "faulty_runs": self.faulty_runs,
            "fault_free_runs": self.fault_free_runs,
            "faults": dict(sorted(self.faults.items())),
            "faults_fired": {kind: self.faults_fired[kind] for kind in sorted(self.faults)},
            "statuses": dict(sorted(self.statuses.items())),
            "settled_applied": self.settled_applied,
            "converged_after_runs": {str(k): v for k, v in sorted(self.converged_after.items())},
            "violations": len(self.violations),
            "wall_s": round(self.wall_s, 1),
        }


# ---------------------------------------------------------------------- a schedule


class Schedule:
    """One seeded schedule: runs under faults, then fault-free runs, all checked."""

    def __init__(self, name: str, workdir: Path, totals: Totals, *, allow_kill: bool) -> None:
        self.name = name
        self.rng = random.Random(name)
        self.workdir = workdir
        self.totals = totals
        self.allow_kill = allow_kill
        self.run_index = 0
        rng = self.rng
        self.batch_size = rng.randint(2, 6)
        self.concurrency = rng.choice((1, 1, 2, 4))
        self.on_missing = rng.choice(("end_date", "end_date", "delete"))
        self.directory = Directory(rng, workdir / "users.csv", self.on_missing)
        text = CONFIG.format(
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            timeout=TIMEOUT_S,
            on_missing=self.on_missing,
        )
        (workdir / "config.yaml").write_text(text, encoding="utf-8")
        self.config_text = text

    def violation(self, invariant: str, detail: str) -> None:
        self.totals.violations.append(Violation(self.name, self.run_index, invariant, detail))

    def execute(self) -> None:
        """Run the schedule; violations go into the totals."""
        rng = self.rng
        seed = rng.randrange(2**31)
        with PlatformEmulator(api_key=KEY, seed=seed) as emulator:
            self.emulator = emulator
            self.config = parse_config(
                self.config_text,
                origin=str(self.workdir / "config.yaml"),
                base_dir=self.workdir,
                environ={"CAMPAIGN_URL": emulator.url, "CAMPAIGN_KEY": KEY},
            )
            self.directory.join(rng.randint(5, 30))
            self._seed_platform()
            for _ in range(rng.randint(1, 3)):
                if self.run_index:
                    self.directory.churn()
                self.directory.write()
                self._faulty_run()
            emulator.clear_faults()
            emulator.max_batch_size = 1000
            self._converge()
        self.totals.schedules += 1

    def _seed_platform(self) -> None:
        """Sometimes the project already holds users: some listed, some hand-made."""
        rng = self.rng
        if rng.random() < 0.6:
            return
        seeded: list[WireUser] = []
        for name in rng.sample(sorted(self.directory.users), rng.randint(0, 3)):
            seeded.append(WireUser(name, {"department": "Old"}, "2025-01-01"))
        for index in range(rng.randint(0, 3)):
            name = f"handmade{index}@example.com"
            self.directory.ever.add(name)
            seeded.append(WireUser(name, {}, "2025-01-01"))
        self.emulator.seed_users(seeded)

    # ------------------------------------------------------------------ faults

    def _inject(self) -> list[str]:
        """Set 1-3 random faults on the emulator; returns their kinds ("kill": the run
        is killed)."""
        rng, emulator = self.rng, self.emulator
        kinds = rng.sample(FAULT_KINDS[:-1], rng.randint(1, 3))
        if self.allow_kill and self.run_index == 1:
            # A schedule allowed a kill gets it in its first run, on top of its faults.
            kinds.append("kill")
        faults: dict[Operation, EndpointFaults] = {}

        def on(operation: Operation) -> EndpointFaults:
            return faults.setdefault(operation, EndpointFaults(stall_s=STALL_S))

        for kind in kinds:
            self.totals.faults[kind] += 1
            operation = rng.choice(WRITES)
            if kind == "5xx_burst":
                target = rng.choice((*WRITES, Operation.LIST))
                on(target).fail_next = rng.randint(1, 4)  # 3 attempts: 4 exhausts them
            elif kind == "random_5xx":
                on(operation).error_rate = 0.25
            elif kind == "429":
                on(operation).throttle_next = rng.randint(1, 3)
                on(operation).retry_after_s = rng.choice((0.01, 0.02, 0.05))
            elif kind == "413":
                emulator.max_batch_size = rng.randint(1, max(1, self.batch_size - 1))
            elif kind == "timeout_before":
                on(operation).stall_next = rng.randint(1, 3)
            elif kind == "timeout_after":
                on(operation).stall_after_apply_next = rng.randint(1, 3)
            elif kind == "reset_before":
                on(operation).drop_next = rng.randint(1, 3)
            elif kind == "reset_after":
                on(operation).drop_after_apply_next = rng.randint(1, 3)
            elif kind == "partial":
                pool = sorted(self.directory.users)
                picked = rng.sample(pool, min(len(pool), rng.randint(1, 3)))
                on(operation).refuse_users = frozenset(picked)
            elif kind == "permanent":
                on(operation).status_next = 1
                on(operation).status_code = rng.choice((400, 404, 405))
        for operation, set_faults in faults.items():
            emulator.set_faults(operation, set_faults)
        return kinds

    # -------------------------------------------------------------------- runs

    def _faulty_run(self) -> None:
        self.run_index += 1
        self.totals.runs += 1
        self.totals.faulty_runs += 1
        before = self.emulator.users()
        source = dict(self.directory.users)
        fired_before = self.emulator.fired_faults()
        kinds = self._inject()
        report: JobReport | None = None
        if "kill" in kinds:
            if self._killed_apply():
                self.totals.faults_fired["kill"] += 1
            self.totals.statuses["killed"] += 1
        else:
            report = self._apply()
        fired = self.emulator.fired_faults()
        for kind in kinds:
            counter = FIRED_BY_KIND.get(kind)
            if counter is not None and fired.get(counter, 0) > fired_before.get(counter, 0):
                self.totals.faults_fired[kind] += 1
        self._check_run(source, before, report)

    def _converge(self) -> None:
        for attempt in (1, 2):
            self.run_index += 1
            self.totals.runs += 1
            self.totals.fault_free_runs += 1
            before = self.emulator.users()
            report = self._apply()
            after = self._check_run(dict(self.directory.users), before, report)
            if not self.directory.convergence_problems(after):
                self.totals.converged_after[attempt] += 1
                break
        else:
            problems = self.directory.convergence_problems(self.emulator.users())
            self.violation("not converged after 2 fault-free runs", "; ".join(problems[:5]))
            return
        # Converged: one more run must plan nothing and write nothing.
        self.run_index += 1
        self.totals.runs += 1
        self.totals.fault_free_runs += 1
        writes_before = self._write_calls()
        report = self._apply()
        if self._write_calls() != writes_before or report.write_calls:
            self.violation(
                "converged state wrote", f"{report.write_calls} write calls, {report.counts}"
            )
        if report.status is not RunStatus.APPLIED:
            self.violation("converged run not applied", f"{report.status}: {report.error}")

    def _write_calls(self) -> int:
        calls = self.emulator.calls()
        return sum(calls[operation.value] for operation in WRITES)

    def _apply(self) -> JobReport:
        """One ``apply`` in this process, with a fast-retrying client."""
        job = self.config.jobs[0]
        client = PlatformClient(
            base_url=self.emulator.url,
            api_key=SecretStr(KEY),
            flavour=job.target.api,
            batch_size=job.target.batch_size,
            timeout_s=job.target.timeout_s,
            max_retries=job.target.max_retries,
            concurrency=job.target.concurrency,
            backoff_base_s=0.002,
            backoff_max_s=0.01,
            max_retry_after_s=0.1,
        )
        source = build_source(job.sources[0], SourceContext(lowercase=job.identity.lowercase))
        resources = JobResources(
            job,
            platform=client,
            sources=[source],
            state=SqliteStateStore(self.config.state_dir),
            close=client.close,
        )
        with resources:
            report = run_job(
                self.config,
                job,
                apply=True,
                override=Override(force=True),
                resources=resources,
                today=lambda: TODAY,
            )
        self.totals.statuses[report.status.value] += 1
        settlement = getattr(report.result, "settlement", None)
        if settlement is not None:
            self.totals.settled_applied += settlement.applied
        return report

    def _killed_apply(self) -> bool:
        """``syncd apply`` in a subprocess, SIGKILLed once it has made a few writes;
        True if it was killed (False: it ended first)."""
        for operation in WRITES:
            # Slow writes, so that the kill lands in the middle of them.
            current = self.emulator.faults(operation)
            current.latency_ms = 60
            self.emulator.set_faults(operation, current)
        env = {
            **os.environ,
            "CAMPAIGN_URL": self.emulator.url,
            "CAMPAIGN_KEY": KEY,
            "NO_COLOR": "1",
        }
        writes_at_start = self._write_calls()
        kill_after = self.rng.randint(1, 3)
        process = subprocess.Popen(
            [sys.executable, "-m", "syncd", "apply", "-c", "config.yaml", "--force"],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while process.poll() is None and time.monotonic() < deadline:
                if self._write_calls() - writes_at_start >= kill_after:
                    break
                time.sleep(0.005)
        finally:
            killed = process.poll() is None
            if killed:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        # A request the killed process had sent still lands, after the 60 ms latency:
        # let it, before the next run lists the platform (else it lands in the middle
        # of the next runs, a change nobody made from their point of view).
        time.sleep(KILLED_REQUESTS_LAND_S)
        return killed

    # --------------------------------------------------------------- invariants

    def _check(self, problems: list[Problem]) -> None:
        for invariant, detail in problems:
            self.violation(invariant, detail)

    def _check_run(
        self,
        source: dict[str, str],
        before: dict[str, WireUser],
        report: JobReport | None,
    ) -> dict[str, WireUser]:
        """Every invariant of one run; returns the platform after it."""
        after = self.emulator.users()
        self._check(wrongful_removals(source, before, after, report))
        if report is not None:
            self._check(report_lies(report, after))
            audit = SqliteStateStore(self.config.state_dir).audit(self.directory.ever)
            self._check(audit_lies(report, audit))
        return after


# ------------------------------------------------------------------------ campaign


@contextmanager
def quiet_logs(verbose: bool) -> Iterator[None]:
    """Silence structlog for the campaign (thousands of runs), restoring it after."""
    previous = structlog.get_config()
    level = logging.INFO if verbose else logging.CRITICAL
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    try:
        yield
    finally:
        structlog.configure(**previous)


def run_campaign(
    seed: int,
    schedules: int,
    *,
    kill_every: int = 20,
    only: int | None = None,
    verbose: bool = False,
    progress: Callable[[Totals], None] | None = None,
) -> Totals:
    """Run ``schedules`` seeded schedules (or schedule ``only``); return the totals.

    Kills are allowed in every ``kill_every``-th schedule (a subprocess costs about a
    second; 0 turns them off).
    """
    totals = Totals()
    started = time.perf_counter()
    indexes = [only] if only is not None else list(range(schedules))
    # On tmpfs when there is one: a run commits to SQLite a few times, and fsyncs on a
    # disk would be most of a schedule's time.
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 -- mkdtemp in it
    with (
        quiet_logs(verbose),
        tempfile.TemporaryDirectory(prefix="syncd-campaign-", dir=scratch) as tmp,
    ):
        for index in indexes:
            workdir = Path(tmp) / f"s{index}"
            workdir.mkdir()
            allow_kill = kill_every > 0 and index % kill_every == kill_every - 1
            if only is not None:
                allow_kill = kill_every > 0
            schedule = Schedule(f"{seed}:{index}", workdir, totals, allow_kill=allow_kill)
            try:
                schedule.execute()
            except Exception as error:  # a crash is a violation too, with its seed
                schedule.violation("crashed", f"{type(error).__name__}: {error}")
            if progress is not None:
                progress(totals)
    totals.wall_s = time.perf_counter() - started
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every", type=int, default=20, help="0: no SIGKILL runs")
    parser.add_argument("--replay", metavar="SEED:INDEX", help="run one schedule, verbosely")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    args = parser.parse_args()
    if args.replay:
        seed_text, _, index_text = args.replay.partition(":")
        totals = run_campaign(
            int(seed_text), 1, kill_every=args.kill_every, only=int(index_text), verbose=True
        )
    else:

        def show(totals: Totals) -> None:
            if totals.schedules % 100 == 0:
                print(
                    f"  {totals.schedules} schedules, {totals.runs} runs, "
                    f"{len(totals.violations)} violations",
                    file=sys.stderr,
                    flush=True,
                )

        totals = run_campaign(args.seed, args.schedules, kill_every=args.kill_every, progress=show)
    for violation in totals.violations:
        print(violation)
    figures = totals.as_dict()
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"fault campaign seed {args.seed}: {figures['schedules']} schedules, "
            f"{figures['runs']} runs ({figures['faulty_runs']} under faults), "
            f"{figures['violations']} violations, {figures['wall_s']} s"
        )
        print(f"  faults set up (runs): {figures['faults']}")
        print(f"  faults fired (runs):  {figures['faults_fired']}")
        print(f"  run statuses:    {figures['statuses']}")
        print(f"  users found applied by the re-read: {figures['settled_applied']}")
        print(f"  converged after fault-free runs: {figures['converged_after_runs']}")
    return 1 if totals.violations else 0


if __name__ == "__main__":
    sys.exit(main())
