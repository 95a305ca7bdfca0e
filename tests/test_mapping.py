"""Tests of syncd.mapping: identity normalisation, flags, dates and record mapping."""

from __future__ import annotations

import unicodedata
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.mapping import (
    RecordMapper,
    check_date,
    normalize_end_user,
    normalize_tag_value,
    parse_enabled,
    parse_optional_date,
    unusable_character,
)
from syncd.model import Origin, SourceUser

ORIGIN = Origin("users.csv", 7)

# ---------------------------------------------------------------- normalize_end_user


def test_normalize_trims_and_lowercases() -> None:
    assert normalize_end_user("  Anna.Smith@Example.COM \t\n", lowercase=True) == (
        "anna.smith@example.com"
    )


def test_normalize_keeps_case_when_not_lowercasing() -> None:
    assert normalize_end_user(" Anna.Smith@Example.COM ", lowercase=False) == (
        "Anna.Smith@Example.COM"
    )


@pytest.mark.parametrize("lowercase", [True, False])
def test_normalize_composed_and_decomposed_are_equal(lowercase: bool) -> None:
    composed = "Ren\u00e9e@example.com"  # é as one code point
    decomposed = "Rene\u0301e@example.com"  # e + combining acute accent
    assert composed != decomposed
    a = normalize_end_user(composed, lowercase=lowercase)
    b = normalize_end_user(decomposed, lowercase=lowercase)
    assert a == b
    assert a == ("ren\u00e9e@example.com" if lowercase else "Ren\u00e9e@example.com")


def test_normalize_lowercases_non_ascii_without_casefolding() -> None:
    assert normalize_end_user("ÉLODIE@Example.fr", lowercase=True) == "élodie@example.fr"
    # casefold would turn ß into ss and merge two different mailboxes.
    assert normalize_end_user("Straße@example.de", lowercase=True) == "straße@example.de"


@pytest.mark.parametrize("raw", ["", "   ", "\t\r\n", "\u00a0\u2003"])
def test_normalize_rejects_empty(raw: str) -> None:
    with pytest.raises(ValueError, match="empty identifier"):
        normalize_end_user(raw, lowercase=True)


@given(st.text(), st.booleans())
def test_normalize_is_idempotent_and_canonical(raw: str, lowercase: bool) -> None:
    try:
        once = normalize_end_user(raw, lowercase=lowercase)
    except ValueError:
        assert raw.strip() == ""
        return
    assert normalize_end_user(once, lowercase=lowercase) == once
    assert once == once.strip()
    assert unicodedata.is_normalized("NFC", once)


@given(st.text(alphabet=st.characters(codec="ascii")))
def test_normalize_ascii_fast_path_matches_unicode_path(raw: str) -> None:
    # The ASCII shortcut must agree with the general definition.
    expected = unicodedata.normalize("NFC", raw).strip().lower()
    if not expected:
        return
    assert normalize_end_user(raw, lowercase=True) == expected


# ---------------------------------------------------------------- parse_enabled


@pytest.mark.parametrize(
    "raw", ["true", "1", "yes", "y", "enabled", "active", "TRUE", " Yes ", "Active", "Y"]
)
def test_parse_enabled_true(raw: str) -> None:
    assert parse_enabled(raw) is True


@pytest.mark.parametrize(
    "raw", ["false", "0", "no", "n", "disabled", "inactive", "FALSE", " No\t", "Disabled", "N"]
)
def test_parse_enabled_false(raw: str) -> None:
    assert parse_enabled(raw) is False


@pytest.mark.parametrize("raw", ["", "  ", "\t"])
def test_parse_enabled_blank_means_enabled(raw: str) -> None:
    assert parse_enabled(raw) is True


@pytest.mark.parametrize("raw", ["maybe", "2", "t", "f", "on", "off", "ja"])
def test_parse_enabled_rejects_other_values(raw: str) -> None:
    with pytest.raises(ValueError, match=f"invalid enabled value {raw!r}") as info:
        parse_enabled(raw)
    for accepted in ("true", "1", "yes", "y", "enabled", "active", "false", "0", "inactive"):
        assert accepted in str(info.value)


# ---------------------------------------------------------------- parse_optional_date


@pytest.mark.parametrize("raw", ["", " ", "\t"])
def test_parse_optional_date_blank(raw: str) -> None:
    assert parse_optional_date(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-01-01", date(2026, 1, 1)),
        (" 2026-01-01 ", date(2026, 1, 1)),
        ("2026-01-01T08:00:00Z", date(2026, 1, 1)),
        # 23:30 at UTC-2 is 01:30 the next day in UTC.
        ("2026-01-01T23:30:00-02:00", date(2026, 1, 2)),
        # 00:30 at UTC+02:00 is still the previous day in UTC.
        ("2026-03-01T00:30:00+02:00", date(2026, 2, 28)),
        ("2026-01-01T12:00:00", date(2026, 1, 1)),
    ],
)
def test_parse_optional_date_values(raw: str, expected: date) -> None:
    assert parse_optional_date(raw) == expected


@pytest.mark.parametrize("raw", ["2026-13-01", "01/02/2026", "yesterday", "2026-02-30"])
def test_parse_optional_date_invalid(raw: str) -> None:
    with pytest.raises(ValueError, match=f"invalid date {raw!r}"):
        parse_optional_date(raw)


# ---------------------------------------------------------------- RecordMapper


def _mapper(*, lowercase: bool = True, kind: str = "column") -> RecordMapper:
    return RecordMapper(
        id_field="email",
        tag_fields={"region": "Country", "department": "Department"},
        active_from_field="start_date",
        active_to_field="end_date",
        enabled_field="enabled",
        lowercase=lowercase,
        kind=kind,
    )


def test_tag_fields_are_sorted_by_tag_name() -> None:
    mapper = _mapper()
    assert mapper.tag_fields == (("department", "Department"), ("region", "Country"))
    assert mapper.fields() == (
        "email",
        "Department",
        "Country",
        "start_date",
        "end_date",
        "enabled",
    )


def test_fields_without_repeats() -> None:
    mapper = RecordMapper(id_field="mail", tag_fields={"a": "ou", "b": "ou", "c": "mail"})
    assert mapper.fields() == ("mail", "ou")


def test_build_full_record() -> None:
    user = _mapper().build(
        ORIGIN,
        " Anna.Smith@Example.com ",
        ["Sales", "DE"],
        active_from="2024-02-01",
        active_to="2026-06-30",
        enabled="no",
    )
    assert user == SourceUser.from_origin(
        end_user="anna.smith@example.com",
        tags=(("department", "Sales"), ("region", "DE")),
        origin=ORIGIN,
        active_from=date(2024, 2, 1),
        active_to=date(2026, 6, 30),
        enabled=False,
    )


def test_build_without_optional_fields() -> None:
    mapper = RecordMapper(id_field="mail", lowercase=False, kind="attribute")
    user = mapper.build(ORIGIN, "Bob@Example.com")
    assert user == SourceUser.from_origin("Bob@Example.com", (), ORIGIN, None, None, True)


def test_build_drops_empty_tag_values_and_trims_the_others() -> None:
    mapper = _mapper()
    user = mapper.build(ORIGIN, "a@x.com", ["", " FR "], active_from="", active_to="", enabled="")
    assert user.tags == (("region", "FR"),)
    user = mapper.build(ORIGIN, "b@x.com", ["  ", ""], active_from="", active_to="", enabled="")
    assert user.tags == ()
    assert (user.active_from, user.active_to, user.enabled) == (None, None, True)


def test_build_normalises_tag_values_to_nfc() -> None:
    user = _mapper().build(
        ORIGIN, "a@x.com", ["Vente", "Zu\u0308rich"], active_from="", active_to="", enabled=""
    )
    assert user.tags == (("department", "Vente"), ("region", "Z\u00fcrich"))


def test_build_shares_equal_tag_sets() -> None:
    mapper = _mapper()
    first = mapper.build(ORIGIN, "a@x.com", ["Sales", "DE"])
    second = mapper.build(ORIGIN, "b@x.com", ("Sales", "DE"))
    assert first.tags is second.tags


def test_build_tags_wrong_count_is_a_bug_not_bad_data() -> None:
    with pytest.raises(TypeError, match="expected 2 tag values, got 1"):
        _mapper().build(ORIGIN, "a@x.com", ["Sales"])


@pytest.mark.parametrize("raw", ["", "   "])
def test_build_empty_id(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^empty id column 'email'$"):
        _mapper().build(ORIGIN, raw, ["Sales", "DE"])


def test_build_invalid_date_names_the_column() -> None:
    with pytest.raises(ValueError, match="start_date") as info:
        _mapper().build(
            ORIGIN, "a@x.com", ["", ""], active_from="2026-13-01", active_to="", enabled=""
        )
    assert str(info.value) == (
        "column 'start_date': invalid date '2026-13-01': "
        "expected YYYY-MM-DD or an ISO-8601 timestamp"
    )
    with pytest.raises(ValueError, match=r"^column 'end_date': invalid date 'soon'"):
        _mapper().build(ORIGIN, "a@x.com", ["", ""], active_from="", active_to="soon", enabled="")


def test_build_invalid_enabled_names_the_column() -> None:
    with pytest.raises(ValueError, match=r"^column 'enabled': invalid enabled value 'maybe'"):
        _mapper().build(ORIGIN, "a@x.com", ["", ""], active_from="", active_to="", enabled="maybe")


def test_build_active_to_before_active_from() -> None:
    with pytest.raises(ValueError, match="is before") as info:
        _mapper().build(
            ORIGIN,
            "a@x.com",
            ["", ""],
            active_from="2026-02-01",
            active_to="2026-01-31",
            enabled="",
        )
    assert str(info.value) == (
        "column 'end_date' (2026-01-31) is before column 'start_date' (2026-02-01)"
    )


def test_build_active_to_equal_to_active_from_is_allowed() -> None:
    user = _mapper().build(
        ORIGIN, "a@x.com", ["", ""], active_from="2026-02-01", active_to="2026-02-01", enabled=""
    )
    assert user.active_from == user.active_to == date(2026, 2, 1)


def test_build_messages_use_the_kind_of_field() -> None:
    mapper = RecordMapper(
        id_field="userPrincipalName",
        active_from_field="whenCreated",
        active_to_field="accountExpires",
        kind="attribute",
    )
    with pytest.raises(ValueError, match=r"^empty id attribute 'userPrincipalName'$"):
        mapper.build(ORIGIN, "")
    with pytest.raises(ValueError, match=r"^attribute 'whenCreated': invalid date 'x'"):
        mapper.build(ORIGIN, "a@x.com", (), active_from="x")


def test_normalize_tag_value() -> None:
    assert normalize_tag_value("  Sales\t") == "Sales"
    assert normalize_tag_value("Mu\u0308nchen ") == "M\u00fcnchen"
    assert normalize_tag_value("   ") == ""


# ------------------------------------------------- identifiers that must never be sent

_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _refused(char: str) -> bool:
    category = unicodedata.category(char)
    return (
        category in _REFUSED_CATEGORIES
        or (category == "Zs" and char != " ")
        or char in "\u2800\u3164\u115f\u1160\uffa0\u034f"
        or 0xFE00 <= ord(char) <= 0xFE0F
    )


@given(
    prefix=st.text(max_size=5),
    bad=st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"]),
    suffix=st.text(max_size=5),
)
def test_no_identifier_with_a_control_or_format_character_is_ever_built(
    prefix: str, bad: str, suffix: str
) -> None:
    # Between two letters, so trimming can never remove it.
    raw = f"{prefix}x{bad}y{suffix}@example.com"
    with pytest.raises(ValueError, match=r"^column 'email': .* holds the character U\+"):
        RecordMapper(id_field="email").build(ORIGIN, raw)


@given(raw=st.text(min_size=1, max_size=30))
def test_every_identifier_built_is_printable_and_visible(raw: str) -> None:
    mapper = RecordMapper(id_field="mail", kind="attribute", lowercase=False)
    try:
        user = mapper.build(ORIGIN, raw)
    except ValueError:
        return
    assert not any(_refused(char) for char in user.end_user)


@pytest.mark.parametrize(
    "name", ["alice@example.com", "José.Müller@example.com", "李小龍@example.cn", "a b@x.com"]
)
def test_ordinary_identifiers_are_accepted(name: str) -> None:
    assert unusable_character(name) is None


def test_unusable_character_names_the_code_point_and_position() -> None:
    assert unusable_character("ab\u200bc") == (
        "U+200B (ZERO WIDTH SPACE, category Cf) at position 3"
    )
    assert unusable_character("a\nb") == "U+000A (category Cc) at position 2"
    assert unusable_character("a\nb", allow_line_breaks=True) is None
    assert unusable_character("a\x00b", allow_line_breaks=True) is not None


def test_the_error_quotes_the_identifier_escaped_and_bounded() -> None:
    mapper = RecordMapper(id_field="email")
    with pytest.raises(ValueError, match=r"'a\\u200b") as info:
        mapper.build(ORIGIN, "a\u200b" + "x" * 10_000)
    assert len(str(info.value)) < 300


# ------------------------------------------------------------- implausible dates


@pytest.mark.parametrize("value", [date(1899, 12, 31), date(2101, 1, 1), date(1, 1, 1)])
def test_dates_outside_1900_to_2100_are_refused(value: date) -> None:
    with pytest.raises(ValueError, match="implausible date"):
        check_date(value)
    with pytest.raises(ValueError, match="implausible date"):
        check_date(value, end=True)


def test_the_open_end_sentinel_is_no_end_only_for_end_dates() -> None:
    assert check_date(date(9999, 12, 31), end=True) is None
    with pytest.raises(ValueError, match="implausible date 9999-12-31"):
        check_date(date(9999, 12, 31))
    assert check_date(date(1900, 1, 1)) == date(1900, 1, 1)
    assert check_date(date(2100, 12, 31)) == date(2100, 12, 31)


def test_build_refuses_an_implausible_start_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"column 'start_date': implausible date 1066-10-14"):
        _mapper().build(ORIGIN, "a@x.com", ["", ""], active_from="1066-10-14")


def test_an_identifier_longer_than_1024_characters_is_refused() -> None:
    mapper = RecordMapper(id_field="email")
    assert mapper.build(ORIGIN, "a" * 1012 + "@example.com").end_user.startswith("a")
    with pytest.raises(ValueError, match=r"column 'email': 'aaa.*is longer than 1024 characters"):
        mapper.build(ORIGIN, "a" * 1013 + "@example.com")


# ------------------------------------------- unusable characters at the ends of a value

_ORDINARY_BLANKS = " \t\r\n"


@given(
    bad=st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Co"]).filter(
        lambda char: char not in _ORDINARY_BLANKS
    ),
    leading=st.booleans(),
)
def test_an_unusable_character_at_either_end_is_refused_not_trimmed_away(
    bad: str, leading: bool
) -> None:
    # str.strip() removes \x1c-\x1f, \x85, U+2028, U+00A0, U+3000...: trimming them would
    # hide a broken export; only spaces, tabs and line breaks are ordinary trimming.
    raw = f"{bad}alice@example.com" if leading else f"alice@example.com{bad}"
    with pytest.raises(ValueError, match=r"^column 'email': .* holds the character U\+"):
        RecordMapper(id_field="email").build(ORIGIN, raw)


@pytest.mark.parametrize("raw", [" alice@x.com ", "\talice@x.com\r\n", "\nalice@x.com"])
def test_spaces_tabs_and_line_breaks_around_an_identifier_are_trimmed(raw: str) -> None:
    assert RecordMapper(id_field="email").build(ORIGIN, raw).end_user == "alice@x.com"


@pytest.mark.parametrize("value", ["Sales\u2028", "\x1cSales", "Sales\u00a0", "\u200b"])
def test_an_unusable_character_at_the_end_of_a_tag_value_is_refused(value: str) -> None:
    mapper = RecordMapper(id_field="email", tag_fields={"department": "dept"})
    with pytest.raises(ValueError, match=r"^column 'dept' \(tag 'department'\): .* U\+"):
        mapper.build(ORIGIN, "a@x.com", [value])


# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt): characters that show
# as nothing; every one of them must be refused in an identifier.
_DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
]  # fmt: skip


def test_every_default_ignorable_code_point_is_refused() -> None:
    accepted = [
        f"U+{code:04X}"
        for first, last in _DEFAULT_IGNORABLE
        for code in range(first, last + 1)
        if unusable_character(f"a{chr(code)}b") is None
    ]
    assert accepted == []
