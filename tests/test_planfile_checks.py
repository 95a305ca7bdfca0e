"""The checks ``apply --plan`` makes of a plan file's changes (pure)."""

from __future__ import annotations

from datetime import date

from syncd.guard import GuardHistory, GuardLimits, Verdict, check_plan
from syncd.merge import DesiredUsers
from syncd.model import PlatformUser, make_tags
from syncd.plan import Change, ChangeKind, Plan
from syncd.planfile_checks import new_guard_reasons, platform_problems, protected_problems

TODAY = date(2026, 11, 22)


def user(name: str, dept: str = "Eng", active_to: date | None = None) -> PlatformUser:
    return PlatformUser(name, make_tags({"department": dept}), date(2026, 1, 1), active_to)


def end(name: str) -> Change:
    return Change(ChangeKind.END, user(name, active_to=TODAY), user(name), "missing")


def same(name: str) -> str:
    return name.lower()


PLATFORM = [user(f"u{i}@x.com") for i in range(10)]


def test_a_change_of_a_protected_user_is_named() -> None:
    plan = Plan(
        ends=(end("u1@x.com"),),
        deletes=(Change(ChangeKind.DELETE, user("Boss@x.com"), user("Boss@x.com"), "x"),),
    )
    assert protected_problems(plan, frozenset({"boss@x.com"}), same) == [
        "the plan changes 1 user(s) of policy.protected, which no run may touch: delete Boss@x.com"
    ]
    assert protected_problems(plan, frozenset({"nobody@x.com"}), same) == []


def test_changes_must_start_from_the_platforms_users_and_keep_their_kind() -> None:
    fine = Plan(
        inserts=(Change(ChangeKind.INSERT, user("new@x.com"), None, "new"),),
        updates=(Change(ChangeKind.UPDATE, user("u2@x.com", "Ops"), user("u2@x.com"), "moved"),),
        ends=(end("u1@x.com"),),
    )
    assert platform_problems(fine, PLATFORM, same) == []
    disguised = Change(ChangeKind.UPDATE, user("u3@x.com", active_to=TODAY), user("u3@x.com"), "")
    wrong = Plan(
        inserts=(Change(ChangeKind.INSERT, user("U4@x.com"), None, "new"),),
        updates=(disguised,),
        ends=(
            Change(ChangeKind.END, user("u5@x.com", active_to=TODAY), user("u5@x.com", "Ops"), ""),
            end("gone@x.com"),
        ),
    )
    (problem,) = platform_problems(wrong, PLATFORM, same)
    assert problem == (
        "4 change(s) do not match the platform: insert U4@x.com: the platform holds that "
        "user already; update u3@x.com: its before and after make it end; end u5@x.com: "
        "the user before is not the platform's; end gone@x.com: the platform does not "
        "hold that user"
    )


def test_the_guard_finds_no_new_reason_in_the_plan_it_held_but_does_in_a_larger_one() -> None:
    limits = GuardLimits(max_removals=1, max_removal_ratio=None)
    plan = Plan(ends=(end("u1@x.com"), end("u2@x.com")), active_managed=10, active_removals=2)
    nobody = DesiredUsers(users={}, problems=[], conflicts=[], sources=[])
    verdict: Verdict = check_plan(plan, nobody, limits=limits, today=TODAY)
    assert verdict.held
    recorded = list(verdict.reasons)
    again = new_guard_reasons(
        plan,
        recorded=recorded,
        limits=limits,
        history=GuardHistory(),
        today=TODAY,
        identity=same,
    )
    assert again == []
    larger = Plan(ends=(*plan.ends, end("u3@x.com")), active_managed=10, active_removals=3)
    (reason,) = new_guard_reasons(
        larger,
        recorded=recorded,
        limits=limits,
        history=GuardHistory(),
        today=TODAY,
        identity=same,
    )
    assert reason.startswith(
        "the guard holds the plan for a reason the file does not record: 3 removals"
    )
    # Removals confirmed since (the daily limit) are a new reason too.
    daily = GuardLimits(max_removals=None, max_removal_ratio=None, max_removals_per_day=3)
    (reason,) = new_guard_reasons(
        plan,
        recorded=[],
        limits=daily,
        history=GuardHistory(removed_last_day=2),
        today=TODAY,
        identity=same,
    )
    assert "max_removals_per_day=3" in reason
