"""What every command line module shares: the common options and the config lookup."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from syncd.errors import ConfigError


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


def config_path(path: Path | None) -> Path:
    """``--config`` if given, else ``$SYNCD_CONFIG``; a ConfigError when neither is set."""
    if path is not None:
        return path
    env = os.environ.get("SYNCD_CONFIG")
    if not env:
        raise ConfigError("no config file: pass --config FILE or set SYNCD_CONFIG")
    return Path(env)
