"""The ``syncd`` command line (typer + rich).

Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 held by the guard,
4 completed with per-user failures. With several jobs the most serious code wins.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import orjson
import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from syncd import __version__
from syncd.app import open_job
from syncd.config import SyncdConfig, load_config, masked_config
from syncd.demo import run_demo
from syncd.emulator import PlatformEmulator, make_users
from syncd.errors import ConfigError, SyncdError
from syncd.guard import Override
from syncd.logs import configure_logging
from syncd.platform.api import Operation
from syncd.render import planned_to_json, render_planned, render_result, result_to_json
from syncd.runner import ExitCode, worst

log = structlog.get_logger(__name__)

app = typer.Typer(
    name="syncd",
    help="Keep a Nebuly project's platform users equal to your directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    """How ``plan`` and ``apply`` print their result."""

    TABLE = "table"
    JSON = "json"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $SYNCD_CONFIG).", show_default=False
    ),
]
JobOption = Annotated[str | None, typer.Option("--job", "-j", help="Only this job.")]
OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")]
LimitOption = Annotated[int, typer.Option(help="Changes listed per job in table output.")]


def _err_console() -> Console:
    return Console(stderr=True)


def _load(path: Path | None) -> SyncdConfig:
    if path is None:
        env = os.environ.get("SYNCD_CONFIG")
        if not env:
            raise ConfigError("no config file: pass --config FILE or set SYNCD_CONFIG")
        path = Path(env)
    config = load_config(path)
    configure_logging(config.log.format, config.log.level)
    return config


class _Interrupted(BaseException):
    """SIGTERM, turned into an exception so that the run in progress is recorded."""


@dataclass
class _Interruption:
    code: int = 0


@contextmanager
def _interruptible() -> Iterator[_Interruption]:
    """Ctrl-C exits 130 and SIGTERM (docker stop, a Kubernetes rollout) exits 143, after
    the run in progress has recorded itself as failed."""
    state = _Interruption()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield state
    except KeyboardInterrupt:
        _err_console().print("[red]interrupted (Ctrl-C)[/red]")
        state.code = 130
    except _Interrupted:
        _err_console().print("[red]stopped by SIGTERM[/red]")
        state.code = 143
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    console = Console()
    err = _err_console()
    try:
        config = _load(config_path)
        jobs = config.job(job_name)
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    codes: list[ExitCode] = []
    documents = []
    show_progress = apply and output is OutputFormat.TABLE and console.is_terminal
    for job in jobs:
        try:
            with (
                RichProgress(
                    TextColumn("{task.description:>8}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                    disable=not show_progress,
                ) as bars,
                open_job(
                    config, job, progress=_RichProgress(bars) if show_progress else None
                ) as runner,
            ):
                planned = runner.plan(override)
                if output is OutputFormat.TABLE:
                    render_planned(console, planned, limit=limit)
                if not apply:
                    if output is OutputFormat.JSON:
                        documents.append(planned_to_json(planned))
                    codes.append(ExitCode.HELD if planned.verdict.held else ExitCode.OK)
                    continue
                result = runner.apply(planned)
            if output is OutputFormat.TABLE:
                render_result(console, result)
            else:
                # Built only when asked for: a million changes make a large document.
                documents.append(result_to_json(result))
            codes.append(result.status.exit_code)
        except ConfigError as error:
            err.print(f"[red]job {job.name}: configuration error:[/red] {error}", highlight=False)
            codes.append(ExitCode.CONFIG)
        except SyncdError as error:
            err.print(f"[red]job {job.name} failed:[/red] {error}", highlight=False)
            codes.append(ExitCode.FAILED)
        except Exception as error:
            # A bug must not stop the other jobs; the traceback goes to the log.
            log.exception("job.crashed", job=job.name)
            err.print(
                f"[red]job {job.name} failed with an unexpected error:[/red] "
                f"{type(error).__name__}: {error}",
                highlight=False,
            )
            codes.append(ExitCode.FAILED)
    if output is OutputFormat.JSON:
        sys.stdout.buffer.write(orjson.dumps({"jobs": documents}, option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    return worst(codes)


@app.command()
def plan(
    config: ConfigOption = None,
    job: JobOption = None,
    output: OutputOption = OutputFormat.TABLE,
    limit: LimitOption = 50,
) -> None:
    """Show what a sync would change on the live platform; write nothing."""
    with _interruptible() as interrupted:
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
    with _interruptible() as interrupted:
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
def emulator(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SYNCD_EMULATOR_API_KEY",
            help="Bearer key clients must send (default: a random one, printed).",
            show_default=False,
        ),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(min=1, help="413 above this.")] = 1000,
    page_size: Annotated[
        int | None, typer.Option(min=1, help="Paginate GET with cursors (default: one page).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="JSON file to load at start and save at exit.")
    ] = None,
    users: Annotated[
        int, typer.Option(min=0, help="Seed this many synthetic users (benchmarks).")
    ] = 0,
) -> None:
    """Serve a Nebuly-compatible platform-users API in memory, for tests and demos."""
    key = api_key
    if key is None:
        key = secrets.token_urlsafe(16)
        # Printed on purpose: a random key nobody else knows is useless unless shown.
        print(f"syncd emulator api key: {key}", file=sys.stderr, flush=True)
    server = PlatformEmulator(
        api_key=key,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        page_size=page_size,
        data_file=data,
    )
    if users:
        server.seed_users(make_users(users))
    server.serve_forever()


@app.command()
def demo() -> None:
    """Run a complete demo against an in-process emulator; needs no credentials."""
    with _interruptible() as interrupted:
        code = run_demo(Console())
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    """Entry point of the ``syncd`` console script."""
    app()
