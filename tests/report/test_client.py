"""The analytics client against the emulator over HTTP: splitting, paging, cache, budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta

import pytest
from pydantic import SecretStr

from syncd.emulator._http import detail_response
from syncd.emulator.analytics import AnalyticsEmulator, AnalyticsOperation
from syncd.emulator.server import EndpointFaults
from syncd.report.client import AnalyticsClient, Waiter
from syncd.report.compute import Granularity
from syncd.report.errors import AnalyticsAuthError, AnalyticsError, BudgetExhaustedError
from syncd.state import SqliteStateStore
from syncd.state_http_cache import SqliteApiLedger
from tests.report.conftest import ANALYTICS_KEY, Clock

D = date.fromisoformat


def _client(
    emu: AnalyticsEmulator,
    state: SqliteStateStore,
    clock: Clock | None = None,
    *,
    key: str = ANALYTICS_KEY,
    waiter: Waiter | None = None,
    rate_limit: int = 10,
) -> AnalyticsClient:
    extra = {"clock": clock} if clock is not None else {}
    return AnalyticsClient(
        base_url=emu.url,
        service_key=SecretStr(key),
        ledger=SqliteApiLedger(state),
        cache_ttl=timedelta(hours=3),
        rate_limit=rate_limit,
        waiter=waiter,
        **extra,  # type: ignore[arg-type]
    )


def _users(activity: dict[str, int], labels: list[str]) -> dict[str, set[str]]:
    return {
        user: {label for i, label in enumerate(labels) if mask >> i & 1}
        for user, mask in activity.items()
    }


def test_a_200_day_range_is_three_queries_and_buckets_are_united(
    analytics: AnalyticsEmulator, state: SqliteStateStore
) -> None:
    analytics.add_activity(
        [("ann", D("2026-03-30")), ("bob", D("2026-04-02")), ("cy", D("2026-07-19"))]
    )
    with _client(analytics, state) as client:
        activity = client.fetch(D("2026-01-01"), D("2026-07-19"), Granularity.MONTHLY)
    assert analytics.stats()["queries"] == 3  # 01-01..03-31, 04-01..06-29, 06-30..07-19
    assert activity.queries == 3
    assert _users(activity.users, activity.labels) == {
        "ann": {"2026-03"},
        "bob": {"2026-04"},
        "cy": {"2026-07"},
    }


def test_a_month_split_across_two_queries_unites_its_users(
    analytics: AnalyticsEmulator, state: SqliteStateStore
) -> None:
    # The second query of 2026-01-01..2026-07-19 starts on 04-01 and the third on 06-30:
    # June is in two queries. Both halves' users end up in the one bucket.
    analytics.add_activity([("ann", D("2026-06-10")), ("bob", D("2026-06-30"))])
    with _client(analytics, state) as client:
        activity = client.fetch(D("2026-01-01"), D("2026-07-19"), Granularity.MONTHLY)
    assert _users(activity.users, activity.labels) == {"ann": {"2026-06"}, "bob": {"2026-06"}}


def test_daily_granularity(analytics: AnalyticsEmulator, state: SqliteStateStore) -> None:
    analytics.add_activity([("ann", D("2026-01-02")), ("ann", D("2026-01-04"))])
    with _client(analytics, state) as client:
        activity = client.fetch(D("2026-01-01"), D("2026-01-05"), Granularity.DAILY)
    assert _users(activity.users, activity.labels) == {"ann": {"2026-01-02", "2026-01-04"}}


def test_pages_are_followed_until_the_cursor_is_null_even_when_short(
    state: SqliteStateStore,
) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, page_cap=7) as capped:
        capped.add_activity((f"u{i}", D("2026-01-03")) for i in range(50))
        with _client(capped, state) as client:
            activity = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        stats = capped.stats()
    assert len(activity.users) == 50
    assert stats["queries"] == 1
    assert stats["cursor_follows"] == 7  # 8 pages of at most 7


def test_cache_within_ttl_sends_nothing_then_304_reuses_it(
    analytics: AnalyticsEmulator, state: SqliteStateStore, clock: Clock
) -> None:
    analytics.add_activity([("ann", D("2026-01-02"))])
    with _client(analytics, state, clock) as client:
        first = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        clock.advance(hours=2)
        again = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        assert analytics.stats()["queries"] == 1  # nothing sent within cache_ttl
        assert again.cached == 1
        clock.advance(hours=2)
        later = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
    stats = analytics.stats()
    assert stats["queries"] == 2
    assert stats["not_modified"] == 1  # revalidated, the cached body reused
    assert later.users == first.users == again.users
    assert later.cached == 1


def test_changed_data_after_ttl_is_fetched_again(
    analytics: AnalyticsEmulator, state: SqliteStateStore, clock: Clock
) -> None:
    analytics.add_activity([("ann", D("2026-01-02"))])
    with _client(analytics, state, clock) as client:
        client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        analytics.add_activity([("bob", D("2026-01-03"))])
        clock.advance(hours=4)
        later = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
    assert set(later.users) == {"ann", "bob"}
    assert analytics.stats()["not_modified"] == 0


def test_the_budget_is_never_exceeded_across_repeated_reports(
    analytics: AnalyticsEmulator, state: SqliteStateStore, clock: Clock
) -> None:
    # Each report asks a new 200-day range (3 queries), so the cache never helps; the
    # 4th report gets one query and then stops before the 11th would be sent.
    def report(number: int) -> None:
        with _client(analytics, state, clock) as client:
            start = D("2025-01-01") + timedelta(days=300 * number)
            client.fetch(start, start + timedelta(days=199), Granularity.MONTHLY)

    for number in range(3):
        report(number)
    with pytest.raises(BudgetExhaustedError, match="budget of 10 queries per hour spent") as caught:
        report(3)
    assert caught.value.allowed_at > clock()
    with pytest.raises(BudgetExhaustedError):
        report(4)  # and again: nothing is sent
    stats = analytics.stats()
    assert stats["queries"] == 10  # the 10th query was sent, the 11th never
    assert stats["throttled"] == 0  # the client never ran into the server's limit


def test_a_429_stops_with_when_the_next_query_is_allowed(
    state: SqliteStateStore,
) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, rate_limit=1, rate_window_s=600) as emu:
        emu.add_activity([("ann", D("2026-01-02"))])
        with _client(emu, state) as client:
            client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
            with pytest.raises(BudgetExhaustedError, match=r"429.*allowed at .* UTC \(in 10 min\)"):
                client.fetch(D("2026-02-01"), D("2026-02-28"), Granularity.MONTHLY)
        assert emu.stats()["throttled"] == 1


def test_a_429_with_a_waiter_waits_for_retry_after(state: SqliteStateStore, clock: Clock) -> None:
    waits: list[tuple[datetime, str]] = []
    throttled_at: list[datetime] = []

    def waiter(until: datetime, reason: str) -> None:
        waits.append((until, reason))
        throttled_at.append(clock())
        emu.reset_rate_limit()  # as if the window had passed

    with AnalyticsEmulator(api_key=ANALYTICS_KEY, rate_limit=1, rate_window_s=600) as emu:
        emu.add_activity([("ann", D("2026-02-02"))])
        with _client(emu, state, clock, waiter=waiter) as client:
            client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
            clock.advance(minutes=1)
            activity = client.fetch(D("2026-02-01"), D("2026-02-28"), Granularity.MONTHLY)
    assert set(activity.users) == {"ann"}
    assert len(waits) == 1
    assert "429" in waits[0][1]
    # The emulator's window is 600 s and its one query was just sent: Retry-After is
    # 600 s (rounded up), and the wait ends exactly that long after the 429.
    assert waits[0][0] - throttled_at[0] == timedelta(seconds=600)


def test_the_product_is_sent_as_the_product_filter(state: SqliteStateStore) -> None:
    sent: list[str | None] = []
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as emu:
        emu.add_activity([("ann", D("2026-01-02"))], product="windsurf")
        emu.add_activity([("bob", D("2026-01-02"))], product="devin")
        original = emu.handle

        def record(call):  # type: ignore[no-untyped-def]
            sent.append(call.request.query_value("product"))
            return original(call)

        emu.handle = record  # type: ignore[method-assign]
        client = AnalyticsClient(
            base_url=emu.url,
            service_key=SecretStr(ANALYTICS_KEY),
            ledger=SqliteApiLedger(state),
            product="devin",
        )
        with client:
            activity = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
    assert sent == ["devin"]
    assert set(activity.users) == {"bob"}


def test_a_follow_refused_for_another_reason_stops_with_the_apis_message(
    state: SqliteStateStore,
) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, page_cap=5) as emu:
        emu.add_activity((f"u{i}", D("2026-01-03")) for i in range(12))
        original = emu.handle

        def refuse_follows(call):  # type: ignore[no-untyped-def]
            if call.request.query_value("page_cursor"):
                return detail_response(400, "group_by must not change between pages")
            return original(call)

        emu.handle = refuse_follows  # type: ignore[method-assign]
        with (
            _client(emu, state) as client,
            pytest.raises(AnalyticsError, match="group_by must not change") as caught,
        ):
            client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        assert emu.stats()["queries"] == 1  # no restart spent more of the budget
    assert "kept expiring" not in str(caught.value)


def test_a_410_on_a_follow_is_an_expired_cursor(state: SqliteStateStore) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, page_cap=5) as emu:
        emu.add_activity((f"u{i}", D("2026-01-03")) for i in range(12))
        original = emu.handle
        gone: list[bool] = []

        def gone_once(call):  # type: ignore[no-untyped-def]
            if call.request.query_value("page_cursor") and not gone:
                gone.append(True)
                return detail_response(410, "gone")
            return original(call)

        emu.handle = gone_once  # type: ignore[method-assign]
        with _client(emu, state) as client:
            activity = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        assert emu.stats()["queries"] == 2
    assert len(activity.users) == 12


def test_an_expired_cursor_restarts_the_query(state: SqliteStateStore) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, page_cap=5) as emu:
        emu.add_activity((f"u{i}", D("2026-01-03")) for i in range(12))
        original = emu.handle
        expired = []

        def expire_once(call):  # type: ignore[no-untyped-def]
            if call.request.query_value("page_cursor") and not expired:
                expired.append(True)
                emu.expire_cursors()
            return original(call)

        emu.handle = expire_once  # type: ignore[method-assign]
        with _client(emu, state) as client:
            activity = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        assert emu.stats()["queries"] == 2  # the restart is a new, budgeted query
    assert len(activity.users) == 12


def test_a_wrong_key_is_an_auth_error_without_the_key(
    analytics: AnalyticsEmulator, state: SqliteStateStore
) -> None:
    with (
        _client(analytics, state, key="sk-wrong-key-123") as client,
        pytest.raises(AnalyticsAuthError, match="Analytics Read") as caught,
    ):
        client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
    assert "sk-wrong-key-123" not in str(caught.value)
    assert "sk-wrong" not in repr(client)


def test_the_state_store_holds_no_key(
    analytics: AnalyticsEmulator, state: SqliteStateStore
) -> None:
    with _client(analytics, state) as client:
        client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
    files = list(state.path.parent.iterdir())
    assert files
    for file in files:
        assert ANALYTICS_KEY.encode() not in file.read_bytes()


def test_a_spent_own_budget_with_a_waiter_waits_then_sends(
    analytics: AnalyticsEmulator, state: SqliteStateStore, clock: Clock
) -> None:
    waits: list[datetime] = []

    def waiter(until: datetime, reason: str) -> None:
        assert "budget of 2 queries per hour spent" in reason
        waits.append(until)
        clock.now = until  # the wait passes

    with _client(analytics, state, clock, waiter=waiter, rate_limit=2) as client:
        client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        clock.advance(minutes=10)
        client.fetch(D("2026-02-01"), D("2026-02-28"), Granularity.MONTHLY)
        client.fetch(D("2026-03-01"), D("2026-03-31"), Granularity.MONTHLY)
        assert client.budget_left() == 0
    assert len(waits) == 1
    assert analytics.stats()["queries"] == 3


def test_a_5xx_on_a_query_is_tried_again_through_the_budget(
    analytics: AnalyticsEmulator, state: SqliteStateStore
) -> None:
    analytics.set_faults(AnalyticsOperation.ACTIVE_USERS, EndpointFaults(fail_next=1))
    analytics.add_activity([("ann", D("2026-01-02"))])
    with _client(analytics, state) as client:
        activity = client.fetch(D("2026-01-01"), D("2026-01-31"), Granularity.MONTHLY)
        assert client.budget_left() == 8  # both attempts counted
    assert set(activity.users) == {"ann"}


def test_concurrent_reports_sharing_a_state_folder_never_overspend(
    state: SqliteStateStore,
) -> None:
    # Three reports (each its own store, as separate processes would have) share one
    # state folder and a budget of one query; the answers are slow, so all three ask
    # while the first query is still in flight.
    results: list[str] = []

    def report(month: int) -> None:
        own = SqliteStateStore(state.path.parent)
        with _client(analytics_server, own, rate_limit=1) as client:
            try:
                client.fetch(D(f"2026-0{month}-01"), D(f"2026-0{month}-28"), Granularity.MONTHLY)
                results.append("ok")
            except BudgetExhaustedError:
                results.append("budget")

    with AnalyticsEmulator(api_key=ANALYTICS_KEY, rate_limit=100) as analytics_server:
        analytics_server.set_faults(AnalyticsOperation.ACTIVE_USERS, EndpointFaults(latency_ms=500))
        threads = [threading.Thread(target=report, args=(month,)) for month in (1, 2, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert analytics_server.stats()["queries"] == 1
    assert sorted(results) == ["budget", "budget", "ok"]


_FETCH_IN_A_CHILD = """
import sys
from datetime import date
from pathlib import Path
from pydantic import SecretStr
from syncd.report.client import AnalyticsClient
from syncd.report.compute import Granularity
from syncd.state import SqliteStateStore
from syncd.state_http_cache import SqliteApiLedger
ledger = SqliteApiLedger(SqliteStateStore(Path(sys.argv[2])))
with AnalyticsClient(
    base_url=sys.argv[1], service_key=SecretStr(sys.argv[3]), ledger=ledger, rate_limit=1
) as client:
    client.fetch(date(2026, 1, 1), date(2026, 1, 31), Granularity.MONTHLY)
"""


def test_a_report_killed_mid_request_has_spent_its_query(state: SqliteStateStore) -> None:
    with AnalyticsEmulator(api_key=ANALYTICS_KEY) as emu:
        emu.set_faults(AnalyticsOperation.ACTIVE_USERS, EndpointFaults(latency_ms=3000))
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _FETCH_IN_A_CHILD,
                emu.url,
                str(state.path.parent),
                ANALYTICS_KEY,
            ],
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while emu.stats()["queries"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert emu.stats()["queries"] == 1  # the query is in flight
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
        with _client(emu, state, rate_limit=1) as client:
            assert client.budget_left() == 0
            with pytest.raises(BudgetExhaustedError):
                client.fetch(D("2026-02-01"), D("2026-02-28"), Granularity.MONTHLY)
