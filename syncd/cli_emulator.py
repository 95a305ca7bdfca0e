"""``syncd emulator ...``: serve an emulated API on loopback (tests, demos, benchmarks).

Each emulated API is one subcommand (``platform`` for Nebuly's platform-users API);
each serves until SIGINT/SIGTERM and prints a random bearer key when none is given.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from syncd.emulator import PlatformEmulator, make_users

emulator_app = typer.Typer(
    name="emulator",
    help="Serve an emulated API in memory on loopback, for tests, demos and benchmarks.",
    no_args_is_help=True,
)


@emulator_app.command("platform")
def emulator_platform(
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
    """The Nebuly platform-users API (both flavours), until SIGINT/SIGTERM."""
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


def register(app: typer.Typer) -> None:
    """Add the ``emulator`` command group to the ``syncd`` app."""
    app.add_typer(emulator_app)
