"""What a write really did, when its answer did not say (pure).

The platform confirms a write by listing the users it wrote. Some answers say nothing
reliable:

* a timeout or a dropped connection *after the request was sent*: the platform may
  have applied the batch and the answer was lost;
* a retry of such a batch: an insert the first attempt applied is "left out" of the
  second answer (the user exists now), exactly like an insert the platform refused;
* a 2xx answer whose body cannot be read.

The client reports the users of such batches as :class:`UncertainFailure`. Before a run
reports failures, it re-reads the platform once and :func:`settle` sorts every
unconfirmed user into applied (the platform holds exactly what was written) or not,
so the summary, the audit log, ownership and the exit code follow what the platform
holds rather than what an answer failed to say.

Permanent errors (:func:`permanent_error_message`): an answer that every batch would
get again (404, 405, 400 ...) stops the operation at once with one clear message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from syncd.model import PlatformUser
from syncd.platform.api import Operation
from syncd.ports import WriteFailure, WriteOutcome

__all__ = [
    "Settlement",
    "Target",
    "UncertainFailure",
    "account_unfinished",
    "count_uncertain",
    "doubtful",
    "is_uncertain",
    "outcome_for",
    "permanent_error_message",
    "settle",
    "unverified",
]


@dataclass(frozen=True, slots=True)
class UncertainFailure(WriteFailure):
    """A user the platform did not confirm, but whose write it may have applied.

    Not a claim that the write failed: only that no answer said it succeeded. A run
    re-reads the platform to turn it into a confirmation or a plain failure.
    """


def is_uncertain(failure: WriteFailure) -> bool:
    """True for a failure whose write may have been applied (see :class:`UncertainFailure`)."""
    return isinstance(failure, UncertainFailure)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What re-reading the platform found for the unconfirmed users of a run."""

    checked: int = 0
    """Unconfirmed users looked up in the platform's list."""
    applied: int = 0
    """Of those, users the platform holds exactly as written: now confirmed."""
    not_applied: int = 0
    """Users the platform does not hold as written: failures for certain."""
    unverified: int = 0
    """Users that could not be checked (the re-read failed): still uncertain."""
    error: str | None = None
    """Why the re-read failed, if it did."""

    def summary(self) -> dict[str, object]:
        """The counts for the run summary (``error`` only when there is one)."""
        counts: dict[str, object] = {
            "checked": self.checked,
            "applied": self.applied,
            "not_applied": self.not_applied,
            "unverified": self.unverified,
        }
        if self.error is not None:
            counts["error"] = self.error
        return counts


Target = PlatformUser | None
"""What a write asked the platform to hold: the user as written, or None (deleted)."""


def settle(
    outcome: WriteOutcome,
    targets: Mapping[str, Target],
    held: Mapping[str, PlatformUser],
) -> tuple[WriteOutcome, Settlement]:
    """Sort the outcome's failures by what the platform holds; return a new outcome.

    ``targets`` maps each failed end_user to the state its write asked for (None for a
    delete); ``held`` maps the platform's end_users (exactly as written) to what it
    holds, for at least every failed user that is there. A failed user whose target
    the platform holds becomes confirmed; every other failure stays, as a plain failure
    whose reason says what the re-read found. A failure without a target is left as it
    is; so are the users already confirmed.
    """
    confirmed = list(outcome.confirmed)
    failures: list[WriteFailure] = []
    applied = checked = 0
    for failure in outcome.failures:
        name = failure.end_user
        if name not in targets:
            failures.append(failure)
            continue
        checked += 1
        target = targets[name]
        found = held.get(name)
        if _holds(found, target):
            confirmed.append(name)
            applied += 1
            continue
        if found is None:
            seen = "not on the platform when re-read"
        elif target is None:
            seen = "still on the platform when re-read"
        else:
            seen = "on the platform with other values when re-read"
        failures.append(WriteFailure(name, f"{_without_doubt(failure.reason)}; {seen}"))
    settled = WriteOutcome(
        operation=outcome.operation,
        requested=outcome.requested,
        confirmed=confirmed,
        failures=failures,
        calls=outcome.calls,
    )
    return settled, Settlement(checked=checked, applied=applied, not_applied=checked - applied)


def unverified(outcome: WriteOutcome, error: str) -> WriteOutcome:
    """The outcome with its uncertain failures saying that the re-read failed."""
    failures = [
        UncertainFailure(failure.end_user, f"{failure.reason}; could not re-read: {error}")
        if is_uncertain(failure)
        else failure
        for failure in outcome.failures
    ]
    return WriteOutcome(
        operation=outcome.operation,
        requested=outcome.requested,
        confirmed=list(outcome.confirmed),
        failures=failures,
        calls=outcome.calls,
    )


def count_uncertain(outcomes: Iterable[WriteOutcome]) -> int:
    """How many failures of these outcomes may have been applied."""
    return sum(1 for outcome in outcomes for failure in outcome.failures if is_uncertain(failure))


def _holds(found: PlatformUser | None, target: Target) -> bool:
    if target is None:
        return found is None
    if found is None:
        return False
    # Compared as values: tags as a mapping (the platform may order them otherwise),
    # dates as dates (it may answer timestamps).
    return (
        dict(found.tags) == dict(target.tags)
        and found.active_from == target.active_from
        and found.active_to == target.active_to
    )


_DOUBT = "; it may have been applied"


def _without_doubt(reason: str) -> str:
    """The reason without the "may have been applied" the re-read has now settled."""
    return reason.replace(_DOUBT, "")


def doubtful(reason: str) -> str:
    """The reason of an uncertain failure: ``reason`` plus why it may have happened."""
    return f"{reason}{_DOUBT}"


_HINTS = {
    404: "the platform has no such path: check target.base_url / target.region",
    405: "the platform does not accept {method} on {path}: check target.api "
    "(platform-users or eligible-users)",
    400: "the platform refused the request itself, so every batch would be refused too",
    422: "the platform refused the request body, so every batch would be refused too",
}


def permanent_error_message(
    operation: Operation, method: str, path: str, reason: str, status: int
) -> str:
    """The one error of a write stopped by a permanent answer, with what to check."""
    hint = _HINTS.get(
        status, "an answer that retrying does not change, so every batch would get it too"
    ).format(method=method, path=path)
    return (
        f"{operation}: {method} {path} answered {reason}; stopped at once, "
        f"the remaining batches were not sent ({hint})"
    )


# ------------------------------------------------- a write's outcome, start and end


def outcome_for(operation: Operation, requested: int, given: WriteOutcome | None) -> WriteOutcome:
    """The caller's outcome, checked to be a new one for this write; else a new one."""
    if given is None:
        return WriteOutcome(operation=operation, requested=requested)
    if given.operation != operation or given.requested != requested:
        raise ValueError(
            f"{operation}: the outcome passed in is for {given.operation} of "
            f"{given.requested} users, not {operation} of {requested}"
        )
    if given.confirmed or given.failures or given.calls:
        raise ValueError(f"{operation}: the outcome passed in is already filled")
    return given


def account_unfinished(outcome: WriteOutcome, names: list[str], error: BaseException) -> None:
    """Make confirmed + failures cover every requested user after an early stop."""
    finished = set(outcome.confirmed)
    finished.update(failure.end_user for failure in outcome.failures)
    reason = f"not written: the operation stopped ({type(error).__name__})"
    outcome.failures.extend(WriteFailure(name, reason) for name in names if name not in finished)
