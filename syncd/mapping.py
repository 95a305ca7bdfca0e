"""Mapping: turn the raw strings of one directory record into a :class:`SourceUser`.

Pure functions, no I/O, shared by every source. A source extracts raw strings (a CSV
row's cells, an LDAP entry's attributes, a Graph user's properties) and hands them to
a :class:`RecordMapper` built once from the configured field names. Every error is a
``ValueError`` whose message names the field, so the source can report it as a
:class:`~syncd.model.RecordProblem` with the record's location.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date

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
_TAG_CACHE_SIZE = 100_000


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
                f"invalid enabled value {raw!r}: expected one of {_ACCEPTED_ENABLED} (or empty)"
            )
    return value


def parse_optional_date(raw: str) -> date | None:
    """Parse ``YYYY-MM-DD`` or an ISO-8601 timestamp (taken in UTC); blank gives None.

    Raises ``ValueError`` naming the text for anything else.
    """
    if not raw or raw.isspace():
        return None
    return parse_api_date(raw)


def normalize_tag_value(raw: str) -> str:
    """Trim a tag value and put it in NFC, so "Sales " and "Sales" are one tag value."""
    if raw.isascii():
        return raw.strip()
    return unicodedata.normalize("NFC", raw).strip()


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
        "_active_from_label",
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
        tags = self._tags(tag_values)
        start = end = None
        if active_from is not None:
            try:
                start = parse_optional_date(active_from)
            except ValueError as error:
                raise ValueError(f"{self._active_from_label}: {error}") from None
        if active_to is not None:
            try:
                end = parse_optional_date(active_to)
            except ValueError as error:
                raise ValueError(f"{self._active_to_label}: {error}") from None
            if start is not None and end is not None and end < start:
                raise ValueError(
                    f"{self._active_to_label} ({end.isoformat()}) is before "
                    f"{self._active_from_label} ({start.isoformat()})"
                )
        is_enabled = True
        if enabled is not None:
            try:
                is_enabled = parse_enabled(enabled)
            except ValueError as error:
                raise ValueError(f"{self._enabled_label}: {error}") from None
        return SourceUser(end_user, tags, origin, start, end, is_enabled)

    def _tags(self, values: Sequence[str]) -> Tags:
        key = tuple(values)
        tags = self._tag_cache.get(key)
        if tags is not None:
            return tags
        names = self._tag_names
        if len(key) != len(names):
            # A bug in the calling source, not bad data: must not become a RecordProblem.
            raise TypeError(f"expected {len(names)} tag values, got {len(key)}")
        tags = make_tags(
            [
                (name, value)
                for name, value in zip(names, map(normalize_tag_value, key), strict=True)
                if value
            ]
        )
        # Directories repeat a few value combinations (department x country) across
        # many users: remembering them makes tags nearly free. Bounded, because a tag
        # can also be mapped to a column with a distinct value per user.
        if len(self._tag_cache) < _TAG_CACHE_SIZE:
            self._tag_cache[key] = tags
        return tags
