"""Tests of the CSV source, on real files written to tmp_path."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import SourceError
from syncd.mapping import RecordMapper
from syncd.model import Origin, RecordProblem, SourceUser
from syncd.ports import Source
from syncd.sources.csv import CsvSource
from tests.sources.csv_cases import config as _config

HEADER = "email,first_name,Department,Country,start_date,end_date,enabled"


def _write(tmp_path: Path, content: str | bytes, *, name: str = "users.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


# A mapping that reads nothing but the id column.
ID_ONLY: dict[str, Any] = {
    "tags": {},
    "active_from_column": None,
    "active_to_column": None,
    "enabled_column": None,
}


def _read(path: Path, *, lowercase: bool = True, **overrides: Any) -> list[Any]:
    return list(CsvSource(_config(path, **overrides), lowercase=lowercase).read())


def _user(
    end_user: str,
    line: int,
    tags: dict[str, str] | None = None,
    active_from: date | None = None,
    active_to: date | None = None,
    *,
    enabled: bool = True,
    source: str = "users.csv",
) -> SourceUser:
    return SourceUser.from_origin(
        end_user=end_user,
        tags=tuple(sorted((tags or {}).items())),
        origin=Origin(source, line),
        active_from=active_from,
        active_to=active_to,
        enabled=enabled,
    )


def _problem(line: int, message: str, source: str = "users.csv") -> RecordProblem:
    return RecordProblem(Origin(source, line), message)


# ---------------------------------------------------------------- reading good files


def test_reads_users_with_tags_dates_and_enabled(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"{HEADER}\n"
        "Anna.Smith@Example.com,Anna,Sales,DE,2024-02-01,,true\n"
        " bob@example.com ,Bob,,US,2023-05-06T10:00:00Z,2026-01-31,no\n"
        "carl@example.com,Carl,Legal,,,,\n",
    )
    assert _read(path) == [
        _user(
            "anna.smith@example.com", 2, {"department": "Sales", "country": "DE"}, date(2024, 2, 1)
        ),
        _user(
            "bob@example.com",
            3,
            {"country": "US"},  # the empty Department is left out
            date(2023, 5, 6),
            date(2026, 1, 31),
            enabled=False,
        ),
        _user("carl@example.com", 4, {"department": "Legal"}),
    ]


def test_lowercase_off_keeps_the_case(tmp_path: Path) -> None:
    path = _write(tmp_path, "email\nAnna.Smith@Example.com\n")
    users = _read(
        path,
        lowercase=False,
        **ID_ONLY,
    )
    assert users == [_user("Anna.Smith@Example.com", 2)]


def test_only_an_id_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "name,mail\nAnna,a@x.com\nBob,b@x.com\n")
    users = _read(
        path,
        id_column="mail",
        **ID_ONLY,
    )
    assert users == [_user("a@x.com", 2), _user("b@x.com", 3)]


@pytest.mark.parametrize(
    ("cell", "enabled"),
    [
        ("true", True),
        ("Yes", True),
        ("1", True),
        ("active", True),
        ("", True),
        ("false", False),
        ("NO", False),
        ("0", False),
        ("disabled", False),
        ("inactive", False),
    ],
)
def test_enabled_column(tmp_path: Path, cell: str, enabled: bool) -> None:
    path = _write(tmp_path, f"email,enabled\na@x.com,{cell}\n")
    users = _read(path, tags={}, active_from_column=None, active_to_column=None)
    assert users == [_user("a@x.com", 2, enabled=enabled)]


def test_several_tags_from_the_same_and_other_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "email,Dept,Site\na@x.com, Sales ,Paris\nb@x.com,,\n")
    users = _read(
        path,
        tags={"department": "Dept", "team": "Dept", "site": "Site"},
        active_from_column=None,
        active_to_column=None,
        enabled_column=None,
    )
    assert users == [
        _user("a@x.com", 2, {"department": "Sales", "team": "Sales", "site": "Paris"}),
        _user("b@x.com", 3),
    ]


def test_utf8_with_bom(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeff" + f"{HEADER}\nÉlodie@Example.fr,É,R&D,FR,,,\n")
    assert _read(path) == [_user("élodie@example.fr", 2, {"department": "R&D", "country": "FR"})]


def test_utf8_alias_with_bom(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeffemail\na@x.com\n")
    users = _read(
        path,
        encoding="UTF8",
        **ID_ONLY,
    )
    assert users == [_user("a@x.com", 2)]


def test_utf8_without_bom(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{HEADER}\nÉlodie@Example.fr,É,R&D,FR,,,\n")
    assert _read(path) == [_user("élodie@example.fr", 2, {"department": "R&D", "country": "FR"})]


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"{HEADER}\r\na@x.com,A,Sales,DE,,,\r\n\r\nb@x.com,B,HR,FR,,,yes\r\n",
    )
    assert _read(path) == [
        _user("a@x.com", 2, {"department": "Sales", "country": "DE"}),
        _user("b@x.com", 4, {"department": "HR", "country": "FR"}),
    ]


def test_quoted_delimiter_and_embedded_newlines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"{HEADER}\n"
        'a@x.com,"Anna\nMaria\nJr","Sales, EMEA",DE,,,\n'  # lines 2-4
        'b@x.com,"Bob ""the builder""","R&D\r\nLab",FR,,,\n'  # lines 5-6
        "c@x.com,C,HR,US,2026-13-01,,\n",  # line 7, a bad date
    )
    assert _read(path) == [
        _user("a@x.com", 2, {"department": "Sales, EMEA", "country": "DE"}),
        _user("b@x.com", 5, {"department": "R&D\r\nLab", "country": "FR"}),
        _problem(
            7,
            "column 'start_date': invalid date '2026-13-01': "
            "expected YYYY-MM-DD or an ISO-8601 timestamp",
        ),
    ]


def test_semicolon_delimiter(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "email;first_name;Department;Country;start_date;end_date;enabled\n"
        'a@x.com;Anna;"Sales; EMEA";DE;2024-01-02;;1\n'
        "b@x.com;Bob,Jr;HR;FR;;;0\n",
    )
    assert _read(path, delimiter=";") == [
        _user("a@x.com", 2, {"department": "Sales; EMEA", "country": "DE"}, date(2024, 1, 2)),
        _user("b@x.com", 3, {"department": "HR", "country": "FR"}, enabled=False),
    ]


def test_latin1_encoding(tmp_path: Path) -> None:
    text = f"{HEADER}\nJürgen.Müller@Example.de,Jürgen,Forschung & Entwicklung,Österreich,,,\n"
    path = _write(tmp_path, text.encode("latin-1"))
    assert _read(path, encoding="latin-1") == [
        _user(
            "jürgen.müller@example.de",
            2,
            {"department": "Forschung & Entwicklung", "country": "Österreich"},
        )
    ]


def test_header_names_are_matched_after_stripping(tmp_path: Path) -> None:
    path = _write(tmp_path, " email ,\tDept \na@x.com,Sales\n")
    users = _read(
        path,
        id_column="email",
        tags={"department": " Dept"},
        active_from_column=None,
        active_to_column=None,
        enabled_column=None,
    )
    assert users == [_user("a@x.com", 2, {"department": "Sales"})]


def test_unused_duplicate_header_is_fine(tmp_path: Path) -> None:
    path = _write(tmp_path, "email,note,note\na@x.com,x,y\n")
    users = _read(path, **ID_ONLY)
    assert users == [_user("a@x.com", 2)]


def test_origin_uses_the_configured_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "email\na@x.com\n")
    source = CsvSource(
        _config(
            path,
            name="hr-export",
            **ID_ONLY,
        ),
        lowercase=True,
    )
    assert source.label == "hr-export"
    assert list(source.read()) == [_user("a@x.com", 2, source="hr-export")]


def test_label_defaults_to_the_file_name(tmp_path: Path) -> None:
    source: Source = CsvSource(_config(tmp_path / "people.csv"), lowercase=True)
    assert source.label == "people.csv"


def test_leading_blank_lines_before_the_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n\nemail\na@x.com\n")
    users = _read(path, **ID_ONLY)
    assert users == [_user("a@x.com", 4)]


# ---------------------------------------------------------------- empty sources


@pytest.mark.parametrize("content", [f"{HEADER}\n", HEADER, f"{HEADER}\n\n"])
def test_header_only_files_are_an_empty_source(tmp_path: Path, content: str) -> None:
    assert _read(_write(tmp_path, content)) == []


@pytest.mark.parametrize("content", ["", "\n\n", "\r\n  \r\n", "\ufeff"])
def test_a_file_without_a_header_fails_the_read(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(SourceError) as info:
        _read(path)
    assert str(info.value) == (
        f"CSV file {path} has no header (it is empty or holds only blank lines); "
        "a file with a header and no rows is an empty source"
    )


# ---------------------------------------------------------------- bad rows


def test_bad_rows_are_reported_and_good_rows_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"{HEADER}\n"  # 1
        "a@x.com,A,Sales,DE,2024-01-01,,true\n"  # 2
        ",NoId,Sales,DE,,,\n"  # 3
        "   ,Blank,Sales,DE,,,\n"  # 4
        "c@x.com,C,Sales,DE,2024-02-30,,\n"  # 5
        "d@x.com,D,Sales,DE,,,maybe\n"  # 6
        "e@x.com,E,Sales,DE,,,,extra\n"  # 7
        "f@x.com,F,Sales\n"  # 8
        "g@x.com,G,Sales,DE,2026-02-01,2026-01-01,\n"  # 9
        "\n"  # 10: blank, skipped silently
        ",,,,,,\n"  # 11: a spreadsheet's empty row, skipped silently
        ",,\n"  # 12: the same, shorter
        'h@x.com,"H"x,Sales,DE,,,\n'  # 13: text after a closing quote
        "i@x.com,I,Sales,DE,,2026-01-01,false\n",  # 14
    )
    assert _read(path) == [
        _user("a@x.com", 2, {"department": "Sales", "country": "DE"}, date(2024, 1, 1)),
        _problem(3, "empty id column 'email'"),
        _problem(4, "empty id column 'email'"),
        _problem(
            5,
            "column 'start_date': invalid date '2024-02-30': "
            "expected YYYY-MM-DD or an ISO-8601 timestamp",
        ),
        _problem(
            6,
            "column 'enabled': invalid enabled value 'maybe': expected one of true, 1, yes, "
            "y, enabled, active, false, 0, no, n, disabled, inactive (or empty)",
        ),
        _problem(7, "expected 7 fields as in the header, found 8"),
        _problem(8, "expected 7 fields as in the header, found 3"),
        _problem(9, "column 'end_date' (2026-01-01) is before column 'start_date' (2026-02-01)"),
        _problem(13, "malformed CSV: ',' expected after '\"'"),
        _user(
            "i@x.com",
            14,
            {"department": "Sales", "country": "DE"},
            active_to=date(2026, 1, 1),
            enabled=False,
        ),
    ]


def test_bad_row_inside_a_multiline_record_reports_its_first_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"{HEADER}\n"
        'a@x.com,"A\nB",Sales,DE,,,nope\n'  # lines 2-3
        'b@x.com,"B\n\nB"x,Sales,DE,,,\n'  # lines 4-6, malformed at line 6
        "c@x.com,C,Sales,DE,,,\n",  # line 7
    )
    result = _read(path)
    assert [(type(item).__name__, item.origin.line) for item in result] == [
        ("RecordProblem", 2),
        ("RecordProblem", 4),
        ("SourceUser", 7),
    ]


# ---------------------------------------------------------------- unusable files


def test_unknown_mapped_column_fails_before_any_row(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{HEADER}\na@x.com,A,Sales,DE,,,\n")
    rows = CsvSource(
        _config(path, tags={"department": "Dept", "country": "Country", "site": "Office"}),
        lowercase=True,
    ).read()
    with pytest.raises(SourceError) as info:
        next(rows)
    message = str(info.value)
    assert str(path) in message
    assert "mapped columns 'Dept', 'Office' not found in the header (line 1)" in message
    assert "'email', 'first_name', 'Department', 'Country'" in message


def test_wrong_delimiter_is_visible_in_the_message(tmp_path: Path) -> None:
    path = _write(tmp_path, "email;Department\na@x.com;Sales\n")
    with pytest.raises(SourceError) as info:
        _read(path, **(ID_ONLY | {"tags": {"department": "Department"}}))
    assert str(info.value) == (
        f"CSV file {path}: mapped columns 'email', 'Department' not found in the header "
        "(line 1); the header has 1 column with delimiter ',' and encoding 'utf-8': "
        "'email;Department'"
    )


def test_duplicate_mapped_header_fails(tmp_path: Path) -> None:
    path = _write(tmp_path, "email,Department,email\na@x.com,Sales,b@x.com\n")
    with pytest.raises(SourceError) as info:
        _read(path, **(ID_ONLY | {"tags": {"department": "Department"}}))
    assert str(path) in str(info.value)
    assert "'email' at positions 1, 3" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(SourceError) as info:
        _read(path)
    assert str(info.value) == f"cannot read CSV file {path}: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read CSV file .*: Is a directory"):
        _read(tmp_path)


def test_invalid_utf8_mid_file_fails_after_the_good_rows(tmp_path: Path) -> None:
    good = "".join(f"user{i}@x.com\n" for i in range(2000))  # > the text layer's blocks
    data = b"email\n" + good.encode() + b"bad\xff\xfe@x.com\n" + b"z@x.com\n"
    path = _write(tmp_path, data)
    source = CsvSource(
        _config(path, tags={}, active_from_column=None, active_to_column=None, enabled_column=None),
        lowercase=True,
    )
    seen: list[SourceUser | RecordProblem] = []
    with pytest.raises(SourceError) as info:
        seen.extend(source.read())
    assert str(info.value) == (
        f"cannot read CSV file {path}: line 2002: bytes that are not valid utf-8 "
        "(invalid start byte); set 'encoding' in the source config if the file uses "
        "another encoding"
    )
    assert len(seen) > 0
    assert all(isinstance(item, SourceUser) for item in seen)
    assert seen[0] == _user("user0@x.com", 2)


def test_invalid_utf8_in_a_crlf_file_names_the_line(tmp_path: Path) -> None:
    data = b"email\r\na@x.com\r\n\r\nb\xc3@x.com\r\n"
    path = _write(tmp_path, data)
    with pytest.raises(SourceError, match=": line 4: bytes that are not valid utf-8"):
        _read(path, **ID_ONLY)


def test_unterminated_quote_fails_the_read(tmp_path: Path) -> None:
    path = _write(tmp_path, f'{HEADER}\na@x.com,A,Sales,DE,,,\nb@x.com,"B,Sales,DE,,,\nc@x.com\n')
    seen: list[SourceUser | RecordProblem] = []
    with pytest.raises(SourceError) as info:
        seen.extend(CsvSource(_config(path), lowercase=True).read())
    assert str(info.value) == (
        f"cannot read CSV file {path}: line 3: the quoted field opened in the record "
        "starting here is never closed (the file ends inside it)"
    )
    assert seen == [_user("a@x.com", 2, {"department": "Sales", "country": "DE"})]


def test_field_larger_than_the_limit_fails_the_read(tmp_path: Path) -> None:
    huge = "x" * (csv.field_size_limit() + 10)
    path = _write(tmp_path, f'{HEADER}\na@x.com,A,Sales,DE,,,\n\nb@x.com,"{huge}",S,DE,,,\n')
    with pytest.raises(
        SourceError, match=r": line 4: a field of the record starting here is larger"
    ):
        _read(path)


def test_abandoned_read_closes_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{HEADER}\na@x.com,A,Sales,DE,,,\nb@x.com,B,Sales,DE,,,\n")
    rows: Iterator[SourceUser | RecordProblem] = CsvSource(_config(path), lowercase=True).read()
    assert next(rows).origin.line == 2
    rows.close()  # type: ignore[attr-defined]  # a generator; a ResourceWarning would fail


def test_missing_column_message_names_the_header_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n\nmail,Dept\na@x.com,Sales\n")
    with pytest.raises(
        SourceError, match=r"mapped column 'email' not found in the header \(line 3\)"
    ):
        _read(path, **ID_ONLY)


def test_malformed_header_fails_the_read(tmp_path: Path) -> None:
    path = _write(tmp_path, '\nemail,"Dept"x\na@x.com,Sales\n')
    with pytest.raises(SourceError) as info:
        _read(path)
    assert str(info.value) == (
        f"cannot read CSV file {path}: line 2: malformed header: ',' expected after '\"'"
    )


# ---------------------------------------------------------------- the fast row path


def test_known_values_keep_every_check_row_after_row(tmp_path: Path) -> None:
    # Rows whose values were all accepted before are mapped inline: each row is still
    # checked, and a bad value is reported every time it appears.
    path = _write(
        tmp_path,
        f"{HEADER}\n"  # 1
        "a@x.com,A,Sales,DE,2026-01-01,2026-02-01,true\n"  # 2
        "b@x.com,B,Sales,DE,2026-03-01,,true\n"  # 3
        "c@x.com,C,Sales,DE,2026-03-01,2026-02-01,true\n"  # 4: known dates, reversed
        "d@x.com,D,Sales,DE,9999-12-31,,true\n"  # 5
        "e@x.com,E,Sales,DE,9999-12-31,,true\n"  # 6: the same bad date again
        "f@x.com,F,Sales,DE,2026-01-01,9999-12-31,true\n"  # 7: the open end
        "g\u200b@x.com,G,Sales,DE,2026-01-01,,true\n"  # 8
        "Łukasz@x.pl,Ł,Sales,DE,2026-01-01,,true\n"  # 9
        " B@X.com ,B,Sales,DE,2026-01-01,,true\n",  # 10: b@x.com again
    )
    tags = {"department": "Sales", "country": "DE"}
    implausible = (
        "column 'start_date': implausible date 9999-12-31: expected a date between "
        "1900-01-01 and 2100-12-31"
    )
    assert _read(path) == [
        _user("a@x.com", 2, tags, date(2026, 1, 1), date(2026, 2, 1)),
        _user("b@x.com", 3, tags, date(2026, 3, 1)),
        _problem(4, "column 'end_date' (2026-02-01) is before column 'start_date' (2026-03-01)"),
        _problem(5, implausible),
        _problem(6, implausible),
        _user("f@x.com", 7, tags, date(2026, 1, 1)),
        _problem(
            8,
            "column 'email': 'g\\u200b@x.com' holds the character U+200B (ZERO WIDTH SPACE, "
            "category Cf) at position 2",
        ),
        _user("łukasz@x.pl", 9, tags, date(2026, 1, 1)),
        _user("b@x.com", 10, tags, date(2026, 1, 1)),
    ]


_CELLS = st.sampled_from(
    ["", " ", "a@x.com", "B@x.com ", "Zoë@x.de", "Σ@x.gr", "a\u00a0b", "a\x1fb", "a\u3164",
     "Sales", "2024-01-01", "2026-12-31", "1899-12-31", "9999-12-31", "2024-13-01", "true",
     "no", "maybe", "a" * 1025]
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.lists(_CELLS, min_size=7, max_size=7), max_size=25))
def test_every_row_is_mapped_as_the_mapper_builds_it(rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "users.csv"
        with path.open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(HEADER.split(","))
            writer.writerows(rows)
        got = _read(path)
    mapper = RecordMapper(
        id_field="email",
        tag_fields={"department": "Department", "country": "Country"},
        active_from_field="start_date",
        active_to_field="end_date",
        enabled_field="enabled",
    )
    expected: list[SourceUser | RecordProblem] = []
    for line, row in enumerate(rows, start=2):  # no cell holds a line break
        email, _, department, country, start, end, enabled = row
        try:
            expected.append(
                mapper.build(
                    Origin("users.csv", line),
                    email,
                    (country, department),  # in the order of the tag names
                    active_from=start,
                    active_to=end,
                    enabled=enabled,
                )
            )
        except ValueError as error:
            if any(cell.strip() for cell in row):  # a blank row is skipped silently
                expected.append(RecordProblem(Origin("users.csv", line), str(error)))
    assert got == expected
