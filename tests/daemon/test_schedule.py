"""Triggers, jitter and misfire grace from a job's schedule (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from syncd.config import ScheduleConfig, parse_config
from syncd.daemon.schedule import check_schedules, describe, jitter_for, timing_for
from syncd.errors import ConfigError
from tests.daemon.support import job_yaml

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(("period", "jitter"), [(1, 0.1), (60, 6.0), (900, 30.0), (86_400, 30.0)])
def test_jitter_is_a_tenth_of_the_period_capped_at_30s(period: float, jitter: float) -> None:
    assert jitter_for(period) == pytest.approx(jitter)


def test_every_is_an_interval_with_jitter_and_a_grace_of_one_period() -> None:
    timing = timing_for(ScheduleConfig(every="15m"), now=NOW)
    assert isinstance(timing.trigger, IntervalTrigger)
    assert timing.trigger.interval == timedelta(minutes=15)
    assert timing.trigger.jitter == 30
    assert timing.period_s == 900
    assert timing.misfire_grace_s == 900


def test_fires_stay_within_the_jitter() -> None:
    timing = timing_for(ScheduleConfig(every="10s"), now=NOW)
    previous = NOW
    for _ in range(50):
        fire = timing.trigger.get_next_fire_time(previous, previous)
        assert timedelta(0) <= fire - (previous + timedelta(seconds=10)) <= timedelta(seconds=1)
        previous = previous + timedelta(seconds=10)


def test_cron_uses_the_gap_between_fires() -> None:
    timing = timing_for(ScheduleConfig(cron="*/15 * * * *"), now=NOW)
    assert isinstance(timing.trigger, CronTrigger)
    assert timing.period_s == 900
    assert timing.jitter_s == 30
    assert timing.misfire_grace_s == 900
    hourly = timing_for(ScheduleConfig(cron="0 * * * *"), now=NOW)
    assert hourly.period_s == 3600


def test_describe() -> None:
    assert describe(ScheduleConfig(every="1s")) == "every 1s"
    assert describe(ScheduleConfig(cron="0 3 * * *")) == "cron 0 3 * * *"


def test_every_job_needs_a_schedule_and_the_error_names_the_ones_without(tmp_path: Path) -> None:
    csv = tmp_path / "u.csv"
    text = "jobs:" + "".join(
        job_yaml(name, "http://127.0.0.1:9", csv, every=every)
        for name, every in (("a", "1m"), ("b", None), ("c", None))
    )
    config = parse_config(text, origin="t.yaml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"none for: b, c \("):
        check_schedules(config.jobs)
    check_schedules(config.jobs[:1])
