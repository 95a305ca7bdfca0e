"""Running ``syncd plan`` / ``syncd apply`` for the command line: progress bars, the
plan and result tables, the JSON document, one job after another.

Imported by the commands of :mod:`syncd.cli` when they run, so that ``syncd --help`` and
the other commands do not load the service, the config models and httpx.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import structlog
from rich.console import Console

from syncd import process_exit, startup
from syncd.cli_options import OutputFormat, config_path
from syncd.config import SyncdConfig, load_config
from syncd.errors import ConfigError
from syncd.exitcodes import ExitCode, worst
from syncd.guard import Override
from syncd.logs import configure_logging
from syncd.platform.api import Operation
from syncd.render import render_planned, render_result, report_to_json
from syncd.runs import PlannedRun
from syncd.service import JobReport, run_job

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

log = structlog.get_logger(__name__)


def err_console() -> Console:
    """Rich on stderr."""
    return Console(stderr=True)


def load(path: Path | None) -> SyncdConfig:
    """The config file (``-c`` or ``SYNCD_CONFIG``), with logging set up from it."""
    config = load_config(config_path(path))
    configure_logging(config.log.format, config.log.level)
    startup.started()  # the console script's start-up ends here (see syncd.startup)
    return config


class _RichProgress:
    """Progress bars for each write operation, on a terminal only.

    The live display, and the refresh thread it runs, start with the first write: the
    read before it is then single-threaded, as a large CSV file needs to be read in two
    halves at once (:mod:`syncd.forking`).
    """

    def __init__(self, progress: RichProgress) -> None:
        self._progress = progress
        self._tasks: dict[Operation, tuple[TaskID, int]] = {}
        self.live = False

    def start(self, operation: Operation, total: int) -> Callable[[int], None]:
        if not self.live:
            self.live = True  # first: stop() must end a display that started half-way
            self._progress.start()
        task = self._progress.add_task(operation.value, total=total)
        self._tasks[operation] = (task, total)

        def advance(count: int) -> None:
            self._progress.advance(task, count)

        return advance

    def finish(self, operation: Operation) -> None:
        task, total = self._tasks[operation]
        self._progress.update(task, completed=total)

    def stop(self) -> None:
        """End the live display (if a write started it)."""
        if self.live:
            self._progress.stop()
            self.live = False


@contextlib.contextmanager
def _progress_bars(console: Console, show: bool) -> Iterator[_RichProgress | None]:
    """Live progress bars on ``console`` while a job runs, or None when not ``show``.

    rich.progress is imported only for bars that are shown (an ``apply`` on a terminal
    with table output): a run in a pipe or under a scheduler does not pay its import.
    """
    if not show:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress

    bars = _RichProgress(
        RichProgress(
            TextColumn("{task.description:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
    )
    try:
        yield bars
    finally:
        bars.stop()


def run_jobs(
    config_path: Path | None,
    job_name: str | None,
    *,
    apply: bool,
    output: OutputFormat,
    limit: int,
    override: Override,
) -> ExitCode:
    """Run the selected jobs in turn through :func:`syncd.service.run_job`; render each."""
    console = Console()
    err = err_console()
    try:
        config = load(config_path)
        jobs = config.job(job_name)
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    reports: list[JobReport] = []
    # A million users' worth of objects: freed by the OS at exit, not one by one.
    process_exit.hold(reports)
    show_progress = apply and output is OutputFormat.TABLE and console.is_terminal
    show_plan: Callable[[PlannedRun], None] | None = None
    if output is OutputFormat.TABLE:

        def show_plan(planned: PlannedRun) -> None:
            render_planned(console, planned, limit=limit)

    for job in jobs:
        with _progress_bars(console, show_progress) as bars:
            report = run_job(
                config,
                job,
                apply=apply,
                override=override,
                progress=bars,
                on_planned=show_plan,
            )
        reports.append(report)
        try:
            if report.result is not None:
                if output is OutputFormat.TABLE:
                    render_result(console, report.result)
            elif report.planned is None:
                _print_job_error(err, report)
        except Exception as error:
            # A rendering bug must not hide the other jobs' results.
            log.exception("job.render_failed", job=job.name)
            err.print(f"[red]job {job.name}: cannot show the result:[/red] {error}")
            reports[-1] = dataclasses.replace(report, exit_code=ExitCode.FAILED)
    if output is OutputFormat.JSON:
        # Built only when asked for: a million changes make a large document.
        documents = [_json_document(report) for report in reports]
        sys.stdout.buffer.write(orjson.dumps({"jobs": documents}, option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    return worst([report.exit_code for report in reports])


def _json_document(report: JobReport) -> dict[str, object]:
    """The report as JSON data; a rendering bug still yields the job's entry."""
    try:
        return report_to_json(report)
    except Exception as error:
        log.exception("job.render_failed", job=report.job)
        return {
            "job": report.job,
            "run_id": report.run_id,
            "status": report.status.value,
            "exit_code": int(ExitCode.FAILED),
            "error": f"cannot render the result: {type(error).__name__}: {error}",
        }


def _print_job_error(err: Console, report: JobReport) -> None:
    if report.exit_code is ExitCode.CONFIG:
        what = f"job {report.job}: configuration error:"
    elif report.unexpected:
        what = f"job {report.job} failed with an unexpected error:"
    else:
        what = f"job {report.job} failed:"
    err.print(f"[red]{what}[/red] {report.error}", highlight=False)


def plan_file_command(
    config_path_option: Path | None,
    command: Callable[[SyncdConfig, Console, Console], ExitCode],
) -> ExitCode:
    """Load the config, then run a plan-file command (:mod:`syncd.cli_planfile`)."""
    err = err_console()
    try:
        config = load(config_path_option)
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    return command(config, Console(), err)
