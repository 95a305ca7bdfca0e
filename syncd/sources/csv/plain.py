"""Which CSV files are *plain*: read by columns (:mod:`syncd.sources.csv.arrow`).

A plain file is one where every line is one record and a record is its line split at
the delimiter, as the ``csv`` module splits it too: UTF-8, no double quote anywhere in
the file (so no quoted field, and no line break inside one), a one-character ASCII
delimiter (not a quote, a line break or NUL), the header on the first line, and
Apache Arrow installed. Two more bytes Arrow reads otherwise than ``csv`` keep a file
off the list: NUL anywhere, and a byte-order mark anywhere but at the very start.
Every other file is read row by row.
"""

from __future__ import annotations

import codecs
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass

from syncd.mapping import MappedColumns
from syncd.model import RecordProblem, SourceUser

PLAIN_ENCODINGS = frozenset({"utf-8", "utf-8-sig"})
"""Arrow reads UTF-8 only (and skips its byte-order mark, which the header line holds)."""

COLUMNS_MIN_BYTES = 8 << 20
"""Smaller files are read row by row: importing Arrow and starting its reader cost
about what reading some 110,000 rows by columns saves (measured with
``bench/csv_read.py``: at 7.5 MB the two reads take the same time, at 15 MB the read
by columns 0.07 s less)."""

COLUMNS_IN_PARTS_MIN_BYTES = 16 << 20
"""Where the file is read in two parts at once, smaller files have their second part
read row by row too: a forked child that imports Arrow first catches up with one that
reads rows at about 16 MB (some 220,000 rows of the benchmark's columns; at 7.5 MB the
child by columns made the read 0.05 s slower, at 26 MB 0.11 s faster)."""

COLUMNS_FIRST_PART_SHARE = 0.10
"""The share of a plain file's bytes this process reads row by row while a forked child
reads the rest by columns (:mod:`syncd.sources.csv.parts`): the child reads ~3x faster
a row, and this process still rebuilds the child's users."""

_QUOTE = b'"'
_BOM = "\ufeff".encode()
_BOM_LEAD = _BOM[:1]
_SCAN_BYTES = 4 << 20
_TEXT_BLOCK = 8192
"""What a text file object decodes at a time (``io.TextIOWrapper``'s chunk)."""


def plain_data_start(fd: int, size: int, encoding: str, delimiter: str) -> int | None:
    """The offset of the second line (the first after the header) if the file is plain;
    else None (the file is read row by row).

    ``encoding`` is the codec's name; the file is read through ``fd`` with ``pread`` (a
    memory map would kill the process with SIGBUS should the file shrink meanwhile).
    """
    if encoding not in PLAIN_ENCODINGS or size == 0:
        return None
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n\x00':
        return None
    start: int | None = None
    position = 0
    tail = b""  # the last bytes of the block before: a mark may straddle two blocks
    while position < size:
        block = os.pread(fd, min(_SCAN_BYTES, size - position), position)
        if not block:
            break  # the file shrank: the read's own check of its size says so
        if _QUOTE in block or b"\x00" in block:
            # A quoted field may hold delimiters and line breaks; Arrow's parser misreads
            # a NUL before a delimiter or a line break: csv's job, both.
            return None
        # A byte-order mark where Arrow starts reading (after the header, after a cut)
        # would be dropped by it; only the one at the file's first byte is the header's.
        # Its first byte is looked for first: one memchr, where the three-byte search
        # took ~60 ms of a 75 MB file (an ASCII file has no 0xEF at all).
        if (_BOM_LEAD in block or _BOM_LEAD in tail) and _mark_past_start(tail, block, position):
            return None
        if start is None:
            start = _after_first_line(fd, block, position)
        tail = (tail + block)[-(len(_BOM) - 1) :]
        position += len(block)
    if start is None or start >= size:
        return None  # a single line: the header alone
    if not _decodes(fd, start):
        # The row reader decodes a block of text before it reads the header, so a bad
        # byte near the start is the error it reports, before any about the header.
        return None
    if importlib.util.find_spec("pyarrow") is None:  # pragma: no cover - a dependency
        return None
    return start


def _mark_past_start(tail: bytes, block: bytes, position: int) -> bool:
    """True if a byte-order mark starts past the file's first byte in ``tail + block``
    (``block``: the file's bytes from ``position``; ``tail``: the ones just before it,
    where a mark may have begun)."""
    window_offset = position - len(tail)
    return (tail + block).find(_BOM, max(0, 1 - window_offset)) >= 0


def _decodes(fd: int, start: int) -> bool:
    """True if the text blocks the row reader decodes to read the header (up to
    ``start``, in blocks of :data:`_TEXT_BLOCK`) are valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(os.pread(fd, (start // _TEXT_BLOCK + 1) * _TEXT_BLOCK, 0))
    except UnicodeDecodeError:
        return False
    return True


def _after_first_line(fd: int, block: bytes, offset: int) -> int | None:
    """Where the line after the file's first one starts, if its end is in ``block``
    (the bytes of the file from ``offset``, no line end before them)."""
    feed = block.find(b"\n")
    carriage = block.find(b"\r", 0, len(block) if feed < 0 else feed)
    if carriage >= 0:  # a CR ends the line, with the LF after it if there is one
        return offset + carriage + (2 if os.pread(fd, 1, offset + carriage + 1) == b"\n" else 1)
    return None if feed < 0 else offset + feed + 1


@dataclass(frozen=True, slots=True)
class MappedBatch:
    """A batch of plainly valid records, as columns, the first on ``first_line``."""

    first_line: int
    columns: MappedColumns


Piece = MappedBatch | Iterable[SourceUser | RecordProblem]
"""A part of a read by columns: a batch as columns, or items."""
