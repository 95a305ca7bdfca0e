"""Fixtures of the platform-emulator tests: a started emulator and a client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from syncd.emulator import PlatformEmulator
from tests.emulator.platform_support import AUTH, KEY, MAX_BATCH


@pytest.fixture
def emulator() -> Iterator[PlatformEmulator]:
    """A started platform emulator with a small max batch size (overrides the root one)."""
    with PlatformEmulator(api_key=KEY, max_batch_size=MAX_BATCH) as emu:
        yield emu


@pytest.fixture
def client(emulator: PlatformEmulator) -> Iterator[httpx.Client]:
    """An httpx client over real HTTP to ``emulator``, with the right key."""
    with httpx.Client(base_url=emulator.url, headers=AUTH, timeout=10) as http:
        yield http
