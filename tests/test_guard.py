"""The guard holds suspicious plans and lets an operator accept them explicitly."""

from __future__ import annotations

from datetime import date

import pytest

from syncd.guard import GuardLimits, Override, check_plan
from syncd.merge import DesiredUsers, DesiredUsersBuilder
from syncd.model import Origin, PlatformUser, RecordProblem, SourceUser, make_tags
from syncd.plan import Change, ChangeKind, Plan

TODAY = date(2026, 11, 22)


def desired(users: int = 1, *, problems: int = 0, failed: bool = False) -> DesiredUsers:
    builder = DesiredUsersBuilder()
    builder.begin_source("hr.csv")
    for i in range(users):
        builder.add(SourceUser(f"u{i}", make_tags({}), Origin("hr.csv", i + 2)))
    for i in range(problems):
        builder.add(RecordProblem(Origin("hr.csv", 100 + i), "invalid date '2026-13-01'"))
    builder.end_source(error="connection reset" if failed else None)
    return builder.build()


def plan_with_ends(count: int) -> Plan:
    ends = tuple(
        Change(
            ChangeKind.END,
            PlatformUser(f"gone{i}", make_tags({}), TODAY, TODAY),
            PlatformUser(f"gone{i}", make_tags({}), TODAY),
            "missing from the source",
        )
        for i in range(count)
    )
    return Plan(ends=ends)


def test_small_plan_passes() -> None:
    verdict = check_plan(plan_with_ends(2), desired(), current_users=100, limits=GuardLimits())
    assert not verdict.held
    assert verdict.reasons == ()


def test_too_many_removals_by_count_is_held() -> None:
    verdict = check_plan(
        plan_with_ends(6), desired(), current_users=1000, limits=GuardLimits(max_removals=5)
    )
    assert verdict.held
    assert "6 removals (end-dates + deletes) exceed max_removals=5" in verdict.reasons[0]


def test_too_many_removals_by_ratio_is_held() -> None:
    verdict = check_plan(
        plan_with_ends(11),
        desired(),
        current_users=100,
        limits=GuardLimits(max_removals=None, max_removal_ratio=0.10),
    )
    assert verdict.held
    assert "11.0% of the 100 platform users" in verdict.reasons[0]


def test_ratio_at_the_limit_passes() -> None:
    verdict = check_plan(
        plan_with_ends(10), desired(), current_users=100, limits=GuardLimits(max_removal_ratio=0.1)
    )
    assert not verdict.held


def test_empty_source_with_platform_users_is_held_even_without_removals() -> None:
    verdict = check_plan(Plan(), desired(users=0), current_users=3, limits=GuardLimits())
    assert verdict.held
    assert verdict.reasons == ("source hr.csv returned no users while the platform has 3",)


def test_empty_source_on_empty_platform_passes() -> None:
    assert not check_plan(Plan(), desired(users=0), current_users=0, limits=GuardLimits()).held


@pytest.mark.parametrize(
    ("override", "held"),
    [
        (Override(), True),
        (Override(allow_removals=5), True),
        (Override(allow_removals=6), False),
        (Override(force=True), False),
    ],
)
def test_operator_override(override: Override, held: bool) -> None:
    verdict = check_plan(
        plan_with_ends(6),
        desired(),
        current_users=10,
        limits=GuardLimits(max_removals=5),
        override=override,
    )
    assert verdict.held is held
    if not held:
        assert verdict.overridden  # what was accepted is still reported


def test_bad_records_hold_the_plan_and_name_the_line() -> None:
    verdict = check_plan(Plan(), desired(problems=2), current_users=5, limits=GuardLimits())
    assert verdict.held
    assert "hr.csv:100: invalid date '2026-13-01'" in verdict.reasons[0]
    assert "--force to write the rest" in verdict.hint
    assert "left alone" in verdict.reasons[0]
    assert not check_plan(
        Plan(),
        desired(problems=2),
        current_users=5,
        limits=GuardLimits(),
        override=Override(force=True),
    ).held
    assert check_plan(
        Plan(),
        desired(problems=2),
        current_users=5,
        limits=GuardLimits(),
        override=Override(allow_removals=100),
    ).held


def test_failed_read_is_held_even_when_forced() -> None:
    verdict = check_plan(
        Plan(),
        desired(failed=True),
        current_users=5,
        limits=GuardLimits(),
        override=Override(force=True),
    )
    assert verdict.held
    assert verdict.reasons == ("source hr.csv could not be read: connection reset",)
    assert "cannot be forced" in verdict.hint
