"""The rows of a CSV file after its header: users, bad rows, and what ends a read.

Shared by the whole-file read and by the parts of a file read at once
(:mod:`syncd.sources.csv.parts`): the same loop, started at a given line.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from syncd.errors import SourceError
from syncd.model import Origin, RecordProblem, SourceUser

FIELD_LIMIT_ERROR = "field larger than field limit"
END_OF_DATA_ERROR = "unexpected end of data"

RowBuilder = Callable[[Sequence[str], int], SourceUser]
"""``(row, line) -> SourceUser``, raising ``ValueError`` for a bad row."""


class Reader(Protocol):
    """What this package uses of a ``csv.reader``."""

    @property
    def line_num(self) -> int: ...

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


class CutInQuotesError(Exception):
    """A part of a file ended inside a quoted field: the record starting at ``line``
    goes on after the part (the part was cut inside it)."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def parse_rows(
    reader: Reader,
    build_row: RowBuilder,
    *,
    width: int,
    label: str,
    path: Path,
    first_line: int,
    cut: bool = False,
) -> Iterator[SourceUser | RecordProblem]:
    """A :class:`SourceUser` per good row and a :class:`RecordProblem` per bad one.

    ``first_line`` is the line the reader's first record starts on. Raises
    :class:`SourceError` for what ends the read (a quote open at the end, a field
    over the size limit); with ``cut`` (a part that ends before the file does), a
    quote open at the end raises :class:`CutInQuotesError` instead.
    """
    # reader.line_num counts the lines this reader has read (a header, perhaps).
    offset = first_line - 1 - reader.line_num
    start = first_line  # the line the next record starts on
    while True:
        try:
            for row in reader:
                line = start
                start = reader.line_num + offset + 1
                if len(row) != width:
                    if is_blank(row):
                        continue  # blank lines (and ",,,," rows spreadsheets leave)
                    yield RecordProblem(
                        Origin(label, line),
                        f"expected {width} fields as in the header, found {len(row)}",
                    )
                    continue
                try:
                    yield build_row(row, line)
                except ValueError as error:
                    if not is_blank(row):
                        yield RecordProblem(Origin(label, line), str(error))
            return
        except csv.Error as error:
            line = start
            start = reader.line_num + offset + 1
            message = str(error)
            if cut and END_OF_DATA_ERROR in message:
                raise CutInQuotesError(line) from None
            if FIELD_LIMIT_ERROR in message or END_OF_DATA_ERROR in message:
                raise SourceError(fatal_message(path, line, message)) from None
            # strict quoting: the parser resumes on the next line, so only this
            # record is lost, and it is reported.
            yield RecordProblem(Origin(label, line), f"malformed CSV: {message}")


def is_blank(row: Sequence[str]) -> bool:
    """Every cell empty or spaces only."""
    return all(not cell or cell.isspace() for cell in row)


def fatal_message(path: Path, line: int, message: str, *, what: str = "record") -> str:
    """The message of a :class:`SourceError` for an error that ends the read."""
    if FIELD_LIMIT_ERROR in message:
        return (
            f"cannot read CSV file {path}: line {line}: a field of the {what} starting here "
            f"is larger than the limit of {csv.field_size_limit()} characters (is a quote "
            "left open?)"
        )
    if END_OF_DATA_ERROR in message:
        return (
            f"cannot read CSV file {path}: line {line}: the quoted field opened in the {what} "
            "starting here is never closed (the file ends inside it)"
        )
    return f"cannot read CSV file {path}: line {line}: malformed {what}: {message}"


def decode_reason(error: UnicodeError) -> str:
    """What a decode error says (UnicodeDecodeError for a bad byte; a plain UnicodeError
    from some codecs: utf-16 without a byte-order mark)."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) and reason else str(error)


def decode_error_message(path: Path, encoding: str, declared: str, reason: str) -> str:
    """The message of a :class:`SourceError` for bytes invalid in ``encoding``
    (``declared``: the encoding as the config names it; ``reason``: :func:`decode_reason`)."""
    line = locate_decode_error(path, encoding)
    where = f"line {line}" if line is not None else "somewhere"
    return (
        f"cannot read CSV file {path}: {where}: bytes that are not valid "
        f"{declared} ({reason}); set 'encoding' in the source "
        "config if the file uses another encoding"
    )


def locate_decode_error(path: Path, encoding: str) -> int | None:
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
