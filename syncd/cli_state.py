"""``syncd history`` and ``syncd audit``: read the state database.

Both only read: they never create the database (a missing one means "no runs recorded
yet", exit 0), never take the job lock and never call the platform, so they work while
a daemon applies. What they print is built by the pure functions of
:mod:`syncd.state_views`; the rest is imported inside the commands, so that loading this
module (for ``syncd --help``) costs nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from syncd.cli_options import ConfigOption, OutputFormat, OutputOption, config_path
from syncd.exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from syncd.config import SyncdConfig


# ------------------------------------------------------------------- commands


def _load(path: Path | None) -> SyncdConfig:
    from syncd.config import load_config

    # Reading history needs no platform key: the targets are not used.
    return load_config(config_path(path), without_targets=True)


def _fail(message: str, code: ExitCode) -> typer.Exit:
    # Plain text, unwrapped: a path in the message must stay copyable.
    typer.echo(message, err=True)
    return typer.Exit(int(code))


def _console() -> Console:
    """Rich on a terminal; wide when piped, so rows are not wrapped for grep."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _print_json(document: object) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def history(
    config: ConfigOption = None,
    job: Annotated[str | None, typer.Option("--job", "-j", help="Only this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Runs to show.")] = 20,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The last runs, newest first (read-only)."""
    from rich.table import Table

    from syncd.errors import ConfigError, StateError
    from syncd.state import SqliteStateStore
    from syncd.state_views import NO_RUNS, run_note, run_to_json

    try:
        loaded = _load(config)
        if job is not None:
            loaded.job(job)  # an unknown job is a usage error, not an empty history
        store = SqliteStateStore(loaded.state_dir)
        records = store.runs(job, limit=limit) if store.path.exists() else None
    except ConfigError as error:
        raise _fail(f"configuration error: {error}", ExitCode.CONFIG) from None
    except StateError as error:
        raise _fail(f"state error: {error}", ExitCode.FAILED) from None
    if output is OutputFormat.JSON:
        _print_json({"runs": [run_to_json(record) for record in records or []]})
        if records is None:
            typer.echo(NO_RUNS, err=True)
        return
    console = _console()
    if not records:
        console.print(NO_RUNS if records is None else "no runs recorded for this job yet")
        return
    table = Table("started (UTC)", "job", "run", "status", "+ ~ ↺ ⊣ −", "calls", "note")
    for record in records:
        data = run_to_json(record)
        counts = data["counts"]
        changes = " ".join(
            str(counts.get(key, 0)) for key in ("insert", "update", "reactivate", "end", "delete")
        )
        note = run_note(data)
        table.add_row(
            record.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            record.job,
            record.run_id,
            record.status,
            changes,
            str(data["write_calls"]),
            note,
        )
    console.print(table)


def audit(
    user: Annotated[str, typer.Option("--user", "-u", help="The end_user (e-mail address).")],
    config: ConfigOption = None,
    job: Annotated[str | None, typer.Option("--job", "-j", help="Only this job.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Every change ever applied to one user, oldest first (read-only)."""
    from rich.table import Table

    from syncd.errors import ConfigError, StateError
    from syncd.state import SqliteStateStore
    from syncd.state_views import NO_RUNS, audit_keys, audit_to_json, describe_change

    try:
        loaded = _load(config)
        keys = audit_keys(loaded, user, job)
        store = SqliteStateStore(loaded.state_dir)
        entries = store.audit(keys, job) if store.path.exists() else None
    except ConfigError as error:
        raise _fail(f"configuration error: {error}", ExitCode.CONFIG) from None
    except ValueError as error:
        raise _fail(f"invalid --user {user!r}: {error}", ExitCode.CONFIG) from None
    except StateError as error:
        raise _fail(f"state error: {error}", ExitCode.FAILED) from None
    if output is OutputFormat.JSON:
        changes = [audit_to_json(entry) for entry in entries or []]
        _print_json({"end_user": sorted(keys), "changes": changes})
        if entries is None:
            typer.echo(NO_RUNS, err=True)
        return
    console = _console()
    if not entries:
        shown = ", ".join(sorted(keys))
        console.print(NO_RUNS if entries is None else f"no change recorded for {shown}")
        return
    table = Table("at (UTC)", "job", "run", "operation", "change")
    for entry in entries:
        table.add_row(
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.job,
            entry.run_id,
            entry.operation,
            describe_change(entry),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the state commands to ``app``."""
    app.command("history")(history)
    app.command("audit")(audit)
