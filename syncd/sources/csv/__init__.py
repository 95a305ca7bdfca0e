"""CSV source: one row per user, streamed from the file (never loaded whole).

Parsing follows RFC 4180 as Python's ``csv`` module implements it (quoted fields may
hold the delimiter, quotes and line breaks; CRLF or LF), with two choices made for
safety:

* ``strict`` quoting: a closing quote followed by something other than a delimiter
  (``"Smith"Jr``) is reported as a bad row instead of being silently glued together;
  parsing resumes on the next line.
* A quote left open at the end of the file, or a field larger than the csv module's
  field size limit (the usual symptom of a quote opened by mistake that swallowed the
  rest of the file), fails the whole read with :class:`SourceError`: the rows after it
  were not really read, and must never be taken as "these users are gone".

Line numbers are physical lines; a record that spans several lines is reported at the
line it starts on; the header is line 1.

A read is only taken as the directory when it saw one consistent file:

* a file without a header (0 bytes, or blank lines only) fails the read: without a
  header nothing can be checked against the mapping. A header and no rows is an empty
  source, which the guard judges;
* the file's size and modification time are compared before and after the read; a file
  that changed meanwhile (an exporter rewriting it in place) fails the read
  (:class:`SourceUnavailableError`: the next run reads it again);
* with ``min_file_age_s``, a file modified more recently than that is not read at all,
  for exporters that write in place. Exports written atomically (a temporary file
  renamed over the old one) need neither: the open file stays the old one.
"""

from __future__ import annotations

import codecs
import csv
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from pydantic import Field, field_validator

from syncd.config_base import SourceConfigBase
from syncd.errors import SourceError, SourceUnavailableError
from syncd.mapping import RecordMapper
from syncd.messages import bounded_list, quoted
from syncd.model import Origin, RecordProblem, SourceUser
from syncd.sources import SourceContext, SourceType

_FIELD_LIMIT_ERROR = "field larger than field limit"
_END_OF_DATA_ERROR = "unexpected end of data"


class CsvSourceConfig(SourceConfigBase):
    """A CSV file; one row per user."""

    type: Literal["csv"]
    path: Path
    id_column: str
    tags: dict[str, str] = Field(default_factory=dict)
    active_from_column: str | None = None
    active_to_column: str | None = None
    enabled_column: str | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    min_file_age_s: float = Field(default=0, ge=0, le=86_400)
    """Refuse a file modified less than this many seconds ago (0: off)."""

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for tag, column in value.items():
            if not tag.strip() or not column.strip():
                raise ValueError("tag names and column names must not be empty")
        return value

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown encoding {quoted(value)}: use a text encoding such as utf-8, "
                "utf-16, cp1252 or latin-1"
            ) from None
        # base64, rot13, zlib, hex... are codecs too, but they do not decode bytes to
        # text: opening a file with one of them fails with a TypeError.
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(
                f"encoding {value!r} is not a text encoding (it is a {info.name} "
                "transformation); use a text encoding such as utf-8, utf-16, cp1252 or latin-1"
            )
        return value

    @property
    def label(self) -> str:
        """How errors name this source: its ``name``, else the file name."""
        return self.name or self.path.name


class CsvSource:
    """Streams the users of one CSV file (see :class:`~syncd.sources.Source`).

    Errors that make the file unreadable (missing file, unknown mapped column, bytes
    invalid for the encoding, an unterminated quote) raise :class:`SourceError` when
    :meth:`read` is iterated; a bad row gives a :class:`RecordProblem` and reading goes on.
    """

    def __init__(self, config: CsvSourceConfig, *, lowercase: bool) -> None:
        self._config = config
        # Header cells are compared after stripping, so strip the configured names too.
        self._mapper = RecordMapper(
            id_field=config.id_column.strip(),
            tag_fields={tag.strip(): column.strip() for tag, column in config.tags.items()},
            active_from_field=_strip(config.active_from_column),
            active_to_field=_strip(config.active_to_column),
            enabled_field=_strip(config.enabled_column),
            lowercase=lowercase,
            kind="column",
        )
        # Spreadsheet tools often write UTF-8 with a byte-order mark; utf-8-sig reads
        # both forms, so "utf-8" in the config accepts either.
        encoding = config.encoding
        self._encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding

    def __repr__(self) -> str:
        return f"CsvSource({str(self._config.path)!r})"

    @property
    def label(self) -> str:
        """The configured source name, or the file name."""
        return self._config.label

    def __enter__(self) -> Self:
        """Nothing to open: the file is opened by each :meth:`read`, so a daemon sees
        every new export."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Nothing to close."""

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        """Stream a :class:`SourceUser` per good row and a :class:`RecordProblem` per bad one.

        Raises :class:`SourceError` (on iteration) when the file cannot be read, a mapped
        column is missing from the header (before any row is yielded), or the file turns
        out unreadable half-way (after the rows already yielded).
        """
        path = self._config.path
        try:
            # A FIFO would block the open until some writer appears, a device never ends
            # (/dev/zero): only a regular file (or a link to one) is an export.
            if not stat.S_ISREG(os.stat(path).st_mode) and not path.is_dir():
                raise SourceError(f"cannot read CSV file {path}: not a regular file")
            # newline="" lets the csv module see the real line breaks (CRLF, and line
            # breaks inside quoted fields); `with` closes the file even if the caller
            # abandons the generator early.
            with open(path, encoding=self._encoding, newline="") as file:
                before = os.fstat(file.fileno())
                self._check_age(before)
                reader = csv.reader(file, delimiter=self._config.delimiter, strict=True)
                yield from self._records(reader)
                # The same open file (an atomic rename does not change it): a different
                # size or time means it was rewritten while it was read.
                after = os.fstat(file.fileno())
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                    raise SourceUnavailableError(
                        f"CSV file {path} changed while it was read (size {before.st_size} -> "
                        f"{after.st_size} bytes); it is being written: write exports to a "
                        "temporary file and rename it, or set min_file_age_s"
                    )
        except UnicodeError as error:
            # UnicodeDecodeError for a bad byte; a plain UnicodeError from some codecs
            # (utf-16 without a byte-order mark).
            line = _locate_decode_error(path, self._encoding)
            where = f"line {line}" if line is not None else "somewhere"
            reason = getattr(error, "reason", None) or str(error)
            raise SourceError(
                f"cannot read CSV file {path}: {where}: bytes that are not valid "
                f"{self._config.encoding} ({reason}); set 'encoding' in the source "
                "config if the file uses another encoding"
            ) from None
        except OSError as error:
            reason = error.strerror or str(error)
            raise SourceError(f"cannot read CSV file {path}: {reason}") from None

    def _check_age(self, status: os.stat_result) -> None:
        """Refuse a file modified less than ``min_file_age_s`` ago (an export in progress)."""
        minimum = self._config.min_file_age_s
        if not minimum:
            return
        age = time.time() - status.st_mtime
        if age < 0:
            # Its age is unknown (a clock ahead on the exporter's host, or a touch with a
            # future date): it could have been written a moment ago.
            raise SourceUnavailableError(
                f"CSV file {self._config.path} has a modification time {-age:.1f} s in the "
                f"future, so min_file_age_s={minimum:g} cannot be checked: fix the clock of "
                "the host that writes it (or the file's time); the next run reads it again"
            )
        if age < minimum:
            raise SourceUnavailableError(
                f"CSV file {self._config.path} was modified {age:.1f} s ago, less "
                f"than min_file_age_s={minimum:g}: it may still be being written; the next "
                "run reads it"
            )

    def _records(self, reader: _Reader) -> Iterator[SourceUser | RecordProblem]:
        path = self._config.path
        found = self._read_header(reader)
        if found is None:
            # No header, nothing to check the mapping against: a truncated or failed
            # export, never "the directory is empty" (that is a header without rows).
            raise SourceError(
                f"CSV file {path} has no header (it is empty or holds only blank lines); "
                "a file with a header and no rows is an empty source"
            )
        header_line, header = found
        width = len(header)
        indexes = self._resolve_columns(header, header_line=header_line)

        # Everything that can be decided once is decided here, not per row.
        label = self.label
        mapper = self._mapper
        build_row = mapper.row_builder(
            label,
            id_index=indexes[mapper.id_field],
            tag_indexes=[indexes[column] for _, column in mapper.tag_fields],
            active_from_index=_index_or_none(indexes, mapper.active_from_field),
            active_to_index=_index_or_none(indexes, mapper.active_to_field),
            enabled_index=_index_or_none(indexes, mapper.enabled_field),
        )

        start = reader.line_num + 1  # the line the next record starts on
        while True:
            try:
                for row in reader:
                    line = start
                    start = reader.line_num + 1
                    if len(row) != width:
                        if _is_blank(row):
                            continue  # blank lines (and ",,,," rows spreadsheets leave)
                        yield RecordProblem(
                            Origin(label, line),
                            f"expected {width} fields as in the header, found {len(row)}",
                        )
                        continue
                    try:
                        yield build_row(row, line)
                    except ValueError as error:
                        if not _is_blank(row):
                            yield RecordProblem(Origin(label, line), str(error))
                return
            except csv.Error as error:
                line = start
                start = reader.line_num + 1
                message = str(error)
                if _FIELD_LIMIT_ERROR in message or _END_OF_DATA_ERROR in message:
                    raise SourceError(_fatal_message(path, line, message)) from None
                # strict quoting: the parser resumes on the next line, so only this
                # record is lost, and it is reported.
                yield RecordProblem(Origin(label, line), f"malformed CSV: {message}")

    def _read_header(self, reader: _Reader) -> tuple[int, list[str]] | None:
        """The first non-blank record (its line, its cleaned cells); None if there is none."""
        start = 1
        try:
            for row in reader:
                if not _is_blank(row):
                    # The BOM is normally removed by utf-8-sig; strip it anyway for a
                    # file declared as another encoding that still starts with one.
                    return start, [cell.strip().lstrip("\ufeff").strip() for cell in row]
                start = reader.line_num + 1
        except csv.Error as error:
            raise SourceError(
                _fatal_message(self._config.path, start, str(error), what="header")
            ) from None
        return None

    def _resolve_columns(self, header: list[str], *, header_line: int) -> dict[str, int]:
        """Map each column the mapping uses to its position, or fail naming what is wrong."""
        path = self._config.path
        positions: dict[str, list[int]] = {}
        for index, name in enumerate(header):
            positions.setdefault(name, []).append(index)
        needed = self._mapper.fields()
        missing = [column for column in needed if column not in positions]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise SourceError(
                f"CSV file {path}: mapped column{plural} {_names(missing)} not found in the "
                f"header (line {header_line}); the header has {len(header)} "
                f"column{'s' if len(header) != 1 else ''} with delimiter "
                f"{self._config.delimiter!r} and encoding {self._config.encoding!r}: "
                f"{_names(header)}"
            )
        repeated = [column for column in needed if len(positions[column]) > 1]
        if repeated:
            detail = "; ".join(
                f"{quoted(column)} at positions {bounded_list([i + 1 for i in positions[column]])}"
                for column in repeated
            )
            raise SourceError(
                f"CSV file {path}: mapped column names appear more than once in the header "
                f"(line {header_line}), so the value to use is ambiguous: {detail}"
            )
        return {column: positions[column][0] for column in needed}


class _Reader(Protocol):
    """What this module uses of a ``csv.reader``."""

    @property
    def line_num(self) -> int: ...

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


def _strip(name: str | None) -> str | None:
    return None if name is None else name.strip()


def _names(names: Sequence[str]) -> str:
    """Quoted names, at most a few dozen (a header can have 100,000 columns)."""
    return bounded_list(names, show=lambda name: quoted(str(name)))


def _is_blank(row: Sequence[str]) -> bool:
    return all(not cell or cell.isspace() for cell in row)


def _index_or_none(indexes: dict[str, int], column: str | None) -> int | None:
    return None if column is None else indexes[column]


def _fatal_message(path: Path, line: int, message: str, *, what: str = "record") -> str:
    if _FIELD_LIMIT_ERROR in message:
        return (
            f"cannot read CSV file {path}: line {line}: a field of the {what} starting here "
            f"is larger than the limit of {csv.field_size_limit()} characters (is a quote "
            "left open?)"
        )
    if _END_OF_DATA_ERROR in message:
        return (
            f"cannot read CSV file {path}: line {line}: the quoted field opened in the {what} "
            "starting here is never closed (the file ends inside it)"
        )
    return f"cannot read CSV file {path}: line {line}: malformed {what}: {message}"


def _locate_decode_error(path: Path, encoding: str) -> int | None:
    """The line holding the first byte invalid in ``encoding``, or None if not found.

    Only runs after a decode error, so it can afford a second pass over the file: the
    text layer decodes in blocks and fails on a block, not on a line, so its position
    says little. Lines are counted like the reader counts them (LF, CRLF or lone CR).
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    breaks = 0
    pending_cr = False

    def count(text: str) -> None:
        nonlocal breaks, pending_cr
        if not text:
            return
        crlf = text.count("\r\n") + (1 if pending_cr and text[0] == "\n" else 0)
        breaks += text.count("\n") + text.count("\r") - crlf
        pending_cr = text[-1] == "\r"

    try:
        with open(path, "rb") as file:
            while block := file.read(1 << 16):
                state = decoder.getstate()
                try:
                    count(decoder.decode(block))
                    continue
                except UnicodeError:
                    decoder.setstate(state)
                # Redo the failing block byte by byte to find the line of the bad byte.
                for offset in range(len(block)):
                    try:
                        count(decoder.decode(block[offset : offset + 1]))
                    except UnicodeError:
                        return breaks + 1
                return breaks + 1  # pragma: no cover - the block failed as a whole
            try:
                decoder.decode(b"", final=True)  # a multi-byte sequence cut by the end
            except UnicodeError:
                return breaks + 1
    except OSError:
        return None
    return None


def _build(config: CsvSourceConfig, context: SourceContext) -> CsvSource:
    return CsvSource(config, lowercase=context.lowercase)


SOURCE_TYPE = SourceType(name="csv", config=CsvSourceConfig, build=_build)
"""The ``type: csv`` entry of the source registry."""
