"""Helpers of the daemon tests: configs, the daemon as a real subprocess, bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.conftest import EMULATOR_API_KEY

T = TypeVar("T")

SHUTDOWN_BOUND_S = 8.0
"""Docker and Kubernetes send SIGKILL 10 s after SIGTERM; the daemon must be gone in 8."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None], *, timeout_s: float = 20.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def write_csv(path: Path, ids: Sequence[str], department: str = "eng") -> None:
    """A source CSV of ``ids`` (``email,department``)."""
    lines = ["email,department", *(f"{user},{department}" for user in ids)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def job_yaml(
    name: str,
    url: str,
    csv: Path,
    *,
    every: str | None = "1s",
    batch_size: int = 500,
    concurrency: int = 1,
    max_removals: int | None = 500,
    timeout_s: float = 30,
) -> str:
    """One ``jobs:`` entry syncing ``csv`` into the emulator at ``url``."""
    schedule = f"\n    schedule: {{every: {every}}}" if every else ""
    limit = "null" if max_removals is None else str(max_removals)
    return f"""
  - name: {name}{schedule}
    target:
      base_url: {url}
      api_key: {EMULATOR_API_KEY}
      batch_size: {batch_size}
      concurrency: {concurrency}
      timeout_s: {timeout_s}
      max_retries: 2
    sources:
      - {{type: csv, path: {csv}, id_column: email, tags: {{department: department}}}}
    guard: {{max_removals: {limit}, max_removal_ratio: null}}
"""


def write_config(
    directory: Path, jobs: Sequence[str], *, port: int, server_extra: str = ""
) -> Path:
    """A config file with ``jobs`` (from :func:`job_yaml`) listening on ``port``."""
    path = directory / "syncd.yaml"
    path.write_text(
        f"state_dir: {directory / 'state'}\n"
        "log: {format: json, level: info}\n"
        f'server: {{listen: "127.0.0.1:{port}"{server_extra}}}\n'
        "jobs:" + "".join(jobs),
        encoding="utf-8",
    )
    return path


class DaemonProcess:
    """``python -m syncd run -c FILE`` in its own process group; killed by PID at exit."""

    def __init__(
        self,
        config: Path,
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = config.parent / f"daemon-{port}-{time.monotonic_ns()}.log"
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def start(self) -> None:
        """Start the daemon (stderr to :attr:`log_path`)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the process group if it still runs (the finally of every test)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def log(self) -> str:
        """What the daemon wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **options: Any) -> httpx.Response:
        """GET an endpoint."""
        return httpx.get(self.url + path, timeout=5, **options)

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Until /readyz answers 200 (fails early if the process exits)."""

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited {self.process.returncode}:\n{self.log()}")
            try:
                return self.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout_s=timeout_s, what="the daemon to be ready")

    def status(self) -> dict[str, Any]:
        """/status, by job name."""
        document = self.get("/status", headers=self.auth).json()
        return {job["name"]: job for job in document["jobs"]}

    def wait_status(
        self, job: str, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
    ) -> dict[str, Any]:
        """Until the job's /status entry satisfies ``predicate``; return it."""

        def probe() -> dict[str, Any] | None:
            entry = self.status()[job]
            return entry if predicate(entry) else None

        return wait_for(probe, timeout_s=timeout_s, what=f"status of job {job}")

    def stop(
        self, signum: int = signal.SIGTERM, timeout_s: float = SHUTDOWN_BOUND_S
    ) -> tuple[int, float]:
        """Send ``signum``; return the exit code and the seconds until the process ended."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running {timeout_s} s after signal {signum}:\n{self.log()}"
            ) from None
        return code, time.monotonic() - started


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text (labels matched exactly), or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None
