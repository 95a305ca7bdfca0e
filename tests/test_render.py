"""Plan output a reviewer can trust: removals first, honest truncation, safe text."""

from __future__ import annotations

from datetime import UTC, date, datetime

from rich.console import Console

from syncd.exitcodes import ExitCode
from syncd.guard import GuardLimits, check_plan
from syncd.merge import DesiredUsers, DesiredUsersBuilder
from syncd.model import Origin, PlatformUser, RecordProblem, SourceUser, make_tags
from syncd.plan import Change, ChangeKind, Plan, PlanPolicy
from syncd.render import planned_to_json, render_planned, report_to_json, review_order
from syncd.runner import PlannedRun, RunStatus
from syncd.service import JobReport

TODAY = date(2026, 11, 22)
START = date(2024, 1, 1)


def _user(name: str, tags: dict[str, str] | None = None, end: date | None = None) -> PlatformUser:
    return PlatformUser(name, make_tags(tags or {}), START, end)


def _change(kind: ChangeKind, name: str, **tags: str) -> Change:
    before = _user(name, {"department": "Eng", "region": "DE"})
    if kind is ChangeKind.INSERT:
        return Change(kind, _user(name, {"department": "Eng"}), None, "new in hr.csv:2")
    if kind is ChangeKind.END:
        return Change(kind, _user(name, before and dict(before.tags), TODAY), before, "missing")
    return Change(kind, _user(name, tags), before, "changed in the source (hr.csv:3)")


def _desired(problems: int = 0) -> DesiredUsers:
    builder = DesiredUsersBuilder()
    builder.begin_source("hr.csv")
    builder.add(SourceUser.from_origin("someone", make_tags({}), Origin("hr.csv", 2)))
    for i in range(problems):
        builder.add(RecordProblem(Origin("hr.csv", 10 + i), f"bad date {i}"))
    builder.end_source()
    return builder.build()


def _planned(plan: Plan, desired: DesiredUsers | None = None) -> PlannedRun:
    desired = desired or _desired()
    verdict = check_plan(plan, desired, limits=GuardLimits(), today=TODAY)
    return PlannedRun("corp", "run1", datetime.now(UTC), desired, 100, plan, verdict, PlanPolicy())


def _mixed_plan() -> Plan:
    return Plan(
        inserts=tuple(_change(ChangeKind.INSERT, f"new{i}") for i in range(200)),
        updates=(
            _change(ChangeKind.UPDATE, "moved", department="Sales", region="DE"),
            _change(ChangeKind.UPDATE, "blanked", region="DE"),
        ),
        ends=tuple(_change(ChangeKind.END, f"gone{i}") for i in range(3)),
        active_managed=100,
        active_removals=3,
    )


def _text(planned: PlannedRun, limit: int) -> str:
    console = Console(record=True, width=220, color_system=None)
    render_planned(console, planned, limit=limit)
    return console.export_text()


def test_review_order_puts_removals_and_destructive_updates_first() -> None:
    plan = _mixed_plan()
    verdict = check_plan(plan, _desired(), limits=GuardLimits(), today=TODAY)
    assert verdict.destructive == {"blanked": "tag department emptied"}
    groups = [
        (group, change.user.end_user) for group, change in review_order(plan, verdict.destructive)
    ]
    assert groups[:5] == [
        ("end", "gone0"),
        ("end", "gone1"),
        ("end", "gone2"),
        ("destructive update", "blanked"),
        ("update", "moved"),
    ]
    assert {group for group, _ in groups[5:]} == {"insert"}


def test_the_table_shows_removals_before_inserts_and_counts_what_it_left_out() -> None:
    text = _text(_planned(_mixed_plan()), limit=4)
    assert text.index("gone2") < text.index("blanked")
    assert "new0" not in text
    assert "tag department emptied" in text
    assert "… and 201 more changes: 1 update, 200 inserts (--output json lists them all)" in (
        " ".join(text.split())
    )


def test_bad_records_beyond_fifty_are_counted_not_printed() -> None:
    text = _text(_planned(Plan(active_managed=1), _desired(problems=80)), limit=1000)
    assert "bad date 49" in text
    assert "bad date 50" not in text
    assert "… and 30 more bad records (--output json lists them all)" in text


def test_names_from_the_source_are_never_read_as_markup() -> None:
    plan = Plan(
        inserts=(Change(ChangeKind.INSERT, _user("[red]x[/red]@evil"), None, "new [bold]"),),
        active_managed=1,
    )
    text = _text(_planned(plan), limit=10)
    assert "[red]x[/red]@evil" in text
    assert "new [bold]" in text


def test_json_marks_destructive_changes_and_says_how_to_pass_the_hold() -> None:
    plan = Plan(
        updates=tuple(_change(ChangeKind.UPDATE, f"u{i}", region="DE") for i in range(30)),
        active_managed=100,
    )
    data = planned_to_json(_planned(plan))
    assert data["held"] is True
    assert data["options"] == ["--allow-updates", "30"]
    assert {change["destructive"] for change in data["changes"]} == {"tag department emptied"}


def test_a_held_plan_report_has_status_exit_code_and_error() -> None:
    planned = _planned(
        Plan(updates=(_change(ChangeKind.UPDATE, "u", region="DE"),), active_managed=1)
    )
    report = JobReport("corp", RunStatus.HELD, ExitCode.HELD, "run1", planned=planned)
    data = report_to_json(report)
    assert (data["job"], data["status"], data["exit_code"], data["error"]) == (
        "corp",
        "held",
        3,
        None,
    )
    assert data["changes"][0]["end_user"] == "u"


def test_a_platform_tag_name_in_a_destructive_reason_is_never_read_as_markup() -> None:
    # Tag names come from the platform (set by hand or by another tool): "[/x]" would
    # make rich raise a MarkupError, "[bold]" would vanish from the table.
    before = PlatformUser("a@x.com", make_tags({"[/x]": "1", "[bold]team": "2"}), START)
    change = Change(ChangeKind.UPDATE, _user("a@x.com"), before, "changed in the source")
    text = _text(_planned(Plan(updates=(change,), active_managed=1)), limit=10)
    assert "tag [/x], [bold]team emptied" in text


def test_json_exit_code_is_the_report_s_even_when_it_differs_from_the_status() -> None:
    # The CLI turns a job whose result could not be shown into exit 1; the JSON entry
    # must say the same as the process exit code.
    from syncd.runner import RunResult

    planned = _planned(Plan(active_managed=1))
    result = RunResult(planned, RunStatus.APPLIED)
    report = JobReport(
        "corp", RunStatus.APPLIED, ExitCode.FAILED, "run1", planned=planned, result=result
    )
    data = report_to_json(report)
    assert (data["status"], data["exit_code"]) == ("applied", int(ExitCode.FAILED))
