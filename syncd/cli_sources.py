"""``syncd sources ...``: commands that work on the sources alone (no platform key).

``syncd sources test`` opens and reads every source of the selected jobs, and shows how
many users it read, its problems, the time taken and the first users as they would be
mapped. It never talks to the platform, so the target's API key is neither needed nor
read: the ``target`` sections are replaced by a placeholder before validation.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from syncd.cli_options import ConfigOption, JobOption, OutputFormat, OutputOption, config_path
from syncd.config import SyncdConfig, load_config
from syncd.errors import ConfigError, SyncdError
from syncd.exitcodes import ExitCode
from syncd.logs import configure_logging
from syncd.model import RecordProblem, SourceUser
from syncd.sources import SourceContext, build_source

SAMPLE_SIZE = 10
"""Users shown per source."""
PROBLEMS_SHOWN = 20
"""Problems listed per source (all are counted)."""


@dataclass(slots=True)
class SourceTest:
    """What reading one source gave."""

    job: str
    source: str
    type: str
    users: int = 0
    problems: int = 0
    problem_list: list[str] = field(default_factory=list)
    sample: list[SourceUser] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True if the source was read to the end."""
        return self.error is None


def load_sources_config(path: Path) -> SyncdConfig:
    """The config at ``path`` validated with placeholder targets (no API key needed)."""
    return load_config(path, without_targets=True)


def try_sources(config: SyncdConfig, job_name: str | None) -> list[SourceTest]:
    """Open and read every source of the selected jobs; never raises for a failed read."""
    results = []
    for job in config.job(job_name):
        context = SourceContext(lowercase=job.identity.lowercase)
        for source_config in job.sources:
            result = SourceTest(job=job.name, source=source_config.label, type=source_config.type)
            started = time.perf_counter()
            try:
                with build_source(source_config, context) as source:
                    for item in source.read():
                        if isinstance(item, RecordProblem):
                            result.problems += 1
                            if len(result.problem_list) < PROBLEMS_SHOWN:
                                result.problem_list.append(str(item))
                        else:
                            result.users += 1
                            if len(result.sample) < SAMPLE_SIZE:
                                result.sample.append(item)
            except SyncdError as error:
                result.error = str(error)
            except Exception as error:  # a bug must not hide the other sources' results
                result.error = f"unexpected error: {type(error).__name__}: {error}"
            result.seconds = time.perf_counter() - started
            results.append(result)
    return results


def _user_json(user: SourceUser) -> dict[str, Any]:
    return {
        "end_user": user.end_user,
        "tags": dict(user.tags),
        "active_from": user.active_from.isoformat() if user.active_from else None,
        "active_to": user.active_to.isoformat() if user.active_to else None,
        "enabled": user.enabled,
        "origin": str(user.origin),
    }


def results_to_json(results: list[SourceTest]) -> dict[str, Any]:
    """Every source's result as JSON-ready data."""
    return {
        "sources": [
            {
                "job": r.job,
                "source": r.source,
                "type": r.type,
                "ok": r.ok,
                "users": r.users,
                "problems": r.problems,
                "problem_list": r.problem_list,
                "seconds": round(r.seconds, 3),
                "sample": [_user_json(user) for user in r.sample],
                "error": r.error,
            }
            for r in results
        ]
    }


def render_results(console: Console, results: list[SourceTest]) -> None:
    """One block per source: a summary line, its problems, a table of the first users."""
    for r in results:
        status = "[green]ok[/green]" if r.ok else "[red]FAILED[/red]"
        console.print(
            f"[bold]{r.job} / {r.source}[/bold] ({r.type}): {status}, {r.users} users, "
            f"{r.problems} problems, {r.seconds:.2f} s",
            highlight=False,
        )
        if r.error is not None:
            console.print(f"  [red]error:[/red] {r.error}", highlight=False)
        for problem in r.problem_list:
            console.print(f"  [yellow]problem:[/yellow] {problem}", highlight=False)
        if r.problems > len(r.problem_list):
            console.print(f"  ... and {r.problems - len(r.problem_list)} more problems")
        if r.sample:
            table = Table(show_header=True, header_style="bold")
            table.add_column("end_user", no_wrap=True)
            for column in ("tags", "active_from", "active_to", "enabled", "origin"):
                table.add_column(column, overflow="fold")
            for user in r.sample:
                data = _user_json(user)
                tags = ", ".join(f"{k}={v}" for k, v in data["tags"].items())
                table.add_row(
                    user.end_user,
                    tags,
                    data["active_from"] or "",
                    data["active_to"] or "",
                    "yes" if user.enabled else "no",
                    data["origin"],
                )
            console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``sources`` command group to ``app``."""
    sources_app = typer.Typer(
        name="sources", help="Work on the sources alone (no platform key).", no_args_is_help=True
    )
    app.add_typer(sources_app)

    @sources_app.command("test")
    def test_command(
        config: ConfigOption = None,
        job: JobOption = None,
        output: OutputOption = OutputFormat.TABLE,
    ) -> None:
        """Read every source of the selected jobs and show what it gives; write nothing."""
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
