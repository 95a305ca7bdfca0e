"""``syncd run`` (the daemon) and ``syncd healthcheck``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the daemon commands to ``app``."""
