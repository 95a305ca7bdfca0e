"""``syncd report activation``: a thin layer over :func:`syncd.report.service.build_report`.

The config, the analytics client and the renderers are imported when the command runs,
so that ``syncd --help`` does not load them.

Exit codes: 0 ok; 1 the report could not be built (analytics or platform failed, the
budget is spent: the message says when the next query is allowed); 2 a usage or
configuration error; 130 / 143 on Ctrl-C / SIGTERM (a ``--wait`` ends at once).
"""

from __future__ import annotations

import io
import sys
import threading
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from syncd.cli_options import CommandGroup, ConfigOption, JobOption, config_path
from syncd.exitcodes import ExitCode
from syncd.report.periods import Granularity

if TYPE_CHECKING:
    from rich.console import Console

    from syncd.report.client import Waiter
    from syncd.report.compute import ActivationReport
    from syncd.report.service import ReportRequest

report_app = typer.Typer(
    name="report",
    help="Reports built from the platform users and other data.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as syncd.cli.app
    cls=CommandGroup,
)


class ReportFormat(StrEnum):
    """How the activation report is written."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    HTML = "html"


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date (YYYY-MM-DD)", param_hint=option
        ) from None


def render(report: ActivationReport, output: ReportFormat) -> str:
    """The report as text in ``output`` (table output is rendered to plain text)."""
    import orjson
    from rich.console import Console

    from syncd.report.html import render_html
    from syncd.report.render import render_table, to_csv, to_json

    if output is ReportFormat.JSON:
        return orjson.dumps(to_json(report), option=orjson.OPT_INDENT_2).decode() + "\n"
    if output is ReportFormat.CSV:
        return to_csv(report)
    if output is ReportFormat.HTML:
        return render_html(report)
    console = Console(record=True, width=110, file=io.StringIO())
    render_table(console, report)
    return console.export_text()


def progress_waiter(console: Console, stop: threading.Event) -> Waiter:
    """Waits with a countdown bar; Ctrl-C / SIGTERM end the wait (and the report)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    def wait(until: datetime, reason: str) -> None:
        total = max(0.0, (until - datetime.now(UTC)).total_seconds())
        with Progress(
            TextColumn("[yellow]{task.description}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{reason}; waiting", total=max(total, 0.001))
            while not stop.is_set():
                left = (until - datetime.now(UTC)).total_seconds()
                if left <= 0:
                    break
                bar.update(task, completed=total - left)
                stop.wait(min(0.5, left))
        console.print(f"{reason}; waited until {until:%H:%M:%S} UTC", highlight=False)

    return wait


def run_activation(
    config_file: Path | None,
    request: ReportRequest,
    *,
    output: ReportFormat,
    out: Path | None,
    wait: bool,
    stop: threading.Event | None = None,
) -> ExitCode:
    """Build, render and write the report; errors are printed, never raised."""
    from rich.console import Console

    from syncd.config import load_config
    from syncd.errors import ConfigError, SyncdError
    from syncd.logs import configure_logging
    from syncd.report.render import render_table
    from syncd.report.service import build_report

    err = Console(stderr=True)
    stop = stop if stop is not None else threading.Event()
    try:
        # The report is the one command that needs the analytics key and mapping file.
        config = load_config(config_path(config_file), analytics_key=True)
        configure_logging(config.log.format, config.log.level)
        report = build_report(
            config, request, waiter=progress_waiter(err, stop) if wait else None, stop=stop
        )
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    except SyncdError as error:
        err.print(f"[red]activation report failed:[/red] {error}", highlight=False)
        return ExitCode.FAILED
    if output is ReportFormat.TABLE and out is None:
        render_table(Console(), report)
        return ExitCode.OK
    text = render(report, output)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return ExitCode.OK
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as error:
        err.print(f"[red]cannot write {out}:[/red] {error.strerror}", highlight=False)
        return ExitCode.FAILED
    err.print(f"wrote {out}", highlight=False)
    return ExitCode.OK


@report_app.command("activation")
def activation(
    from_: Annotated[
        str, typer.Option("--from", help="First day, YYYY-MM-DD.", show_default=False)
    ],
    to: Annotated[
        str, typer.Option("--to", help="Last day (included), YYYY-MM-DD.", show_default=False)
    ],
    config: ConfigOption = None,
    job: JobOption = None,
    granularity: Annotated[
        Granularity, typer.Option(help="Period size: monthly or daily.")
    ] = Granularity.MONTHLY,
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Group by this tag (repeatable).")
    ] = None,
    output: Annotated[
        ReportFormat, typer.Option("--output", "-o", help="table, csv, json or html.")
    ] = ReportFormat.TABLE,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the analytics budget instead of stopping.")
    ] = False,
) -> None:
    """Activation: of the users who had access, how many used the AI tool, per period."""
    from rich.console import Console

    from syncd.report.service import ReportRequest, groups_of
    from syncd.signals import interruptible

    request = ReportRequest(
        start=_day(from_, "--from"),
        end=_day(to, "--to"),
        granularity=granularity,
        by=groups_of(by or []),
        job=job,
    )
    stop = threading.Event()
    with interruptible(Console(stderr=True)) as interrupted:
        try:
            code = run_activation(config, request, output=output, out=out, wait=wait, stop=stop)
        except BaseException:
            stop.set()
            raise
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


def register(app: typer.Typer) -> None:
    """Add the ``report`` command group to the ``syncd`` app."""
    app.add_typer(report_app)
