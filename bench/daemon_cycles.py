"""The no-change cycles of ``syncd run`` (the daemon), for ``bench/sync_bench.py``.

A daemon that re-syncs every few minutes pays its start-up (imports, config models,
the typer command) once; each of its cycles is a ``run_job`` in a process that is
already warm. :func:`daemon_cycles` starts the real daemon as a child process on the
benchmark's no-change state, with the job scheduled every second, reads the duration
of each cycle from its ``daemon.run`` log lines (the daemon's own clock around
``run_job``), then stops it with SIGTERM by its PID (SIGKILL if it does not exit) and
reaps it with ``wait4`` for its peak RSS and CPU time.

The first cycle also pays what is imported and built on first use; the best of the
later ones is the warm cycle, compared with the same bare pipeline as the one-shot
``syncd apply``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STOP_BOUND_S = 30.0
"""How long the daemon may take to exit after SIGTERM before it is killed."""


@dataclass
class DaemonCycles:
    """The seconds of each cycle in order, the statuses, and the child's rusage."""

    seconds: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    """The daemon's resident memory right after each cycle (``VmRSS``)."""
    peak_by_cycle_mb: list[float] = field(default_factory=list)
    """Its peak resident memory so far, right after each cycle (``VmHWM``)."""
    peak_rss_mb: float = float("nan")
    cpu_s: float = float("nan")
    exit_code: int | None = None
    pid: int = 0
    failure: str | None = None

    @property
    def first_s(self) -> float:
        """The first cycle (it also imports and builds what is used on first use)."""
        return self.seconds[0] if self.seconds else float("nan")

    @property
    def warm_s(self) -> float:
        """The best of the cycles after the first."""
        return min(self.seconds[1:]) if len(self.seconds) > 1 else float("nan")


def with_schedule(config: str, every: str = "1s") -> str:
    """The benchmark's config with its one job scheduled ``every`` and the daemon's
    endpoints on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scheduled = config.replace(
        "  - name: bench\n", f"  - name: bench\n    schedule: {{every: {every}}}\n"
    )
    if scheduled == config:
        raise ValueError("the config has no job named bench to schedule")
    return f'server: {{listen: "127.0.0.1:{port}"}}\n' + scheduled


def daemon_cycles(config: Path, env: dict[str, str], cycles: int, timeout_s: float) -> DaemonCycles:
    """Run ``syncd run -c CONFIG`` until it logged ``cycles`` runs (or ``timeout_s``)."""
    result = DaemonCycles()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "-c", str(config)],
        env=env, cwd=config.parent, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert process.stderr is not None
    result.pid = process.pid
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_forward, args=(process.stderr, lines), daemon=True)
    reader.start()
    tail: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(result.seconds) < cycles:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.failure = f"{len(result.seconds)} of {cycles} cycles in {timeout_s:.0f} s"
                break
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                result.failure = f"the daemon exited after {len(result.seconds)} cycles"
                break
            tail = [*tail[-20:], line]
            event = _event(line)
            if event.get("event") == "daemon.run":
                result.seconds.append(float(event["seconds"]))
                result.statuses.append(str(event["status"]))
                memory = _memory_mb(process.pid)
                result.rss_mb.append(memory.get("VmRSS", float("nan")))
                result.peak_by_cycle_mb.append(memory.get("VmHWM", float("nan")))
    finally:
        _stop(process, result)
        reader.join(timeout=5)
        process.stderr.close()
    if result.failure is not None:
        print("".join(tail), file=sys.stderr)
    return result


def _forward(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MB (empty if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    found = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024  # kB
    return found


def _event(line: str) -> dict[str, object]:
    if not line.startswith("{"):
        return {}
    try:
        parsed = json.loads(line)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _stop(process: subprocess.Popen[str], result: DaemonCycles) -> None:
    """SIGTERM by PID, SIGKILL after :data:`STOP_BOUND_S`; reap with ``wait4``."""
    # Never poll(): it would reap the child, and wait4 would find nothing to reap.
    os.kill(process.pid, signal.SIGTERM)  # an exited, unreaped child takes it harmlessly
    deadline = time.monotonic() + STOP_BOUND_S
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            break
        if time.monotonic() >= deadline:
            os.killpg(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
            result.failure = result.failure or "the daemon did not exit on SIGTERM"
            break
        time.sleep(0.05)
    process.returncode = result.exit_code = os.waitstatus_to_exitcode(status)
    result.peak_rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
    result.cpu_s = usage.ru_utime + usage.ru_stime
