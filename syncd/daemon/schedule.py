"""When each job runs: APScheduler triggers from a job's ``schedule`` (pure).

The policy, in one place:

* ``every: 15m`` is an interval trigger, ``cron: ...`` a crontab trigger (the daemon's
  local time zone); every job also runs once at start-up.
* A random delay of at most 10% of the period, capped at 30 s, spreads the jobs of
  many daemons (and of one daemon's several jobs) so they do not hit the API together.
* ``coalesce`` with a misfire grace of one period: after a long run or a suspended
  laptop the missed fires collapse into one run, never a pile-up; a run more than one
  period late is skipped (the next fire comes soon anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from syncd.config import JobConfig, ScheduleConfig
from syncd.errors import ConfigError

__all__ = ["JobTiming", "check_schedules", "describe", "jitter_for", "timing_for"]

MAX_JITTER_S = 30.0
JITTER_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class JobTiming:
    """How the scheduler runs one job."""

    trigger: BaseTrigger
    period_s: float
    """The interval, or for cron the gap between its next two fires."""
    jitter_s: float
    misfire_grace_s: int


def jitter_for(period_s: float) -> float:
    """The largest random delay for a job run every ``period_s`` seconds."""
    return min(JITTER_SHARE * period_s, MAX_JITTER_S)


def describe(schedule: ScheduleConfig) -> str:
    """``every 15m`` or ``cron */15 * * * *``, for people."""
    return f"every {schedule.every}" if schedule.every is not None else f"cron {schedule.cron}"


def timing_for(schedule: ScheduleConfig, *, now: datetime) -> JobTiming:
    """The trigger, jitter and misfire grace of ``schedule`` (``now`` is timezone-aware)."""
    interval = schedule.interval
    if interval is not None:
        period = interval.total_seconds()
        jitter = jitter_for(period)
        trigger: BaseTrigger = IntervalTrigger(seconds=period, jitter=jitter or None)
    else:
        assert schedule.cron is not None  # ScheduleConfig holds exactly one of the two
        trigger = CronTrigger.from_crontab(schedule.cron)
        first = trigger.get_next_fire_time(None, now)
        second = trigger.get_next_fire_time(first, first + timedelta(seconds=1))
        period = (second - first).total_seconds() if first and second else 60.0
        jitter = jitter_for(period)
        trigger.jitter = jitter or None
    return JobTiming(trigger, period, jitter, max(1, math.ceil(period)))


def check_schedules(jobs: tuple[JobConfig, ...]) -> None:
    """Raise a ConfigError naming every job that has no ``schedule`` (``syncd run``)."""
    missing = [job.name for job in jobs if job.schedule is None]
    if missing:
        names = ", ".join(missing)
        raise ConfigError(
            f"syncd run needs a schedule for every job; none for: {names} "
            "(add e.g. 'schedule: {every: 15m}' to each, or run them with syncd apply)"
        )
