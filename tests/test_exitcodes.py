"""Exit codes: the severity order across jobs and the code of each run status."""

from __future__ import annotations

from syncd.exitcodes import ExitCode, exit_code_for, worst
from syncd.runner import RunStatus


def test_the_most_serious_code_wins() -> None:
    assert worst([]) is ExitCode.OK
    assert worst([ExitCode.OK, ExitCode.PARTIAL]) is ExitCode.PARTIAL
    assert worst([ExitCode.PARTIAL, ExitCode.HELD]) is ExitCode.HELD
    assert worst([ExitCode.HELD, ExitCode.FAILED, ExitCode.OK]) is ExitCode.FAILED
    assert worst([ExitCode.FAILED, ExitCode.CONFIG]) is ExitCode.CONFIG


def test_every_run_status_has_its_code() -> None:
    assert {status: int(exit_code_for(status)) for status in RunStatus} == {
        RunStatus.PLANNED: 0,
        RunStatus.APPLIED: 0,
        RunStatus.HELD: 3,
        RunStatus.PARTIAL: 4,
        RunStatus.FAILED: 1,
        RunStatus.BUSY: 1,
    }
