"""The errors of the activation report: all :class:`~syncd.errors.ReportError`."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from syncd.errors import ReportError, TransientError

__all__ = [
    "AnalyticsAuthError",
    "AnalyticsError",
    "AnalyticsUnavailableError",
    "BudgetExhaustedError",
]


class AnalyticsError(ReportError):
    """The analytics API answered in a way that fails the report."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AnalyticsAuthError(AnalyticsError):
    """The service key was refused (401/403)."""


class AnalyticsUnavailableError(AnalyticsError, TransientError):
    """The analytics API kept failing (network errors, 5xx)."""


class BudgetExhaustedError(ReportError, TransientError):
    """No query is allowed now (own budget spent, or a 429); says when the next one is."""

    def __init__(self, reason: str, allowed_at: datetime, now: datetime) -> None:
        self.allowed_at = allowed_at
        wait_s = max(0.0, (allowed_at - now).total_seconds())
        when = allowed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"{reason}; the next query is allowed at {when} (in {_duration(wait_s)}). "
            "Run the report again then (cached answers are reused), or pass --wait."
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    return f"{math.ceil(seconds / 60)} min"
