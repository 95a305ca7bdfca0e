"""The renderers: the JSON contract, CSV with the same numbers, the self-contained HTML."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

from rich.console import Console

from syncd.report.compute import ActivationReport, Granularity, compute_report
from syncd.report.render import render_table, spreadsheet_safe, to_csv, to_json
from tests.report.test_compute import ACTIVITY, PLATFORM

D = date.fromisoformat


def sample_report(by: tuple[str, ...] = ("department",)) -> ActivationReport:
    """The hand-computed fixture of test_compute as a report (also for the HTML tests)."""
    return compute_report(
        start=D("2026-01-10"),
        end=D("2026-03-20"),
        granularity=Granularity.MONTHLY,
        eligible=PLATFORM,
        activity=ACTIVITY,
        by=by,
        data_freshness="2026-03-21T06:00:00Z",
    )


def test_json_follows_the_contract() -> None:
    document = to_json(sample_report())
    assert list(document)[:7] == [
        "from",
        "to",
        "granularity",
        "periods",
        "total",
        "active_not_eligible_users",
        "never_active",
    ]
    assert (document["from"], document["to"], document["granularity"]) == (
        "2026-01-10",
        "2026-03-20",
        "monthly",
    )
    first = document["periods"][0]
    assert first == {
        "period": "2026-01",
        "start": "2026-01-10",
        "end": "2026-01-31",
        "eligible": 2,
        "active": 2,
        "active_eligible": 1,
        "activation_rate": 0.5,
        "active_not_eligible": 1,
        "by": {
            "department": {
                "Eng": {
                    "eligible": 1,
                    "active": 0,
                    "active_eligible": 0,
                    "activation_rate": 0.0,
                    "active_not_eligible": 0,
                },
                "Sales": {
                    "eligible": 1,
                    "active": 2,
                    "active_eligible": 1,
                    "activation_rate": 1.0,
                    "active_not_eligible": 1,
                },
                "(no department)": {
                    "eligible": 0,
                    "active": 0,
                    "active_eligible": 0,
                    "activation_rate": None,
                    "active_not_eligible": 0,
                },
            }
        },
    }
    total = document["total"]
    assert {
        k: total[k]
        for k in ("eligible", "active", "active_eligible", "activation_rate", "active_not_eligible")
    } == {
        "eligible": 4,
        "active": 5,
        "active_eligible": 2,
        "activation_rate": 0.5,
        "active_not_eligible": 3,
    }
    assert total["by"]["department"]["Eng"]["never_active"] == 1
    assert document["active_not_eligible_users"] == ["c", "d", "x"]
    assert document["never_active"] == 2
    assert document["data_freshness"] == "2026-03-21T06:00:00Z"


def test_json_without_groups_has_empty_by() -> None:
    document = to_json(sample_report(by=()))
    assert document["total"]["by"] == {}
    assert all(period["by"] == {} for period in document["periods"])


def test_csv_carries_the_same_numbers() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(sample_report()))))
    plain = [r for r in rows if not r["tag"]]
    assert [
        (r["period"], r["eligible"], r["active"], r["active_eligible"], r["activation_rate"])
        for r in plain
    ] == [
        ("2026-01", "2", "2", "1", "0.5000"),
        ("2026-02", "3", "2", "0", "0.0000"),
        ("2026-03", "3", "3", "2", "0.6667"),
        ("total", "4", "5", "2", "0.5000"),
    ]
    assert plain[-1]["never_active"] == "2"
    sales = [r for r in rows if r["period"] == "total" and r["value"] == "Sales"]
    assert sales[0]["activation_rate"] == "1.0000"
    none_group = [r for r in rows if r["period"] == "2026-03" and r["value"] == "(no department)"]
    assert none_group[0]["eligible"] == "1"


def _table_rows(report: ActivationReport) -> list[list[str]]:
    console = Console(record=True, width=200, file=io.StringIO())
    render_table(console, report)
    rows = []
    for line in console.export_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if len(cells) > 1:
            rows.append(cells)
    return rows


def test_the_table_carries_the_numbers_of_the_json() -> None:
    report = sample_report()
    document = to_json(report)
    rows = _table_rows(report)

    def numbers(n: dict[str, Any]) -> list[str]:
        rate = n["activation_rate"]
        shown = "—" if rate is None else f"{rate * 100:.1f}%"
        return [
            str(n["eligible"]),
            str(n["active"]),
            str(n["active_eligible"]),
            shown,
            str(n["active_not_eligible"]),
        ]

    for period in document["periods"]:
        assert [period["period"], *numbers(period), ""] in rows
        for value, group in period["by"]["department"].items():
            assert [period["period"], value, *numbers(group), ""] in rows
    total = document["total"]
    assert ["total", *numbers(total), str(document["never_active"])] in rows
    for value, group in total["by"]["department"].items():
        assert ["total", value, *numbers(group), str(group["never_active"])] in rows


def test_a_tag_value_that_looks_like_a_formula_is_never_a_formula_in_the_csv() -> None:
    assert spreadsheet_safe('=HYPERLINK("http://x","y")') == '\'=HYPERLINK("http://x","y")'
    for start in ("+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(start) == "'" + start
    assert spreadsheet_safe("Sales") == "Sales"
    assert spreadsheet_safe("") == ""
