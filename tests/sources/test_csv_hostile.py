"""The CSV source against hostile or broken files: nothing odd may pass as the directory."""

from __future__ import annotations

import os
import string
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from syncd.errors import SourceError, SourceUnavailableError
from syncd.mapping import unusable_character
from syncd.model import RecordProblem, SourceUser
from syncd.sources.csv import CsvSource, CsvSourceConfig

ID_ONLY: dict[str, Any] = {"type": "csv", "id_column": "email"}


def _source(path: Path, **overrides: Any) -> CsvSource:
    config = CsvSourceConfig.model_validate({**ID_ONLY, "path": path, **overrides})
    return CsvSource(config, lowercase=True)


def _rows(count: int) -> str:
    return "".join(f"user{i}@example.com\n" for i in range(count))


# ------------------------------------------------------------ files being written


def test_a_file_appended_to_while_it_is_read_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email\n" + _rows(5))
    read = _source(path).read()
    first = next(read)
    assert isinstance(first, SourceUser)
    with path.open("a") as file:  # the exporter goes on writing
        file.write(_rows(3))
    with pytest.raises(SourceUnavailableError) as info:
        list(read)
    message = str(info.value)
    assert f"CSV file {path} changed while it was read" in message
    assert "write exports to a temporary file and rename it, or set min_file_age_s" in message


def test_a_file_rewritten_in_place_with_the_same_size_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email\n" + _rows(4))
    read = _source(path).read()
    next(read)
    stat = path.stat()
    path.write_text("email\n" + _rows(4).replace("user", "usex"))  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(SourceUnavailableError, match="changed while it was read"):
        list(read)


def test_an_atomic_rename_during_the_read_keeps_the_file_being_read(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email\n" + _rows(4))
    read = _source(path).read()
    next(read)
    replacement = tmp_path / "users.csv.tmp"
    replacement.write_text("email\n" + _rows(1))
    replacement.replace(path)  # the old file stays open and unchanged: a consistent read
    rest = list(read)
    assert [item.end_user for item in rest if isinstance(item, SourceUser)] == [
        "user1@example.com",
        "user2@example.com",
        "user3@example.com",
    ]


def test_min_file_age_refuses_a_fresh_file_and_reads_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email\n" + _rows(2))
    source = _source(path, min_file_age_s=60)
    with pytest.raises(SourceUnavailableError) as info:
        list(source.read())
    assert "was modified 0." in str(info.value)
    assert "less than min_file_age_s=60" in str(info.value)
    old = time.time() - 61
    os.utime(path, (old, old))
    assert len(list(source.read())) == 2


def test_min_file_age_refuses_a_file_dated_in_the_future_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email\n" + _rows(2))
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))
    with pytest.raises(SourceUnavailableError) as info:
        list(_source(path, min_file_age_s=60).read())
    message = str(info.value)
    assert "s in the future, so min_file_age_s=60 cannot be checked" in message
    assert "modified 0.0 s ago" not in message


def test_min_file_age_is_off_by_default_and_bounded() -> None:
    assert CsvSourceConfig.model_validate({**ID_ONLY, "path": "x.csv"}).min_file_age_s == 0
    with pytest.raises(ValidationError):
        CsvSourceConfig.model_validate({**ID_ONLY, "path": "x.csv", "min_file_age_s": -1})


# ---------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["rot13", "base64", "zlib", "hex", "bz2"])
def test_a_codec_that_is_not_a_text_encoding_is_refused_at_load(encoding: str) -> None:
    with pytest.raises(ValidationError) as info:
        CsvSourceConfig.model_validate({**ID_ONLY, "path": "x.csv", "encoding": encoding})
    assert f"encoding {encoding!r} is not a text encoding" in str(info.value)


def test_an_unknown_encoding_is_refused_at_load() -> None:
    with pytest.raises(ValidationError) as info:
        CsvSourceConfig.model_validate({**ID_ONLY, "path": "x.csv", "encoding": "utf-9"})
    assert "unknown encoding 'utf-9'" in str(info.value)


def test_bytes_invalid_for_the_declared_encoding_name_file_line_and_encoding(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    # 0x81 is not defined in cp1252.
    path.write_bytes(b"email\na@x.com\nb\x81@x.com\n")
    with pytest.raises(SourceError) as info:
        list(_source(path, encoding="cp1252").read())
    assert str(info.value).startswith(
        f"cannot read CSV file {path}: line 3: bytes that are not valid cp1252"
    )


def test_a_utf8_file_declared_as_utf16_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email\na@x.com\n")
    with pytest.raises(SourceError) as info:
        list(_source(path, encoding="utf-16").read())
    message = str(info.value)
    assert str(path) in message
    assert "utf-16" in message


# ---------------------------------------------------------------- bounded messages


def test_a_header_with_100000_columns_gives_a_bounded_message(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(",".join(f"column{i}" for i in range(100_000)) + "\n")
    with pytest.raises(SourceError) as info:
        list(_source(path).read())
    message = str(info.value)
    assert len(message) < 3_000
    assert "the header has 100000 columns" in message
    assert "'column29', ... and 99970 more" in message


def test_a_huge_header_cell_is_cut_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("x" * 100_000 + "\n")
    with pytest.raises(SourceError) as info:
        list(_source(path).read())
    assert len(str(info.value)) < 1_000
    assert "(99920 more characters)" in str(info.value)


def test_a_repeated_mapped_column_lists_a_bounded_number_of_positions(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(",".join(["email"] * 5_000) + "\n")
    with pytest.raises(SourceError) as info:
        list(_source(path).read())
    assert len(str(info.value)) < 1_000
    assert "... and 4970 more" in str(info.value)


def test_a_huge_bad_date_is_cut_in_the_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email,start\na@x.com," + "9" * 50_000 + "\n")
    (problem,) = list(_source(path, active_from_column="start").read())
    assert isinstance(problem, RecordProblem)
    assert len(problem.message) < 300
    assert "more characters" in problem.message


# ------------------------------------------------------- identifiers and dates


@pytest.mark.parametrize(
    ("identifier", "character"),
    [
        ("ali\x00ce@x.com", "U+0000 (category Cc)"),
        ("alice\u200b@x.com", "U+200B (ZERO WIDTH SPACE, category Cf)"),
        ("\u202ealice@x.com", "U+202E (RIGHT-TO-LEFT OVERRIDE, category Cf)"),
        ("ali\u00adce@x.com", "U+00AD (SOFT HYPHEN, category Cf)"),
        ("alice\u2028@x.com", "U+2028 (LINE SEPARATOR, category Zl)"),
        ("alice\u2029@x.com", "U+2029 (PARAGRAPH SEPARATOR, category Zp)"),
        ("ali\u00a0ce@x.com", "U+00A0 (NO-BREAK SPACE, category Zs)"),
        ("ali\u2800ce@x.com", "U+2800 (BRAILLE PATTERN BLANK, category So)"),
        ("ali\u3164ce@x.com", "U+3164 (HANGUL FILLER, category Lo)"),
        ("ali\ufe0fce@x.com", "U+FE0F (VARIATION SELECTOR-16, category Mn)"),
        ("ali\ue000ce@x.com", "U+E000 (category Co)"),
        ("a\tb@x.com", "U+0009 (category Cc)"),
    ],
)
def test_identifiers_with_invisible_characters_are_bad_rows(
    tmp_path: Path, identifier: str, character: str
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(f"email\nok@x.com\n{identifier}\n", encoding="utf-8")
    good, bad = list(_source(path).read())
    assert isinstance(good, SourceUser)
    assert isinstance(bad, RecordProblem)
    assert str(bad.origin) == "users.csv:3"
    assert f"holds the character {character} at position" in bad.message
    assert bad.message.startswith("column 'email': ")


@pytest.mark.parametrize(
    ("identifier", "character"),
    [
        ("alice@x.com\x1c", "U+001C (category Cc)"),
        ("\x85alice@x.com", "U+0085 (category Cc)"),
        ("alice@x.com\u2028", "U+2028 (LINE SEPARATOR, category Zl)"),
        ("\u3000alice@x.com", "U+3000 (IDEOGRAPHIC SPACE, category Zs)"),
    ],
)
def test_a_bad_character_at_either_end_of_an_identifier_is_not_trimmed_away(
    tmp_path: Path, identifier: str, character: str
) -> None:
    # str.strip() would remove these: the row must be refused, not read as "alice".
    path = tmp_path / "users.csv"
    path.write_text(f"email\nok@x.com\n{identifier}\n \tbob@x.com\t\n", encoding="utf-8")
    good, bad, trimmed = list(_source(path).read())
    assert isinstance(good, SourceUser)
    assert isinstance(bad, RecordProblem)
    assert str(bad.origin) == "users.csv:3"
    assert f"holds the character {character} at position" in bad.message
    assert isinstance(trimmed, SourceUser)  # spaces and tabs are still trimmed
    assert trimmed.end_user == "bob@x.com"


def test_a_tag_value_with_a_bidi_override_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text('email,dept\na@x.com,"R&D\nLab"\nb@x.com,Sa\u202eles\n', encoding="utf-8")
    good, bad = list(_source(path, tags={"department": "dept"}).read())
    assert isinstance(good, SourceUser)  # a line break inside a quoted tag value is kept
    assert good.tags == (("department", "R&D\nLab"),)
    assert isinstance(bad, RecordProblem)
    assert str(bad.origin) == "users.csv:4"
    assert "column 'dept' (tag 'department')" in bad.message
    assert "U+202E" in bad.message


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("start", "1899-12-31"),
        ("start", "0024-01-01"),
        ("start", "2101-01-01"),
        ("end", "1000-01-01"),
        ("end", "2206-05-01"),
    ],
)
def test_implausible_dates_are_bad_rows(tmp_path: Path, column: str, value: str) -> None:
    path = tmp_path / "users.csv"
    cells = {"start": "", "end": "", column: value}
    path.write_text(f"email,start,end\na@x.com,{cells['start']},{cells['end']}\n")
    (problem,) = list(_source(path, active_from_column="start", active_to_column="end").read())
    assert isinstance(problem, RecordProblem)
    assert str(problem.origin) == "users.csv:2"
    assert f"column {column!r}: implausible date {value}" in problem.message


def test_the_open_end_sentinel_means_no_end_date(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("email,start,end\na@x.com,1900-01-01,9999-12-31\nb@x.com,2100-12-31,\n")
    a, b = list(_source(path, active_from_column="start", active_to_column="end").read())
    assert isinstance(a, SourceUser)
    assert isinstance(b, SourceUser)
    assert a.active_to is None
    assert str(a.active_from) == "1900-01-01"


# A local part made of any character at all, bad ones included.
_ANY_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters=',"\r\n'),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(local_parts=st.lists(_ANY_TEXT, min_size=1, max_size=8))
def test_no_identifier_with_an_unusable_character_is_ever_read_as_a_user(
    tmp_path: Path, local_parts: list[str]
) -> None:
    path = tmp_path / "users.csv"
    text = "email\n" + "".join(
        f"{part}@{string.ascii_lowercase[i]}.com\n" for i, part in enumerate(local_parts)
    )
    path.write_text(text, encoding="utf-8")
    items = list(_source(path).read())
    assert len(items) == len(local_parts)  # one item per row, none lost
    for part, item in zip(local_parts, items, strict=True):
        if isinstance(item, SourceUser):
            assert unusable_character(item.end_user) is None
            assert item.end_user.isprintable()
        else:
            assert item.origin.line is not None
        # Whatever its position, even where trimming would have removed it, a bad
        # character makes the row a bad row.
        if unusable_character(part.lstrip(" \t")) is not None:
            assert isinstance(item, RecordProblem), (part, item)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_path_that_is_not_a_regular_file_fails_without_blocking(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "users.csv"
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    else:
        path = Path("/dev/zero")  # never ends
    with pytest.raises(SourceError) as info:
        list(_source(path).read())
    assert str(info.value) == f"cannot read CSV file {path}: not a regular file"
