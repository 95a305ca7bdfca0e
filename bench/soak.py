"""Soak test of the daemon: many cycles with churn, memory and convergence checked.

    python bench/soak.py --users 50000 --cycles 200

The emulator (seeded with ``--users`` users) and ``syncd run`` are separate processes.
Before each cycle the CSV is rewritten with random churn (joiners, leavers, department
changes), atomically so the daemon never reads half a file; the bench then waits for a
run that *started after* the rewrite, checks that the platform equals the source
(every source user present with its tags and no end date, every leaver end-dated), and
reads the daemon's RSS from /proc. It prints the RSS at cycle 10 and at the end, the run
durations (p50 / p95 / max, from /status) and whether every cycle converged.

Goal: RSS growth <= 10% from cycle 10 to the last.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from syncd.emulator.data import make_users

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
state_dir: {state}
log: {{format: json, level: warning}}
server: {{listen: "127.0.0.1:{port}"}}
jobs:
  - name: soak
    schedule: {{every: 1s}}
    target: {{base_url: "{url}", api_key: "${{SOAK_API_KEY}}", batch_size: 1000}}
    sources:
      - type: csv
        path: {csv}
        id_column: email
        tags: {{department: department, region: region}}
        active_from_column: start_date
    policy: {{on_missing: {leavers}}}
    # Every cycle's churn is legitimate: no limit may hold it, however long the soak.
    guard: {{max_removals: null, max_removal_ratio: null, max_removals_per_day: null,
             max_updates: null, max_destructive_updates: null,
             max_destructive_update_ratio: null}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def write_csv(path: Path, users: dict[str, tuple[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write("email,department,region,start_date\n")
        for email, (department, region) in users.items():
            out.write(f"{email},{department},{region},2026-01-01\n")
    tmp.replace(path)  # atomic: the daemon reads the old file or the new one


def churn(
    users: dict[str, tuple[str, str]], leavers: set[str], rng: random.Random, next_id: int
) -> int:
    """Joiners, leavers and department changes, about 0.1% of the users each."""
    size = max(1, len(users) // 1000)
    for email in rng.sample(sorted(users), size):
        del users[email]
        leavers.add(email)
    for email in rng.sample(sorted(users), size):
        region = users[email][1]
        users[email] = (rng.choice(["eng", "sales", "ops", "legal"]) + "-x", region)
    for _ in range(size):
        users[f"joiner{next_id:07d}@example.com"] = ("engineering", "emea")
        next_id += 1
    return next_id


def converged(
    platform: httpx.Client, users: dict[str, tuple[str, str]], leavers: set[str], *, deleted: bool
) -> str | None:
    """None if the platform equals the source, else what differs."""
    listed = platform.get("/api/external/platform-users").json()["users"]
    by_name = {user["end_user"]: user for user in listed}
    for email, (department, region) in users.items():
        user = by_name.get(email)
        if user is None:
            return f"{email} missing"
        if user.get("active_to") is not None:
            return f"{email} end-dated"
        if user["tags"] != {"department": department, "region": region}:
            return f"{email} has tags {user['tags']}"
    for email in leavers:
        if deleted and email in by_name:
            return f"leaver {email} not deleted"
        if not deleted and not by_name.get(email, {}).get("active_to"):
            return f"leaver {email} not end-dated"
    expected = len(users) + (0 if deleted else len(leavers))
    return None if len(by_name) == expected else f"{len(by_name)} users, expected {expected}"


def wait_run_after(
    status_url: str, after: datetime, process: subprocess.Popen[bytes], timeout_s: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited {process.returncode}")
        try:
            job = httpx.get(status_url, timeout=10).json()["jobs"][0]
        except httpx.TransportError:
            time.sleep(0.1)  # still starting
            continue
        last = job["last_run"]
        if last and datetime.fromisoformat(last["started_at"]) > after:
            return dict(last)
        time.sleep(0.05)
    raise RuntimeError("no cycle finished in time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--leavers",
        choices=["delete", "end_date"],
        default="delete",
        help="on_missing policy; delete keeps the platform's size constant, so any RSS "
        "growth is accumulation, not data (end_date keeps every leaver on the platform)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    key = secrets.token_urlsafe(16)
    work = Path(tempfile.mkdtemp(prefix="syncd-soak-"))
    env = os.environ | {"SYNCD_EMULATOR_API_KEY": key, "SOAK_API_KEY": key}
    emulator = subprocess.Popen(
        [sys.executable, "-m", "syncd", "emulator", "platform", "--port", "0",
         "--users", str(args.users), "--max-batch-size", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    daemon: subprocess.Popen[bytes] | None = None
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().rsplit(" ", 1)[1].strip()
        users = {
            user.end_user: (user.tags["department"], user.tags["region"])
            for user in make_users(args.users)
        }
        leavers: set[str] = set()
        csv = work / "users.csv"
        write_csv(csv, users)
        port = free_port()
        config = work / "soak.yaml"
        config.write_text(
            CONFIG.format(state=work / "state", port=port, url=url, csv=csv, leavers=args.leavers)
        )
        with (work / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
            )  # fmt: skip
        status_url = f"http://127.0.0.1:{port}/status"
        platform = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
        durations: list[float] = []
        rss: list[float] = []
        failures: list[str] = []
        next_id = 0
        since = datetime.fromtimestamp(0, UTC)
        started = time.monotonic()
        for cycle in range(1, args.cycles + 1):
            last = wait_run_after(status_url, since, daemon, timeout_s=120)
            rss.append(rss_mb(daemon.pid))  # right after a run: its peak is freed
            durations.append(float(last["duration_s"]))  # type: ignore[arg-type]
            problem = (
                f"status {last['status']}"
                if last["status"] != "applied"
                else converged(platform, users, leavers, deleted=args.leavers == "delete")
            )
            if problem is not None:
                failures.append(f"cycle {cycle}: {problem}")
            if cycle == 10 or cycle % 25 == 0:
                print(f"cycle {cycle}: RSS {rss[-1]:.1f} MB", flush=True)
            next_id = churn(users, leavers, rng, next_id)
            write_csv(csv, users)
            since = datetime.now(UTC)  # after the rename: a run from now reads the new file
        elapsed = time.monotonic() - started
        ordered = sorted(durations)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        early = statistics.median(rss[9:19]) if len(rss) >= 19 else rss[0]
        late = statistics.median(rss[-10:])
        print(f"users: {args.users}, leavers: {args.leavers}, cycles: {args.cycles}, "
              f"wall: {elapsed:.0f} s")  # fmt: skip
        print(f"RSS at cycle 10: {rss[min(9, len(rss) - 1)]:.1f} MB; at cycle {args.cycles}: "
              f"{rss[-1]:.1f} MB; max {max(rss):.1f} MB")  # fmt: skip
        print(f"RSS median of cycles 10-19: {early:.1f} MB; of the last 10: {late:.1f} MB "
              f"({(late / early - 1) * 100:+.1f}%)")  # fmt: skip
        print(f"run duration p50 {statistics.median(durations):.2f} s, p95 {p95:.2f} s, "
              f"max {max(durations):.2f} s")  # fmt: skip
        print(f"final source users: {len(users)}; leavers: {len(leavers)}")
        print("every cycle converged" if not failures else "NOT converged:\n" + "\n".join(failures))
        return 0 if not failures else 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
        emulator.terminate()
        emulator.wait(30)


if __name__ == "__main__":
    sys.exit(main())
