"""Give the memory of a finished run back to the operating system.

A run at 50,000 users allocates tens of MB (the platform list, the desired users, the
plan) and frees them at its end. CPython returns most of it to glibc's malloc, which
keeps freed blocks in per-thread arenas for reuse; with runs on scheduler threads,
write pools and HTTP threads, those arenas fragment and the daemon's RSS creeps up run
after run although nothing is alive. ``malloc_trim(0)`` returns the free pages of every
arena to the system (a few milliseconds), so the RSS between runs stays flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

__all__ = ["release_memory"]


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to trim
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    """Collect garbage cycles, then hand free heap pages back to the system."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
