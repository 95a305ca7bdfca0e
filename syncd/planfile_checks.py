"""What ``apply --plan`` checks besides the fingerprints (pure).

The SHA-256 of a plan file's changes sits in the same file, so an editor can recompute
it. These checks do not trust the file: they compare its changes with what the job's
config says and what the platform holds *now*:

* no change touches a ``policy.protected`` user;
* each change's ``before`` is the user the platform holds (an insert: a user it does
  not hold), and its kind is the one the planner gives that before and after (an end
  cannot pass as an update);
* the guard, run again over the file's changes with the job's current limits, finds no
  reason the file did not record. A reason the operator saw is approved by applying the
  file; any other is refused, named.

Sources are not read (the reviewed plan is what is applied), so the guard's source
checks (bad records, an empty source) are not repeated: the file's recorded reasons
cover them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

from syncd.guard import GuardHistory, GuardLimits, Override, check_plan
from syncd.merge import DesiredUsers
from syncd.messages import bounded_list
from syncd.model import PlatformUser
from syncd.plan import ChangeKind, Plan, classify_update

__all__ = ["new_guard_reasons", "platform_problems", "protected_problems"]


def protected_problems(
    plan: Plan, protected: frozenset[str], identity: Callable[[str], str]
) -> list[str]:
    """The changes that would touch a protected user (normalised names)."""
    touched = [
        f"{change.kind.value} {change.user.end_user}"
        for change in plan.changes()
        if identity(change.user.end_user) in protected
    ]
    if not touched:
        return []
    return [
        f"the plan changes {len(touched)} user(s) of policy.protected, which no run may "
        f"touch: {bounded_list(touched, separator='; ', limit=5)}"
    ]


def platform_problems(
    plan: Plan, current: Iterable[PlatformUser], identity: Callable[[str], str]
) -> list[str]:
    """Changes whose ``before`` is not what the platform holds now, or whose kind does
    not match their before and after."""
    by_name = {user.end_user: user for user in current}
    by_key = {identity(name) for name in by_name}
    wrong: list[str] = []
    for change in plan.changes():
        name = change.user.end_user
        if change.kind is ChangeKind.INSERT:
            if identity(name) in by_key:
                wrong.append(f"insert {name}: the platform holds that user already")
            continue
        held = by_name.get(name)
        if held is None:
            wrong.append(f"{change.kind.value} {name}: the platform does not hold that user")
        elif held != change.before:
            wrong.append(f"{change.kind.value} {name}: the user before is not the platform's")
        elif change.kind is not ChangeKind.DELETE and (
            classify_update(held, change.user) is not change.kind
        ):
            wrong.append(
                f"{change.kind.value} {name}: its before and after make it "
                f"{classify_update(held, change.user).value}"
            )
    if not wrong:
        return []
    return [
        f"{len(wrong)} change(s) do not match the platform: "
        f"{bounded_list(wrong, separator='; ', limit=5)}"
    ]


def new_guard_reasons(
    plan: Plan,
    *,
    recorded: Iterable[str],
    limits: GuardLimits,
    history: GuardHistory,
    today: date,
    identity: Callable[[str], str],
) -> list[str]:
    """What the guard holds the file's changes for now that the file did not record.

    Judged as of the plan's ``today``, with no override and no source read (its
    reasons about the sources are the file's). Any reason the operator did not see
    is refused, even one a larger approval would cover.
    """
    nobody = DesiredUsers(users={}, problems=[], conflicts=[], sources=[])
    verdict = check_plan(
        plan,
        nobody,
        limits=limits,
        override=Override(),
        history=history,
        today=today,
        identity=identity,
    )
    seen = set(recorded)
    return [
        f"the guard holds the plan for a reason the file does not record: {reason}"
        for reason in verdict.reasons
        if reason not in seen
    ]
