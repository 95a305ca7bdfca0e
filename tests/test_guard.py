"""The guard holds suspicious plans and lets an operator accept them explicitly."""

from __future__ import annotations

from datetime import date

import pytest

from syncd.guard import (
    GuardHistory,
    GuardLimits,
    Override,
    check_plan,
    destructive_change,
    exceeds_ratio,
)
from syncd.merge import DesiredUsers, DesiredUsersBuilder
from syncd.model import Origin, PlatformUser, RecordProblem, SourceUser, make_tags
from syncd.plan import Change, ChangeKind, Plan

TODAY = date(2026, 11, 22)


def desired(users: int = 1, *, problems: int = 0, failed: bool = False) -> DesiredUsers:
    builder = DesiredUsersBuilder()
    builder.begin_source("hr.csv")
    for i in range(users):
        builder.add(SourceUser.from_origin(f"u{i}", make_tags({}), Origin("hr.csv", i + 2)))
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


# ------------------------------------------------------- exact "more than" limits


@pytest.mark.parametrize(("removals", "held"), [(29, False), (30, True)])
def test_a_ratio_limit_means_more_than_compared_exactly(removals: int, held: bool) -> None:
    # 0.29 * 100 is 28.999999999999996 in floating point: 29 must still pass.
    verdict = check_plan(
        plan_with_ends(removals, active=100),
        desired(),
        limits=GuardLimits(max_removals=None, max_removal_ratio=0.29),
    )
    assert verdict.held is held


@pytest.mark.parametrize(
    ("count", "ratio", "base"), [(29, 0.29, 100), (7, 0.07, 100), (3, 0.3, 10)]
)
def test_exceeds_ratio_is_exact_at_the_limit(count: int, ratio: float, base: int) -> None:
    assert not exceeds_ratio(count, ratio, base)
    assert exceeds_ratio(count + 1, ratio, base)


# ----------------------------------------------------------------- update guard


def _user(name: str, tags: dict[str, str], start: date = date(2024, 1, 1)) -> PlatformUser:
    return PlatformUser(name, make_tags(tags), start)


def plan_with_updates(
    count: int,
    *,
    active: int,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
    after_start: date = date(2024, 1, 1),
) -> Plan:
    old_tags = {"department": "Eng"} if before is None else before
    new_tags = {"department": "Sales"} if after is None else after
    updates = tuple(
        Change(
            ChangeKind.UPDATE,
            _user(f"u{i}", new_tags, after_start),
            _user(f"u{i}", old_tags),
            "changed in the source (hr.csv:2)",
        )
        for i in range(count)
    )
    return Plan(updates=updates, active_managed=active)


def source_of(count: int) -> DesiredUsers:
    return desired(users=count)


def test_updates_above_max_updates_are_held_with_counts_and_five_examples() -> None:
    verdict = check_plan(
        plan_with_updates(12, active=1000),
        source_of(12),
        limits=GuardLimits(max_updates=10),
        today=TODAY,
    )
    assert verdict.held
    (reason,) = verdict.reasons
    assert reason == (
        "12 updates of active users exceed max_updates=10: u0; u1; u2; u3; u4; ... and 7 more"
    )
    assert "--allow-updates 12" in verdict.hint
    assert verdict.options == ("--allow-updates", "12")


def test_update_ratio_means_more_than() -> None:
    limits = GuardLimits(max_updates=None, max_update_ratio=0.29)
    at_limit = check_plan(
        plan_with_updates(29, active=100), source_of(29), limits=limits, today=TODAY
    )
    assert not at_limit.held
    above = check_plan(plan_with_updates(30, active=100), source_of(30), limits=limits, today=TODAY)
    assert above.held
    assert (
        "30 updates of active users are 30.0% of the 100 active platform users"
        in (above.reasons[0])
    )


@pytest.mark.parametrize(
    ("override", "held"),
    [
        (Override(), True),
        (Override(allow_updates=11), True),
        (Override(allow_updates=12), False),
        (Override(allow_removals=1000), True),
        (Override(force=True), False),
    ],
)
def test_allow_updates_passes_the_update_guard_for_one_run(override: Override, held: bool) -> None:
    verdict = check_plan(
        plan_with_updates(12, active=1000),
        source_of(12),
        limits=GuardLimits(max_updates=10),
        override=override,
        today=TODAY,
    )
    assert verdict.held is held
    if not held:
        assert verdict.overridden


def test_a_tag_emptied_for_many_users_is_destructive_and_held() -> None:
    plan = plan_with_updates(
        21, active=100, before={"department": "Eng", "region": "DE"}, after={"region": "DE"}
    )
    verdict = check_plan(plan, source_of(21), limits=GuardLimits(), today=TODAY)
    assert verdict.held
    (reason,) = verdict.reasons
    assert reason.startswith(
        "21 updates take information away or change eligibility (21 tag department emptied), "
        "above max_destructive_update_ratio=20% of 100 active users: "
        "u0 (tag department emptied); u1 (tag department emptied);"
    )
    assert reason.endswith("... and 16 more")
    assert verdict.destructive["u3"] == "tag department emptied"
    # The same number of updates that keep every tag pass (ordinary limits are higher).
    assert not check_plan(
        plan_with_updates(21, active=100), source_of(21), limits=GuardLimits(), today=TODAY
    ).held


def test_a_start_moved_past_today_is_destructive() -> None:
    later = date(2027, 3, 1)
    plan = plan_with_updates(3, active=10, after={"department": "Eng"}, after_start=later)
    verdict = check_plan(
        plan, source_of(3), limits=GuardLimits(max_destructive_updates=2), today=TODAY
    )
    assert verdict.held
    assert (
        "3 updates take information away or change eligibility (3 active_from moved past "
        "today), above max_destructive_updates=2" in verdict.reasons[0]
    )
    assert "u0 (active_from moved past today (2027-03-01))" in verdict.reasons[0]


def test_an_end_in_the_past_for_a_user_enabled_in_the_source_is_destructive() -> None:
    past = date(2025, 1, 1)
    change = Change(
        ChangeKind.END,
        PlatformUser("u0", make_tags({}), date(2024, 1, 1), past),
        PlatformUser("u0", make_tags({}), date(2024, 1, 1)),
        "end date from the source",
    )
    assert destructive_change(change, TODAY, enabled_in_source=True) == (
        "active_to set in the past (2025-01-01)"
    )
    assert destructive_change(change, TODAY, enabled_in_source=False) is None
    ended_today = Change(
        ChangeKind.END,
        PlatformUser("u0", make_tags({}), date(2024, 1, 1), TODAY),
        PlatformUser("u0", make_tags({}), date(2024, 1, 1)),
        "missing from the source",
    )
    assert destructive_change(ended_today, TODAY, enabled_in_source=True) is None
    plan = Plan(ends=(change,), active_managed=100, active_removals=1)
    verdict = check_plan(
        plan, source_of(1), limits=GuardLimits(max_destructive_updates=0), today=TODAY
    )
    assert verdict.held
    assert verdict.destructive == {"u0": "active_to set in the past (2025-01-01)"}


def test_ordinary_changes_are_not_destructive() -> None:
    postponed_joiner = Change(
        ChangeKind.UPDATE,
        _user("j", {}, date(2027, 6, 1)),
        _user("j", {}, date(2027, 1, 1)),
        "changed",
    )
    assert destructive_change(postponed_joiner, TODAY, enabled_in_source=True) is None
    new_tag = Change(
        ChangeKind.UPDATE, _user("a", {"a": "1", "b": "2"}), _user("a", {"a": "1"}), "changed"
    )
    assert destructive_change(new_tag, TODAY, enabled_in_source=True) is None


def test_updates_of_ended_users_are_not_counted() -> None:
    ended = tuple(
        Change(
            ChangeKind.UPDATE,
            PlatformUser(f"u{i}", make_tags({}), date(2024, 1, 1), date(2025, 1, 1)),
            PlatformUser(
                f"u{i}", make_tags({"department": "x"}), date(2024, 1, 1), date(2025, 1, 1)
            ),
            "changed",
        )
        for i in range(50)
    )
    verdict = check_plan(
        Plan(updates=ended, active_managed=10),
        source_of(50),
        limits=GuardLimits(max_updates=5, max_destructive_updates=0),
        today=TODAY,
    )
    assert not verdict.held


# ------------------------------------------------------- empty secondary source


def two_sources(first: int, second: int) -> DesiredUsers:
    builder = DesiredUsersBuilder()
    for label, count in (("hr.csv", first), ("contractors.csv", second)):
        builder.begin_source(label)
        for i in range(count):
            builder.add(SourceUser.from_origin(f"{label}{i}", make_tags({}), Origin(label, i + 2)))
        builder.end_source()
    return builder.build()


def test_an_empty_secondary_source_passes_when_nobody_is_removed_because_of_it() -> None:
    verdict = check_plan(
        Plan(active_managed=50), two_sources(50, 0), limits=GuardLimits(), today=TODAY
    )
    assert not verdict.held


def test_an_empty_secondary_source_holds_when_active_users_missing_are_removed() -> None:
    verdict = check_plan(
        plan_with_ends(2, active=52), two_sources(50, 0), limits=GuardLimits(), today=TODAY
    )
    assert verdict.held
    assert verdict.reasons == (
        "source contractors.csv returned no users and the plan removes 2 active users "
        "missing from the sources: gone0; gone1",
    )
    assert verdict.options == ("--allow-removals", "2")


def test_an_empty_secondary_source_ignores_purges_of_long_gone_users() -> None:
    purge = Change(ChangeKind.DELETE, _ended("left0"), _ended("left0"), "purge")
    verdict = check_plan(
        Plan(deletes=(purge,), active_managed=50),
        two_sources(50, 0),
        limits=GuardLimits(),
        today=TODAY,
    )
    assert not verdict.held


# --------------------------------------------------------- rolling daily budget


@pytest.mark.parametrize(("earlier", "held"), [(0, False), (95, False), (96, True)])
def test_removals_of_the_last_day_count_towards_max_removals_per_day(
    earlier: int, held: bool
) -> None:
    verdict = check_plan(
        plan_with_ends(5, active=1000),
        desired(),
        limits=GuardLimits(max_removals_per_day=100),
        history=GuardHistory(removed_last_day=earlier),
        today=TODAY,
    )
    assert verdict.held is held
    if held:
        assert verdict.reasons == (
            "96 removals confirmed in the last 24 hours plus 5 in this plan exceed "
            "max_removals_per_day=100: gone0; gone1; gone2; gone3; gone4",
        )
        assert "--allow-removals 5" in verdict.hint


def test_a_plan_without_removals_never_trips_the_daily_budget() -> None:
    verdict = check_plan(
        Plan(active_managed=10),
        desired(),
        limits=GuardLimits(max_removals_per_day=10),
        history=GuardHistory(removed_last_day=500),
        today=TODAY,
    )
    assert not verdict.held


def test_five_runs_of_nine_percent_are_caught_by_the_daily_budget() -> None:
    # The run-by-run ratio (10%) lets each through; the day's budget does not.
    limits = GuardLimits(max_removals=None, max_removal_ratio=0.10, max_removals_per_day=300)
    removed, verdicts = 0, []
    for _ in range(5):
        plan = plan_with_ends(90, active=1000)
        verdict = check_plan(
            plan,
            desired(),
            limits=limits,
            history=GuardHistory(removed_last_day=removed),
            today=TODAY,
        )
        verdicts.append(verdict.held)
        if not verdict.held:
            removed += 90  # the platform keeps 1000 active users: joiners replace them
    assert verdicts == [False, False, False, True, True]


# ---------------------------------------------------------------- identity rules


@pytest.mark.parametrize(
    ("override", "held"),
    [
        (Override(), True),
        (Override(allow_removals=10**6, allow_updates=10**6), True),
        (Override(accept_identity_rules=True), False),
        (Override(force=True), False),
    ],
)
def test_changed_identity_rules_hold_until_accepted(override: Override, held: bool) -> None:
    verdict = check_plan(
        plan_with_ends(1, active=10),
        desired(),
        limits=GuardLimits(),
        override=override,
        history=GuardHistory(identity_changes=("identity.lowercase: true -> false",)),
        today=TODAY,
    )
    assert verdict.held is held
    if held:
        assert verdict.reasons == (
            "the identity rules changed since the last applied run, so the same people "
            "would get other end_users (ended, then inserted again): "
            "identity.lowercase: true -> false; the plan ends or deletes 1 and inserts 0 "
            "users",
        )
        assert "--accept-identity-rules" in verdict.hint
        assert verdict.options == ("--accept-identity-rules",)


def test_a_failed_read_offers_no_option_to_pass_it() -> None:
    verdict = check_plan(Plan(), desired(failed=True), limits=GuardLimits())
    assert verdict.held
    assert verdict.options == ()


def test_changed_identity_rules_that_rename_nobody_pass() -> None:
    verdict = check_plan(
        plan_with_updates(1, active=10),
        desired(),
        limits=GuardLimits(),
        history=GuardHistory(identity_changes=("source hr.csv id_column: 'a' -> 'b'",)),
        today=TODAY,
    )
    assert not verdict.held


def test_two_holds_asking_the_same_number_keep_both_options_with_their_values() -> None:
    plan = plan_with_updates(12, active=1000)
    ends = plan_with_ends(12, active=1000)
    both = Plan(updates=plan.updates, ends=ends.ends, active_managed=1000)
    verdict = check_plan(
        both, source_of(12), limits=GuardLimits(max_updates=10, max_removals=10), today=TODAY
    )
    assert verdict.held
    assert sorted(zip(verdict.options[::2], verdict.options[1::2], strict=True)) == [
        ("--allow-removals", "12"),
        ("--allow-updates", "12"),
    ]


def test_the_update_ratio_reason_survives_a_plan_saying_no_active_users() -> None:
    # A plan read back from a file carries its own counts: 0 must not divide.
    verdict = check_plan(
        plan_with_updates(3, active=0),
        source_of(3),
        limits=GuardLimits(max_update_ratio=0.5),
        today=TODAY,
    )
    assert verdict.held
    assert (
        "3 updates of active users are all of the 0 active platform users" in (verdict.reasons[0])
    )


def test_an_empty_only_source_names_example_users_it_would_remove() -> None:
    verdict = check_plan(
        plan_with_ends(7, active=7), desired(users=0), limits=GuardLimits(), today=TODAY
    )
    assert verdict.held
    assert verdict.reasons[0] == (
        "source hr.csv returned no users while the platform has 7 active users and the "
        "plan removes 7: gone0; gone1; gone2; gone3; gone4; ... and 2 more"
    )
