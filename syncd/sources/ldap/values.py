"""Pure functions for LDAP values: dates, binary ids, multi-valued attributes, filters, DNs.

No I/O: everything here is unit-tested on plain values (``tests/sources/ldap/test_values.py``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

from syncd.sources.ldap import _ldap3  # noqa: F401 - before any ldap3 import

# isort: split
from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import parse_filter
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from syncd.model import parse_api_date

IN_CHAIN_RULE = "1.2.840.113556.1.4.1941"
"""AD's LDAP_MATCHING_RULE_IN_CHAIN: matches through nested groups."""

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_FILETIME_NEVER = (0, 0x7FFFFFFFFFFFFFFF)
_FILETIME_TICKS_PER_SECOND = 10_000_000
# RFC 4517 GeneralizedTime: YYYYMMDDHH[MM[SS]][(.|,)fraction](Z|+HHMM|-HHMM).
_GENERALIZED_TIME = re.compile(
    r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})?(\d{2})?(?:[.,]\d+)?(Z|[+-]\d{2}(?:\d{2})?)$"
)
_BINARY_ATTRIBUTES = frozenset({"objectguid", "objectsid"})


def parse_directory_date(raw: str) -> date | None:
    """The UTC date of a directory timestamp; None for "never" or a blank value.

    Accepts the three forms directories use:

    * GeneralizedTime (``20240102030405.0Z``, ``20240102030405+0100``): ``whenCreated``,
      ``createTimestamp``, ``krbPasswordExpiration``;
    * FILETIME, 100-ns ticks since 1601-01-01 UTC as a decimal integer (AD's
      ``accountExpires``); ``0`` and ``0x7FFFFFFFFFFFFFFF`` mean "never", and so does
      any value past the year 9999;
    * ISO-8601 (``2024-01-02``, ``2024-01-02T03:04:05Z``), as an HR attribute may hold.

    Raises ``ValueError`` naming the text for anything else.
    """
    text = raw.strip()
    if not text:
        return None
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        ticks = int(text)
        if ticks != 0 and len(text.lstrip("-")) < _FILETIME_MIN_DIGITS:
            # 20240102 or a GeneralizedTime without its zone: read as ticks it would be a
            # day in 1601, which as an active_to ends the user at once.
            raise ValueError(
                f"invalid date {raw!r}: digits only, but too few for a FILETIME (100-ns "
                "ticks since 1601); GeneralizedTime needs its time zone (20240102030405Z)"
            )
        return _filetime_date(ticks, raw)
    match = _GENERALIZED_TIME.match(text)
    if match is not None:
        return _generalized_time_date(match, raw)
    try:
        return parse_api_date(text)
    except ValueError:
        raise ValueError(
            f"invalid date {raw!r}: expected GeneralizedTime (20240102030405Z), "
            "a FILETIME integer or ISO-8601 (2024-01-02)"
        ) from None


# FILETIME values of any date since 1900 have at least 17 digits (1900 is ~9.4e16).
_FILETIME_MIN_DIGITS = 17


def _filetime_date(ticks: int, raw: str) -> date | None:
    if ticks in _FILETIME_NEVER:
        return None
    if ticks < 0:
        raise ValueError(f"invalid date {raw!r}: a negative FILETIME")
    try:
        moment = _FILETIME_EPOCH + timedelta(seconds=ticks // _FILETIME_TICKS_PER_SECOND)
    except OverflowError:
        return None  # past datetime.max (year 9999): "never" in practice
    return moment.date()


def _generalized_time_date(match: re.Match[str], raw: str) -> date:
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0)
        )
    except ValueError:
        raise ValueError(f"invalid date {raw!r}: not a real date or time") from None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5] or 0))
        moment -= sign * offset  # to UTC
    return moment.date()


def decode_guid(value: bytes) -> str:
    """AD's ``objectGUID`` (16 bytes, mixed-endian) in its usual string form."""
    if len(value) != 16:
        raise ValueError(f"an objectGUID has 16 bytes, not {len(value)}")
    return str(uuid.UUID(bytes_le=value))


def decode_sid(value: bytes) -> str:
    """A binary security identifier (``objectSid``) as ``S-1-5-21-...``."""
    if len(value) < 8 or len(value) != 8 + 4 * value[1]:
        raise ValueError(f"not a binary SID ({len(value)} bytes)")
    authority = int.from_bytes(value[2:8], "big")
    parts = [str(int.from_bytes(value[8 + 4 * i : 12 + 4 * i], "little")) for i in range(value[1])]
    return "-".join(["S", str(value[0]), str(authority), *parts])


def decode_value(attribute: str, value: bytes) -> str:
    """One raw attribute value as text: binary ids decoded, everything else UTF-8."""
    if attribute.lower() in _BINARY_ATTRIBUTES:
        if attribute.lower() == "objectguid":
            return decode_guid(value)
        return decode_sid(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"attribute {attribute!r} holds binary data, not text; map a text attribute"
        ) from None


def attribute_text(attribute: str, values: Sequence[bytes], join: str | None = None) -> str:
    """The text of a (possibly multi-valued) attribute: its first value, or all joined.

    Directories return the values of a multi-valued attribute in no defined order, so a
    join sorts them: the same values always give the same tag. No value gives ``""``.
    """
    if not values:
        return ""
    if join is None:
        return decode_value(attribute, values[0])
    return join.join(sorted(decode_value(attribute, value) for value in values))


def check_filter(text: str) -> str | None:
    """Why ``text`` is not a valid LDAP filter (RFC 4515), or None if it is."""
    if not text.startswith("(") or not text.endswith(")"):
        return f"invalid LDAP filter {text!r}: it must be enclosed in parentheses"
    try:
        parse_filter(text, None, True, True, None, False)  # type: ignore[no-untyped-call]
    except LDAPException as error:
        return f"invalid LDAP filter {text!r}: {error}"
    except (ValueError, IndexError, TypeError):  # ldap3's parser fails these ways too
        return f"invalid LDAP filter {text!r}"
    return None


def escape_value(value: str) -> str:
    """``value`` escaped for use inside a filter (RFC 4515): ``*()\\`` and NUL."""
    escaped: str = escape_filter_chars(value)
    return escaped


def and_filters(filters: Iterable[str | None]) -> str:
    """The conjunction of the given filters (None entries are left out)."""
    present = [f for f in filters if f]
    if not present:
        return "(objectClass=*)"
    if len(present) == 1:
        return present[0]
    return "(&" + "".join(present) + ")"


def or_filters(filters: Sequence[str]) -> str:
    """The disjunction of the given filters (at least one)."""
    if len(filters) == 1:
        return filters[0]
    return "(|" + "".join(filters) + ")"


def in_chain_filter(groups: Sequence[str]) -> str:
    """Members of any of ``groups``, nested included (AD's in-chain matching rule)."""
    return or_filters([f"(memberOf:{IN_CHAIN_RULE}:={escape_value(dn)})" for dn in groups])


def normalize_dn(dn: str) -> str:
    """A DN in a form two spellings of the same DN share (for set membership).

    Attribute names and values are compared case-insensitively, spaces around ``=`` and
    ``,`` do not count, and escapes are kept as written. An unparsable DN is only
    lower-cased, so it still equals itself.
    """
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except LDAPException:
        return dn.strip().lower()
    return ",".join(f"{name.lower()}={value.lower()}" for name, value, _ in parts)


_AD_BIND_CODES = {
    "525": "the user does not exist",
    "52e": "invalid credentials (wrong bind DN or password)",
    "530": "the account may not log on at this time",
    "531": "the account may not log on from this workstation",
    "532": "the password has expired",
    "533": "the account is disabled",
    "568": "too many security IDs in the token",
    "701": "the account has expired",
    "773": "the password must be changed before the first logon",
    "775": "the account is locked out",
}
_AD_DATA = re.compile(r"\bdata ([0-9a-fA-F]{3,8})\b")


def bind_failure_message(description: str, message: str) -> str:
    """A human reason for a refused bind, from the server's result and diagnostic.

    AD puts the real cause in the diagnostic as ``data 52e``; it is translated. Other
    servers' diagnostics are shown as they are (they never echo the password).
    """
    match = _AD_DATA.search(message or "")
    if match is not None:
        code = match.group(1).lower()
        reason = _AD_BIND_CODES.get(code)
        if reason is not None:
            return f"{reason} (AD code {code})"
    if description == "invalidCredentials":
        reason = "invalid credentials (wrong bind DN or password)"
    else:
        reason = description or "bind refused"
    detail = (message or "").strip()
    return f"{reason}: {detail}" if detail else reason
