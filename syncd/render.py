"""Showing plans and results to people (rich tables) and to programs (JSON)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from syncd.exitcodes import exit_code_for
from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import outgoing_user
from syncd.runs import PlannedRun, RunResult
from syncd.service import JobReport

_KIND_STYLE = {
    ChangeKind.INSERT: "green",
    ChangeKind.UPDATE: "yellow",
    ChangeKind.REACTIVATE: "cyan",
    ChangeKind.END: "magenta",
    ChangeKind.DELETE: "red",
}


_COUNT_COLUMNS = ("insert", "update", "reactivate", "end", "delete", "unchanged")
_DESTRUCTIVE_KINDS = (ChangeKind.UPDATE, ChangeKind.END)
_MAX_PROBLEMS_SHOWN = 50


def _change_json(change: Change, destructive: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": change.kind.value,
        "end_user": change.user.end_user,
        "reason": change.reason,
        "destructive": destructive.get(change.user.end_user)
        if change.kind in _DESTRUCTIVE_KINDS
        else None,
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
        "options": list(planned.verdict.options),
        "changes": (
            [_change_json(c, planned.verdict.destructive) for c in planned.plan.changes()]
            if planned.plan
            else []
        ),
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
        data = result_to_json(report.result)
        # The report's exit code is the process's (a result that could not be shown
        # fails the job even if it was applied): a script must read the same number.
        data["exit_code"] = int(report.exit_code)
        return data
    if report.planned is not None:
        # A plan (``syncd plan``), held or not: a script reads the same keys as for a run.
        data = planned_to_json(report.planned)
        data["status"] = report.status.value
        data["exit_code"] = int(report.exit_code)
        data["error"] = report.error
        return data
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


_REVIEW_GROUPS = ("delete", "end", "destructive update", "update", "reactivate", "insert")
"""The order of the plan table: what takes access or information away comes first."""


def review_order(plan: Plan, destructive: dict[str, str]) -> Iterator[tuple[str, Change]]:
    """Every change with its group, in :data:`_REVIEW_GROUPS` order: deletes, end-dates,
    destructive updates, then the other updates, reactivations and inserts."""
    yield from (("delete", change) for change in plan.deletes)
    yield from (("end", change) for change in plan.ends)
    yield from (
        ("destructive update", change)
        for change in plan.updates
        if change.user.end_user in destructive
    )
    yield from (
        ("update", change) for change in plan.updates if change.user.end_user not in destructive
    )
    yield from (("reactivate", change) for change in plan.reactivations)
    yield from (("insert", change) for change in plan.inserts)


def _left_out(plan: Plan, destructive: dict[str, str], shown: dict[str, int]) -> str:
    """``1200 inserts, 3 updates``: how many changes of each group the table left out."""
    destructive_updates = sum(1 for c in plan.updates if c.user.end_user in destructive)
    totals = {
        "delete": len(plan.deletes),
        "end": len(plan.ends),
        "destructive update": destructive_updates,
        "update": len(plan.updates) - destructive_updates,
        "reactivate": len(plan.reactivations),
        "insert": len(plan.inserts),
    }
    parts = []
    for group in _REVIEW_GROUPS:
        missing = totals[group] - shown.get(group, 0)
        if missing > 0:
            parts.append(f"{missing} {group}{'s' if missing != 1 else ''}")
    return ", ".join(parts)


def render_planned(console: Console, planned: PlannedRun, *, limit: int = 50) -> None:
    """Print the plan of one job: counts, the first changes, and the guard's verdict."""
    desired = planned.desired
    console.rule(f"[bold]job {planned.job}[/bold] — plan (run {planned.run_id})")
    for source in desired.sources:
        line = f"source {source.label}: {source.users} users"
        if source.problems:
            line += f", [red]{source.problems} bad records[/red]"
        if source.error:
            line += f", [red]read failed: {escape(source.error)}[/red]"
        console.print(line, highlight=False)
    shown_problems = min(limit, _MAX_PROBLEMS_SHOWN)
    for problem in desired.problems[:shown_problems]:
        console.print(f"  [red]bad record[/red] {escape(str(problem))}", highlight=False)
    if len(desired.problems) > shown_problems:
        console.print(
            f"  … and {len(desired.problems) - shown_problems} more bad records "
            "(--output json lists them all)",
            highlight=False,
        )
    for conflict in desired.conflicts[:shown_problems]:
        console.print(f"  [red]conflict[/red] {escape(str(conflict))}", highlight=False)
    if len(desired.conflicts) > shown_problems:
        console.print(
            f"  … and {len(desired.conflicts) - shown_problems} more conflicts",
            highlight=False,
        )
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
            destructive = planned.verdict.destructive
            shown: dict[str, int] = {}
            for group, change in review_order(plan, destructive):
                if sum(shown.values()) >= limit:
                    break
                shown[group] = shown.get(group, 0) + 1
                style = _KIND_STYLE[change.kind]
                # Names and values come from the source and the platform: never markup.
                reason = escape(change.reason)
                why = destructive.get(change.user.end_user)
                if why is not None and change.kind in _DESTRUCTIVE_KINDS:
                    # Tag names in it come from the platform: never markup either.
                    reason = f"[bold red]{escape(why)}[/bold red]; {reason}"
                table.add_row(
                    f"[{style}]{change.kind.value}[/{style}]",
                    escape(change.user.end_user),
                    escape(_describe(change)),
                    reason,
                )
            console.print(table)
            if plan.total_changes > limit:
                console.print(
                    f"[dim]… and {plan.total_changes - sum(shown.values())} more changes: "
                    f"{_left_out(plan, destructive, shown)} (--output json lists them all)[/dim]",
                    highlight=False,
                )
        else:
            console.print("[green]nothing to change[/green]")
    for reason in planned.verdict.overridden:
        console.print(
            f"[yellow]guard overridden by the operator:[/yellow] {escape(reason)}",
            highlight=False,
        )
    if planned.verdict.held:
        console.print("[bold red]HELD by the guard — nothing will be written:[/bold red]")
        for reason in planned.verdict.reasons:
            console.print(f"  • {escape(reason)}", highlight=False)
        console.print(f"[dim]{escape(planned.verdict.hint)}[/dim]", highlight=False)


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
                f"    [red]failed[/red] {escape(failure.end_user)}: {escape(failure.reason)}",
                highlight=False,
            )
        if len(outcome.failures) > 20:
            console.print(f"    … and {len(outcome.failures) - 20} more failures", highlight=False)
    if result.error:
        console.print(f"[red]error:[/red] {escape(result.error)}", highlight=False)
