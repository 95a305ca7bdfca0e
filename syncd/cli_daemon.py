"""``syncd run`` (the daemon) and ``syncd healthcheck``.

What a command needs beyond typer is imported inside it, so that ``syncd --help`` and
the other commands do not pay for the daemon, the config models or httpx.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from syncd.cli_options import ConfigOption, config_path
from syncd.exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from syncd.config import ServerConfig

DEFAULT_HEALTH_URL = "http://127.0.0.1:9464"


def health_url(server: ServerConfig) -> str:
    """The local URL of the daemon's endpoints for a ``server.listen`` address.

    A wildcard listen address (``0.0.0.0``, ``::``) is reached on loopback.
    """
    host, port = server.address
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a listen address, not a bind
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def run_daemon(config_file: Path | None, err: Console) -> tuple[int, bool]:
    """Run the daemon until SIGTERM / SIGINT; the exit code, and whether a run is stuck.

    0 after a clean stop; 2 for a configuration error (a job without a schedule ...);
    1 if it cannot start, or (stuck) if a run did not end within the shutdown budget.
    """
    from syncd.config import load_config
    from syncd.daemon import Daemon
    from syncd.errors import ConfigError, SyncdError
    from syncd.logs import configure_logging
    from syncd.signals import graceful_stop

    try:
        path = config_path(config_file)
        config = load_config(path)
        configure_logging(config.log.format, config.log.level)
        with graceful_stop() as stop:
            daemon = Daemon(config, path.resolve())
            daemon.start()
            while not stop.event.wait(0.5):
                pass
            clean = daemon.shutdown()
            return (0, False) if clean else (int(ExitCode.FAILED), True)
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return int(ExitCode.CONFIG), False
    except (SyncdError, OSError) as error:
        err.print(f"[red]syncd run cannot start:[/red] {error}", highlight=False)
        return int(ExitCode.FAILED), False


def check_health(url: str, *, timeout_s: float = 5.0) -> bool:
    """True if ``GET <url>/healthz`` answers 200 within ``timeout_s``."""
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/healthz", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def register(app: typer.Typer) -> None:
    """Add the daemon commands to ``app``."""

    @app.command("run")
    def run(config: ConfigOption = None) -> None:
        """Run every job on its schedule until SIGTERM / SIGINT (the daemon).

        Serves /healthz, /readyz, /metrics, /status and a status page on server.listen.
        """
        from rich.console import Console

        code, stuck = run_daemon(config, Console(stderr=True))
        if stuck:
            # A run that did not stop in time keeps a worker thread alive, and the
            # interpreter would wait for it at exit; the budget is what we promised.
            sys.stderr.flush()
            os._exit(code)
        raise typer.Exit(code)

    @app.command("healthcheck")
    def healthcheck(
        url: Annotated[
            str | None,
            typer.Option(help="Base URL of the daemon (default: from server.listen)."),
        ] = None,
        config: ConfigOption = None,
    ) -> None:
        """Exit 0 if the daemon's /healthz answers 200, else 1 (container HEALTHCHECK)."""
        from rich.console import Console

        from syncd.config import load_config
        from syncd.errors import ConfigError

        if url is None:
            url = DEFAULT_HEALTH_URL
            try:
                if config is not None or os.environ.get("SYNCD_CONFIG"):
                    url = health_url(load_config(config_path(config)).server)
            except ConfigError as error:
                Console(stderr=True).print(f"configuration error: {error}", highlight=False)
                raise typer.Exit(int(ExitCode.CONFIG)) from None
        healthy = check_health(url)
        print("healthy" if healthy else f"unhealthy: {url}/healthz", file=sys.stderr)
        raise typer.Exit(0 if healthy else 1)
