"""Leaving a one-shot command without freeing its heap.

A ``syncd apply`` of a million users ends holding millions of small objects (the
desired users, the plan, the outcomes). Freeing them one by one when the command
returns, and again as the interpreter shuts down, costs 0.2-0.6 s of a run that
has nothing left to do. The console script (:func:`syncd.cli.main`) therefore runs
the command under :func:`run_then_exit`: what a command hands to :func:`hold` stays
alive until the process ends with ``os._exit`` after every stream and log handler was
flushed, and the operating system takes the memory back at once.

Only when something was held: commands that hold nothing (every command but
``plan``/``apply``) exit the ordinary way, with their ``atexit`` handlers, and so does
a process under a profiler or a tracer (``python -m cProfile``, coverage), which
writes its results at exit. Code that
calls the command functions directly (the tests, the daemon) never enables it, so
nothing is held and nothing leaks.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn


@dataclass
class _Holder:
    enabled: bool = False
    held: list[object] = field(default_factory=list)


_holder = _Holder()


def hold(value: object) -> None:
    """Keep ``value`` alive until the process exits (under :func:`run_then_exit` only)."""
    if _holder.enabled:
        _holder.held.append(value)


def run_then_exit(command: Callable[[], object]) -> NoReturn:
    """Run ``command``; exit with its code, fast when it held its heap (see above).

    Exceptions other than ``SystemExit`` propagate unchanged (a bug still prints its
    traceback and exits the ordinary way).
    """
    _holder.enabled = True
    try:
        command()
        code = 0
    except SystemExit as exit_:
        if not _holder.held:
            raise
        code = _exit_code(exit_.code)
    if not _holder.held or sys.getprofile() is not None or sys.gettrace() is not None:
        # A profiler or a coverage tracer writes its results at exit: let it.
        sys.exit(code)
    if not _flush() and code == 0:
        code = 120  # what the interpreter exits with when its final flush fails
    os._exit(code)


def _exit_code(code: object) -> int:
    """The process exit code ``sys.exit(code)`` would give."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits with 1
    return 1


def _flush() -> bool:
    """Flush what ``os._exit`` would otherwise lose: log handlers and both streams.

    False when a stream could not be written (a closed pipe, a full disk): output was
    lost, which the exit code must say.
    """
    # Imported by whoever configured logging; a command that never did (``--help``)
    # has no handler to flush and need not pay for the import.
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            flushed = False
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"syncd: could not write the last output to {stream.name}\n")
                sys.stderr.flush()
    return flushed
