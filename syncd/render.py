"""Showing plans and results to people (rich tables) and to programs (JSON)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from syncd.exitcodes import exit_code_for
from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import outgoing_user
from syncd.runner import PlannedRun, RunResult
from syncd.service import JobReport

_KIND_STYLE = {
    ChangeKind.INSERT: "green",
    ChangeKind.UPDATE: "yellow",
    ChangeKind.REACTIVATE: "cyan",
    ChangeKind.END: "magenta",
    ChangeKind.DELETE: "red",
}


_COUNT_COLUMNS = ("insert", "update", "reactivate", "end", "delete", "unchanged")


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "kind": change.kind.value,
        "end_user": change.user.end_user,
        "reason": change.reason,
        "user": (
            msgspec.to_builtins(outgoing_user(change.user))
            if change.kind is not ChangeKind.DELETE
            else None
        ),
        "fields": [
            {"field": item.name, "before": item.before, "after": item.after}
            for item in change.field_changes()
        ],
    }


def planned_to_json(planned: PlannedRun) -> dict[str, Any]:
    """The whole plan as JSON-ready data: counts, guard verdict, every change."""
    desired = planned.desired
    data: dict[str, Any] = {
        "job": planned.job,
        "run_id": planned.run_id,
        "source_users": len(desired.users),
        "platform_users": planned.current_users,
        "sources": [
            {"label": s.label, "users": s.users, "problems": s.problems, "error": s.error}
            for s in desired.sources
        ],
        "problems": [str(problem) for problem in desired.problems],
        "conflicts": [str(conflict) for conflict in desired.conflicts],
        "held": planned.verdict.held,
        "held_because": list(planned.verdict.reasons),
        "hint": planned.verdict.hint,
        "overridden": list(planned.verdict.overridden),
        "counts": planned.plan.counts() if planned.plan else None,
        "changes": [_change_json(c) for c in planned.plan.changes()] if planned.plan else [],
    }
    return data


def result_to_json(result: RunResult) -> dict[str, Any]:
    """A finished run as JSON-ready data."""
    data = planned_to_json(result.planned)
    data["status"] = result.status.value
    data["exit_code"] = int(exit_code_for(result.status))
    data["write_calls"] = result.write_calls
    data["error"] = result.error
    data["written"] = {
        outcome.operation.value: {
            "requested": outcome.requested,
            "confirmed": len(outcome.confirmed),
            "calls": outcome.calls,
        }
        for outcome in result.outcomes
    }
    data["failures"] = [
        {"operation": outcome.operation.value, "end_user": f.end_user, "reason": f.reason}
        for outcome in result.outcomes
        for f in outcome.failures
    ]
    return data


def report_to_json(report: JobReport) -> dict[str, Any]:
    """One job as JSON-ready data: its run if it got that far, else its status and error."""
    if report.result is not None:
        return result_to_json(report.result)
    if report.planned is not None:
        return planned_to_json(report.planned)
    return {
        "job": report.job,
        "run_id": report.run_id,
        "status": report.status.value,
        "exit_code": int(report.exit_code),
        "error": report.error,
    }


def _describe(change: Change) -> str:
    if change.kind is ChangeKind.DELETE:
        return "delete"
    parts = []
    for item in change.field_changes():
        before = "∅" if item.before is None else item.before
        after = "∅" if item.after is None else item.after
        parts.append(f"{item.name}: {before} → {after}")
    return "; ".join(parts)


def _first(plan: Plan, limit: int) -> Iterator[Change]:
    for index, change in enumerate(plan.changes()):
        if index >= limit:
            return
        yield change


def render_planned(console: Console, planned: PlannedRun, *, limit: int = 50) -> None:
    """Print the plan of one job: counts, the first changes, and the guard's verdict."""
    desired = planned.desired
    console.rule(f"[bold]job {planned.job}[/bold] — plan (run {planned.run_id})")
    for source in desired.sources:
        line = f"source {source.label}: {source.users} users"
        if source.problems:
            line += f", [red]{source.problems} bad records[/red]"
        if source.error:
            line += f", [red]read failed: {source.error}[/red]"
        console.print(line, highlight=False)
    for problem in desired.problems[:limit]:
        console.print(f"  [red]bad record[/red] {problem}", highlight=False)
    for conflict in desired.conflicts[:limit]:
        console.print(f"  [red]conflict[/red] {conflict}", highlight=False)
    plan = planned.plan
    if plan is not None:
        console.print(f"platform: {planned.current_users} users", highlight=False)
        counts = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for name in _COUNT_COLUMNS:
            counts.add_column(name, justify="right")
        values = plan.counts()
        counts.add_row(*(str(values[name]) for name in _COUNT_COLUMNS))
        console.print(counts)
        notes = []
        if plan.skipped_disabled:
            notes.append(f"{plan.skipped_disabled} disabled/ended users not inserted")
        if plan.untouched_missing:
            notes.append(f"{plan.untouched_missing} platform users not in the source left alone")
        if plan.withheld_removals:
            notes.append(
                f"{plan.withheld_removals} end-dates/deletes withheld: the source read was "
                "incomplete"
            )
        if plan.platform_duplicates:
            notes.append(
                f"{plan.platform_duplicates} platform entries share their normalised name "
                "with another entry (both follow the source)"
            )
        if plan.protected:
            notes.append(f"{plan.protected} protected users left alone")
        for note in notes:
            console.print(f"[dim]{note}[/dim]", highlight=False)
        if not plan.is_empty:
            table = Table(show_header=True, header_style="bold")
            table.add_column("change")
            table.add_column("end_user")
            table.add_column("fields")
            table.add_column("reason")
            for change in _first(plan, limit):
                style = _KIND_STYLE[change.kind]
                table.add_row(
                    f"[{style}]{change.kind.value}[/{style}]",
                    change.user.end_user,
                    _describe(change),
                    change.reason,
                )
            console.print(table)
            if plan.total_changes > limit:
                console.print(
                    f"[dim]… and {plan.total_changes - limit} more changes "
                    "(--output json lists them all)[/dim]"
                )
        else:
            console.print("[green]nothing to change[/green]")
    for reason in planned.verdict.overridden:
        console.print(
            f"[yellow]guard overridden by the operator:[/yellow] {reason}", highlight=False
        )
    if planned.verdict.held:
        console.print("[bold red]HELD by the guard — nothing will be written:[/bold red]")
        for reason in planned.verdict.reasons:
            console.print(f"  • {reason}", highlight=False)
        console.print(f"[dim]{planned.verdict.hint}[/dim]", highlight=False)


def render_result(console: Console, result: RunResult) -> None:
    """Print what a run wrote."""
    status = result.status.value
    style = {"applied": "green", "partial": "yellow"}.get(status, "red")
    console.print(f"[{style}]{status}[/{style}]: {result.write_calls} write calls", highlight=False)
    for outcome in result.outcomes:
        console.print(
            f"  {outcome.operation.value}: {len(outcome.confirmed)}/{outcome.requested} "
            f"confirmed in {outcome.calls} calls",
            highlight=False,
        )
        for failure in outcome.failures[:20]:
            console.print(
                f"    [red]failed[/red] {failure.end_user}: {failure.reason}", highlight=False
            )
        if len(outcome.failures) > 20:
            console.print(f"    … and {len(outcome.failures) - 20} more failures", highlight=False)
    if result.error:
        console.print(f"[red]error:[/red] {result.error}", highlight=False)
