"""The ``syncd`` command line (typer + rich): a thin layer over :mod:`syncd.service`.

Each command parses its options, calls a function that tests can call too, and renders
the result. Exit codes are in :mod:`syncd.exitcodes`; signals in :mod:`syncd.signals`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from syncd import __version__, cli_daemon, cli_emulator, cli_sources, cli_state
from syncd.cli_options import ConfigOption, JobOption, OutputFormat, OutputOption, config_path
from syncd.config import SyncdConfig, load_config, masked_config
from syncd.demo import run_demo
from syncd.errors import ConfigError
from syncd.exitcodes import ExitCode, worst
from syncd.guard import Override
from syncd.logs import configure_logging
from syncd.platform.api import Operation
from syncd.render import render_planned, render_result, report_to_json
from syncd.runner import PlannedRun
from syncd.service import JobReport, run_job
from syncd.signals import interruptible

log = structlog.get_logger(__name__)

app = typer.Typer(
    name="syncd",
    help="Keep a Nebuly project's platform users equal to your directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


LimitOption = Annotated[int, typer.Option(help="Changes listed per job in table output.")]


def _err_console() -> Console:
    return Console(stderr=True)


def _load(path: Path | None) -> SyncdConfig:
    config = load_config(config_path(path))
    configure_logging(config.log.format, config.log.level)
    return config


class _RichProgress:
    """Progress bars for each write operation, on a terminal only."""

    def __init__(self, progress: RichProgress) -> None:
        self._progress = progress
        self._tasks: dict[Operation, tuple[TaskID, int]] = {}

    def start(self, operation: Operation, total: int) -> Callable[[int], None]:
        task = self._progress.add_task(operation.value, total=total)
        self._tasks[operation] = (task, total)

        def advance(count: int) -> None:
            self._progress.advance(task, count)

        return advance

    def finish(self, operation: Operation) -> None:
        task, total = self._tasks[operation]
        self._progress.update(task, completed=total)


def _run_jobs(
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
    err = _err_console()
    try:
        config = _load(config_path)
        jobs = config.job(job_name)
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    reports: list[JobReport] = []
    show_progress = apply and output is OutputFormat.TABLE and console.is_terminal
    show_plan: Callable[[PlannedRun], None] | None = None
    if output is OutputFormat.TABLE:

        def show_plan(planned: PlannedRun) -> None:
            render_planned(console, planned, limit=limit)

    for job in jobs:
        with RichProgress(
            TextColumn("{task.description:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not show_progress,
        ) as bars:
            report = run_job(
                config,
                job,
                apply=apply,
                override=override,
                progress=_RichProgress(bars) if show_progress else None,
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


@app.command()
def plan(
    config: ConfigOption = None,
    job: JobOption = None,
    output: OutputOption = OutputFormat.TABLE,
    limit: LimitOption = 50,
) -> None:
    """Show what a sync would change on the live platform; write nothing."""
    with interruptible(_err_console()) as interrupted:
        code = _run_jobs(config, job, apply=False, output=output, limit=limit, override=Override())
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


@app.command()
def apply(
    config: ConfigOption = None,
    job: JobOption = None,
    allow_removals: Annotated[
        int | None,
        typer.Option(min=0, help="Accept up to N removals this run, above the guard limits."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Accept any number of removals this run.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
    limit: LimitOption = 50,
) -> None:
    """Sync: plan, check the guard, and write the changes in batches."""
    override = Override(allow_removals=allow_removals, force=force)
    with interruptible(_err_console()) as interrupted:
        code = _run_jobs(config, job, apply=True, output=output, limit=limit, override=override)
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the config and print it resolved, with secrets masked."""
    try:
        loaded = _load(config)
    except ConfigError as error:
        _err_console().print(f"[red]configuration error:[/red] {error}", highlight=False)
        raise typer.Exit(int(ExitCode.CONFIG)) from None
    sys.stdout.buffer.write(orjson.dumps(masked_config(loaded), option=orjson.OPT_INDENT_2))
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


@app.command()
def demo() -> None:
    """Run a complete demo against an in-process emulator; needs no credentials."""
    with interruptible(_err_console()) as interrupted:
        code = run_demo(Console())
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


# Command groups that live in their own modules.
for _module in (cli_emulator, cli_sources, cli_daemon, cli_state):
    _module.register(app)


def _legacy_emulator_args(argv: list[str]) -> list[str]:
    """``syncd emulator --port ...`` (0.1) still serves the platform API, with a warning."""
    legacy = (
        len(argv) >= 2
        and argv[0] == "emulator"
        and argv[1].startswith("-")
        and argv[1] not in ("--help", "-h")
    )
    if not legacy:
        return argv
    print(
        "syncd: 'syncd emulator OPTIONS' is deprecated; use 'syncd emulator platform OPTIONS'",
        file=sys.stderr,
        flush=True,
    )
    return ["emulator", "platform", *argv[1:]]


def main() -> None:
    """Entry point of the ``syncd`` console script."""
    app(args=_legacy_emulator_args(sys.argv[1:]))
