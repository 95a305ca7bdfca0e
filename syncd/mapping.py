"""Mapping: turn the raw strings of one directory record into a :class:`SourceUser`.

Pure functions, no I/O, shared by every source. A source extracts raw strings (a CSV
row's cells, an LDAP entry's attributes, a Graph user's properties) and hands them to
a :class:`RecordMapper` built once from the configured field names. Every error is a
``ValueError`` whose message names the field, so the source can report it as a
:class:`~syncd.model.RecordProblem` with the record's location.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import repeat
from operator import itemgetter
from typing import Final, Generic, TypeVar

from syncd.messages import quoted
from syncd.model import Origin, SourceUser, Tags, make_tags, parse_api_date

_TRUE_WORDS = ("true", "1", "yes", "y", "enabled", "active")
_FALSE_WORDS = ("false", "0", "no", "n", "disabled", "inactive")
# Blank means "no information": a blank cell must never end a user's access.
_ENABLED_VALUES: dict[str, bool] = {
    "": True,
    **dict.fromkeys(_TRUE_WORDS, True),
    **dict.fromkeys(_FALSE_WORDS, False),
}
_ACCEPTED_ENABLED = ", ".join(_TRUE_WORDS + _FALSE_WORDS)
_UNSEEN: Final = date.min
"""Not in a date cache (a sentinel: no cached value is ``date.min``, which is refused)."""
_Key = TypeVar("_Key")
_TAG_CACHE_SIZE = 100_000
_DATE_CACHE_SIZE = 100_000
_ORDINARY_BLANKS = " \t\r\n"
"""What trimming an identifier may remove: spaces, tabs and line breaks only."""

MAX_ID_LENGTH = 1024
"""An identifier longer than this is a bad record: an e-mail address has at most 254
characters, a userPrincipalName 1024; anything longer is a broken field (a quote opened
by mistake), and sending it could make the platform refuse the whole batch."""

EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2100, 12, 31)
"""Dates outside these bounds are not plausible for a person's access (a typo such as
``0024-01-01``, a placeholder such as ``0001-01-01``, a year of 2206): a bad record."""
OPEN_END_DATE = date(9999, 12, 31)
"""HR systems (SAP among them) write this as the end date of a contract with no end:
it means "no end date", not an end in the year 9999."""

# Characters that are printable by Python's definition (so str.isprintable() accepts
# them) but show as nothing: fillers and blanks that make two identifiers look equal.
# With the non-printable ones, this covers every Default_Ignorable_Code_Point of Unicode
# (tests/test_mapping.py checks that against the list in DerivedCoreProperties.txt).
_INVISIBLE = frozenset(
    "\u034f"  # COMBINING GRAPHEME JOINER
    "\u115f\u1160"  # HANGUL CHOSEONG / JUNGSEONG FILLER
    "\u2800"  # BRAILLE PATTERN BLANK
    "\u3164"  # HANGUL FILLER
    "\uffa0"  # HALFWIDTH HANGUL FILLER
    "\u17b4\u17b5"  # KHMER VOWEL INHERENT AQ / AA
    "\u180b\u180c\u180d\u180f"  # MONGOLIAN FREE VARIATION SELECTOR ONE..FOUR
    + "".join(chr(code) for code in range(0xFE00, 0xFE10))  # VARIATION SELECTOR-1..16
    + "".join(chr(code) for code in range(0xE0100, 0xE01F0))  # VARIATION SELECTOR-17..256
)


def normalize_end_user(raw: str, *, lowercase: bool) -> str:
    """Return the canonical ``end_user``: trimmed, Unicode NFC, lower-cased if asked.

    ``str.lower`` is used, not ``str.casefold``: casefold also folds letters that
    lower-casing keeps (``straße`` -> ``strasse``), which would merge distinct
    mailboxes and no longer match the identifier the platform and the analytics API
    report. Raises ``ValueError`` if nothing is left after trimming.
    """
    # isascii() is O(1) in CPython, and ASCII text is already NFC: skip the Unicode work
    # for the common case (a million e-mail addresses per run).
    if raw.isascii():
        text = raw.strip()
        if lowercase:
            text = text.lower()
    else:
        text = unicodedata.normalize("NFC", raw).strip()
        if lowercase:
            # Lower-casing can produce a decomposed sequence (e.g. "İ" -> "i̇"); normalise
            # again so that the result is stable (normalising it twice changes nothing).
            text = unicodedata.normalize("NFC", text.lower())
    if not text:
        raise ValueError(f"empty identifier {raw!r}" if raw else "empty identifier")
    return text


def unusable_character(text: str, *, allow_line_breaks: bool = False) -> str | None:
    """Describe the first character an identifier (or tag value) must not hold, or None.

    Refused: every character Python does not call printable -- the Unicode categories
    Cc (control: NUL, tab, line breaks), Cf (format: zero-width space and joiners,
    bidirectional overrides, soft hyphen, BOM), Zl and Zp (line and paragraph
    separators), Zs other than the ASCII space (no-break and other odd spaces), Cs
    (surrogates), Co (private use) and Cn (unassigned) -- plus characters that are
    printable but invisible (:data:`_INVISIBLE`: Hangul fillers, the blank Braille
    pattern, variation selectors, the combining grapheme joiner). Each of them makes two
    identifiers that look the same differ, or hides text (a bidi override), so the
    record is refused rather than sent to the platform. ``allow_line_breaks`` accepts
    tab, CR and LF (a quoted CSV field may hold a multi-line tag value).
    """
    if text.isascii():
        if text.isprintable():  # O(n) in C; the common case of plain e-mail addresses
            return None
    elif text.isprintable() and _INVISIBLE.isdisjoint(text):
        return None
    for position, char in enumerate(text, start=1):
        if allow_line_breaks and char in "\t\r\n":
            continue
        if not char.isprintable() or char in _INVISIBLE:
            category = unicodedata.category(char)
            name = unicodedata.name(char, "")
            what = f"{name}, category {category}" if name else f"category {category}"
            return f"U+{ord(char):04X} ({what}) at position {position}"
    return None


def check_date(value: date | None, *, end: bool = False) -> date | None:
    """``value`` if it is a plausible date of access; for an ``end`` date, None for the
    open-end sentinel :data:`OPEN_END_DATE`.

    Raises ``ValueError`` for a date before :data:`EARLIEST_DATE` or after
    :data:`LATEST_DATE`.
    """
    if value is None or EARLIEST_DATE <= value <= LATEST_DATE:
        return value
    if end and value == OPEN_END_DATE:
        return None
    raise ValueError(
        f"implausible date {value.isoformat()}: expected a date between "
        f"{EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}"
    )


def parse_enabled(raw: str) -> bool:
    """Parse an "enabled" flag: true/1/yes/y/enabled/active or false/0/no/n/disabled/inactive.

    Case-insensitive and trimmed. An empty value means enabled: a blank cell carries no
    information and must never end a user. Raises ``ValueError`` for anything else.
    """
    value = _ENABLED_VALUES.get(raw)
    if value is None:
        value = _ENABLED_VALUES.get(raw.strip().lower())
        if value is None:
            raise ValueError(
                f"invalid enabled value {quoted(raw)}: expected one of {_ACCEPTED_ENABLED} "
                "(or empty)"
            )
    return value


def parse_optional_date(raw: str) -> date | None:
    """Parse ``YYYY-MM-DD`` or an ISO-8601 timestamp (taken in UTC); blank gives None.

    Raises ``ValueError`` naming the text for anything else.
    """
    if not raw or raw.isspace():
        return None
    try:
        return parse_api_date(raw)
    except ValueError:
        # Re-raised with the value cut short: a cell can hold 100 kB of garbage.
        raise ValueError(
            f"invalid date {quoted(raw)}: expected YYYY-MM-DD or an ISO-8601 timestamp"
        ) from None


def normalize_tag_value(raw: str) -> str:
    """Trim a tag value and put it in NFC, so "Sales " and "Sales" are one tag value."""
    if raw.isascii():
        return raw.strip()
    return unicodedata.normalize("NFC", raw).strip()


@dataclass(frozen=True, slots=True)
class Grouped(Generic[_Key]):
    """One or more fields of consecutive records, as their distinct raw values (``keys``)
    and, per record, the index of its value in them (``rows``): a directory repeats a
    few tag combinations and dates across many users, so each is checked once."""

    keys: Sequence[_Key]
    rows: Sequence[int]


@dataclass(frozen=True, slots=True)
class RecordColumns:
    """The raw values of consecutive records, one line each, by field (a column reader's
    batch): the ids, and the other mapped fields grouped by distinct value.

    ``tags`` keys are the raw tag values in the order of :attr:`RecordMapper.tag_fields`;
    ``dates`` keys are ``(active_from, active_to)``, None for a field not mapped;
    ``enabled`` keys are the raw values. A group is None when none of its fields is
    mapped.
    """

    ids: Sequence[str]
    tags: Grouped[tuple[str, ...]] | None = None
    dates: Grouped[tuple[str | None, str | None]] | None = None
    enabled: Grouped[str] | None = None


@dataclass(frozen=True, slots=True)
class MappedColumns:
    """Consecutive users as columns (:meth:`RecordMapper.map_columns`): their end_users,
    and their tags, (active_from, active_to) and enabled flags grouped by distinct value.
    A group is None when none of its fields is mapped."""

    end_users: list[str]
    tags: Grouped[Tags] | None
    dates: Grouped[tuple[date | None, date | None]] | None
    enabled: Grouped[bool] | None

    def users(self, source: str, first_line: int) -> list[SourceUser]:
        """The users, the first on ``first_line`` and each on the next line of ``source``
        (one C-level map over every column)."""
        count = len(self.end_users)
        tags: Iterable[Tags] = repeat(())
        starts: Iterable[date | None] = repeat(None)
        ends: Iterable[date | None] = repeat(None)
        enabled: Iterable[bool] = repeat(True)
        if self.tags is not None:
            tags = map(self.tags.keys.__getitem__, self.tags.rows)
        if self.dates is not None:
            starts_of = [start for start, _ in self.dates.keys]
            ends_of = [end for _, end in self.dates.keys]
            starts = map(starts_of.__getitem__, self.dates.rows)
            ends = map(ends_of.__getitem__, self.dates.rows)
        if self.enabled is not None:
            enabled = map(self.enabled.keys.__getitem__, self.enabled.rows)
        lines = range(first_line, first_line + count)
        return list(
            map(SourceUser, self.end_users, tags, repeat(source), lines, starts, ends, enabled)
        )


class RecordMapper:
    """Builds :class:`SourceUser` values from raw field values; built once per source.

    The field names are what the configuration calls them (CSV columns, LDAP or Graph
    attributes) and are only used in error messages; ``kind`` is the word used for
    them (``"column"``, ``"attribute"``). ``tag_fields`` maps tag name -> field name.
    :meth:`build` takes the tag values in the order of :attr:`tag_fields` (sorted by
    tag name), so a source can resolve its field positions once and pass a plain
    sequence per record, without a per-record dict.
    """

    __slots__ = (
        "_active_from_cache",
        "_active_from_label",
        "_active_to_cache",
        "_active_to_label",
        "_enabled_label",
        "_id_label",
        "_tag_cache",
        "_tag_names",
        "active_from_field",
        "active_to_field",
        "enabled_field",
        "id_field",
        "kind",
        "lowercase",
        "tag_fields",
    )

    def __init__(
        self,
        *,
        id_field: str,
        tag_fields: Mapping[str, str] | None = None,
        active_from_field: str | None = None,
        active_to_field: str | None = None,
        enabled_field: str | None = None,
        lowercase: bool = True,
        kind: str = "column",
    ) -> None:
        self.id_field = id_field
        # Sorted by tag name: tags come out already in the canonical order of make_tags.
        self.tag_fields: tuple[tuple[str, str], ...] = tuple(sorted((tag_fields or {}).items()))
        self._tag_names = tuple(tag for tag, _ in self.tag_fields)
        self._tag_cache: dict[tuple[str, ...], Tags] = {}
        # Raw date text -> the checked result (None: blank, or the open end), filled
        # only by records build() accepted: a hit is a value known to be valid.
        self._active_from_cache: dict[str, date | None] = {}
        self._active_to_cache: dict[str, date | None] = {}
        self.active_from_field = active_from_field
        self.active_to_field = active_to_field
        self.enabled_field = enabled_field
        self.lowercase = lowercase
        self.kind = kind
        self._id_label = f"{kind} {id_field!r}"
        self._active_from_label = f"{kind} {active_from_field!r}"
        self._active_to_label = f"{kind} {active_to_field!r}"
        self._enabled_label = f"{kind} {enabled_field!r}"

    def fields(self) -> tuple[str, ...]:
        """Every field the mapping reads, without repeats, in a stable order."""
        names = [self.id_field, *(field for _, field in self.tag_fields)]
        names += [
            field
            for field in (self.active_from_field, self.active_to_field, self.enabled_field)
            if field is not None
        ]
        return tuple(dict.fromkeys(names))

    def build(
        self,
        origin: Origin,
        id_value: str,
        tag_values: Sequence[str] = (),
        *,
        active_from: str | None = None,
        active_to: str | None = None,
        enabled: str | None = None,
    ) -> SourceUser:
        """Map one record's raw values to a :class:`SourceUser`.

        Empty (or blank) tag values are left out of the tags: the platform has no
        "no value", and an empty string would be a tag value of its own. ``None`` for a
        date or the enabled flag means the source does not map it. Raises
        ``ValueError`` naming the field, e.g. ``column 'start_date': invalid date ...``.
        """
        try:
            end_user = normalize_end_user(id_value, lowercase=self.lowercase)
        except ValueError:  # its only failure: nothing left after trimming
            raise ValueError(f"empty id {self._id_label}") from None
        if len(end_user) > MAX_ID_LENGTH:
            raise ValueError(
                f"{self._id_label}: {quoted(end_user, 40)} is longer than {MAX_ID_LENGTH} "
                "characters"
            )
        # Inline fast path (a million ids per run): plain printable ASCII needs no scan.
        # The raw value is checked, not the trimmed one: str.strip() also removes
        # controls, separators and odd spaces (U+001C, U+0085, U+2028, U+00A0...) at the
        # ends, which would hide a broken export; only ordinary blanks are trimming.
        if not (id_value.isascii() and id_value.isprintable()):
            bad = unusable_character(id_value.strip(_ORDINARY_BLANKS))
            if bad is not None:
                # Never sent to the platform: it would create a look-alike of a real user.
                raise ValueError(f"{self._id_label}: {quoted(id_value)} holds the character {bad}")
        tags = self._tags(tag_values)
        start = None if active_from is None else self.active_from_of(active_from)
        end = None if active_to is None else self.active_to_of(active_to)
        if start is not None and end is not None and end < start:
            raise ValueError(self._reversed_dates(start, end))
        is_enabled = True if enabled is None else self.enabled_of(enabled)
        return SourceUser.from_origin(end_user, tags, origin, start, end, is_enabled)

    def active_from_of(self, raw: str) -> date | None:
        """The start date a raw ``active_from`` value means (None: blank); raises
        ``ValueError`` naming the field, as :meth:`build` does."""
        try:
            start = parse_optional_date(raw)
            if start is not None and not EARLIEST_DATE <= start <= LATEST_DATE:
                start = check_date(start)  # raises
        except ValueError as error:
            raise ValueError(f"{self._active_from_label}: {error}") from None
        return start

    def active_to_of(self, raw: str) -> date | None:
        """The end date a raw ``active_to`` value means (None: blank or the open end);
        raises ``ValueError`` naming the field, as :meth:`build` does."""
        try:
            end = parse_optional_date(raw)
            if end is not None and not EARLIEST_DATE <= end <= LATEST_DATE:
                end = check_date(end, end=True)  # None for the open end, else raises
        except ValueError as error:
            raise ValueError(f"{self._active_to_label}: {error}") from None
        return end

    def enabled_of(self, raw: str) -> bool:
        """What a raw ``enabled`` value means; raises ``ValueError`` naming the field."""
        try:
            return parse_enabled(raw)
        except ValueError as error:
            raise ValueError(f"{self._enabled_label}: {error}") from None

    def _reversed_dates(self, start: date, end: date) -> str:
        return (
            f"{self._active_to_label} ({end.isoformat()}) is before "
            f"{self._active_from_label} ({start.isoformat()})"
        )

    def _tags(self, values: Sequence[str]) -> Tags:
        key = tuple(values)
        tags = self._tag_cache.get(key)
        if tags is not None:
            return tags
        names = self._tag_names
        if len(key) != len(names):
            # A bug in the calling source, not bad data: must not become a RecordProblem.
            raise TypeError(f"expected {len(names)} tag values, got {len(key)}")
        pairs = [
            (name, value)
            for name, value in zip(names, map(normalize_tag_value, key), strict=True)
            if value
        ]
        # The raw values, like identifiers: trimming must not hide a control or an odd
        # space at the ends (a value of such characters only is refused, not blank).
        for name, raw in zip(names, key, strict=True):
            bad = unusable_character(raw, allow_line_breaks=True)
            if bad is not None:
                field = dict(self.tag_fields)[name]
                raise ValueError(
                    f"{self.kind} {field!r} (tag {name!r}): {quoted(raw)} holds the character {bad}"
                )
        tags = make_tags(pairs)
        # Directories repeat a few value combinations (department x country) across
        # many users: remembering them makes tags nearly free. Bounded, because a tag
        # can also be mapped to a column with a distinct value per user.
        if len(self._tag_cache) < _TAG_CACHE_SIZE:
            self._tag_cache[key] = tags
        return tags

    def row_builder(
        self,
        source: str,
        *,
        id_index: int,
        tag_indexes: Sequence[int] = (),
        active_from_index: int | None = None,
        active_to_index: int | None = None,
        enabled_index: int | None = None,
    ) -> Callable[[Sequence[str], int], SourceUser]:
        """A fast ``(row, line) -> SourceUser`` for sources whose records are rows.

        The indexes are the positions of the mapped fields in a row (``tag_indexes`` in
        the order of :attr:`tag_fields`); ``source`` and ``line`` are the record's
        :class:`Origin`, kept as the user's ``source`` and ``at`` fields. The result is
        exactly :meth:`build`'s for the same values, and it raises the same
        ``ValueError``: a row whose values are all plainly valid (a printable id
        without invisible characters; tag values and dates accepted in an earlier
        record, in order; an enabled word as written in the list, or blank) is mapped
        inline, and any other row goes through :meth:`build` with all its checks, which
        also teaches the caches the dates it accepted. Only the checked result of a
        value is remembered, never an error: a bad value is checked, and its message
        built, each time it is seen.
        """
        mapped = (self.active_from_field, self.active_to_field, self.enabled_field)
        given = (active_from_index, active_to_index, enabled_index)
        if len(tag_indexes) != len(self.tag_fields) or any(
            (field is None) != (index is None) for field, index in zip(mapped, given, strict=True)
        ):
            # A bug in the calling source, not bad data: must not become a RecordProblem.
            raise TypeError("row_builder() needs an index for each mapped field, and only those")
        build = self.build
        lowercase = self.lowercase
        tag_cache = self._tag_cache
        from_cache = self._active_from_cache
        to_cache = self._active_to_cache
        enabled_values = _ENABLED_VALUES
        tag_values = _cells_getter(tag_indexes)
        invisible = _INVISIBLE
        max_length = MAX_ID_LENGTH

        def build_row(row: Sequence[str], line: int) -> SourceUser:
            raw_id = row[id_index]
            tag_key = tag_values(row)
            raw_from = None if active_from_index is None else row[active_from_index]
            raw_to = None if active_to_index is None else row[active_to_index]
            raw_enabled = None if enabled_index is None else row[enabled_index]
            # build()'s checks, each answered here by a test that only passes for what
            # build() accepts as it is; anything else takes the slow path below.
            try:
                # Caches of values accepted before: a KeyError is a value to check.
                tags = tag_cache[tag_key]
                start = None if raw_from is None else from_cache[raw_from]
                end = None if raw_to is None else to_cache[raw_to]
                enabled = True if raw_enabled is None else enabled_values[raw_enabled]
            except KeyError:
                pass
            else:
                end_user = ""
                if raw_id.isprintable():
                    # Printable rules out controls, odd spaces and format characters,
                    # so trimming can only remove plain spaces, as build() would. Text
                    # of U+0000..U+00FF (e-mail addresses, accented Latin names) is NFC,
                    # stays NFC and Latin-1 when lower-cased, and holds no invisible
                    # character: normalize_end_user() would give the same.
                    if raw_id.isascii() or _latin1(raw_id):
                        end_user = raw_id.strip().lower() if lowercase else raw_id.strip()
                    elif invisible.isdisjoint(raw_id):
                        end_user = normalize_end_user(raw_id, lowercase=lowercase)
                if (
                    end_user
                    and len(end_user) <= max_length
                    and (start is None or end is None or start <= end)
                ):
                    return SourceUser(end_user, tags, source, line, start, end, enabled)
            user = build(
                Origin(source, line),
                raw_id,
                tag_key,
                active_from=raw_from,
                active_to=raw_to,
                enabled=raw_enabled,
            )
            if raw_from is not None and len(from_cache) < _DATE_CACHE_SIZE:
                from_cache[raw_from] = user.active_from
            if raw_to is not None and len(to_cache) < _DATE_CACHE_SIZE:
                to_cache[raw_to] = user.active_to
            return user

        return build_row

    def build_columns(
        self, source: str, first_line: int, columns: RecordColumns
    ) -> list[SourceUser] | None:
        """The users of consecutive records, the first on ``first_line`` and each on the
        next line, exactly as :meth:`row_builder`'s function maps each; or None unless
        every record is plainly valid (see :meth:`map_columns`): the caller then maps
        the records one by one, for the exact problem of each."""
        mapped = self.map_columns(columns)
        return None if mapped is None else mapped.users(source, first_line)

    def map_columns(self, columns: RecordColumns) -> MappedColumns | None:
        """What :meth:`build_columns` makes its users of, as columns; or None unless every
        record is plainly valid, as :meth:`row_builder`'s function takes it inline (an
        id of printable Latin-1 text, not blank, at most :data:`MAX_ID_LENGTH`
        characters; tags, dates and enabled values :meth:`build` accepts; no end before
        its start).

        Each check is one C-level pass over a column, or one per distinct value, so a
        batch costs a fraction of a call per record.
        """
        ids = columns.ids
        count = len(ids)
        groups = (columns.tags, columns.dates, columns.enabled)
        mapped = (
            bool(self.tag_fields),
            self.active_from_field is not None or self.active_to_field is not None,
            self.enabled_field is not None,
        )
        for group, needed in zip(groups, mapped, strict=True):
            if (group is not None) != needed or (group is not None and len(group.rows) != count):
                # A bug in the calling source, not bad data: must not become a problem.
                raise TypeError("map_columns() needs each mapped group, one index per id")
        # A space is printable: the joined text is printable if and only if every id is.
        if not " ".join(ids).isprintable():
            return None
        try:
            # Printable text of U+0000..U+00FF is NFC, stays so when lower-cased, and
            # holds no invisible character: trimming and lower-casing are all
            # normalize_end_user() would do (see row_builder).
            "".join(ids).encode("latin-1")
        except UnicodeEncodeError:
            return None
        stripped = list(map(str.strip, ids))
        if not all(stripped) or (count and max(map(len, stripped)) > MAX_ID_LENGTH):
            return None  # a blank id or a long one: its problem is build()'s to say
        end_users = list(map(str.lower, stripped)) if self.lowercase else stripped
        try:
            tags = None
            if columns.tags is not None:
                tags = Grouped([self._tags(key) for key in columns.tags.keys], columns.tags.rows)
            dates = None if columns.dates is None else self._dates_of(columns.dates)
            enabled = None
            if columns.enabled is not None:
                keys = columns.enabled.keys
                enabled = Grouped([self.enabled_of(key) for key in keys], columns.enabled.rows)
        except ValueError:
            return None
        if columns.dates is not None and dates is None:
            return None  # an end before its start
        return MappedColumns(end_users, tags, dates, enabled)

    def _dates_of(
        self, dates: Grouped[tuple[str | None, str | None]]
    ) -> Grouped[tuple[date | None, date | None]] | None:
        """The dates of each distinct (active_from, active_to) pair; None if one ends
        before it starts. Raises ``ValueError`` for a bad date."""
        resolved: list[tuple[date | None, date | None]] = []
        # The caches row_builder() keeps (values accepted before); each batch of a large
        # file repeats most of the dates of the one before.
        from_cache, to_cache = self._active_from_cache, self._active_to_cache
        for raw_from, raw_to in dates.keys:
            start = _cached_date(from_cache, raw_from, self.active_from_of)
            end = _cached_date(to_cache, raw_to, self.active_to_of)
            if start is not None and end is not None and end < start:
                return None
            resolved.append((start, end))
        return Grouped(resolved, dates.rows)


def _cached_date(
    cache: dict[str, date | None], raw: str | None, resolve: Callable[[str], date | None]
) -> date | None:
    """``resolve(raw)`` (None for an unmapped field), remembered in ``cache`` (bounded);
    raises ``ValueError`` for a bad date, which is never remembered."""
    if raw is None:
        return None
    value = cache.get(raw, _UNSEEN)
    if value is _UNSEEN:
        value = resolve(raw)
        if len(cache) < _DATE_CACHE_SIZE:
            cache[raw] = value
    return value


def _latin1(text: str) -> bool:
    """True if every character of ``text`` is at most U+00FF (Latin-1).

    Encoding such text is a copy in C, far cheaper than looking each character up in
    :data:`_INVISIBLE` (whose first character is U+034F).
    """
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _cells_getter(positions: Sequence[int]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """A fast ``row -> tuple of the cells at positions`` (itemgetter runs in C)."""
    if not positions:
        return lambda row: ()
    if len(positions) == 1:
        # itemgetter with one index returns the item itself, not a 1-tuple.
        (only,) = positions
        return lambda row: (row[only],)
    getter: Callable[[Sequence[str]], tuple[str, ...]] = itemgetter(*positions)
    return getter
