"""A plain CSV file read by columns (Arrow), here or in a forked child for its second
part, reads exactly as row by row: the same users, problems, line numbers and errors,
in the same order.

Real files in tmp_path, the real Arrow parser and real forks; ``columns_min_bytes=0``
(and ``columns_in_parts_min_bytes=0`` in two parts) reads even a small file by
columns, and small Arrow blocks give it many batches.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd import forking
from syncd.errors import SourceError
from syncd.model import RecordProblem, SourceUser
from syncd.sources.csv import CsvSource, arrow
from syncd.sources.csv import plain as plain_module
from syncd.sources.csv.plain import plain_data_start
from tests.sources.csv_cases import HEADER, config, count_forks

FORKS: list[int] = []


Outcome = tuple[list[SourceUser | RecordProblem], str | None]

MODES = {
    "rows": {"parts_min_bytes": 1 << 62, "columns_min_bytes": 1 << 62},
    "columns": {"parts_min_bytes": 1 << 62, "columns_min_bytes": 0},
    "columns in a child": {
        "parts_min_bytes": 0,
        "columns_min_bytes": 0,
        "columns_in_parts_min_bytes": 0,
    },
}


def read(path: Path, mode: str, *, lowercase: bool = True, **overrides: Any) -> Outcome:
    """Every item, and the message of the error that ended the read (None: none)."""
    source = CsvSource(config(path, **overrides), lowercase=lowercase, **MODES[mode])
    items: list[SourceUser | RecordProblem] = []
    try:
        for item in source.read():
            items.append(item)
    except SourceError as error:
        return items, f"{type(error).__name__}: {error}"
    return items, None


@pytest.fixture(autouse=True)
def small_blocks_and_counted_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow parses 256 bytes at a time (a few rows a batch, so that batches of every
    kind follow each other); forks are counted, and the process counts as one thread
    (Arrow's own pool, started by an earlier read here, would rule the fork out)."""
    monkeypatch.setattr(arrow, "BLOCK_BYTES", 256)
    monkeypatch.setattr(arrow, "BLOCK_BYTES_HERE", 256)
    count_forks(monkeypatch, FORKS)


def same_as_rows(path: Path, **overrides: Any) -> Outcome:
    """Read ``path`` in every mode; each reads as the row-by-row read."""
    rows = read(path, "rows", **overrides)
    for mode in ("columns", "columns in a child"):
        other = read(path, mode, **overrides)
        if rows[1] is not None and "not valid" in rows[1]:
            # Bytes are decoded by blocks: before an invalid byte, two readers that
            # start at different places stop at different records, with one error.
            shorter = min(len(rows[0]), len(other[0]))
            assert other[1] == rows[1], mode
            assert other[0][:shorter] == rows[0][:shorter], mode
        else:
            assert other == rows, mode
    return rows


def user_rows(count: int, *, start: int = 0) -> list[str]:
    return [
        f"User{i}@Example.com,Dept{i % 7},C{i % 3},2026-0{1 + i % 9}-01,,{'yes' if i % 5 else 'no'}"
        for i in range(start, start + count)
    ]


def write(tmp_path: Path, lines: list[str], *, newline: str = "\n", end: bool = True) -> Path:
    path = tmp_path / "users.csv"
    path.write_bytes((newline.join([HEADER, *lines]) + (newline if end else "")).encode())
    return path


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_a_plain_file_reads_by_columns_as_row_by_row(
    tmp_path: Path, newline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    real_pieces = arrow.ColumnsRead.pieces

    def marked(read: arrow.ColumnsRead, first_line: int) -> Any:
        (marks / f"{os.getpid()}-{first_line}").touch()  # who read by columns, from where
        return real_pieces(read, first_line)

    monkeypatch.setattr(arrow.ColumnsRead, "pieces", marked)
    path = write(tmp_path, user_rows(300), newline=newline)
    items, error = same_as_rows(path)
    readers = {name.split("-")[0] for name in os.listdir(marks)}
    # Here (the "columns" mode), and in the child: two processes read by columns.
    assert len(readers) == (1 if newline == "\r" else 2)
    assert error is None
    assert [item.at for item in items if isinstance(item, SourceUser)] == list(range(2, 302))
    # The cut is after a line feed: a file of lone CRs is read by columns here.
    assert bool(FORKS) == (newline != "\r")


def test_bad_records_are_reported_as_row_by_row_in_every_batch(tmp_path: Path) -> None:
    lines = user_rows(200)
    lines[10] = "broken@example.com,Dept,C,not-a-date,,yes"
    lines[40] = "late@example.com,Dept,C,2026-05-01,2026-01-01,yes"  # ends before it starts
    lines[60] = "odd@example.com,Dept,C,2026-01-01,,perhaps"
    lines[80] = "zero\u200bwidth@example.com,Dept,C,2026-01-01,,yes"
    lines[100] = "caf\u0065\u0301@example.com,Dept,C,2026-01-01,,yes"  # NFC makes it café
    lines[120] = ",,,,,"  # a blank row: skipped
    lines[140] = "   ,Dept,C,2026-01-01,,yes"  # an id of spaces
    lines[150] = "Ünïcödé@Example.com,Dépt,Ç,2026-01-01,9999-12-31,TRUE"
    lines[160] = "tag@example.com,Bad\u200bTag,C,2026-01-01,,yes"
    lines[170] = "x" * 1100 + "@example.com,Dept,C,2026-01-01,,yes"
    lines[180] = "User0@Example.com,Dept,C,2026-01-01,,yes"  # a duplicate, for the merge
    items, error = same_as_rows(path := write(tmp_path, lines))
    assert error is None
    problems = [item for item in items if isinstance(item, RecordProblem)]
    assert [problem.origin.line for problem in problems] == [12, 42, 62, 82, 142, 162, 172]
    cafe = next(item for item in items if isinstance(item, SourceUser) and item.at == 102)
    assert cafe.end_user == "caf\u00e9@example.com"
    assert path.exists()


def test_blank_lines_and_rows_of_another_width_hand_over_to_the_row_reader(
    tmp_path: Path,
) -> None:
    lines = user_rows(120)
    lines.insert(30, "")  # an empty line: a record of one empty field for Arrow
    lines.insert(60, "   ")  # spaces only: one field, where six are expected
    lines[90] = "too,few"
    lines.insert(100, "one,two,three,four,five,six,seven")
    items, error = same_as_rows(write(tmp_path, lines))
    assert error is None
    problems = [item for item in items if isinstance(item, RecordProblem)]
    assert [problem.origin.line for problem in problems] == [92, 102]
    assert "expected 6 fields as in the header, found 2" in problems[0].message


def test_invalid_bytes_end_the_read_as_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    good = "\n".join([HEADER, *user_rows(200)]).encode() + b"\n"
    path.write_bytes(good + b"bad@example.com,D\xff,C,2026-01-01,,yes\n" + good[len(HEADER) :])
    _, error = same_as_rows(path)
    assert error is not None
    assert "line 202" in error
    assert "not valid utf-8" in error


def test_a_field_over_the_csv_size_limit_ends_the_read_as_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = csv.field_size_limit(200)  # process-wide: restored below
    try:
        monkeypatch.setattr(arrow, "BLOCK_BYTES", 4096)  # a row longer than the limit fits
        monkeypatch.setattr(arrow, "BLOCK_BYTES_HERE", 4096)
        lines = user_rows(100)
        lines[70] = "long@example.com," + "D" * 300 + ",C,2026-01-01,,yes"
        items, error = same_as_rows(write(tmp_path, lines))
    finally:
        csv.field_size_limit(previous)
    assert error is not None
    assert "line 72" in error
    assert "larger than the limit" in error
    assert len(items) == 70


def test_a_row_longer_than_arrow_block_hands_over_to_the_row_reader(tmp_path: Path) -> None:
    lines = user_rows(50)
    lines[20] = "wide@example.com," + "D" * 600 + ",C,2026-01-01,,yes"  # > 256 bytes
    items, error = same_as_rows(write(tmp_path, lines))
    assert error is None
    assert len(items) == 50


@pytest.mark.parametrize("lowercase", [True, False])
def test_identity_case_is_kept_or_lowered_as_row_by_row(tmp_path: Path, lowercase: bool) -> None:
    path = write(tmp_path, user_rows(50))
    rows = read(path, "rows", lowercase=lowercase)
    assert read(path, "columns", lowercase=lowercase) == rows
    users = [item for item in rows[0] if isinstance(item, SourceUser)]
    assert users[0].end_user == ("user0@example.com" if lowercase else "User0@Example.com")


def test_fields_not_mapped_read_as_row_by_row(tmp_path: Path) -> None:
    path = write(tmp_path, user_rows(80), end=False)  # and no line break at the end
    for overrides in (
        {"tags": {}, "active_from_column": None, "active_to_column": None},
        {"enabled_column": None, "active_to_column": None},
        {"tags": {"country": "Country"}, "active_from_column": None},
    ):
        items, error = same_as_rows(path, **overrides)
        assert error is None
        assert len(items) == 80


def test_a_byte_order_mark_and_another_delimiter_read_as_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    lines = [line.replace(",", ";") for line in [HEADER, *user_rows(100)]]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    items, error = same_as_rows(path, delimiter=";")
    assert error is None
    assert len(items) == 100


def test_a_bad_byte_near_the_start_is_the_error_before_a_missing_column(tmp_path: Path) -> None:
    # The row reader decodes a block of text before it looks at the header.
    lines = user_rows(300)
    lines[1] = lines[1].replace("Dept", "D\udcff", 1)
    path = tmp_path / "users.csv"
    body = "\n".join([HEADER.replace("Country", "Land"), *lines]) + "\n"
    path.write_bytes(body.encode("utf-8", "surrogateescape"))
    with path.open("rb") as file:
        assert plain_data_start(file.fileno(), path.stat().st_size, "utf-8", ",") is None
    _, error = same_as_rows(path)
    assert error is not None
    assert "not valid utf-8" in error


@pytest.mark.parametrize("where", [0, 150], ids=["line 2", "after the cut"])
@pytest.mark.parametrize("mark", ["\ufeff", "\x00"], ids=["BOM", "NUL"])
def test_bytes_arrow_reads_otherwise_keep_the_file_row_by_row(
    tmp_path: Path, where: int, mark: str
) -> None:
    # Arrow drops a byte-order mark where it starts reading, and misreads a NUL
    # before a delimiter or a line break: such a file is not plain.
    lines = user_rows(200)
    lines[where] = mark + lines[where]
    lines[where + 10] = lines[where + 10].replace(",", mark + ",", 1)
    path = write(tmp_path, lines)
    with path.open("rb") as file:
        assert plain_data_start(file.fileno(), path.stat().st_size, "utf-8", ",") is None
    items, error = same_as_rows(path)
    assert error is None
    problems = [item for item in items if isinstance(item, RecordProblem)]
    assert [problem.origin.line for problem in problems] == [where + 2, where + 12]
    one_column = tmp_path / "one.csv"
    one_column.write_bytes(b"email\n" + b"".join(b"u%d@x.com\x00\n" % i for i in range(300)))
    assert same_as_rows(one_column, tags={}, **NOTHING_ELSE)[1] is None


NOTHING_ELSE: dict[str, Any] = {
    "active_from_column": None,
    "active_to_column": None,
    "enabled_column": None,
}


def test_a_delimiter_arrow_cannot_take_keeps_the_file_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"email\n" + b"".join(b"u%d@x.com\n" % i for i in range(300)))
    items, error = same_as_rows(path, delimiter="\x00", tags={}, **NOTHING_ELSE)
    assert error is None
    assert len(items) == 300


def test_a_file_shorter_than_its_size_said_is_scanned_without_harm(tmp_path: Path) -> None:
    path = write(tmp_path, user_rows(20))
    with path.open("rb") as file:  # as if it shrank after the size was read
        start = plain_data_start(file.fileno(), path.stat().st_size + 4096, "utf-8", ",")
    assert start == len(HEADER) + 1


def test_a_refused_fork_still_reads_the_second_part_by_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forking, "fork", lambda: None)  # another thread runs, say
    marks: list[tuple[int, bool]] = []
    real_pieces = arrow.ColumnsRead.pieces

    def marked(read: arrow.ColumnsRead, first_line: int) -> Any:
        marks.append((first_line, read.in_child))
        return real_pieces(read, first_line)

    monkeypatch.setattr(arrow.ColumnsRead, "pieces", marked)
    path = write(tmp_path, user_rows(300))
    rows = read(path, "rows")
    assert read(path, "columns in a child") == rows
    assert len(marks) == 1
    assert marks[0][1] is False  # here, not in a child
    assert marks[0][0] > 2  # the second part: this process read the first row by row


@pytest.mark.parametrize("can_fork", [True, False])
def test_a_plain_file_under_the_parts_limit_reads_its_parts_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, can_fork: bool
) -> None:
    # Large enough to be read by columns, too small for a child to import Arrow first:
    # two parts row by row where a child can be forked, else by columns here.
    monkeypatch.setattr(forking, "could_fork", lambda: can_fork)
    read_by_columns: list[bool] = []
    real_pieces = arrow.ColumnsRead.pieces

    def marked(columns: arrow.ColumnsRead, first_line: int) -> Any:
        read_by_columns.append(columns.in_child)
        return real_pieces(columns, first_line)

    monkeypatch.setattr(arrow.ColumnsRead, "pieces", marked)
    path = write(tmp_path, user_rows(300))
    rows = read(path, "rows")
    source = CsvSource(
        config(path),
        lowercase=True,
        parts_min_bytes=0,
        columns_min_bytes=0,
        columns_in_parts_min_bytes=path.stat().st_size + 1,
    )
    assert (list(source.read()), None) == rows
    assert len(FORKS) == (1 if can_fork else 0)
    assert read_by_columns == ([] if can_fork else [False])


def test_the_parent_never_imports_arrow_when_a_child_reads_the_second_part(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, user_rows(2000))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from syncd.sources.csv import CsvSource, CsvSourceConfig\n"
        f"config = CsvSourceConfig(type='csv', path=Path({str(path)!r}), id_column='email')\n"
        "source = CsvSource(config, lowercase=True, parts_min_bytes=0, columns_min_bytes=0,\n"
        "                   columns_in_parts_min_bytes=0)\n"
        "users = list(source.read())\n"
        "print(len(users), 'pyarrow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[-1].split() == ["2000", "False"]  # after the debug log


def test_a_read_abandoned_half_way_leaves_no_thread_behind(tmp_path: Path) -> None:
    path = write(tmp_path, user_rows(2000))
    source = CsvSource(config(path), lowercase=True, **MODES["columns"])
    items = source.read()
    assert isinstance(next(items), SourceUser)
    items.close()  # type: ignore[attr-defined]
    names = [thread.name for thread in threading.enumerate()]
    assert "syncd-csv-columns" not in names


@pytest.mark.parametrize(
    ("content", "delimiter", "plain"),
    [
        (b"a,b\nc,d\n", ",", True),
        (b"a,b\r\nc,d\n", ",", True),
        (b"a,b\rc,d\n", ",", True),
        (b"a,b\nc,d\n" + b"e,f\n" * 5 + b'g,"h"\n', ",", False),  # a quote far on
        (b'a,b\nc,"d"\n', ",", False),  # a quote anywhere: row by row
        (b"a,b\n", ",", False),  # the header alone
        (b"a,b", ",", False),
        (b"a\xc2\xa7b\nc\xc2\xa7d\n", "\u00a7", False),  # a delimiter of two bytes
    ],
)
@pytest.mark.parametrize("scan_bytes", [3, 1 << 20], ids=["small blocks", "one block"])
def test_which_files_are_plain(
    tmp_path: Path,
    content: bytes,
    delimiter: str,
    plain: bool,
    scan_bytes: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plain_module, "_SCAN_BYTES", scan_bytes)  # line ends across blocks
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with path.open("rb") as file:
        start = plain_data_start(file.fileno(), len(content), "utf-8", delimiter)
    assert (start is not None) == plain
    if plain:
        assert content[start:].startswith(b"c,d\n")
    with path.open("rb") as file:
        assert plain_data_start(file.fileno(), len(content), "cp1252", delimiter) is None


# Characters whose UTF-8 starts with 0xEF, the byte-order mark's first byte, or ends
# with its last ones: the scan looks for that byte first and must still tell them apart.
_NEAR_BOM = ["\ufeff", "\uf8ff", "\ufffd", "\uffbf", "\u00bf", "\u00bb", "e"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pieces=st.lists(st.sampled_from(_NEAR_BOM), min_size=1, max_size=12),
    lead_bom=st.booleans(),
    scan_bytes=st.integers(min_value=1, max_value=9),
)
def test_a_byte_order_mark_past_the_start_is_found_across_scan_blocks(
    tmp_path: Path,
    pieces: list[str],
    lead_bom: bool,
    scan_bytes: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Blocks of a few bytes put a mark across two of them at every offset.
    monkeypatch.setattr(plain_module, "_SCAN_BYTES", scan_bytes)
    content = (("\ufeff" if lead_bom else "") + "a,b\nc," + "".join(pieces) + "\n").encode()
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with path.open("rb") as file:
        start = plain_data_start(file.fileno(), len(content), "utf-8", ",")
    has_mark_past_start = content.find("\ufeff".encode(), 1) >= 0
    assert (start is None) == has_mark_past_start
    if start is not None:
        assert content[start:].startswith(b"c,")


IDS = st.sampled_from(
    [
        "Anna.Müller@example.com",
        "  spaced@example.com ",
        "UPPER@EXAMPLE.COM",
        "",
        "   ",
        "zero\u200bwidth@example.com",
        "日本@example.com",
        "e\u0301@example.com",
        "nul\x00@example.com",
        "tab\t@example.com",
        "a" * 1030,
    ]
)
CELLS = st.sampled_from(
    ["Sales", "", " Sales ", "Dépt", "bad\u200b", "\x7f", "x;y", "nul\x00", "\ufeffbom"]
)
DATES = st.sampled_from(
    [
        "2026-01-01",
        "",
        "2026-13-01",
        "1800-01-01",
        "9999-12-31",
        "2026-01-01T10:00:00Z",
        " 2026-02-03 ",
    ]
)
FLAGS = st.sampled_from(["yes", "no", "", "TRUE", "maybe", " no "])
RECORDS = st.one_of(
    st.tuples(IDS, CELLS, CELLS, DATES, DATES, FLAGS).map(",".join),
    st.integers(0, 5).map(lambda i: f"user{i}@example.com,D,C,2026-01-01,,yes"),
    st.sampled_from(["", "   ", ",,,,,", "too,few", "a,b,c,d,e,f,g"]),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    records=st.lists(RECORDS, max_size=60),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    end=st.booleans(),
)
def test_any_plain_file_reads_the_same_by_columns(
    tmp_path_factory: pytest.TempPathFactory, records: list[str], newline: str, end: bool
) -> None:
    path = write(tmp_path_factory.mktemp("any"), records, newline=newline, end=end)
    same_as_rows(path)
