"""The pure LDAP value functions: dates, binary ids, multi-valued attributes, filters."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from syncd.sources.ldap.values import (
    and_filters,
    attribute_text,
    bind_failure_message,
    check_filter,
    decode_guid,
    decode_sid,
    escape_value,
    in_chain_filter,
    normalize_dn,
    parse_directory_date,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20240102030405.0Z", date(2024, 1, 2)),
        ("20240102030405Z", date(2024, 1, 2)),
        ("202401020304Z", date(2024, 1, 2)),
        ("2024010203Z", date(2024, 1, 2)),
        ("20240102233000,5Z", date(2024, 1, 2)),
        ("20240102233000+0100", date(2024, 1, 2)),
        ("20240102233000-0100", date(2024, 1, 3)),  # 00:30 UTC the next day
        ("20240102003000+02", date(2024, 1, 1)),
        # FILETIME: 2024-01-02 00:00:00 UTC is 133486272000000000 ticks since 1601.
        ("133486272000000000", date(2024, 1, 2)),
        ("0", None),
        ("9223372036854775807", None),  # 0x7FFFFFFFFFFFFFFF: never expires
        ("3000000000000000000", None),  # beyond year 9999: never in practice
        ("2024-01-02", date(2024, 1, 2)),
        ("2024-01-02T23:30:00-01:00", date(2024, 1, 3)),
        ("", None),
        ("   ", None),
    ],
)
def test_parse_directory_date(raw: str, expected: date | None) -> None:
    assert parse_directory_date(raw) == expected


@pytest.mark.parametrize("raw", ["20241302000000Z", "yesterday", "2024-02-30", "-5", "2024010Z"])
def test_parse_directory_date_rejects_garbage(raw: str) -> None:
    with pytest.raises(ValueError, match=repr(raw).replace("+", r"\+")):
        parse_directory_date(raw)


def test_decode_guid_uses_the_mixed_endian_layout() -> None:
    value = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    assert decode_guid(value.bytes_le) == "01234567-89ab-cdef-0123-456789abcdef"
    with pytest.raises(ValueError, match="16 bytes"):
        decode_guid(b"\x01\x02")


def test_decode_sid() -> None:
    raw = bytes.fromhex("010500000000000515000000a065cf7e784b9b5fe77c8770f4010000")
    assert decode_sid(raw) == "S-1-5-21-2127521184-1604012920-1887927527-500"
    assert decode_sid(bytes.fromhex("010100000000000512000000")) == "S-1-5-18"
    with pytest.raises(ValueError, match="not a binary SID"):
        decode_sid(b"\x01\x05\x00")


def test_attribute_text_first_value_join_and_binary() -> None:
    assert attribute_text("mail", [b"a@x.com", b"b@x.com"]) == "a@x.com"
    assert attribute_text("memberOf", [b"cn=b", b"cn=a"], ";") == "cn=a;cn=b"
    assert attribute_text("cn", []) == ""
    assert attribute_text("cn", [b"J\xc3\xbcrgen"]) == "Jürgen"
    guid = uuid.uuid4()
    assert attribute_text("objectGUID", [guid.bytes_le]) == str(guid)
    with pytest.raises(ValueError, match="'jpegPhoto' holds binary data"):
        attribute_text("jpegPhoto", [b"\xff\xd8\xff"])


def test_check_filter() -> None:
    assert check_filter("(&(objectClass=user)(department=*))") is None
    assert check_filter("(memberOf:1.2.840.113556.1.4.1941:=CN=A\\2cB,DC=x)") is None
    problem = check_filter("department=*")
    assert problem is not None
    assert "enclosed in parentheses" in problem
    assert check_filter("(&(a=b)") is not None
    assert check_filter("(a=b))") is not None


def test_values_put_into_filters_are_escaped() -> None:
    assert escape_value("a*(b)\\c") == "a\\2a\\28b\\29\\5cc"
    dn = "CN=Smith\\, John (ext),OU=G,DC=x"
    chained = in_chain_filter([dn])
    assert chained == "(memberOf:1.2.840.113556.1.4.1941:=CN=Smith\\5c, John \\28ext\\29,OU=G,DC=x)"
    assert check_filter(chained) is None


def test_and_filters() -> None:
    assert and_filters(["(a=1)", None, "(b=2)"]) == "(&(a=1)(b=2))"
    assert and_filters(["(a=1)", None]) == "(a=1)"
    assert and_filters([None]) == "(objectClass=*)"


def test_normalize_dn() -> None:
    assert normalize_dn("CN=Ada Lovelace, OU=People,DC=Example,DC=com") == normalize_dn(
        "cn=ada lovelace,ou=people,dc=example,dc=com"
    )
    assert normalize_dn("cn=a,dc=x") != normalize_dn("cn=b,dc=x")
    assert normalize_dn("not a dn") == "not a dn"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("52e", "invalid credentials"),
        ("533", "the account is disabled"),
        ("775", "the account is locked out"),
        ("701", "the account has expired"),
        ("532", "the password has expired"),
    ],
)
def test_bind_failure_translates_ad_codes(code: str, reason: str) -> None:
    diagnostic = (
        "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, "
        f"data {code}, v4563"
    )
    message = bind_failure_message("invalidCredentials", diagnostic)
    assert message.startswith(reason)
    assert f"AD code {code}" in message


def test_bind_failure_of_other_servers() -> None:
    assert bind_failure_message("invalidCredentials", "") == (
        "invalid credentials (wrong bind DN or password)"
    )
    assert bind_failure_message("unwillingToPerform", "unauthenticated bind") == (
        "unwillingToPerform: unauthenticated bind"
    )


@pytest.mark.parametrize("text", ["20240102", "20240102030405", "1", "133"])
def test_digits_too_few_for_a_filetime_are_refused_not_read_as_1601(text: str) -> None:
    with pytest.raises(ValueError, match="too few for a FILETIME"):
        parse_directory_date(text)
