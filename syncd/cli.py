"""The ``syncd`` command line (typer + rich): a thin layer over :mod:`syncd.service`.

Each command parses its options, calls a function that tests can call too, and renders
the result. Exit codes are in :mod:`syncd.exitcodes`; signals in :mod:`syncd.signals`.
What a command needs is imported when it runs (:mod:`syncd.cli_sync` for plan and
apply, :mod:`syncd.cli_planfile` only with a plan file), so that ``syncd --help`` loads
typer and little else. The command modules registered below are imported by every
command, so their top level holds typer declarations and light enums only
(:mod:`syncd.cli_options`, :mod:`syncd.report.periods`); ``tests/test_startup.py``
checks what each command imports.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from syncd import __version__, cli_daemon, cli_emulator, cli_report, cli_sources, cli_state
from syncd.cli_options import (
    CommandGroup,
    ConfigOption,
    JobOption,
    OutputFormat,
    OutputOption,
    plan_option_conflicts,
)
from syncd.exitcodes import ExitCode

app = typer.Typer(
    name="syncd",
    help="Keep a Nebuly project's platform users equal to your directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help and usage errors as plain click text: rendering them with rich imports rich,
    # markdown-it and pygments, ~0.2 s of every start-up. The groups list whole summaries.
    rich_markup_mode=None,
    cls=CommandGroup,
)


LimitOption = Annotated[int, typer.Option(help="Changes listed per job in table output.")]


@app.command()
def plan(
    config: ConfigOption = None,
    job: JobOption = None,
    output: OutputOption = OutputFormat.TABLE,
    limit: LimitOption = 50,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the job's full plan to this file, to review and then apply "
            "exactly with `syncd apply --plan FILE`.",
        ),
    ] = None,
) -> None:
    """Show what a sync would change on the live platform; write nothing."""
    from syncd.cli_sync import err_console, plan_file_command, run_jobs
    from syncd.guard import Override
    from syncd.signals import interruptible

    with interruptible(err_console()) as interrupted:
        if out is not None:
            from syncd import cli_planfile  # plan files only: hashing, signing, checks

            code = plan_file_command(
                config,
                lambda loaded, console, err: cli_planfile.write_plan(
                    loaded, job, out, output=output, limit=limit, console=console, err=err
                ),
            )
        else:
            code = run_jobs(
                config, job, apply=False, output=output, limit=limit, override=Override()
            )
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


@app.command()
def apply(
    config: ConfigOption = None,
    job: JobOption = None,
    allow_removals: Annotated[
        int | None,
        typer.Option(min=0, help="Accept up to N removals this run, above the guard limits."),
    ] = None,
    allow_updates: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Accept up to N updates this run (destructive ones included), above the "
            "guard limits.",
        ),
    ] = None,
    accept_identity_rules: Annotated[
        bool,
        typer.Option(
            "--accept-identity-rules",
            help="Accept changed identity rules (identity.lowercase, a source's id field) "
            "this run; they become the job's rules once applied.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Accept any number of removals and updates, bad records and changed "
            "identity rules this run.",
        ),
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
    limit: Annotated[
        int | None, typer.Option(help="Changes listed per job in table output [default: 50].")
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="Apply exactly the changes of this file from `syncd plan --out`, after "
            "checking that the platform list and the job's config did not change.",
        ),
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age", help="With --plan: refuse a plan older than this [default: 24h]."
        ),
    ] = None,
) -> None:
    """Sync: plan, check the guard, and write the changes in batches."""
    from syncd.cli_sync import err_console, plan_file_command, run_jobs
    from syncd.guard import Override
    from syncd.signals import interruptible

    conflict = plan_option_conflicts(
        plan_file=plan_file,
        max_age=max_age,
        allow_removals=allow_removals,
        allow_updates=allow_updates,
        accept_identity_rules=accept_identity_rules,
        force=force,
        limit=limit,
    )
    if conflict is not None:
        err_console().print(f"[red]usage error:[/red] {conflict}", highlight=False)
        raise typer.Exit(int(ExitCode.CONFIG))
    if plan_file is not None:
        from syncd import cli_planfile  # plan files only: hashing, signing, checks

        with interruptible(err_console()) as interrupted:
            code = plan_file_command(
                config,
                lambda loaded, console, err: cli_planfile.apply_plan(
                    loaded,
                    job,
                    plan_file,
                    max_age=max_age or "24h",
                    output=output,
                    progress=None,
                    console=console,
                    err=err,
                ),
            )
        raise typer.Exit(interrupted.code if interrupted.code else int(code))
    override = Override(
        allow_removals=allow_removals,
        allow_updates=allow_updates,
        accept_identity_rules=accept_identity_rules,
        force=force,
    )
    with interruptible(err_console()) as interrupted:
        code = run_jobs(
            config,
            job,
            apply=True,
            output=output,
            limit=50 if limit is None else limit,
            override=override,
        )
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the config and print it resolved, with secrets masked."""
    import orjson
    from rich.console import Console

    from syncd.cli_options import config_path
    from syncd.config import load_config, masked_config
    from syncd.errors import ConfigError
    from syncd.logs import configure_logging

    # Not syncd.cli_sync.load: that module brings the service, httpx and the progress
    # bars, which only validating a file does not need.
    try:
        loaded = load_config(config_path(config))
        configure_logging(loaded.log.format, loaded.log.level)
    except ConfigError as error:
        Console(stderr=True).print(f"[red]configuration error:[/red] {error}", highlight=False)
        raise typer.Exit(int(ExitCode.CONFIG)) from None
    sys.stdout.buffer.write(orjson.dumps(masked_config(loaded), option=orjson.OPT_INDENT_2))
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


@app.command()
def demo() -> None:
    """Run a complete demo against an in-process emulator; needs no credentials."""
    from rich.console import Console

    from syncd.demo import run_demo
    from syncd.signals import interruptible

    with interruptible(Console(stderr=True)) as interrupted:
        code = run_demo(Console())
    raise typer.Exit(interrupted.code if interrupted.code else int(code))


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


# Command groups that live in their own modules.
for _module in (cli_emulator, cli_sources, cli_daemon, cli_state, cli_report):
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
    """Run the command line, ending as :mod:`syncd.process_exit` says.

    The console script and ``python -m syncd`` come here through
    :func:`syncd.startup.main`, which first pauses the garbage collector for ``plan``
    and ``apply``.
    """
    from syncd.process_exit import run_then_exit

    args = _legacy_emulator_args(sys.argv[1:])
    run_then_exit(lambda: app(args=args))
