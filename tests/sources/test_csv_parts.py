"""A CSV file read in two parts at once (the second by a forked child) reads exactly as
the whole file: the same users, problems, line numbers and errors, in the same order.

Real files in tmp_path and real forks; ``parts_min_bytes=0`` cuts even a small file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd import forking
from syncd.errors import SourceError, SourceUnavailableError
from syncd.model import RecordProblem, SourceUser
from syncd.sources.csv import CsvSource, parts
from syncd.sources.csv.parts import cut_point
from tests.sources.csv_cases import HEADER, config, count_forks

REAL_ACTIVE_COUNT = threading.active_count
REAL_OS_THREAD_COUNT = forking.os_thread_count


Outcome = tuple[list[SourceUser | RecordProblem], str | None]


def read(path: Path, *, in_parts: bool, **overrides: Any) -> Outcome:
    """Every item, and the message of the error that ended the read (None: none)."""
    source = CsvSource(
        config(path, **overrides),
        lowercase=True,
        parts_min_bytes=0 if in_parts else 1 << 62,
        columns_min_bytes=1 << 62,
    )
    items: list[SourceUser | RecordProblem] = []
    try:
        for item in source.read():
            items.append(item)
    except SourceError as error:
        return items, f"{type(error).__name__}: {error}"
    return items, None


def rows(count: int, *, start: int = 0) -> list[str]:
    return [
        f"user{i}@example.com,Dept{i % 7},C{i % 3},2026-0{1 + i % 9}-01,,{'yes' if i % 5 else 'no'}"
        for i in range(start, start + count)
    ]


def write(tmp_path: Path, lines: list[str], *, newline: str = "\n") -> Path:
    path = tmp_path / "users.csv"
    path.write_bytes((newline.join([HEADER, *lines]) + newline).encode("utf-8"))
    return path


FORKS: list[int] = []


@pytest.fixture(autouse=True)
def counted_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count the reader's forks; and a process with other threads never forks (the
    read is then whole, and these tests would compare a whole read with itself)."""
    count_forks(monkeypatch, FORKS)


@contextlib.contextmanager
def another_thread_running(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A second thread runs, and threads are counted for real (not as the autouse
    fixture stands in for them)."""
    monkeypatch.setattr(forking.threading, "active_count", REAL_ACTIVE_COUNT)
    monkeypatch.setattr(forking, "os_thread_count", REAL_OS_THREAD_COUNT)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        yield
    finally:
        stop.set()
        other.join()


def same_as_whole(path: Path, **overrides: Any) -> Outcome:
    """Read ``path`` whole and in parts; both read the same (and the second forked)."""
    whole = read(path, in_parts=False, **overrides)
    forks = len(FORKS)
    cut = read(path, in_parts=True, **overrides)
    with path.open("rb") as file:
        cuttable = cut_point(file.fileno(), path.stat().st_size, "utf-8", min_bytes=0)
    assert len(FORKS) - forks == (0 if cuttable is None else 1)
    if whole[1] is not None and "not valid" in whole[1]:
        # Bytes are decoded by blocks, counted from where a reader starts: before an
        # invalid byte, a whole read and a read in parts stop at different records.
        shorter = min(len(whole[0]), len(cut[0]))
        assert cut[1] == whole[1]
        assert cut[0][:shorter] == whole[0][:shorter]
    else:
        assert cut == whole
    return whole


@pytest.fixture
def no_reading_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second part must come from the child: reading it here fails the test."""

    def refuse(self: object, lines_before: int) -> Iterator[SourceUser]:
        raise AssertionError("the second part was read here, not by the child")

    monkeypatch.setattr(parts.PartsRead, "_second_here", refuse)


@pytest.mark.usefixtures("no_reading_here")
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_the_child_reads_the_second_part_with_its_lines_and_problems(
    tmp_path: Path, newline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parts, "FRAME_USERS", 7)  # several frames, tables sent in parts
    lines = rows(40)
    lines[31] = "broken@example.com,Dept,C,not-a-date,,yes"
    lines[33] = "too,few"
    lines.insert(35, "")  # a blank line still counts
    lines[37] = '"quoted\nid@example.com",Dept,C,2026-01-01,,yes'  # two lines, one record
    path = write(tmp_path, lines, newline=newline)
    items, error = same_as_whole(path)
    assert error is None
    problems = [item for item in items if isinstance(item, RecordProblem)]
    # The bad date, the short row, and the id with a line break (on lines 39-40).
    assert [problem.origin.line for problem in problems] == [33, 35, 39]
    assert [item.at for item in items if isinstance(item, SourceUser)][-3:] == [41, 42, 43]


def test_a_cut_inside_a_quoted_field_reads_on_from_the_record_it_cut(tmp_path: Path) -> None:
    lines = rows(10)
    # A tag value of many lines across the cut.
    lines.append('user10@example.com,"' + "\n".join(["long"] * 400) + '",C,2026-01-01,,yes')
    lines += rows(5, start=11)
    path = write(tmp_path, lines)
    content = path.read_bytes()
    with path.open("rb") as file:
        point = cut_point(file.fileno(), len(content), "utf-8", min_bytes=0)
    assert point is not None
    assert content.index(b'"long') < point < content.index(b'long",')  # inside the value
    items, error = same_as_whole(path)
    assert error is None
    assert [item.end_user for item in items if isinstance(item, SourceUser)][10:12] == [
        "user10@example.com",
        "user11@example.com",
    ]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (b'user@x.com,"never closed,C,2026-01-01,,yes\n', "never closed"),
        (b"user@x.com,D\xff,C,2026-01-01,,yes\n", "not valid utf-8"),
    ],
    ids=["open quote", "invalid byte"],
)
def test_an_error_in_the_second_part_ends_the_read_as_in_the_whole_file(
    tmp_path: Path, bad: bytes, expected: str
) -> None:
    path = tmp_path / "users.csv"
    body = "\n".join([HEADER, *rows(300)]).encode() + b"\n"
    path.write_bytes(body + bad + "\n".join(rows(20, start=300)).encode() + b"\n")
    items, error = same_as_whole(path)
    assert error is not None
    assert expected in error
    assert "line 302" in error
    assert len(items) >= 100  # users before the error came first


def test_a_child_that_dies_half_way_is_replaced_by_a_reader_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parts, "FRAME_USERS", 5)
    real = parts._second_part_frames

    def dies_after_two_frames(read: parts.PartsRead) -> Iterator[Any]:
        for number, frame in enumerate(real(read)):
            if number == 2:
                os._exit(9)  # in the child: as if killed
            yield frame

    monkeypatch.setattr(parts, "_second_part_frames", dies_after_two_frames)
    path = write(tmp_path, rows(60))
    items, error = same_as_whole(path)
    assert error is None
    assert len(items) == 60


def test_a_child_that_counts_the_lines_otherwise_is_not_believed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parts, "count_lines", lambda fd, end: 3)  # wrong, in the child
    path = write(tmp_path, rows(60))
    items, error = same_as_whole(path)
    assert error is None
    assert [item.at for item in items if isinstance(item, SourceUser)] == list(range(2, 62))


def test_a_file_that_changes_while_it_is_read_in_parts_fails_the_read(tmp_path: Path) -> None:
    path = write(tmp_path, rows(200))
    source = CsvSource(config(path), lowercase=True, parts_min_bytes=0, columns_min_bytes=1 << 62)
    read_items = source.read()
    next(read_items)
    with path.open("ab") as file:
        file.write(b"late@example.com,D,C,2026-01-01,,yes\n")
    with pytest.raises(SourceUnavailableError, match="changed while it was read"):
        list(read_items)


def test_no_child_outlives_a_read_abandoned_half_way(tmp_path: Path) -> None:
    path = write(tmp_path, rows(500))
    items = CsvSource(
        config(path), lowercase=True, parts_min_bytes=0, columns_min_bytes=1 << 62
    ).read()
    next(items)
    items.close()  # the consumer stops early (an interruption)
    assert len(FORKS) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(FORKS[0], os.WNOHANG)  # already reaped


def test_the_cut_is_the_first_line_start_after_this_process_share(tmp_path: Path) -> None:
    # This process reads less than half: it also merges the child's users afterwards.
    path = write(tmp_path, rows(100))
    content = path.read_bytes()
    with path.open("rb") as file:
        point = cut_point(file.fileno(), len(content), "utf-8", min_bytes=0)
    share = int(len(content) * parts.FIRST_PART_SHARE)
    assert point == content.index(b"\n", share) + 1
    assert len(content) // 3 < point < len(content) // 2
    items, error = same_as_whole(path)
    assert error is None
    assert [item.at for item in items if isinstance(item, SourceUser)] == list(range(2, 102))


def test_a_file_is_read_whole_when_it_cannot_be_cut_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, rows(100))
    size = path.stat().st_size
    with path.open("rb") as file:
        fd = file.fileno()
        assert cut_point(fd, size, "utf-8", min_bytes=0) is not None
        assert cut_point(fd, size, "utf-8", min_bytes=size + 1) is None  # too small
        assert cut_point(fd, size, "utf-16", min_bytes=0) is None  # 0x0A inside a char
        with monkeypatch.context() as one_cpu:  # two readers would take turns on it
            one_cpu.setattr(parts, "usable_cpus", lambda: 1.5)
            assert cut_point(fd, size, "utf-8", min_bytes=0) is None
        # A fork copies one thread: with another one running (the real count), no cut.
        with another_thread_running(monkeypatch):
            assert cut_point(fd, size, "utf-8", min_bytes=0) is None
    path.write_bytes(b"email\n" + b"x" * 1000)  # no line feed after the share
    with path.open("rb") as file:
        assert cut_point(file.fileno(), 1006, "utf-8", min_bytes=0) is None


_CELL = st.one_of(
    st.sampled_from(["", " ", "Sales", "2026-01-01", "no", "yes", "x@y.com"]),
    st.text(alphabet='ab,"\n\r é', max_size=6),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.lists(_CELL, min_size=1, max_size=7), min_size=1, max_size=40),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
)
def test_any_file_reads_the_same_in_parts_as_whole(
    tmp_path: Path, cells: list[list[str]], newline: str, raw: bool
) -> None:
    # Cells quoted as a writer would quote them, or written raw (broken quoting too).
    def cell(text: str) -> str:
        if raw or not any(char in text for char in ',"\n\r'):
            return text
        return '"' + text.replace('"', '""') + '"'

    lines = [",".join(cell(text) for text in row) for row in cells]
    path = tmp_path / "any.csv"
    path.write_bytes((newline.join([HEADER, *lines]) + newline).encode("utf-8"))
    same_as_whole(path)


@pytest.mark.parametrize("encoding", ["utf-8", "UTF_8_SIG"])
def test_a_byte_order_mark_is_dropped_at_the_start_of_the_file_only(
    tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "users.csv"
    for at in range(20, 40):  # a BOM that is data, on the line the second part starts on
        lines = rows(60)
        lines[at] = "\ufeff" + lines[at]
        content = ("\ufeff" + "\n".join([HEADER, *lines]) + "\n").encode()
        with path.open("wb") as file:
            file.write(content)
        with path.open("rb") as file:
            point = cut_point(file.fileno(), len(content), "utf-8", min_bytes=0)
        if point == content.index(b"\xef\xbb\xbf" + lines[at][1:].encode()):
            break
    else:
        pytest.fail("no row starts the second part")
    items, _ = same_as_whole(path, encoding=encoding)
    problems = [item for item in items if isinstance(item, RecordProblem)]
    assert [problem.origin.line for problem in problems] == [at + 2]
    assert "U+FEFF" in problems[0].message


def test_a_thread_started_after_the_cut_means_the_second_part_is_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cut looked possible; at the fork, another thread runs (the real counts): no
    # fork, and the second part is read in this process, with the same result.
    path = write(tmp_path, [*rows(300), "bad,row", *rows(300, start=300)])
    whole = read(path, in_parts=False)
    monkeypatch.setattr(forking, "could_fork", lambda: True)
    with another_thread_running(monkeypatch):
        assert read(path, in_parts=True) == whole
    assert FORKS == []
