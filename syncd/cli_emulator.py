"""``syncd emulator ...``: serve an emulated API on loopback (tests, demos, benchmarks).

Each emulated API is one subcommand (``platform`` for Nebuly's platform-users API,
``graph`` for Microsoft Graph with its Entra ID login);
each serves until SIGINT/SIGTERM and prints a random bearer key when none is given.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from syncd.cli_options import CommandGroup

emulator_app = typer.Typer(
    name="emulator",
    help="Serve an emulated API in memory on loopback, for tests, demos and benchmarks.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as syncd.cli.app
    cls=CommandGroup,
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
    key = api_key if api_key is not None else _random_shown("api key")
    from syncd.emulator import PlatformEmulator, make_users

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


@emulator_app.command("graph")
def emulator_graph(
    tls_cert: Annotated[
        Path, typer.Option(help="PEM server certificate (chain) for HTTPS; MSAL needs HTTPS.")
    ],
    tls_key: Annotated[Path, typer.Option(help="PEM private key of --tls-cert.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8443,
    tenant_id: Annotated[str, typer.Option(help="The emulated tenant.")] = (
        "00000000-0000-0000-0000-000000000000"
    ),
    client_id: Annotated[str, typer.Option(help="The app allowed to get tokens.")] = (
        "11111111-1111-1111-1111-111111111111"
    ),
    client_secret: Annotated[
        str | None,
        typer.Option(
            envvar="SYNCD_EMULATOR_CLIENT_SECRET",
            help="The app's client secret (default: a random one, printed).",
            show_default=False,
        ),
    ] = None,
    users: Annotated[int, typer.Option(min=0, help="Seed this many synthetic users.")] = 0,
    latency_ms: Annotated[
        float, typer.Option(min=0, help="Added to every Graph listing request.")
    ] = 0.0,
) -> None:
    """Microsoft Graph users and groups with the tenant's login (HTTPS), until SIGINT/SIGTERM."""
    import ssl

    from syncd.emulator.graph import GraphApp, GraphEmulator, GraphOperation
    from syncd.emulator.graph_data import make_graph_users
    from syncd.emulator.server import EndpointFaults

    secret = client_secret if client_secret is not None else _random_shown("client secret")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls_cert), str(tls_key))
    server = GraphEmulator(
        tenant_id=tenant_id,
        apps=[GraphApp(client_id, secret=secret)],
        host=host,
        port=port,
        ssl_context=context,
    )
    if users:
        server.set_users(make_graph_users(users))
    if latency_ms:
        for operation in GraphOperation:
            server.set_faults(operation, EndpointFaults(latency_ms=latency_ms))
    server.serve_forever()


def _random_shown(what: str) -> str:
    """A random credential for an emulator started without one, printed to stderr."""
    import secrets

    value = secrets.token_urlsafe(16)
    # Printed on purpose: a random credential nobody else knows is useless unless shown.
    print(f"syncd emulator {what}: {value}", file=sys.stderr, flush=True)
    return value


def register(app: typer.Typer) -> None:
    """Add the ``emulator`` command group to the ``syncd`` app."""
    app.add_typer(emulator_app)


@emulator_app.command("analytics")
def emulator_analytics(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8081,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SYNCD_EMULATOR_API_KEY",
            help="Service key clients must send (default: a random one, printed).",
            show_default=False,
        ),
    ] = None,
    users: Annotated[
        int,
        typer.Option(min=0, help="Generate activity for this many synthetic users (as platform)."),
    ] = 0,
    share_active: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of those users who use the tool.")
    ] = 0.6,
    activity_from: Annotated[
        str, typer.Option("--activity-from", help="First day of generated activity.")
    ] = "2026-01-01",
    activity_to: Annotated[
        str, typer.Option("--activity-to", help="Last day of generated activity.")
    ] = "2026-06-30",
    rate_limit: Annotated[int, typer.Option(min=1, help="Initial queries per window.")] = 10,
    rate_window_s: Annotated[float, typer.Option(min=0.001, help="The window, seconds.")] = 3600.0,
    cursor_ttl_s: Annotated[float, typer.Option(min=0.001, help="Cursor lifetime, s.")] = 86400.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated activity.")] = 0,
) -> None:
    """The analytics active-users API (Windsurf / Devin style), until SIGINT/SIGTERM."""
    key = api_key if api_key is not None else _random_shown("api key")
    try:
        first, last = date.fromisoformat(activity_from), date.fromisoformat(activity_to)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    from syncd.emulator import make_users
    from syncd.emulator.analytics import AnalyticsEmulator, generate_activity

    server = AnalyticsEmulator(
        api_key=key,
        host=host,
        port=port,
        rate_limit=rate_limit,
        rate_window_s=rate_window_s,
        cursor_ttl_s=cursor_ttl_s,
    )
    if users:
        ids = [user.end_user for user in make_users(users)]
        activity = generate_activity(ids, first, last, share_active=share_active, seed=seed)
        server.add_activity(activity)
    server.serve_forever()
