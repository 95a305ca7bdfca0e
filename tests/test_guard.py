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


def plan_with_ends(count: int, *, active: int) -> Plan:
    ends = tuple(
        Change(
            ChangeKind.END,
            PlatformUser(f"gone{i}", make_tags({}), TODAY, TODAY),
            PlatformUser(f"gone{i}", make_tags({}), TODAY),
            "missing from the source",
        )
        for i in range(count)
    )
    return Plan(ends=ends, active_managed=active, active_removals=count)


def test_small_plan_passes() -> None:
    verdict = check_plan(plan_with_ends(2, active=100), desired(), limits=GuardLimits())
    assert not verdict.held
    assert verdict.reasons == ()


def test_too_many_removals_by_count_is_held() -> None:
    verdict = check_plan(
        plan_with_ends(6, active=1000), desired(), limits=GuardLimits(max_removals=5)
    )
    assert verdict.held
    assert "6 removals (end-dates + deletes) exceed max_removals=5" in verdict.reasons[0]


def test_too_many_removals_by_ratio_is_held() -> None:
    verdict = check_plan(
        plan_with_ends(11, active=100),
        desired(),
        limits=GuardLimits(max_removals=None, max_removal_ratio=0.10),
    )
    assert verdict.held
    assert "11.0% of the 100 active platform users" in verdict.reasons[0]


def test_ratio_at_the_limit_passes() -> None:
    verdict = check_plan(
        plan_with_ends(10, active=100), desired(), limits=GuardLimits(max_removal_ratio=0.1)
    )
    assert not verdict.held


def test_empty_source_with_platform_users_is_held_even_without_removals() -> None:
    verdict = check_plan(Plan(active_managed=3), desired(users=0), limits=GuardLimits())
    assert verdict.held
    assert verdict.reasons == (
        "source hr.csv returned no users while the platform has 3 active users and the "
        "plan removes 0",
    )


def test_empty_source_on_empty_platform_passes() -> None:
    assert not check_plan(Plan(active_managed=0), desired(users=0), limits=GuardLimits()).held


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
        plan_with_ends(6, active=10),
        desired(),
        limits=GuardLimits(max_removals=5),
        override=override,
    )
    assert verdict.held is held
    if not held:
        assert verdict.overridden  # what was accepted is still reported


def test_bad_records_hold_the_plan_and_name_the_line() -> None:
    verdict = check_plan(Plan(active_managed=5), desired(problems=2), limits=GuardLimits())
    assert verdict.held
    assert "hr.csv:100: invalid date '2026-13-01'" in verdict.reasons[0]
    assert "--force to write the rest" in verdict.hint
    assert "the plan ends and deletes nobody" in verdict.reasons[0]
    assert not check_plan(
        Plan(active_managed=5),
        desired(problems=2),
        limits=GuardLimits(),
        override=Override(force=True),
    ).held
    assert check_plan(
        Plan(active_managed=5),
        desired(problems=2),
        limits=GuardLimits(),
        override=Override(allow_removals=100),
    ).held


def test_failed_read_is_held_even_when_forced() -> None:
    verdict = check_plan(
        Plan(active_managed=5),
        desired(failed=True),
        limits=GuardLimits(),
        override=Override(force=True),
    )
    assert verdict.held
    assert verdict.reasons == ("source hr.csv could not be read: connection reset",)
    assert "cannot be forced" in verdict.hint


def test_ended_users_on_the_platform_do_not_dilute_the_ratio() -> None:
    # A long-lived project: 9,000 leavers kept with an end date, 1,000 active users, and
    # an export that suddenly lists only 500 of them.
    from syncd.plan import PlanPolicy, plan_changes

    ended = [
        PlatformUser(f"left{i}", make_tags({}), date(2024, 1, 1), date(2025, 1, 1))
        for i in range(9000)
    ]
    active = [PlatformUser(f"u{i}", make_tags({}), date(2024, 1, 1)) for i in range(1000)]
    source = desired(users=500)
    plan = plan_changes(source.users, ended + active, PlanPolicy(), TODAY)
    assert (plan.removals, plan.active_managed) == (500, 1000)
    verdict = check_plan(plan, source, limits=GuardLimits())
    assert verdict.held
    assert (
        "500 removals of active users are 50.0% of the 1000 active platform users"
        in verdict.reasons[0]
    )


def _ended(name: str) -> PlatformUser:
    return PlatformUser(name, make_tags({}), date(2023, 1, 1), date(2024, 1, 1))


def test_empty_source_is_held_even_when_every_platform_user_already_ended() -> None:
    # on_missing: delete, and only leavers left on the platform: an empty export must
    # not erase the history the activation rate is computed from.
    from syncd.plan import PlanPolicy, plan_changes

    source = desired(users=0)
    plan = plan_changes(
        source.users,
        [_ended(f"left{i}") for i in range(50)],
        PlanPolicy(on_missing="delete"),
        TODAY,
    )
    assert (plan.removals, plan.active_managed) == (50, 0)
    verdict = check_plan(plan, source, limits=GuardLimits(max_removal_ratio=None))
    assert verdict.held
    assert (
        "returned no users while the platform has 0 active users and the plan removes 50"
        in (verdict.reasons[0])
    )


def test_purging_long_gone_users_is_not_measured_against_active_users() -> None:
    from syncd.plan import PlanPolicy, plan_changes

    source = desired(users=100)
    current = [PlatformUser(f"u{i}", make_tags({}), date(2024, 1, 1)) for i in range(100)]
    current += [_ended(f"left{i}") for i in range(11)]
    plan = plan_changes(source.users, current, PlanPolicy(purge_after_days=365), TODAY)
    assert (len(plan.deletes), plan.active_removals, plan.active_managed) == (11, 0, 100)
    assert not check_plan(plan, source, limits=GuardLimits()).held
    # ... but a purge is still a deletion: max_removals bounds it.
    assert check_plan(plan, source, limits=GuardLimits(max_removals=10)).held


def test_two_platform_spellings_of_one_person_count_once() -> None:
    from syncd.plan import PlanPolicy, plan_changes

    source = desired(users=1)  # u0
    current = [
        PlatformUser("U0", make_tags({}), date(2024, 1, 1)),
        PlatformUser("u0", make_tags({}), date(2024, 1, 1)),
    ]
    plan = plan_changes(source.users, current, PlanPolicy(), TODAY, identity=str.lower)
    assert (plan.platform_duplicates, plan.active_managed, plan.removals) == (1, 1, 0)
