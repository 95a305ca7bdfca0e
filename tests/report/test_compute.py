"""The report's numbers against a fixture computed by hand (see the table in each test)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.model import make_tags
from syncd.report.compute import (
    ActivationReport,
    Counts,
    EligibleUser,
    Granularity,
    bit_mapper,
    bucket_label,
    compute_report,
    eligible_masks,
    group_value,
    make_periods,
    no_tag,
    split_range,
)

D = date.fromisoformat
NONE = no_tag("department")
JAN, FEB, MAR = 1, 2, 4  # bits of the three monthly periods of the fixture range


def _user(name: str, start: str, end: str | None, dept: str | None) -> EligibleUser:
    tags = make_tags({"department": dept} if dept else {})
    return EligibleUser(name, D(start), D(end) if end else None, tags)


# Range 2026-01-10 .. 2026-03-20, monthly: Jan [10, 31], Feb [1, 28], Mar [1, 20].
PLATFORM = [
    _user("a", "2025-06-01", None, "Sales"),  # eligible throughout
    _user("b", "2026-02-15", None, "Sales"),  # joins mid-February
    _user("c", "2025-01-01", "2026-02-10", "Eng"),  # leaves mid-February
    _user("d", "2025-01-01", "2025-12-31", "Eng"),  # ended before the range
    _user("e", "2026-04-01", None, "Eng"),  # starts after the range
    _user("f", "2026-01-01", "2026-01-09", None),  # ended the day before the range, no tag
    _user("g", "2026-03-20", None, None),  # starts on the range's last day, no tag
]
ACTIVITY = {
    "a": JAN | MAR,
    "b": JAN | MAR,  # January before joining: active, not eligible
    "c": MAR,  # only after leaving: leakage
    "d": FEB,  # ended before the range: leakage
    "x": FEB,  # not on the platform at all: leakage, group (no department)
}


def _report() -> ActivationReport:
    return compute_report(
        start=D("2026-01-10"),
        end=D("2026-03-20"),
        granularity=Granularity.MONTHLY,
        eligible=PLATFORM,
        activity=ACTIVITY,
        by=["department"],
    )


def _numbers(counts: Counts) -> tuple[int, int, int, int, float | None]:
    return (
        counts.eligible,
        counts.active,
        counts.active_eligible,
        counts.active_not_eligible,
        counts.activation_rate,
    )


def test_periods_are_clipped_to_the_range() -> None:
    report = _report()
    spans = [(p.period.label, p.period.start, p.period.end) for p in report.periods]
    assert spans == [
        ("2026-01", D("2026-01-10"), D("2026-01-31")),
        ("2026-02", D("2026-02-01"), D("2026-02-28")),
        ("2026-03", D("2026-03-01"), D("2026-03-20")),
    ]


def test_numbers_per_period() -> None:
    report = _report()
    # (eligible, active, active_eligible, active_not_eligible, rate)
    assert [_numbers(p.counts) for p in report.periods] == [
        (2, 2, 1, 1, 0.5),  # a, c eligible; a, b active; b not yet eligible
        (3, 2, 0, 2, 0.0),  # a, b, c eligible; d, x active
        (3, 3, 2, 1, 0.6667),  # a, b, g eligible; a, b, c active; c gone
    ]


def test_totals_count_each_user_once() -> None:
    report = _report()
    assert _numbers(report.total) == (4, 5, 2, 3, 0.5)
    assert report.active_not_eligible_users == ["c", "d", "x"]
    assert report.total.never_active == 2
    assert report.never_active_users == ["c", "g"]


def test_groups_follow_the_same_definitions() -> None:
    report = _report()
    by_period = [
        {value: _numbers(c) for value, c in p.by["department"].items()} for p in report.periods
    ]
    assert by_period == [
        {
            "Eng": (1, 0, 0, 0, 0.0),
            "Sales": (1, 2, 1, 1, 1.0),
            NONE: (0, 0, 0, 0, None),
        },
        {
            "Eng": (1, 1, 0, 1, 0.0),
            "Sales": (2, 0, 0, 0, 0.0),
            NONE: (0, 1, 0, 1, None),
        },
        {
            "Eng": (0, 1, 0, 1, None),
            "Sales": (2, 2, 2, 0, 1.0),
            NONE: (1, 0, 0, 0, 0.0),
        },
    ]
    totals = {value: _numbers(c) for value, c in report.total_by["department"].items()}
    assert totals == {
        "Eng": (1, 2, 0, 2, 0.0),
        "Sales": (2, 2, 2, 0, 1.0),
        NONE: (1, 1, 0, 1, 0.0),
    }
    # The identity holds everywhere: active = active_eligible + active_not_eligible.
    for counts in [*(p.counts for p in report.periods), report.total]:
        assert counts.active == counts.active_eligible + counts.active_not_eligible


def test_daily_periods_and_an_active_day_outside_eligibility() -> None:
    report = compute_report(
        start=D("2026-01-30"),
        end=D("2026-02-02"),
        granularity=Granularity.DAILY,
        eligible=[_user("a", "2026-01-31", "2026-02-01", None)],
        activity={"a": 0b1011},  # Jan 30 (not eligible), Jan 31, Feb 2 (gone again)
    )
    assert [p.period.label for p in report.periods] == [
        "2026-01-30",
        "2026-01-31",
        "2026-02-01",
        "2026-02-02",
    ]
    assert [_numbers(p.counts) for p in report.periods] == [
        (0, 1, 0, 1, None),
        (1, 1, 1, 0, 1.0),
        (1, 0, 0, 0, 0.0),
        (0, 1, 0, 1, None),
    ]
    assert _numbers(report.total) == (1, 1, 1, 0, 1.0)
    assert report.active_not_eligible_users == []


def test_make_periods_months_and_bad_range() -> None:
    periods = make_periods(D("2026-01-31"), D("2026-03-01"), Granularity.MONTHLY)
    assert [(p.label, p.start.day, p.end.day) for p in periods] == [
        ("2026-01", 31, 31),
        ("2026-02", 1, 28),
        ("2026-03", 1, 1),
    ]
    with pytest.raises(ValueError, match="before it starts"):
        make_periods(D("2026-02-01"), D("2026-01-01"), Granularity.DAILY)


def test_split_range_into_at_most_90_days() -> None:
    parts = split_range(D("2026-01-01"), D("2026-07-19"))  # 200 days
    assert [(a.isoformat(), b.isoformat()) for a, b in parts] == [
        ("2026-01-01", "2026-03-31"),
        ("2026-04-01", "2026-06-29"),
        ("2026-06-30", "2026-07-19"),
    ]
    assert split_range(D("2026-01-01"), D("2026-03-31")) == [(D("2026-01-01"), D("2026-03-31"))]


def test_bucket_labels_accept_dates_and_times() -> None:
    assert bucket_label("2026-01", Granularity.MONTHLY) == "2026-01"
    assert bucket_label("2026-01-05T00:00:00Z", Granularity.MONTHLY) == "2026-01"
    assert bucket_label("2026-01-05T00:00:00Z", Granularity.DAILY) == "2026-01-05"


def test_entries_that_normalise_alike_are_one_user_with_the_union_of_their_spans() -> None:
    # Ann@x (Jan) and ann@x (Apr..May) normalise to one id: eligible in Jan, Apr, May,
    # not in the gap (Feb, Mar); tags from the entry that starts last.
    periods = make_periods(D("2026-01-01"), D("2026-06-30"), Granularity.MONTHLY)
    users = [
        _user("a", "2026-04-01", "2026-05-31", "Later"),
        _user("a", "2026-01-01", "2026-01-31", "Earlier"),
    ]
    assert eligible_masks(users, periods) == {"a": (0b011001, make_tags({"department": "Later"}))}
    report = compute_report(
        start=D("2026-01-01"),
        end=D("2026-06-30"),
        granularity=Granularity.MONTHLY,
        eligible=users,
        activity={"a": 0b000010},  # active in February only: inside the gap
        by=("department",),
    )
    assert [p.counts.eligible for p in report.periods] == [1, 0, 0, 1, 1, 0]
    assert report.total.eligible == 1
    assert report.periods[1].counts.active_not_eligible == 1
    assert report.active_not_eligible_users == ["a"]
    assert list(report.total_by["department"]) == ["Later"]


def test_a_reversed_range_is_eligible_on_no_day() -> None:
    report = compute_report(
        start=D("2026-01-01"),
        end=D("2026-03-31"),
        granularity=Granularity.MONTHLY,
        eligible=[_user("r", "2026-03-01", "2026-01-15", None)],
        activity={"r": 0b001},
    )
    assert [p.counts.eligible for p in report.periods] == [0, 0, 0]
    assert report.total.eligible == 0
    assert report.active_not_eligible_users == ["r"]
    assert report.never_active_users == []


# ---------------------------------------------------------------- against a reference

_DAY0 = D("2026-01-01")


def _reference(
    start: date,
    end: date,
    granularity: Granularity,
    users: list[EligibleUser],
    activity: dict[str, int],
) -> tuple[list[tuple[int, int, int]], tuple[int, int, int]]:
    """The definitions read literally, day by day (slow, obviously right)."""
    periods = make_periods(start, end, granularity)

    def eligible_in(user: EligibleUser, first: date, last: date) -> bool:
        day = first
        while day <= last:
            if user.active_from <= day and (user.active_to is None or day <= user.active_to):
                return True
            day += timedelta(days=1)
        return False

    by_id: dict[str, list[EligibleUser]] = {}
    for user in users:
        by_id.setdefault(user.user, []).append(user)
    everyone = set(by_id) | set(activity)
    rows = []
    ever_eligible: set[str] = set()
    ever_active: set[str] = set()
    ever_both: set[str] = set()
    for i, period in enumerate(periods):
        eligible = {
            u for u in by_id if any(eligible_in(e, period.start, period.end) for e in by_id[u])
        }
        active = {u for u in everyone if activity.get(u, 0) >> i & 1}
        rows.append((len(eligible), len(active), len(eligible & active)))
        ever_eligible |= eligible
        ever_active |= active
        ever_both |= eligible & active
    return rows, (len(ever_eligible), len(ever_active), len(ever_both))


_dates = st.integers(min_value=-40, max_value=120).map(lambda n: _DAY0 + timedelta(days=n))


@st.composite
def _cases(draw: st.DrawFn) -> tuple[date, date, Granularity, list[EligibleUser], dict[str, int]]:
    start = draw(st.integers(0, 60).map(lambda n: _DAY0 + timedelta(days=n)))
    end = start + timedelta(days=draw(st.integers(0, 70)))
    granularity = draw(st.sampled_from(list(Granularity)))
    size = len(make_periods(start, end, granularity))
    users = []
    for _ in range(draw(st.integers(0, 8))):
        # Few ids, so some entries share one (names that normalise alike); any end,
        # also one before the start (a reversed range: eligible on no day).
        first = draw(_dates)
        last = draw(st.one_of(st.none(), _dates))
        users.append(EligibleUser(f"u{draw(st.integers(0, 5))}", first, last))
    activity = {
        f"u{i}": draw(st.integers(0, (1 << size) - 1)) for i in range(draw(st.integers(0, 11)))
    }
    return start, end, granularity, users, activity


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_matches_the_definitions_read_literally(
    case: tuple[date, date, Granularity, list[EligibleUser], dict[str, int]],
) -> None:
    start, end, granularity, users, activity = case
    report = compute_report(
        start=start, end=end, granularity=granularity, eligible=users, activity=activity
    )
    rows, total = _reference(start, end, granularity, users, activity)
    assert [
        (p.counts.eligible, p.counts.active, p.counts.active_eligible) for p in report.periods
    ] == rows
    assert (report.total.eligible, report.total.active, report.total.active_eligible) == total


def test_bit_mapper_shifts_or_moves_bits() -> None:
    assert bit_mapper([3, 4, 5])(0b101) == 0b101000
    assert bit_mapper([2, -1, 0])(0b111) == 0b101
    assert bit_mapper([])(0) == 0


def test_no_tag_empty_and_look_alike_values_are_distinct_groups() -> None:
    users = [
        EligibleUser("a", D("2026-01-01"), None, make_tags({})),
        EligibleUser("b", D("2026-01-01"), None, (("department", ""),)),
        EligibleUser("c", D("2026-01-01"), None, (("department", "(no department)"),)),
        EligibleUser("d", D("2026-01-01"), None, (("department", '""'),)),
    ]
    report = compute_report(
        start=D("2026-01-01"),
        end=D("2026-01-31"),
        granularity=Granularity.MONTHLY,
        eligible=users,
        activity={},
        by=("department",),
    )
    groups = report.total_by["department"]
    assert {value: c.eligible for value, c in groups.items()} == {
        "(no department)": 1,
        '""': 1,
        '"(no department)"': 1,
        '""""': 1,
    }
    assert group_value("department", "Sales") == "Sales"


def test_the_percent_shown_is_rounded_once_from_the_counts() -> None:
    four_of_21 = Counts(eligible=21, active=4, active_eligible=4)
    assert four_of_21.activation_rate == 0.1905  # the JSON contract: four decimals
    assert four_of_21.percent == "19.0%"  # not 19.1%, from rounding 0.1905 again
    assert Counts(eligible=0, active=3).percent == "—"
    assert Counts(eligible=3, active=3, active_eligible=3).percent == "100.0%"
