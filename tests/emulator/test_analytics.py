"""The analytics emulator over real HTTP: the endpoint as the vendor documents it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest

from syncd.emulator.analytics import ACTIVE_USERS_PATH, AnalyticsEmulator, generate_activity
from syncd.emulator.server import LISTENING_PREFIX

KEY = "sk-analytics-test-1"
D = date.fromisoformat


@pytest.fixture
def analytics() -> Iterator[AnalyticsEmulator]:
    """A started analytics emulator with a little activity in January and February."""
    with AnalyticsEmulator(api_key=KEY, rate_limit=3, rate_window_s=2.0) as emu:
        emu.add_activity(
            [
                ("ann@x.com", D("2026-01-05")),
                ("ann@x.com", D("2026-01-06")),
                ("bob@x.com", D("2026-01-06")),
                ("bob@x.com", D("2026-02-01")),
            ]
        )
        yield emu


@pytest.fixture
def http(analytics: AnalyticsEmulator) -> Iterator[httpx.Client]:
    """A client with the right service key."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=analytics.url, headers=headers, timeout=10) as client:
        yield client


def _query(**extra: str) -> dict[str, str]:
    return {"start_date": "2026-01-01", "end_date": "2026-03-01", "group_by": "user", **extra}


def test_a_wrong_key_is_refused(analytics: AnalyticsEmulator) -> None:
    answer = httpx.get(
        analytics.url + ACTIVE_USERS_PATH, params=_query(), headers={"Authorization": "Bearer no"}
    )
    assert answer.status_code == 401
    assert KEY not in answer.text


def test_daily_rows_per_user_and_bucket(http: httpx.Client) -> None:
    body = http.get(ACTIVE_USERS_PATH, params=_query(granularity="daily")).json()
    rows = [(r["timestamp"], r["user_id"], r["active_users"]) for r in body["data"]]
    assert rows == [
        ("2026-01-05", "ann@x.com", 1),
        ("2026-01-06", "ann@x.com", 1),
        ("2026-01-06", "bob@x.com", 1),
        ("2026-02-01", "bob@x.com", 1),
    ]
    assert body["pagination"] == {"next_page_cursor": None}
    assert set(body["metadata"]) == {"data_freshness", "query_time_ms", "team_id"}


def test_monthly_buckets_and_counts_without_group_by(http: httpx.Client) -> None:
    body = http.get(ACTIVE_USERS_PATH, params=_query(granularity="monthly")).json()
    assert [(r["timestamp"], r["user_id"]) for r in body["data"]] == [
        ("2026-01", "ann@x.com"),
        ("2026-01", "bob@x.com"),
        ("2026-02", "bob@x.com"),
    ]
    params = {"start_date": "2026-01-01", "end_date": "2026-03-01", "granularity": "monthly"}
    counts = http.get(ACTIVE_USERS_PATH, params=params).json()["data"]
    assert counts == [
        {"active_users": 2, "timestamp": "2026-01"},
        {"active_users": 1, "timestamp": "2026-02"},
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start_date": "2026-01-01", "end_date": "2026-04-01"}, "90 days"),  # 91 days
        ({"start_date": "2026-02-01", "end_date": "2026-01-01"}, "before"),
        ({"start_date": "2026-01-01"}, "end_date"),
        ({**_query(), "granularity": "hourly"}, "granularity"),
        ({**_query(), "page_size": "10001"}, "page_size"),
    ],
)
def test_bad_queries_answer_400(http: httpx.Client, params: dict[str, str], message: str) -> None:
    answer = http.get(ACTIVE_USERS_PATH, params=params)
    assert answer.status_code == 400
    assert message in answer.json()["detail"]


def test_exactly_90_days_is_allowed(http: httpx.Client) -> None:
    params = {"start_date": "2026-01-01", "end_date": "2026-03-31"}  # both ends included
    assert http.get(ACTIVE_USERS_PATH, params=params).status_code == 200


def test_cursors_page_through_and_are_not_counted(analytics: AnalyticsEmulator) -> None:
    analytics.add_activity((f"u{i}@x.com", D("2026-01-10")) for i in range(25))
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=analytics.url, headers=headers) as http:
        page = http.get(ACTIVE_USERS_PATH, params=_query(page_size="10")).json()
        seen = len(page["data"])
        while page["pagination"]["next_page_cursor"] is not None:
            cursor = page["pagination"]["next_page_cursor"]
            page = http.get(ACTIVE_USERS_PATH, params=_query(page_size="10", page_cursor=cursor))
            page = page.json()
            seen += len(page["data"])
    assert seen == 29
    stats = analytics.stats()
    assert stats["queries"] == 1  # three pages, one counted query
    assert stats["cursor_follows"] == 2


def test_an_expired_cursor_answers_400(analytics: AnalyticsEmulator, http: httpx.Client) -> None:
    first = http.get(ACTIVE_USERS_PATH, params=_query(page_size="1")).json()
    cursor = first["pagination"]["next_page_cursor"]
    analytics.expire_cursors()
    answer = http.get(ACTIVE_USERS_PATH, params=_query(page_size="1", page_cursor=cursor))
    assert answer.status_code == 400
    assert "expired" in answer.json()["detail"]


def test_etag_and_304(analytics: AnalyticsEmulator, http: httpx.Client) -> None:
    first = http.get(ACTIVE_USERS_PATH, params=_query())
    etag = first.headers["ETag"]
    again = http.get(ACTIVE_USERS_PATH, params=_query(), headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    analytics.add_activity([("cy@x.com", D("2026-01-20"))])
    changed = http.get(ACTIVE_USERS_PATH, params=_query(), headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert analytics.stats()["not_modified"] == 1


def test_rate_limit_429_with_retry_after_then_recovers(
    analytics: AnalyticsEmulator, http: httpx.Client
) -> None:
    statuses = [http.get(ACTIVE_USERS_PATH, params=_query()).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    throttled = http.get(ACTIVE_USERS_PATH, params=_query())
    retry_after = int(throttled.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    time.sleep(retry_after + 0.1)
    assert http.get(ACTIVE_USERS_PATH, params=_query()).status_code == 200
    assert analytics.stats()["throttled"] == 2


def test_page_cap_gives_short_pages_that_still_carry_a_cursor() -> None:
    with AnalyticsEmulator(api_key=KEY, page_cap=2) as capped:
        capped.add_activity((f"u{i}", D("2026-01-02")) for i in range(5))
        headers = {"Authorization": f"Bearer {KEY}"}
        page = httpx.get(
            capped.url + ACTIVE_USERS_PATH, params=_query(page_size="100"), headers=headers
        ).json()
    assert len(page["data"]) == 2
    assert page["pagination"]["next_page_cursor"] is not None


def test_generated_activity_is_realistic_and_deterministic() -> None:
    users = [f"user{i}" for i in range(2000)]
    start = D("2026-01-01")
    end = start + timedelta(days=89)
    events = list(generate_activity(users, start, end, share_active=0.6, seed=7))
    assert events == list(generate_activity(users, start, end, share_active=0.6, seed=7))
    active = {user for user, _ in events}
    assert 0.55 < len(active) / len(users) < 0.65
    weekday = sum(1 for _, day in events if day.weekday() < 5) / 64  # 64 weekdays
    weekend = sum(1 for _, day in events if day.weekday() >= 5) / 26
    assert weekend < weekday / 4  # quiet weekends
    assert all(start <= day <= end for _, day in events)


def test_the_emulator_command_serves_generated_activity() -> None:
    env = {**os.environ, "SYNCD_EMULATOR_API_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "emulator", "analytics", "--port", "0", "--users", "50",
         "--activity-from", "2026-01-01", "--activity-to", "2026-01-31"],
        stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(LISTENING_PREFIX), line
        url = line.removeprefix(LISTENING_PREFIX).strip()
        body = httpx.get(
            url + ACTIVE_USERS_PATH,
            params=_query(granularity="monthly"),
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        ).json()
        users = {row["user_id"] for row in body["data"]}
        assert 20 <= len(users) <= 40  # about 60% of the 50 users
        assert all(user.startswith("user") and user.endswith("@example.com") for user in users)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
