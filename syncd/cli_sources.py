"""``syncd sources ...``: commands that work on the sources alone (no platform key)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``sources`` command group to ``app``."""
