"""Process exit codes of the one-shot commands, and how run outcomes map to them.

0 ok, 1 failure, 2 usage or configuration error, 3 held by the guard, 4 completed with
per-user failures; 130 / 143 for Ctrl-C / SIGTERM (see :mod:`syncd.signals`). With
several jobs the most serious code wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, StrEnum


class RunStatus(StrEnum):
    """How a run ended."""

    PLANNED = "planned"
    APPLIED = "applied"
    HELD = "held"
    PARTIAL = "partial"
    FAILED = "failed"
    BUSY = "busy"
    """Not run: another process holds the job's lock (it is being applied)."""


class ExitCode(IntEnum):
    """The process exit codes of ``syncd plan`` / ``syncd apply``."""

    OK = 0
    FAILED = 1
    CONFIG = 2
    HELD = 3
    PARTIAL = 4


# Severity order when several jobs end differently: a config error beats a failure,
# which beats a hold, which beats per-user failures.
_SEVERITY = [ExitCode.OK, ExitCode.PARTIAL, ExitCode.HELD, ExitCode.FAILED, ExitCode.CONFIG]

_BY_STATUS = {
    RunStatus.PLANNED: ExitCode.OK,
    RunStatus.APPLIED: ExitCode.OK,
    RunStatus.HELD: ExitCode.HELD,
    RunStatus.PARTIAL: ExitCode.PARTIAL,
    RunStatus.FAILED: ExitCode.FAILED,
    # Another process is applying the job: this run did nothing, and says so.
    RunStatus.BUSY: ExitCode.FAILED,
}


def worst(codes: Sequence[ExitCode]) -> ExitCode:
    """The most serious of several exit codes (OK for none)."""
    return max(codes, key=_SEVERITY.index, default=ExitCode.OK)


def exit_code_for(status: RunStatus) -> ExitCode:
    """The exit code of a run that ended with ``status``."""
    return _BY_STATUS[status]
