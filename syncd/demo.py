"""``syncd demo``: three real runs against an in-process emulator, no credentials needed.

It uses the same code paths as production (CSV source, HTTP client, planner, guard,
state store); only the platform is the emulator on a free loopback port.
"""

from __future__ import annotations

import csv
import secrets
import tempfile
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import PlatformEmulator
from syncd.emulator.analytics import AnalyticsEmulator, generate_activity
from syncd.errors import SyncdError
from syncd.exitcodes import ExitCode, worst
from syncd.logs import configure_logging
from syncd.model import parse_api_date
from syncd.platform.api import WireUser
from syncd.render import render_planned, render_result
from syncd.report.compute import Granularity
from syncd.report.render import render_table
from syncd.report.service import ReportRequest, build_report
from syncd.runner import today_utc
from syncd.runs import PlannedRun
from syncd.service import run_job

DEMO_CONFIG = """
state_dir: ./state
log: {format: console, level: warning}
jobs:
  - name: demo
    target:
      base_url: ${EMULATOR_URL}
      api: platform-users
      api_key: ${DEMO_API_KEY}
      batch_size: 5
    sources:
      - type: csv
        path: employees.csv
        id_column: email
        tags: {department: Department, country: Country}
        active_from_column: start_date
        enabled_column: enabled
    policy:
      on_missing: end_date
    guard:
      max_removals: 5
      max_removal_ratio: 0.25
analytics:
  base_url: ${ANALYTICS_URL}
  service_key: ${DEMO_API_KEY}
"""

_WRITES = ("insert", "update", "delete")


def _edit_employees(path: Path, today: date) -> None:
    """A leaver, a joiner and a department change, as HR would export them."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    body = [row for row in body if row[0] != "joan.clarke@example.com"]  # the leaver
    for row in body:
        if row[0] == "linus.torvalds@example.com":
            row[3] = "Infrastructure"  # moved team
    body.append(
        [
            "barbara.mcclintock@example.com",
            "Barbara",
            "McClintock",
            "Research",
            "US",
            today.isoformat(),
            "true",
        ]
    )
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *body])


def _platform_table(emulator: PlatformEmulator) -> Table:
    table = Table(title="platform users (emulator)", show_header=True, header_style="bold")
    for column in ("end_user", "tags", "active_from", "active_to"):
        table.add_column(column)
    for end_user, user in sorted(emulator.users().items()):
        tags = ", ".join(f"{k}={v}" for k, v in sorted(user.tags.items()))
        table.add_row(end_user, tags, user.active_from or "", user.active_to or "")
    return table


def _had_access(user: WireUser, day: date) -> bool:
    starts = parse_api_date(user.active_from) if user.active_from else day
    return starts <= day and (user.active_to is None or day <= parse_api_date(user.active_to))


def _activation_report(
    console: Console,
    config: SyncdConfig,
    platform: PlatformEmulator,
    analytics: AnalyticsEmulator,
    today: date,
) -> ExitCode:
    """The activation report of the demo's own users, with generated activity."""
    start = today - timedelta(days=89)
    users = platform.users()
    # People use the tool while they have access; one contractor uses it without being
    # on the list at all: the licence leakage the report lists.
    analytics.add_activity(
        (user, day)
        for user, day in generate_activity(sorted(users), start, today, seed=1)
        if _had_access(users[user], day)
    )
    analytics.add_activity([("contractor@example.com", start + timedelta(days=30))])
    console.rule(
        "[bold cyan]Activation report — last 90 days, from the emulated analytics API[/bold cyan]"
    )
    try:
        report = build_report(config, ReportRequest(start, today, Granularity.MONTHLY))
    except SyncdError as error:
        console.print(f"[red]activation report failed:[/red] {error}", highlight=False)
        return ExitCode.FAILED
    render_table(console, report, limit=3)
    return ExitCode.OK


def run_demo(console: Console) -> ExitCode:
    """Run the demo; returns the worst exit code of its runs (0 when all went well)."""
    api_key = secrets.token_urlsafe(16)
    codes: list[ExitCode] = []
    today = today_utc()
    with (
        tempfile.TemporaryDirectory(prefix="syncd-demo-") as tmp,
        PlatformEmulator(api_key=api_key, max_batch_size=100) as emulator,
        AnalyticsEmulator(api_key=api_key) as analytics,
    ):
        workdir = Path(tmp)
        employees = workdir / "employees.csv"
        employees.write_bytes(
            resources.files("syncd").joinpath("demo_data/employees.csv").read_bytes()
        )
        config = parse_config(
            DEMO_CONFIG,
            origin="demo config",
            base_dir=workdir,
            environ={
                "EMULATOR_URL": emulator.url,
                "ANALYTICS_URL": analytics.url,
                "DEMO_API_KEY": api_key,
            },
            analytics_key=True,  # the demo ends with an activation report
        )
        configure_logging(config.log.format, config.log.level)
        job = config.jobs[0]
        console.print(
            f"[bold]syncd demo[/bold]: emulator on {emulator.url}, "
            f"source {employees}, batch size {job.target.batch_size}\n"
        )
        steps = [
            "Run 1 — first sync: every enabled employee is new (the disabled one is skipped)",
            "Run 2 — HR changed the file: a leaver, a joiner and a department change",
            "Run 3 — nothing changed: the plan is empty and no write call is made",
        ]

        def show(planned: PlannedRun) -> None:
            render_planned(console, planned)

        for number, title in enumerate(steps, start=1):
            if number == 2:
                _edit_employees(employees, today)
            console.rule(f"[bold cyan]{title}[/bold cyan]")
            emulator.reset_counters()
            report = run_job(config, job, apply=True, on_planned=show)
            if report.result is not None:
                render_result(console, report.result)
            else:
                console.print(f"[red]run failed:[/red] {report.error}", highlight=False)
            calls = emulator.calls()
            console.print(
                "emulator saw write calls: "
                + ", ".join(f"{name}={calls[name]}" for name in _WRITES),
                highlight=False,
            )
            codes.append(report.exit_code)
            console.print()
        console.print(_platform_table(emulator))
        codes.append(_activation_report(console, config, emulator, analytics, today))
    outcome = worst(codes)
    if outcome is ExitCode.OK:
        console.print(
            "[green]Demo done.[/green] Next: copy config/example.yaml, point it at your "
            "directory and project, and run `syncd plan -c config.yaml`."
        )
    return outcome
