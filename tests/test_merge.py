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
