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
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Literal, Self, TypedDict

from pydantic import Field, field_validator

from syncd.config_base import SourceConfigBase
from syncd.errors import SourceError, SourceUnavailableError
from syncd.mapping import RecordMapper
from syncd.messages import bounded_list, quoted
from syncd.model import RecordProblem, SourceUser
from syncd.sources import SourceContext, SourceType
from syncd.sources.csv.parts import PARTS_MIN_BYTES, PartsRead, cut_point, text_range
from syncd.sources.csv.plain import (
    COLUMNS_FIRST_PART_SHARE,
    COLUMNS_IN_PARTS_MIN_BYTES,
    COLUMNS_MIN_BYTES,
    Piece,
    plain_data_start,
)
from syncd.sources.csv.rows import (
    Reader,
    RowBuilder,
    decode_error_message,
    decode_reason,
    fatal_message,
    is_blank,
    parse_rows,
)

if TYPE_CHECKING:
    from syncd.sources.csv.arrow import ColumnsRead


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

    def __init__(
        self,
        config: CsvSourceConfig,
        *,
        lowercase: bool,
        parts_min_bytes: int = PARTS_MIN_BYTES,
        columns_min_bytes: int = COLUMNS_MIN_BYTES,
        columns_in_parts_min_bytes: int = COLUMNS_IN_PARTS_MIN_BYTES,
    ) -> None:
        """``parts_min_bytes``, ``columns_min_bytes`` and ``columns_in_parts_min_bytes``:
        the smallest file read in two parts at once, by columns if it is plain, and by
        columns in two parts (tests lower or raise them)."""
        self._config = config
        # A file this large is read in two parts at once (syncd.sources.csv.parts).
        self._parts_min_bytes = parts_min_bytes
        self._columns_min_bytes = columns_min_bytes
        self._columns_in_parts_min_bytes = columns_in_parts_min_bytes
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
                # One generator between the caller and the items (each level costs).
                records = self._records_of(file, before.st_size)
                try:
                    yield from records
                finally:
                    # An abandoned read ends at once (a read by columns: its thread).
                    close = getattr(records, "close", None)
                    if close is not None:
                        close()
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
            message = decode_error_message(
                path, self._encoding, self._config.encoding, decode_reason(error)
            )
            raise SourceError(message) from None
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

    def _records_of(self, file: IO[str], size: int) -> Iterable[SourceUser | RecordProblem]:
        """The items of the open file. A large one is read in two parts at once where it
        can be (the second in a forked child, by columns if the file is plain and large
        enough), a large plain one by columns here where it cannot, any other row by
        row."""
        fd = file.fileno()
        codec = codecs.lookup(self._encoding).name
        header = self._plain_header(fd, size, codec)
        if header is not None and size >= self._columns_in_parts_min_bytes:
            start, found = header
            point = cut_point(
                fd, size, codec, min_bytes=self._parts_min_bytes, share=COLUMNS_FIRST_PART_SHARE
            )
            if point is not None and point > start:
                return self._records_in_parts(fd, point, size, by_columns=True)
            return self._records_by_columns(fd, start, size, found)
        point = cut_point(fd, size, codec, min_bytes=self._parts_min_bytes)
        if point is not None:
            return self._records_in_parts(fd, point, size)
        if header is not None:
            # Plain and large, and no second reader to be had: by columns here.
            return self._records_by_columns(fd, header[0], size, header[1])
        return self._records(self._reader(file))

    def _plain_header(
        self, fd: int, size: int, codec: str
    ) -> tuple[int, tuple[int, list[str]]] | None:
        """For a file read by columns (large, plain, its header on line 1): where its
        records start, and its header; else None."""
        if size < self._columns_min_bytes:
            return None
        start = plain_data_start(fd, size, codec, self._config.delimiter)
        if start is None:
            return None
        with text_range(fd, 0, start, self._encoding) as head:
            found = self._read_header(self._reader(head))  # None: a blank first line
        return None if found is None else (start, found)

    def _records_by_columns(
        self, fd: int, start: int, size: int, header: tuple[int, list[str]]
    ) -> Iterable[SourceUser | RecordProblem]:
        """The items of a plain file after its ``header``, read by columns here."""
        width, build_row, indexes = self._prepare(header)
        read = self._columns_read(
            fd,
            start,
            size,
            width,
            build_row,
            indexes,
            lambda line: self._whole_from(fd, size, width, build_row, line),
        )
        return read.rows(first_line=header[0] + 1)

    def _columns_read(
        self,
        fd: int,
        start: int,
        size: int,
        width: int,
        build_row: RowBuilder,
        indexes: dict[str, int],
        whole: Callable[[int], Iterator[SourceUser | RecordProblem]],
        *,
        in_child: bool = False,
    ) -> ColumnsRead:
        """A read by columns of bytes ``[start, size)``; ``whole`` reads what Arrow
        refused row by row."""
        # Arrow (~50 ms to import, ~40 MB of libraries) only for a large plain file.
        from syncd.sources.csv.arrow import ColumnsRead  # noqa: PLC0415

        mapper = self._mapper
        return ColumnsRead(
            fd=fd,
            start=start,
            size=size,
            delimiter=self._config.delimiter,
            width=width,
            label=self.label,
            mapper=mapper,
            build_row=build_row,
            **_field_indexes(mapper, indexes),
            whole=whole,
            path=self._config.path,
            in_child=in_child,
        )

    def _whole_from(
        self,
        fd: int,
        size: int,
        width: int,
        build_row: RowBuilder,
        line: int,
        *,
        start: int = 0,
        start_line: int = 1,
        encoding: str | None = None,
    ) -> Iterator[SourceUser | RecordProblem]:
        """The items of bytes ``[start, size)``, whose first line is ``start_line``, from
        ``line`` on (the lines before it skipped): the whole file by default."""
        with text_range(fd, start, size, encoding or self._encoding) as whole:
            for _ in islice(whole, line - start_line):
                pass
            yield from parse_rows(
                self._reader(whole),
                build_row,
                width=width,
                label=self.label,
                path=self._config.path,
                first_line=line,
            )

    def _reader(self, text: IO[str]) -> Reader:
        return csv.reader(text, delimiter=self._config.delimiter, strict=True)

    def _records(self, reader: Reader) -> Iterator[SourceUser | RecordProblem]:
        """The items of a whole file, from its header on."""
        width, build_row, _ = self._prepare(self._read_header(reader))
        yield from parse_rows(
            reader,
            build_row,
            width=width,
            label=self.label,
            path=self._config.path,
            first_line=reader.line_num + 1,
        )

    def _records_in_parts(
        self, fd: int, point: int, size: int, *, by_columns: bool = False
    ) -> Iterator[SourceUser | RecordProblem]:
        """The items of a file read in two parts at once (:mod:`syncd.sources.csv.parts`)."""
        with text_range(fd, 0, point, self._encoding) as first_part:
            reader = self._reader(first_part)
            try:
                found = self._read_header(reader)
            except SourceError:
                found = None  # a header the cut may have broken: the whole file tells
            if found is None:
                # No header before the cut (blank lines only, or a header that is no
                # header): the whole file is read, and says what is wrong with it.
                with text_range(fd, 0, size, self._encoding) as whole:
                    yield from self._records(self._reader(whole))
                return
            width, build_row, indexes = self._prepare(found)
            # A byte-order mark can only start the file, never its second part.
            second_encoding = (
                "utf-8" if codecs.lookup(self._encoding).name == "utf-8-sig" else self._encoding
            )

            def whole_from(line: int) -> Iterator[SourceUser | RecordProblem]:
                # The cut fell inside a quoted field: on with the whole file from the
                # record it cut, as a reader of the whole file would read it.
                return self._whole_from(fd, size, width, build_row, line)

            def second_by_columns(first_line: int, in_child: bool) -> Iterator[Piece]:
                # What Arrow refuses is read row by row, from that line of the second
                # part on.
                read = self._columns_read(
                    fd,
                    point,
                    size,
                    width,
                    build_row,
                    indexes,
                    lambda line: self._whole_from(
                        fd,
                        size,
                        width,
                        build_row,
                        line,
                        start=point,
                        start_line=first_line,
                        encoding=second_encoding,
                    ),
                    in_child=in_child,
                )
                return read.pieces(first_line=first_line)

            parts = PartsRead(
                fd=fd,
                point=point,
                size=size,
                encoding=second_encoding,
                declared_encoding=self._config.encoding,
                path=self._config.path,
                label=self.label,
                delimiter=self._config.delimiter,
                width=width,
                build_row=build_row,
                whole=whole_from,
                second_by_columns=second_by_columns if by_columns else None,
            )
            yield from parts.rows(reader, first_line=reader.line_num + 1)

    def _prepare(
        self, found: tuple[int, list[str]] | None
    ) -> tuple[int, RowBuilder, dict[str, int]]:
        """The row width, the row builder and the mapped columns' positions of the header
        ``found`` (its line, cells)."""
        path = self._config.path
        if found is None:
            # No header, nothing to check the mapping against: a truncated or failed
            # export, never "the directory is empty" (that is a header without rows).
            raise SourceError(
                f"CSV file {path} has no header (it is empty or holds only blank lines); "
                "a file with a header and no rows is an empty source"
            )
        header_line, header = found
        indexes = self._resolve_columns(header, header_line=header_line)
        # Everything that can be decided once is decided here, not per row.
        mapper = self._mapper
        build_row = mapper.row_builder(self.label, **_field_indexes(mapper, indexes))
        return len(header), build_row, indexes

    def _read_header(self, reader: Reader) -> tuple[int, list[str]] | None:
        """The first non-blank record (its line, its cleaned cells); None if there is none."""
        start = 1
        try:
            for row in reader:
                if not is_blank(row):
                    # The BOM is normally removed by utf-8-sig; strip it anyway for a
                    # file declared as another encoding that still starts with one.
                    return start, [cell.strip().lstrip("\ufeff").strip() for cell in row]
                start = reader.line_num + 1
        except csv.Error as error:
            raise SourceError(
                fatal_message(self._config.path, start, str(error), what="header")
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


def _strip(name: str | None) -> str | None:
    return None if name is None else name.strip()


def _names(names: Sequence[str]) -> str:
    """Quoted names, at most a few dozen (a header can have 100,000 columns)."""
    return bounded_list(names, show=lambda name: quoted(str(name)))


def _index_or_none(indexes: dict[str, int], column: str | None) -> int | None:
    return None if column is None else indexes[column]


def _field_indexes(mapper: RecordMapper, indexes: dict[str, int]) -> _FieldIndexes:
    """The position in a row of each field ``mapper`` maps (``indexes``: by column)."""
    return {
        "id_index": indexes[mapper.id_field],
        "tag_indexes": [indexes[column] for _, column in mapper.tag_fields],
        "active_from_index": _index_or_none(indexes, mapper.active_from_field),
        "active_to_index": _index_or_none(indexes, mapper.active_to_field),
        "enabled_index": _index_or_none(indexes, mapper.enabled_field),
    }


class _FieldIndexes(TypedDict):
    id_index: int
    tag_indexes: list[int]
    active_from_index: int | None
    active_to_index: int | None
    enabled_index: int | None


def _build(config: CsvSourceConfig, context: SourceContext) -> CsvSource:
    return CsvSource(config, lowercase=context.lowercase)


SOURCE_TYPE = SourceType(name="csv", config=CsvSourceConfig, build=_build)
"""The ``type: csv`` entry of the source registry."""
