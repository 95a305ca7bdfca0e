"""Helpers of the deployment tests: shipped configs pointed at the emulator, processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def for_emulator(config: Mapping[str, Any], *, url: str, csv: Path, port: int) -> dict[str, Any]:
    """A shipped config with its jobs aimed at the emulator and a CSV source.

    Everything a deployment mounts (state_dir, ``*_file`` secret paths, the token) stays
    as shipped; only the directory and the platform URL are swapped for local ones, and
    the listen host becomes loopback (tests talk to 127.0.0.1 only).
    """
    adapted = dict(config)
    _, _, listen_port = str(config["server"]["listen"]).rpartition(":")
    assert listen_port == "9464", "the shipped config listens on the documented port"
    adapted["server"] = {**config["server"], "listen": f"127.0.0.1:{port}"}
    jobs = []
    for job in config["jobs"]:
        target = {k: v for k, v in job["target"].items() if k != "region"}
        target |= {"base_url": url, "max_retries": 1}
        source = {"type": "csv", "path": str(csv), "id_column": "email"}
        jobs.append({**job, "schedule": {"every": "2s"}, "target": target, "sources": [source]})
    adapted["jobs"] = jobs
    return adapted


def write_yaml(path: Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as YAML to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False), encoding="utf-8")
    return path


def wait_for(probe: Callable[[], Any], *, timeout_s: float = 20.0, what: str) -> Any:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def status_code(url: str, **options: Any) -> int | None:
    """The HTTP status of GET ``url``; None when nothing answers."""
    try:
        return httpx.get(url, timeout=5, **options).status_code
    except httpx.HTTPError:
        return None


@contextlib.contextmanager
def started(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in its own process group; SIGKILLed by PID at exit if still running."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def stop(process: subprocess.Popen[bytes], log: Path, timeout_s: float = 8.0) -> int:
    """SIGTERM ``process`` and return its exit code (fails if it outlives ``timeout_s``)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {timeout_s} s after SIGTERM:\n{log.read_text()}"
        ) from None
