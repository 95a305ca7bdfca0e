"""``syncd history`` and ``syncd audit``: read the state database."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the state commands to ``app``."""
