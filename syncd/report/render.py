"""The activation report as JSON (the contract), CSV and a terminal table.

All three carry the same numbers; the HTML page is :mod:`syncd.report.html`.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.console import Console
from rich.table import Table

from syncd.report.compute import ActivationReport, Counts, GroupCounts

__all__ = ["CSV_COLUMNS", "render_table", "to_csv", "to_json"]

CSV_COLUMNS = (
    "period",
    "start",
    "end",
    "tag",
    "value",
    "eligible",
    "active",
    "active_eligible",
    "activation_rate",
    "active_not_eligible",
    "never_active",
)


def _numbers(counts: Counts) -> dict[str, Any]:
    return {
        "eligible": counts.eligible,
        "active": counts.active,
        "active_eligible": counts.active_eligible,
        "activation_rate": counts.activation_rate,
        "active_not_eligible": counts.active_not_eligible,
    }


def _groups(by: GroupCounts, *, total: bool) -> dict[str, Any]:
    return {
        tag: {
            value: {**_numbers(c), **({"never_active": c.never_active} if total else {})}
            for value, c in values.items()
        }
        for tag, values in by.items()
    }


def to_json(report: ActivationReport) -> dict[str, Any]:
    """The JSON document of the report (the output contract, see the README)."""
    return {
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "granularity": report.granularity.value,
        "periods": [
            {
                "period": entry.period.label,
                "start": entry.period.start.isoformat(),
                "end": entry.period.end.isoformat(),
                **_numbers(entry.counts),
                "by": _groups(entry.by, total=False),
            }
            for entry in report.periods
        ],
        "total": {**_numbers(report.total), "by": _groups(report.total_by, total=True)},
        "active_not_eligible_users": report.active_not_eligible_users,
        "never_active": report.total.never_active,
        "data_freshness": report.data_freshness,
    }


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` as a spreadsheet shows it, never run: a directory value such as
    ``=HYPERLINK(...)`` would be a formula in Excel or LibreOffice, so one starting
    like a formula gets a leading ``'`` (what spreadsheets themselves use)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def to_csv(report: ActivationReport) -> str:
    """One row per period and per period x group, then the totals (``period=total``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def row(
        period: str, start: str, end: str, tag: str, value: str, c: Counts, total: bool
    ) -> None:
        writer.writerow(
            [
                period,
                start,
                end,
                spreadsheet_safe(tag),
                spreadsheet_safe(value),
                c.eligible,
                c.active,
                c.active_eligible,
                _rate(c.activation_rate),
                c.active_not_eligible,
                c.never_active if total else "",
            ]
        )

    for entry in report.periods:
        p = entry.period
        row(p.label, p.start.isoformat(), p.end.isoformat(), "", "", entry.counts, False)
        for tag, values in entry.by.items():
            for value, counts in values.items():
                row(p.label, p.start.isoformat(), p.end.isoformat(), tag, value, counts, False)
    start, end = report.start.isoformat(), report.end.isoformat()
    row("total", start, end, "", "", report.total, True)
    for tag, values in report.total_by.items():
        for value, counts in values.items():
            row("total", start, end, tag, value, counts, True)
    return out.getvalue()


def _counts_cells(c: Counts) -> list[str]:
    return [
        str(c.eligible),
        str(c.active),
        str(c.active_eligible),
        c.percent,
        str(c.active_not_eligible),
    ]


_COUNT_COLUMNS = ("eligible", "active", "active+eligible", "rate", "not eligible")


def render_table(console: Console, report: ActivationReport, *, limit: int = 10) -> None:
    """The report for a terminal, with the numbers of the JSON: periods and total, then
    per tag every period's and the total's numbers of each value, leakage, never-active."""
    title = f"activation {report.start} .. {report.end} ({report.granularity.value})" + (
        f", data as of {report.data_freshness}" if report.data_freshness else ""
    )
    table = Table(
        title=title,
        header_style="bold",
        caption="not eligible: active, but not eligible in that period",
    )
    table.add_column("period")
    for column in _COUNT_COLUMNS:
        table.add_column(column, justify="right")
    table.add_column("never active", justify="right")
    for entry in report.periods:
        table.add_row(entry.period.label, *_counts_cells(entry.counts), "")
    table.add_row(
        "total", *_counts_cells(report.total), str(report.total.never_active), style="bold"
    )
    console.print(table)
    for tag, totals in report.total_by.items():
        groups = Table(title=f"by {tag}", header_style="bold")
        groups.add_column("period")
        groups.add_column("value")
        for column in _COUNT_COLUMNS:
            groups.add_column(column, justify="right")
        groups.add_column("never active", justify="right")
        for entry in report.periods:
            for value, c in entry.by.get(tag, {}).items():
                groups.add_row(entry.period.label, value, *_counts_cells(c), "")
            groups.add_section()
        for value, c in totals.items():
            groups.add_row("total", value, *_counts_cells(c), str(c.never_active), style="bold")
        console.print(groups)
    leakage = report.active_not_eligible_users
    shown = ", ".join(leakage[:limit]) + (
        f" … (+{len(leakage) - limit})" if len(leakage) > limit else ""
    )
    console.print(
        f"active but never eligible (leakage): {len(leakage)}" + (f": {shown}" if leakage else ""),
        highlight=False,
    )
    console.print(
        f"eligible but never active while eligible: {report.total.never_active}", highlight=False
    )
