"""What every command line module shares: the common options, the config lookup, and
which `apply` options cannot go together (light: every command imports this module)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from syncd.errors import ConfigError

if TYPE_CHECKING:
    # typer vendors click; its help formatter is named only there.
    from typer._click import Context, HelpFormatter


class OutputFormat(StrEnum):
    """How a command prints its result: for people (``table``) or programs (``json``)."""

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


class CommandGroup(TyperGroup):
    """A command group whose help lists each command with its whole summary.

    syncd's apps render help with click (``rich_markup_mode=None``: rich's help costs
    ~0.2 s of start-up), and click cuts each command's summary to the width left after
    the longest name ("... write..."); this lists the first sentence whole and lets the
    help formatter wrap it, as the rich panels did.
    """

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        """The ``Commands:`` section: every visible command and its whole summary."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def config_path(path: Path | None) -> Path:
    """``--config`` if given, else ``$SYNCD_CONFIG``; a ConfigError when neither is set."""
    if path is not None:
        return path
    env = os.environ.get("SYNCD_CONFIG")
    if not env:
        raise ConfigError("no config file: pass --config FILE or set SYNCD_CONFIG")
    return Path(env)


def plan_option_conflicts(
    *,
    plan_file: Path | None,
    max_age: str | None,
    allow_removals: int | None,
    allow_updates: int | None,
    accept_identity_rules: bool,
    force: bool,
    limit: int | None,
) -> str | None:
    """Why these ``apply`` options cannot go together (None: they can).

    With ``--plan`` the file is the approval: an override would be silently ignored
    (the file's changes are applied as reviewed), and so would ``--limit`` (no plan is
    shown). ``--max-age`` means nothing without ``--plan``.
    """
    if plan_file is None:
        return "--max-age applies to --plan only" if max_age is not None else None
    given = [
        option
        for option, used in (
            ("--allow-removals", allow_removals is not None),
            ("--allow-updates", allow_updates is not None),
            ("--accept-identity-rules", accept_identity_rules),
            ("--force", force),
            ("--limit", limit is not None),
        )
        if used
    ]
    if not given:
        return None
    return (
        f"{', '.join(given)} cannot be used with --plan: the plan file is the approval "
        "(its changes are applied exactly as reviewed); to approve other changes, make "
        "a new plan"
    )
