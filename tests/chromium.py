"""Headless Chromium for the tests that render a page: run in its own process group,
killed whole by its PID when it ends or times out (its zygote and GPU helpers too)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence


def run_chromium(command: Sequence[str], *, timeout_s: float = 90) -> tuple[int, str]:
    """Run ``command`` (chromium and its flags); its exit code and its output
    (stdout and stderr together)."""
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    finally:
        # The whole group, also after a clean exit: helpers may outlive the browser.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait(timeout=10)
    return process.returncode, output.decode(errors="replace")
