"""The report's period size, apart from the report's arithmetic.

:mod:`syncd.cli_report` needs this enum to declare ``--granularity``; keeping it in a
module with no imports lets ``syncd --help`` and the other commands skip
:mod:`syncd.report.compute` (and msgspec) until a report is built.
"""

from __future__ import annotations

from enum import StrEnum


class Granularity(StrEnum):
    """The size of the report's periods, and of the API's buckets."""

    DAILY = "daily"
    MONTHLY = "monthly"
