"""Synthetic users for the emulator: demos, benchmarks, load tests."""

from __future__ import annotations

from collections.abc import Iterator

from syncd.platform.api import WireUser

_DEPARTMENTS = ("engineering", "sales", "marketing", "support", "finance", "legal", "hr", "ops")
_REGIONS = ("emea", "amer", "apac")


def make_users(
    count: int, *, start: int = 0, active_from: str = "2026-01-01"
) -> Iterator[WireUser]:
    """Yield ``count`` deterministic users with two tags each (department, region).

    Tag dicts are shared between users with the same combination, as a real directory
    repeats them; that keeps a million seeded users small in memory.
    """
    tag_sets = [{"department": d, "region": r} for d in _DEPARTMENTS for r in _REGIONS]
    for index in range(start, start + count):
        yield WireUser(
            end_user=f"user{index:07d}@example.com",
            tags=tag_sets[index % len(tag_sets)],
            active_from=active_from,
        )
