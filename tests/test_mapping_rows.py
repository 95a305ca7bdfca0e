"""Tests of syncd.mapping's fast paths for sources whose records are rows: the row
builder and the column mapper must give exactly what RecordMapper.build gives, user or
error (the column mapper may decline a batch, which is then mapped row by row)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.mapping import (
    Grouped,
    RecordColumns,
    RecordMapper,
    normalize_end_user,
    unusable_character,
)
from syncd.model import Origin, SourceUser
from tests.test_mapping import ORIGIN, _mapper

# ------------------------------------------------- row_builder: the fast path for rows

# Values chosen to repeat (so the caches of accepted values are hit) and to sit on every
# edge of the checks: odd characters, bounds of dates, the open end, bad words.
_IDS = st.one_of(
    st.sampled_from(
        ["a@x.com", " Anna.Smith@Example.COM ", "", "   ", "Zoë.Müller@example.de",
         " ÉLODIE@x.fr", "Straße@x.de", "İlker@x.tr", "ΟΔΥΣΣΕΥΣ@x.gr", "Łukasz@x.pl",
         "Rene\u0301e@x.com", "a\u200bb@x.com", "a\u3164b@x.com", "a\ufe0fb@x.com",
         "a\x00b@x.com", "\u00a0a@x.com", "a@x.com\u2028", "a\tb@x.com", " a@x.com\t",
         "\x1ca@x.com", "a" * 1024, "a" * 1025, "é" * 1025, " " + "b" * 1024 + " "]
    ),
    st.text(max_size=8),
    st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=8),
)  # fmt: skip
_TAG_VALUES = st.one_of(
    st.sampled_from(
        ["", " ", "Sales", " Sales ", "Zu\u0308rich", "Z\u00fcrich", "a\x1c", "\u200b", "x\ny"]
    ),
    st.text(max_size=3),
)
_DATES = st.one_of(
    st.sampled_from(
        ["", "  ", "2024-01-01", "2024-01-02", "2026-06-30", "1899-12-31", "1900-01-01",
         "2100-12-31", "2101-01-01", "9999-12-31", "0001-01-01", "2024-02-30", "soon",
         " 2024-01-01 ", "2024-01-01T10:00:00Z", "2024-01-01T23:30:00-02:00"]
    ),
    # A few plain dates, often drawn: both dates of a row known good, in either order.
    st.sampled_from(["2024-03-01", "2025-06-30", "2026-01-01"]),
    st.dates().map(date.isoformat),
)  # fmt: skip
_ENABLED = st.sampled_from(["", "true", "TRUE", " yes ", "no", "0", "Disabled", "maybe", "\x00"])
_ROWS = st.lists(st.tuples(_IDS, _TAG_VALUES, _TAG_VALUES, _DATES, _DATES, _ENABLED), max_size=40)


def _build_row(mapper: RecordMapper) -> Callable[[list[str], int], SourceUser]:
    """The row builder of :func:`_mapper` for rows of (id, department, region, start,
    end, enabled)."""
    return mapper.row_builder(
        "users.csv",
        id_index=0,
        tag_indexes=[1, 2],
        active_from_index=3,
        active_to_index=4,
        enabled_index=5,
    )


def _outcome(function: Callable[..., SourceUser], *args: Any, **kwargs: Any) -> SourceUser | str:
    try:
        return function(*args, **kwargs)
    except ValueError as error:
        return f"ValueError: {error}"


@given(rows=_ROWS, lowercase=st.booleans())
def test_row_builder_gives_what_build_gives_for_every_row(
    rows: list[tuple[str, str, str, str, str, str]], lowercase: bool
) -> None:
    # One builder for the whole sequence (its caches fill up as rows are accepted),
    # compared with build() of a mapper that never saw a row.
    build_row = _build_row(_mapper(lowercase=lowercase))
    for line, row in enumerate(rows, start=2):
        fast = _outcome(build_row, list(row), line)
        expected = _outcome(
            _mapper(lowercase=lowercase).build,
            Origin("users.csv", line),
            row[0],
            row[1:3],
            active_from=row[3],
            active_to=row[4],
            enabled=row[5],
        )
        assert fast == expected, row


@given(rows=st.lists(_IDS, max_size=30), lowercase=st.booleans())
def test_row_builder_with_only_an_id_gives_what_build_gives(
    rows: list[str], lowercase: bool
) -> None:
    mapper = RecordMapper(id_field="mail", lowercase=lowercase, kind="attribute")
    build_row = mapper.row_builder("dir", id_index=1)
    for line, raw in enumerate(rows, start=1):
        fast = _outcome(build_row, ["ignored", raw], line)
        fresh = RecordMapper(id_field="mail", lowercase=lowercase, kind="attribute")
        assert fast == _outcome(fresh.build, Origin("dir", line), raw), raw


class _CountingMapper(RecordMapper):
    """A mapper that counts the records mapped by the full :meth:`build`."""

    __slots__ = ("built",)

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)
        self.built = 0

    def build(self, *args: Any, **kwargs: Any) -> SourceUser:
        self.built += 1
        return super().build(*args, **kwargs)


@pytest.mark.parametrize(
    "raw_id", ["Bob@Example.com", "Zoë.Müller@example.de", "Łukasz@x.pl", "ΟΔΥΣΣΕΥΣ@x.gr"]
)
def test_row_builder_maps_rows_of_known_values_without_build(raw_id: str) -> None:
    # What makes it fast: a row of values accepted before is mapped inline; the first
    # row of new values goes through build(), and so does every row with a bad value.
    mapper = _CountingMapper(
        id_field="email",
        tag_fields={"region": "Country", "department": "Department"},
        active_from_field="start_date",
        active_to_field="end_date",
        enabled_field="enabled",
    )
    build_row = mapper.row_builder(
        "users.csv", id_index=0, tag_indexes=[1, 2], active_from_index=3,
        active_to_index=4, enabled_index=5,
    )  # fmt: skip
    values = ["Sales", "DE", "2024-01-01", "", "true"]
    first = build_row(["a@x.com", *values], 2)
    assert mapper.built == 1
    user = build_row([raw_id, *values], 3)
    assert mapper.built == 1
    assert user == SourceUser.from_origin(
        unicodedata.normalize("NFC", raw_id).lower(), first.tags, Origin("users.csv", 3),
        date(2024, 1, 1), None, True,
    )  # fmt: skip
    for line, bad_id in enumerate(["", "a\u200bb@x.com", "a\x00b"], start=4):
        with pytest.raises(ValueError, match=r"^(empty id column 'email'|column 'email': )"):
            build_row([bad_id, *values], line)
    assert mapper.built == 4


def test_row_builder_checks_the_order_of_dates_it_already_knows() -> None:
    build_row = _mapper().row_builder(
        "users.csv", id_index=0, tag_indexes=[1, 2], active_from_index=3,
        active_to_index=4, enabled_index=5,
    )  # fmt: skip
    first = build_row(["a@x.com", "", "", "2026-01-01", "2026-02-01", ""], 2)
    assert (first.active_from, first.active_to) == (date(2026, 1, 1), date(2026, 2, 1))
    second = build_row(["b@x.com", "", "", "2026-03-01", "", ""], 3)
    assert (second.active_from, second.active_to) == (date(2026, 3, 1), None)
    # Both dates are known good on their own now; reversed, they are still refused.
    with pytest.raises(ValueError, match=r"^column 'end_date' \(2026-02-01\) is before"):
        build_row(["c@x.com", "", "", "2026-03-01", "2026-02-01", ""], 4)


def test_row_builder_never_remembers_a_bad_value() -> None:
    build_row = _mapper().row_builder(
        "users.csv", id_index=0, tag_indexes=[1, 2], active_from_index=3,
        active_to_index=4, enabled_index=5,
    )  # fmt: skip
    for line in (2, 3):
        with pytest.raises(ValueError, match=r"^column 'start_date': implausible date 9999"):
            build_row(["a@x.com", "", "", "9999-12-31", "", ""], line)
    # The open end is "no end" for an end date, and only there.
    assert build_row(["a@x.com", "", "", "", "9999-12-31", ""], 4).active_to is None


def test_row_builder_shares_the_tag_sets_of_build() -> None:
    mapper = _mapper()
    build_row = mapper.row_builder(
        "users.csv", id_index=0, tag_indexes=[1, 2], active_from_index=3,
        active_to_index=4, enabled_index=5,
    )  # fmt: skip
    first = build_row(["a@x.com", "Sales", "DE", "", "", ""], 2)
    second = build_row(["b@x.com", "Sales", "DE", "", "", ""], 3)
    assert first.tags is second.tags == (("department", "Sales"), ("region", "DE"))
    assert mapper.build(ORIGIN, "c@x.com", ("Sales", "DE")).tags is first.tags


@pytest.mark.parametrize(
    "indexes",
    [
        {"tag_indexes": [1]},  # two tags are mapped
        {"tag_indexes": [1, 2], "active_from_index": 3, "active_to_index": 4},  # no enabled
        {"tag_indexes": [1, 2, 3], "active_from_index": 3, "active_to_index": 4},
    ],
)
def test_row_builder_needs_exactly_the_mapped_fields(indexes: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="an index for each mapped field"):
        _mapper().row_builder("users.csv", id_index=0, **indexes)


@given(st.text(alphabet=st.characters(max_codepoint=0xFF)), st.booleans())
def test_latin1_identifiers_need_no_unicode_normalisation(raw: str, lowercase: bool) -> None:
    # What lets the row builder skip NFC for text of U+0000..U+00FF.
    if not raw.isprintable() or not raw.strip():
        return
    expected = raw.strip().lower() if lowercase else raw.strip()
    assert normalize_end_user(raw, lowercase=lowercase) == expected
    assert unusable_character(raw.strip()) is None


# ------------------------------------------ map_columns: the fast path for batches of rows

Record = tuple[str, str, str, str, str, str]


def _grouped(values: list[Any]) -> Grouped[Any]:
    keys = list(dict.fromkeys(values))
    return Grouped(keys, [keys.index(value) for value in values])


def _columns(records: list[Record]) -> RecordColumns:
    """Records of (id, department, region, start, end, enabled), as columns."""
    return RecordColumns(
        ids=[record[0] for record in records],
        tags=_grouped([(record[1], record[2]) for record in records]),
        dates=_grouped([(record[3], record[4]) for record in records]),
        enabled=_grouped([record[5] for record in records]),
    )


def _row_by_row(mapper: RecordMapper, records: list[Record], first_line: int) -> list[Any]:
    build_row = _build_row(mapper)
    return [
        _outcome(build_row, list(record), line)
        for line, record in enumerate(records, start=first_line)
    ]


def _printable_latin1(text: str) -> bool:
    return text.isprintable() and all(ord(char) <= 0xFF for char in text)


@given(rows=_ROWS, lowercase=st.booleans())
def test_columns_map_as_the_row_builder_or_not_at_all(rows: list[Record], lowercase: bool) -> None:
    expected = _row_by_row(_mapper(lowercase=lowercase), rows, 40)
    users = _mapper(lowercase=lowercase).build_columns("users.csv", 40, _columns(rows))
    plainly_valid = all(
        isinstance(result, SourceUser) and _printable_latin1(record[0])
        for result, record in zip(expected, rows, strict=True)
    )
    # Mapped by columns exactly when every record is plainly valid, and then exactly as
    # row by row; else declined, for the caller to map row by row.
    assert users == (expected if plainly_valid else None)


def test_plain_records_are_mapped_by_columns() -> None:
    records = [
        (f"User{i}@Example.com", f"D{i % 2}", f"C{i % 3}", "2026-01-0" + str(1 + i % 9), "", "yes")
        for i in range(50)
    ]
    records.append(("Zoë@Example.com", "Dépt", "Ç", "2026-01-01", "9999-12-31", "TRUE"))
    users = _mapper().build_columns("users.csv", 2, _columns(records))
    assert users is not None
    assert users == _row_by_row(_mapper(), records, 2)
    assert users[-1].end_user == "zoë@example.com"
    assert users[-1].active_to is None  # the open end
    assert [user.at for user in users] == list(range(2, 53))


@pytest.mark.parametrize(
    "bad",
    [
        ("e\u0301@x.com", "D", "C", "", "", "yes"),  # needs NFC: row by row
        ("a@x.com", "D", "C", "2026-02-01", "2026-01-01", "yes"),  # ends before it starts
        ("a@x.com", "D", "C", "2026-02-30", "", "yes"),
        ("a@x.com", "bad\u200b", "C", "", "", "yes"),
        ("a@x.com", "D", "C", "", "", "perhaps"),
        ("  ", "D", "C", "", "", "yes"),
        ("b" * 1025, "D", "C", "", "", "yes"),
    ],
)
def test_one_record_that_is_not_plainly_valid_declines_the_batch(bad: Record) -> None:
    records = [("ok@x.com", "D", "C", "2026-01-01", "", "yes"), bad]
    assert _mapper().build_columns("users.csv", 2, _columns(records)) is None


def test_columns_without_a_mapped_group_are_a_bug_not_bad_data() -> None:
    with pytest.raises(TypeError, match="each mapped group"):
        _mapper().map_columns(RecordColumns(ids=["a@x.com"]))
    unmapped = RecordMapper(id_field="email")
    with pytest.raises(TypeError, match="each mapped group"):
        unmapped.map_columns(RecordColumns(ids=["a@x.com"], enabled=Grouped(["yes"], [0])))
    assert unmapped.build_columns("f", 1, RecordColumns(ids=["A@x.com"])) == [
        SourceUser("a@x.com", (), "f", 1)
    ]
