"""``syncd sources test``: read the sources alone and show what they give.

A thin layer over :mod:`syncd.source_trial`, imported when the command runs so that
``syncd --help`` does not load the config models and the source adapters.
"""

from __future__ import annotations

import sys

import typer

from syncd.cli_options import (
    CommandGroup,
    ConfigOption,
    JobOption,
    OutputFormat,
    OutputOption,
    config_path,
)
from syncd.exitcodes import ExitCode


def register(app: typer.Typer) -> None:
    """Add the ``sources`` command group to ``app``."""
    sources_app = typer.Typer(
        name="sources",
        help="Work on the sources alone (no platform key).",
        no_args_is_help=True,
        rich_markup_mode=None,  # plain help, as syncd.cli.app
        cls=CommandGroup,
    )
    app.add_typer(sources_app)

    @sources_app.command("test")
    def test_command(
        config: ConfigOption = None,
        job: JobOption = None,
        output: OutputOption = OutputFormat.TABLE,
    ) -> None:
        """Read every source of the selected jobs and show what it gives; write nothing."""
        import orjson
        from rich.console import Console

        from syncd.errors import ConfigError
        from syncd.logs import configure_logging
        from syncd.source_trial import (
            load_sources_config,
            render_results,
            results_to_json,
            try_sources,
        )

        err = Console(stderr=True)
        try:
            loaded = load_sources_config(config_path(config))
            configure_logging(loaded.log.format, loaded.log.level)
            results = try_sources(loaded, job)
        except ConfigError as error:
            err.print(f"[red]configuration error:[/red] {error}", highlight=False)
            raise typer.Exit(int(ExitCode.CONFIG)) from None
        if output is OutputFormat.JSON:
            sys.stdout.buffer.write(
                orjson.dumps(results_to_json(results), option=orjson.OPT_INDENT_2)
            )
            sys.stdout.buffer.write(b"\n")
            sys.stdout.flush()
        else:
            render_results(Console(), results)
        for r in results:
            if r.error is not None:
                err.print(
                    f"[red]source {r.job} / {r.source} failed:[/red] {r.error}", highlight=False
                )
        code = ExitCode.FAILED if any(not r.ok for r in results) else ExitCode.OK
        raise typer.Exit(int(code))
