"""Fixtures of the activation-report tests: emulators, a state store, a movable clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.emulator.analytics import AnalyticsEmulator
from syncd.state import SqliteStateStore

ANALYTICS_KEY = "sk-analytics-report-test"


class Clock:
    """A clock the test moves by hand (``clock.advance(hours=4)``)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    """A clock starting now."""
    return Clock()


@pytest.fixture
def state(tmp_path: Path) -> SqliteStateStore:
    """An empty state store in a temp folder."""
    return SqliteStateStore(tmp_path / "state")


@pytest.fixture
def analytics() -> Iterator[AnalyticsEmulator]:
    """A started analytics emulator with the vendor's limits (10 queries per hour)."""
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as emu:
        yield emu
