"""Merging sources: duplicates become conflicts with both origins, problems are kept."""

from __future__ import annotations

from syncd.merge import DesiredUsersBuilder
from syncd.model import Origin, RecordProblem, SourceUser, make_tags


def user(end_user: str, source: str, line: int) -> SourceUser:
    return SourceUser(end_user, make_tags({}), Origin(source, line))


def test_users_of_several_sources_are_merged() -> None:
    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    builder.add(user("x", "a.csv", 2))
    builder.end_source()
    builder.begin_source("b.csv")
    builder.add(user("y", "b.csv", 2))
    builder.end_source()
    desired = builder.build()
    assert sorted(desired.users) == ["x", "y"]
    assert desired.complete
    assert [(s.label, s.users) for s in desired.sources] == [("a.csv", 1), ("b.csv", 1)]


def test_duplicate_across_sources_is_a_conflict_naming_both_origins() -> None:
    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    builder.add(user("x", "a.csv", 7))
    builder.add(user("z", "a.csv", 8))
    builder.end_source()
    builder.begin_source("b.csv")
    builder.add(user("x", "b.csv", 3))
    builder.add(user("x", "b.csv", 9))
    builder.end_source()
    desired = builder.build()
    assert list(desired.users) == ["z"]
    assert not desired.complete
    (conflict,) = desired.conflicts
    assert [str(o) for o in conflict.origins] == ["a.csv:7", "b.csv:3", "b.csv:9"]
    assert str(conflict) == "end_user 'x' appears 3 times: a.csv:7, b.csv:3, b.csv:9"


def test_problems_and_failed_reads_make_the_result_incomplete() -> None:
    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    builder.add(RecordProblem(Origin("a.csv", 4), "empty id column 'email'"))
    builder.end_source()
    builder.begin_source("b.csv")
    builder.end_source(error="cannot open b.csv")
    desired = builder.build()
    assert not desired.complete
    assert [str(p) for p in desired.problems] == ["a.csv:4: empty id column 'email'"]
    assert [s.label for s in desired.failed_sources] == ["b.csv"]
    assert desired.sources[0].problems == 1


def test_a_user_listed_thousands_of_times_gives_a_bounded_conflict_message() -> None:
    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    for line in range(2, 5002):
        builder.add(user("x", "a.csv", line))
    builder.end_source()
    (conflict,) = builder.build().conflicts
    text = str(conflict)
    assert text.startswith("end_user 'x' appears 5000 times: a.csv:2, a.csv:3,")
    assert text.endswith(", ... and 4970 more")
    assert len(text) < 500


def test_starts_far_ahead_become_bad_records_of_their_source() -> None:
    from datetime import date

    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    builder.add(SourceUser("soon", make_tags({}), Origin("a.csv", 2), date(2027, 1, 1)))
    builder.add(SourceUser("far", make_tags({}), Origin("a.csv", 3), date(2031, 1, 1)))
    builder.end_source()
    builder.begin_source("b.csv")
    builder.add(SourceUser("none", make_tags({}), Origin("b.csv", 2)))
    builder.end_source()
    desired = builder.build()
    assert desired.refuse_starts_after(date(2027, 12, 31)) == 1
    assert sorted(desired.users) == ["none", "soon"]
    assert [str(problem) for problem in desired.problems] == [
        "a.csv:3: active_from 2031-01-01 is implausibly far in the future (after 2027-12-31, "
        "guard.max_start_days_ahead)"
    ]
    assert [(s.label, s.users, s.problems) for s in desired.sources] == [
        ("a.csv", 1, 1),
        ("b.csv", 1, 0),
    ]
    assert not desired.complete
