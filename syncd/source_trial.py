"""Trying the sources alone, for ``syncd sources test`` (:mod:`syncd.cli_sources`).

It opens and reads every source of the selected jobs, and shows how
many users it read, its problems, the time taken and the first users as they would be
mapped. It never talks to the platform, so the target's API key is neither needed nor
read: the ``target`` sections are replaced by a placeholder before validation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from syncd.config import SyncdConfig, load_config
from syncd.errors import SyncdError
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
    warnings: list[str] = field(default_factory=list)
    """From the source's optional ``diagnostics()`` hook (e.g. a credential expiring)."""

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
                    try:
                        for item in source.read():
                            if isinstance(item, RecordProblem):
                                result.problems += 1
                                if len(result.problem_list) < PROBLEMS_SHOWN:
                                    result.problem_list.append(str(item))
                            else:
                                result.users += 1
                                if len(result.sample) < SAMPLE_SIZE:
                                    result.sample.append(item)
                    finally:
                        result.warnings = source_diagnostics(source)
            except SyncdError as error:
                result.error = str(error)
            except Exception as error:  # a bug must not hide the other sources' results
                result.error = f"unexpected error: {type(error).__name__}: {error}"
            result.seconds = time.perf_counter() - started
            results.append(result)
    return results


def source_diagnostics(source: object) -> list[str]:
    """The warnings of a source's optional ``diagnostics()`` hook (none without one).

    A source that knows something an operator must act on before it fails a run (a
    certificate or client secret close to expiry, a property Graph hides without a
    permission) offers ``diagnostics() -> list[str]``; CSV and LDAP have none.
    """
    hook = getattr(source, "diagnostics", None)
    return [str(message) for message in hook()] if callable(hook) else []


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
                "warnings": r.warnings,
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
        for warning in r.warnings:
            console.print(f"  [yellow]warning:[/yellow] {warning}", highlight=False)
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
