"""Fixtures shared across the test suite. Keep them small and generic."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator

import pytest

from syncd import forking
from syncd.emulator import PlatformEmulator

EMULATOR_API_KEY = "sk-test-emulator-5f3c9a1e"
"""The API key the ``emulator`` fixture accepts (a fake; never a real secret)."""


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT its default action if the run was started with it ignored.

    A script that starts the tests in the background (``cmd &`` without job control)
    has them ignore SIGINT, and an ignored signal stays ignored across ``exec``: the
    Ctrl-C tests, in this process and of syncd subprocesses, would see nothing.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def emulator_api_key() -> str:
    """The API key the ``emulator`` fixture accepts."""
    return EMULATOR_API_KEY


@pytest.fixture
def emulator(emulator_api_key: str) -> Iterator[PlatformEmulator]:
    """A started platform emulator on 127.0.0.1 (random port), empty, no faults."""
    with PlatformEmulator(api_key=emulator_api_key) as server:
        yield server


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _task_ids() -> set[str]:
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return set()


@pytest.fixture
def only_this_tests_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count threads, in Python and in the kernel, as if only this test's own ran.

    An idle server thread an earlier test left behind would refuse every fork
    (:mod:`syncd.forking`); threads are told apart by identity, so one that ends
    meanwhile changes nothing.
    """
    earlier = {
        thread for thread in threading.enumerate() if thread is not threading.current_thread()
    }
    earlier_tasks = _task_ids() - {str(threading.get_native_id())}
    monkeypatch.setattr(
        forking.threading,
        "active_count",
        lambda: sum(1 for thread in threading.enumerate() if thread not in earlier),
    )
    monkeypatch.setattr(
        forking, "os_thread_count", lambda: len(_task_ids() - earlier_tasks) or None
    )
