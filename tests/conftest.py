"""Fixtures shared across the test suite. Keep them small and generic."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from syncd.emulator import PlatformEmulator

EMULATOR_API_KEY = "sk-test-emulator-5f3c9a1e"
"""The API key the ``emulator`` fixture accepts (a fake; never a real secret)."""


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
