"""Settling writes no answer confirmed, against what the platform holds (pure)."""

from __future__ import annotations

from datetime import date

import pytest

from syncd.model import PlatformUser, make_tags
from syncd.platform.api import Operation
from syncd.platform.outcome import (
    Settlement,
    UncertainFailure,
    count_uncertain,
    doubtful,
    is_uncertain,
    permanent_error_message,
    settle,
    unverified,
)
from syncd.ports import WriteFailure, WriteOutcome


def user(name: str, dept: str = "eng", active_to: date | None = None) -> PlatformUser:
    return PlatformUser(name, make_tags({"department": dept}), date(2026, 1, 1), active_to)


def outcome(
    operation: Operation, confirmed: list[str], failures: list[WriteFailure]
) -> WriteOutcome:
    return WriteOutcome(
        operation,
        requested=len(confirmed) + len(failures),
        confirmed=list(confirmed),
        failures=list(failures),
        calls=3,
    )


def test_a_user_the_platform_holds_as_written_becomes_confirmed() -> None:
    written = outcome(
        Operation.INSERT,
        ["a"],
        [
            UncertainFailure("b", doubtful("not confirmed after a retry")),
            UncertainFailure("c", doubtful("not confirmed after a retry")),
            UncertainFailure("d", doubtful("not confirmed after a retry")),
        ],
    )
    targets = {"b": user("b"), "c": user("c"), "d": user("d")}
    held = {"b": user("b"), "d": user("d", dept="sales")}  # c is missing, d differs

    settled, counts = settle(written, targets, held)

    assert settled.confirmed == ["a", "b"]
    assert settled.failures == [
        WriteFailure("c", "not confirmed after a retry; not on the platform when re-read"),
        WriteFailure(
            "d", "not confirmed after a retry; on the platform with other values when re-read"
        ),
    ]
    assert not any(is_uncertain(f) for f in settled.failures)
    assert counts == Settlement(checked=3, applied=1, not_applied=2)
    assert (settled.operation, settled.requested, settled.calls) == (Operation.INSERT, 4, 3)
    # The input is not changed: the function returns a new outcome.
    assert written.confirmed == ["a"]
    assert len(written.failures) == 3


def test_a_delete_is_applied_when_the_user_is_gone() -> None:
    written = outcome(
        Operation.DELETE,
        [],
        [UncertainFailure("gone", "x"), UncertainFailure("kept", "x")],
    )
    settled, counts = settle(written, {"gone": None, "kept": None}, {"kept": user("kept")})
    assert settled.confirmed == ["gone"]
    assert settled.failures == [WriteFailure("kept", "x; still on the platform when re-read")]
    assert counts.applied == 1


def test_dates_and_tags_are_compared_as_values() -> None:
    target = PlatformUser("a", make_tags({"x": "1", "y": "2"}), date(2026, 1, 1), date(2026, 5, 1))
    # Same values, tag pairs in another order (a platform need not sort them).
    held = PlatformUser("a", (("y", "2"), ("x", "1")), date(2026, 1, 1), date(2026, 5, 1))
    settled, _ = settle(
        outcome(Operation.UPDATE, [], [UncertainFailure("a", "x")]), {"a": target}, {"a": held}
    )
    assert settled.confirmed == ["a"]
    cleared = PlatformUser("a", target.tags, date(2026, 1, 1))  # active_to not cleared
    settled, _ = settle(
        outcome(Operation.UPDATE, [], [UncertainFailure("a", "x")]), {"a": target}, {"a": cleared}
    )
    assert settled.confirmed == []


def test_plain_failures_are_checked_too_and_unknown_names_are_left_alone() -> None:
    written = outcome(
        Operation.UPDATE,
        [],
        [WriteFailure("a", "not confirmed by the platform"), WriteFailure("zz", "odd")],
    )
    settled, counts = settle(written, {"a": user("a")}, {"a": user("a")})
    assert settled.confirmed == ["a"]
    assert settled.failures == [WriteFailure("zz", "odd")]
    assert counts == Settlement(checked=1, applied=1, not_applied=0)


def test_unverified_keeps_the_doubt_and_says_why() -> None:
    written = outcome(
        Operation.INSERT,
        ["a"],
        [UncertainFailure("b", doubtful("timed out")), WriteFailure("c", "not confirmed")],
    )
    kept = unverified(written, "list: platform unavailable")
    assert kept.confirmed == ["a"]
    assert kept.failures == [
        UncertainFailure(
            "b",
            "timed out; it may have been applied; could not re-read: list: platform unavailable",
        ),
        WriteFailure("c", "not confirmed"),
    ]
    assert count_uncertain([kept, written]) == 2


def test_an_uncertain_failure_is_a_write_failure_with_its_own_identity() -> None:
    doubt = UncertainFailure("a", "r")
    assert isinstance(doubt, WriteFailure)
    assert doubt != WriteFailure("a", "r")
    assert is_uncertain(doubt)
    assert not is_uncertain(WriteFailure("a", "r"))


def test_a_settlement_summary_lists_the_error_only_when_there_is_one() -> None:
    assert Settlement(checked=2, applied=1, not_applied=1).summary() == {
        "checked": 2,
        "applied": 1,
        "not_applied": 1,
        "unverified": 0,
    }
    assert Settlement(unverified=3, error="boom").summary()["error"] == "boom"


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (404, "check target.base_url / target.region"),
        (405, "does not accept POST on /p: check target.api"),
        (400, "every batch would be refused too"),
        (409, "retrying does not change"),
    ],
)
def test_a_permanent_error_says_what_to_check(status: int, hint: str) -> None:
    message = permanent_error_message(Operation.INSERT, "POST", "/p", f"HTTP {status}: no", status)
    assert message.startswith(f"insert: POST /p answered HTTP {status}: no; stopped at once")
    assert "the remaining batches were not sent" in message
    assert hint in message
