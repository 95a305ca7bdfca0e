"""Merging sources: duplicates become conflicts with both origins, problems are kept."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import SourceError
from syncd.merge import DesiredUsersBuilder
from syncd.model import Origin, RecordProblem, SourceUser, make_tags


def user(end_user: str, source: str, line: int) -> SourceUser:
    return SourceUser.from_origin(end_user, make_tags({}), Origin(source, line))


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
    builder.add(SourceUser.from_origin("soon", make_tags({}), Origin("a.csv", 2), date(2027, 1, 1)))
    builder.add(SourceUser.from_origin("far", make_tags({}), Origin("a.csv", 3), date(2031, 1, 1)))
    builder.end_source()
    builder.begin_source("b.csv")
    builder.add(SourceUser.from_origin("none", make_tags({}), Origin("b.csv", 2)))
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


# ---------------------------------------------------------------- add_all


def _merged(
    sources: list[list[SourceUser | RecordProblem]], *, batched: bool
) -> tuple[object, ...]:
    builder = DesiredUsersBuilder()
    for number, items in enumerate(sources):
        builder.begin_source(f"s{number}.csv")
        if batched:
            builder.add_all(iter(items))
        else:
            for item in items:
                builder.add(item)
        builder.end_source()
    desired = builder.build()
    return (
        list(desired.users.items()),  # in order: the order of first appearance counts
        desired.problems,
        desired.conflicts,
        desired.sources,
    )


@st.composite
def _records(draw: st.DrawFn, source: str) -> list[SourceUser | RecordProblem]:
    items: list[SourceUser | RecordProblem] = []
    for line, kind in enumerate(draw(st.lists(st.sampled_from("uuup"), max_size=25)), 2):
        if kind == "p":
            items.append(RecordProblem(Origin(source, line), "bad"))
        else:
            items.append(user(draw(st.sampled_from("abcdef")), source, line))
    return items


@given(st.integers(1, 3).flatmap(lambda n: st.tuples(*(_records(f"s{i}.csv") for i in range(n)))))
def test_add_all_merges_exactly_as_add_does(sources: tuple[list[Any], ...]) -> None:
    # Users repeat (a conflict, then more origins for it), across sources too.
    assert _merged(list(sources), batched=True) == _merged(list(sources), batched=False)


def test_add_all_counts_what_it_got_before_a_read_fails() -> None:
    def failing_read() -> Iterator[SourceUser | RecordProblem]:
        yield user("x", "a.csv", 2)
        yield RecordProblem(Origin("a.csv", 3), "bad")
        yield user("y", "a.csv", 4)
        raise SourceError("cannot read CSV file a.csv: line 5: ...")

    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    with pytest.raises(SourceError):
        builder.add_all(failing_read())
    builder.end_source(error="cannot read")
    desired = builder.build()
    assert [(s.users, s.problems, s.failed) for s in desired.sources] == [(2, 1, True)]
    assert sorted(desired.users) == ["x", "y"]
    assert not desired.complete


def test_add_all_takes_the_same_record_twice_as_a_conflict() -> None:
    record = user("x", "a.csv", 2)
    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    builder.add_all([record, record])
    builder.end_source()
    desired = builder.build()
    assert desired.users == {}
    assert [str(c) for c in desired.conflicts] == ["end_user 'x' appears 2 times: a.csv:2, a.csv:2"]


def test_add_all_hands_other_record_types_to_add() -> None:
    class TaggedUser(SourceUser, frozen=True, gc=False):
        """A subclass: not the exact type, so it takes the path of add()."""

    builder = DesiredUsersBuilder()
    builder.begin_source("a.csv")
    builder.add_all(
        [
            TaggedUser.from_origin("x", (), Origin("a.csv", 2)),
            user("x", "a.csv", 3),
            user("y", "a.csv", 4),
            TaggedUser.from_origin("y", (), Origin("a.csv", 5)),
            user("z", "a.csv", 6),
        ]
    )
    builder.end_source()
    desired = builder.build()
    assert list(desired.users) == ["z"]
    assert [[str(o) for o in c.origins] for c in desired.conflicts] == [
        ["a.csv:2", "a.csv:3"],
        ["a.csv:4", "a.csv:5"],
    ]
    assert desired.sources[0].users == 5
