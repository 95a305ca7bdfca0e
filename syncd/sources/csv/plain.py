"""Which CSV files are *plain*: read by columns (:mod:`syncd.sources.csv.arrow`).

A plain file is one where every line is one record and a record is its line split at
the delimiter, as the ``csv`` module splits it too: UTF-8, no double quote anywhere in
the file (so no quoted field, and no line break inside one), a one-byte ASCII
delimiter, the header on the first line, and Apache Arrow installed. Every other file
is read row by row.
"""

from __future__ import annotations

import importlib.util
import mmap
from collections.abc import Iterable
from dataclasses import dataclass

from syncd.mapping import MappedColumns
from syncd.model import RecordProblem, SourceUser

PLAIN_ENCODINGS = frozenset({"utf-8", "utf-8-sig"})
"""Arrow reads UTF-8 only (and skips its byte-order mark, which the header line holds)."""

COLUMNS_MIN_BYTES = 4 << 20
"""Smaller files are read row by row: importing Arrow (~50 ms) costs about what reading
60,000 rows by columns saves."""

COLUMNS_FIRST_PART_SHARE = 0.10
"""The share of a plain file's bytes this process reads row by row while a forked child
reads the rest by columns (:mod:`syncd.sources.csv.parts`): the child reads ~3x faster
a row, and this process still rebuilds the child's users."""

_QUOTE = b'"'


def plain_data_start(fd: int, size: int, encoding: str, delimiter: str) -> int | None:
    """The offset of the second line (the first after the header) if the file is plain;
    else None (the file is read row by row).

    ``encoding`` is the codec's name; the file is looked at through ``fd``, in place.
    """
    if encoding not in PLAIN_ENCODINGS or size == 0:
        return None
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n':
        return None
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
        if data.find(_QUOTE) >= 0:
            return None  # a quoted field may hold delimiters and line breaks: csv's job
        end = data.find(b"\n")
        carriage = data.find(b"\r", 0, size if end < 0 else end)
        if carriage >= 0:
            end = carriage  # the header ends at a CR (perhaps of a CRLF)
        if end < 0:
            return None  # a single line: the header alone
        start = end + 2 if data[end : end + 2] == b"\r\n" else end + 1
    if start >= size:
        return None
    if importlib.util.find_spec("pyarrow") is None:  # pragma: no cover - a dependency
        return None
    return start


@dataclass(frozen=True, slots=True)
class MappedBatch:
    """A batch of plainly valid records, as columns, the first on ``first_line``."""

    first_line: int
    columns: MappedColumns


Piece = MappedBatch | Iterable[SourceUser | RecordProblem]
"""A part of a read by columns: a batch as columns, or items."""
