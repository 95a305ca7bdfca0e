"""An emulator (``syncd emulator API ...``) in a child process, for the benchmarks:
started on a free port, driven over its control endpoints, stopped by its PID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def taskset(cpus: set[int] | None) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``cpus`` only (None: no prefix)."""
    if cpus is None:
        return []
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


class EmulatorChild:
    """``python -m syncd emulator ARGS --port 0`` with bearer key ``key``; on the CPUs
    ``cpus`` only (all its threads, through ``taskset``), if given."""

    def __init__(
        self, key: str, *args: str, timeout_s: float = 600, cpus: set[int] | None = None
    ) -> None:
        self.key = key
        env = os.environ | {"SYNCD_EMULATOR_API_KEY": key}
        self.process = subprocess.Popen(
            [*taskset(cpus), sys.executable, "-m", "syncd", "emulator", *args, "--port", "0"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on " not in line:
            self.process.kill()
            self.process.wait(timeout=10)
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
        )

    def stats(self) -> dict[str, object]:
        """``GET /_emulator/stats``."""
        response = self.http.get("/_emulator/stats")
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result

    def reset_counters(self) -> None:
        """``POST /_emulator/reset-counters``."""
        self.http.post("/_emulator/reset-counters").raise_for_status()

    def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 30 s)."""
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
