"""release_memory: freed heap pages go back to the system, measured on this process."""

from __future__ import annotations

import os
import threading

import pytest

from syncd.daemon.memory import _MALLOC_TRIM, release_memory


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_MALLOC_TRIM is None, reason="not glibc")
def test_memory_a_run_freed_on_another_thread_is_returned() -> None:
    held: list[list[bytes]] = []

    def run() -> None:
        # Like a run on a scheduler thread: many malloc-sized blocks, in that thread's
        # arena, with a small survivor at the end so the arena's top cannot shrink.
        blocks = [bytes(1500) + bytes([i % 256]) for i in range(60_000)]
        held.append(blocks)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    survivor = held[0][-1]
    held.clear()
    before = _rss_mb()
    release_memory()
    after = _rss_mb()
    assert survivor
    assert before - after > 40, (before, after)  # ~90 MB was freed but still resident
