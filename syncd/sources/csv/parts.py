"""Reading a large CSV file in two parts at once: the second in a forked child process.

Mapping a row to a user costs ~2 µs of Python; the C parser ~1 µs. On a machine with a
second core that is idle while the file is read, the file is cut in two at the first
line feed after :data:`FIRST_PART_SHARE` of its bytes: this process reads the first
part, a child forked from it reads the second, and sends its users back as columns (a
few C-level lists per 65,536 users, rebuilt here without a Python call per field). The
users come out in the order, with the line numbers, problems and errors of a read of
the whole file:

* the cut is right after a line feed, so it is a record boundary unless that line feed
  is inside a quoted field. The first part then ends inside quotes; its records before
  the one cut are good, and the read goes on with the whole file from that record's
  line (the child's work is dropped);
* the child counts the lines before the cut as the ``csv`` module counts them (LF, CRLF
  or a lone CR each end one); this process checks the count against its own reader's
  before it takes the child's lines;
* a child that fails or dies is not trusted: the second part is then read here.

Only files of at least :data:`PARTS_MIN_BYTES` are cut, only in encodings where a
0x0A byte is always a line feed (UTF-8, ASCII, Latin-1, cp1252, ISO 8859-15), and only
from a process without other threads: a fork copies one thread, and a lock another
thread held would stay locked in the child. The job lock's heartbeat, which runs
through every ``syncd apply``, steps aside for the fork (:mod:`syncd.forking`); a
daemon's threads do not, so there the file is read whole (as it is while a progress
display already runs: on a terminal, it starts with the first write). So is a file on
a machine (or in a container) with less than two CPUs to use: two readers on one CPU
take turns, and the second part costs a merge.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import os
import signal
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import chain, islice, repeat
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

import msgspec
import structlog

from syncd import forking
from syncd.cpus import usable_cpus
from syncd.errors import SourceError
from syncd.mapping import MappedColumns
from syncd.model import Origin, RecordProblem, SourceUser, Tags, make_tags
from syncd.sources.csv.plain import MappedBatch, Piece
from syncd.sources.csv.rows import (
    CutInQuotesError,
    Reader,
    RowBuilder,
    decode_error_message,
    decode_reason,
    parse_rows,
)

PARTS_MIN_BYTES = 4 << 20
"""Files smaller than this (about 60,000 rows of a few columns) are read whole: the fork
and the columns cost about as much as the second core saves."""

FIRST_PART_SHARE = 0.44
"""The share of the file's bytes read here; the child reads the rest. Less than half:
after its own part this process still rebuilds and merges the child's users (~1.2 µs a
user), so with halves it worked ~0.6 s alone after the child was done. With ~3 µs a
user of its own part, ~3.3 µs a user of the child's (which also encodes the columns)
and the last frame merged after the child ends, the two end together near 0.41-0.44.
Measured, a million-row file from the fork to the last user: halves 2.14-2.31 s; 0.44
1.96-1.98 s (and one run of 2.48 s, the machine's); 0.42 1.89-2.15 s (and one of
2.83 s); at 0.40 the child ends last (2.03-2.06 s). 0.44, the steadier of the two
best: a share too small costs more than one too large, as the child is the costlier
reader."""

FRAME_USERS = 65_536
"""Users per message from the child: the columns in flight stay a few MB."""

_CUT_ENCODINGS = frozenset(
    {"utf-8", "utf-8-sig", "ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"}
)
_LENGTH = struct.Struct("<Q")
log = structlog.get_logger(__name__)
_BLOCK = 1 << 20


def cut_point(
    fd: int,
    size: int,
    encoding: str,
    *,
    min_bytes: int = PARTS_MIN_BYTES,
    share: float = FIRST_PART_SHARE,
) -> int | None:
    """Where the second part starts (just after a line feed after ``share`` of the
    bytes), or None to read the file whole: too small, an encoding a cut could split, no
    line feed after the share, no second CPU, or no way to fork a reader."""
    if size < max(min_bytes, 2) or encoding not in _CUT_ENCODINGS:
        return None
    # Two readers on one CPU take turns, and the second costs a merge: slower.
    if usable_cpus() < 2:
        return None
    if not forking.could_fork():
        return None
    position = int(size * share)
    while position < size:
        block = os.pread(fd, _BLOCK, position)
        if not block:
            return None
        found = block.find(b"\n")
        if found >= 0:
            point = position + found + 1
            return point if point < size else None
        position += len(block)
    return None


class _Range(io.RawIOBase):
    """Bytes ``[start, end)`` of an open file, read with ``pread`` (the file's own offset
    is left alone, and the descriptor is not closed with the stream)."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        super().__init__()
        self._fd = fd
        self._position = start
        self._end = end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._end - self._position)
        if count <= 0:
            return 0
        data = os.pread(self._fd, count, self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def byte_range(fd: int, start: int, end: int) -> io.BufferedReader:
    """Bytes ``[start, end)`` of ``fd`` as a binary stream (the descriptor stays open)."""
    return io.BufferedReader(_Range(fd, start, end), _BLOCK)


def text_range(fd: int, start: int, end: int, encoding: str) -> IO[str]:
    """Bytes ``[start, end)`` of ``fd`` as text, line breaks as the file has them."""
    return io.TextIOWrapper(byte_range(fd, start, end), encoding=encoding, newline="")


def count_lines(fd: int, end: int) -> int:
    """The lines in bytes ``[0, end)`` as the ``csv`` module counts them (LF, CRLF or a
    lone CR each end one); ``end`` is just after a line feed."""
    lines = 0
    position = 0
    carriage = False  # the block before ended with CR
    while position < end:
        block = os.pread(fd, min(_BLOCK, end - position), position)
        if not block:
            break
        joined = block.count(b"\r\n") + (1 if carriage and block[:1] == b"\n" else 0)
        lines += block.count(b"\n") + block.count(b"\r") - joined
        carriage = block[-1:] == b"\r"
        position += len(block)
    return lines


class _Frame(msgspec.Struct, array_like=True, gc=False):
    """Users of the second part as columns, and what ended it (in the last frame)."""

    names: list[str]
    lines: list[int]
    new_tag_sets: list[list[tuple[str, str]]]  # appended to the table of earlier frames
    tag_index: list[int]
    new_days: list[int]  # ordinals (0: no date), appended to the table of earlier frames
    starts: list[int]  # indexes in the table of days
    ends: list[int]
    enabled: bytes
    problems: list[tuple[int, int, str]]  # (users of this frame before it, line, message)
    lines_before: int  # the lines before the cut, as the child counted them
    last: bool = False
    end: tuple[str, str] | None = None  # ("source" | "decode" | "os", message)


@dataclass(frozen=True, slots=True)
class PartsRead:
    """One read of a file in two parts; everything the second part's reader needs."""

    fd: int
    point: int
    size: int
    encoding: str
    """How to decode the second part (no byte-order mark can start it)."""
    declared_encoding: str
    path: Path
    label: str
    delimiter: str
    width: int
    build_row: RowBuilder
    whole: Callable[[int], Iterator[SourceUser | RecordProblem]]
    """Read the whole file from a line on (when the cut fell inside a quoted field)."""
    second_by_columns: Callable[[int, bool], Iterator[Piece]] | None = None
    """For a plain file: the read of the second part by columns (its first record on the
    given line; by the child if the flag says so; :mod:`syncd.sources.csv.arrow`),
    instead of row by row."""

    def rows(self, first: Reader, first_line: int) -> Iterator[SourceUser | RecordProblem]:
        """Every item of the file: the first part from ``first`` (a reader of bytes
        ``[0, point)`` past its header, whose next record starts on ``first_line``),
        then the second part's, from the child."""
        child = _Child.fork(self)
        try:
            log.debug(
                "csv.read_in_parts",
                path=str(self.path),
                cut_at_byte=self.point,
                second_part="child" if child.started else "here",
            )
            try:
                yield from parse_rows(
                    first,
                    self.build_row,
                    width=self.width,
                    label=self.label,
                    path=self.path,
                    first_line=first_line,
                    cut=True,
                )
            except CutInQuotesError as cut:
                child.stop()
                yield from self.whole(cut.line)
                return
            # A list per frame, chained in C: no generator per item between them.
            yield from chain.from_iterable(
                self._second(child.frames(), lines_before=first.line_num)
            )
        finally:
            child.stop()

    def _second(
        self, frames: Iterator[_Frame] | None, *, lines_before: int
    ) -> Iterator[Iterable[SourceUser | RecordProblem]]:
        """The second part's items, a frame's at a time, from the child's frames; from a
        reader here if there is no child, if its count of lines differs from
        ``lines_before`` (this process's), or from where it stopped if it died half-way."""
        table: list[Tags] = []
        days: list[date | None] = [None]
        given = 0  # items of the second part already yielded
        for frame in frames if frames is not None else ():
            if frame.lines_before != lines_before:
                break  # nothing taken yet: the count is in every frame, checked first
            table += map(make_tags, map(_pairs, frame.new_tag_sets))
            days += map(date.fromordinal, frame.new_days)
            items = _items(frame, table, days, self.label)
            yield items
            given += len(items)
            if frame.last:
                if frame.end is not None:
                    raise SourceError(self._end_message(*frame.end))
                return
        # Read here the items the child did not give: the same reader gives the same
        # items in the same order, so the first `given` are the ones already yielded.
        yield islice(self._second_here(lines_before), given, None)

    def _second_here(self, lines_before: int) -> Iterator[SourceUser | RecordProblem]:
        if self.second_by_columns is not None:
            # No child (a fork refused), or not one to trust: still by columns, here.
            pieces = self.second_by_columns(lines_before + 1, False)
            try:
                for piece in pieces:
                    if isinstance(piece, MappedBatch):
                        yield from piece.columns.users(self.label, piece.first_line)
                    else:
                        yield from piece
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()  # an abandoned read ends its reader's thread at once
            return
        with text_range(self.fd, self.point, self.size, self.encoding) as text:
            reader = csv.reader(text, delimiter=self.delimiter, strict=True)
            yield from parse_rows(
                reader,
                self.build_row,
                width=self.width,
                label=self.label,
                path=self.path,
                first_line=lines_before + 1,
            )

    def _end_message(self, kind: str, message: str) -> str:
        if kind == "decode":
            return decode_error_message(self.path, self.encoding, self.declared_encoding, message)
        if kind == "os":
            return f"cannot read CSV file {self.path}: {message}"
        return message


def _pairs(pairs: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in pairs]


def _items(
    frame: _Frame, table: list[Tags], days: list[date | None], label: str
) -> list[SourceUser | RecordProblem]:
    """A frame's users rebuilt (one C-level map per column) and its problems, in order."""
    users: list[SourceUser | RecordProblem] = list(
        map(
            SourceUser,
            frame.names,
            map(table.__getitem__, frame.tag_index),
            repeat(label),
            frame.lines,
            map(days.__getitem__, frame.starts),
            map(days.__getitem__, frame.ends),
            map(bool, frame.enabled),
        )
    )
    if not frame.problems:
        return users
    items: list[SourceUser | RecordProblem] = []
    done = 0
    for before, line, message in frame.problems:
        items += users[done:before]
        done = before
        items.append(RecordProblem(Origin(label, line), message))
    items += users[done:]
    return items


class _Child:
    """The forked reader of the second part, seen from this process.

    The child writes its frames to a spool (an anonymous memory file, else an unlinked
    temporary file) and their lengths to a pipe: it never waits for this process, busy
    with the first part, to read a frame, and the frames it sent before this process
    reads them are not in this process's heap. A memory file still counts against the
    container's memory until the read ends: about 35 bytes per user of the second part
    (35 MB for a million-row file), as it is not trimmed while it is read.
    """

    def __init__(self, pid: int | None, tokens: IO[bytes] | None, spool: IO[bytes] | None) -> None:
        self._pid = pid
        self._tokens = tokens
        self._spool = spool

    @classmethod
    def fork(cls, read: PartsRead) -> _Child:
        """Start the child (a child that cannot be started is no child: the second part
        is then read here)."""
        try:
            spool = _spool()
        except OSError:
            return cls(None, None, None)
        try:
            readable, writable = os.pipe()
        except OSError:
            spool.close()
            return cls(None, None, None)
        try:
            # The job lock's heartbeat steps aside for the fork; any other thread (a
            # daemon's, a progress display already running) means no fork at all.
            pid = forking.fork()
        except OSError:
            pid = None
        if pid is None:
            os.close(readable)
            os.close(writable)
            spool.close()
            return cls(None, None, None)
        if pid == 0:  # pragma: no cover - the child; its work is checked through the parent
            os.close(readable)
            _child_main(read, writable, spool.fileno())
        os.close(writable)
        return cls(pid, os.fdopen(readable, "rb"), spool)

    @property
    def started(self) -> bool:
        """True if a child reads the second part (else this process does)."""
        return self._pid is not None

    def frames(self) -> Iterator[_Frame] | None:
        """The child's frames as they come (None: there is no child)."""
        if self._tokens is None or self._spool is None:
            return None
        return self._read_frames(self._tokens, self._spool.fileno())

    @staticmethod
    def _read_frames(tokens: IO[bytes], spool: int) -> Iterator[_Frame]:
        decoder = msgspec.msgpack.Decoder(_Frame)
        offset = 0
        while True:
            token = tokens.read(_LENGTH.size)  # waits for the child's next frame
            if len(token) != _LENGTH.size:
                return  # the child ended (or died) here
            (length,) = _LENGTH.unpack(token)
            body = os.pread(spool, length, offset)
            offset += length
            if len(body) != length:
                return
            try:
                frame = decoder.decode(body)
            except msgspec.DecodeError:
                return
            yield frame
            if frame.last:
                return

    def stop(self) -> None:
        """Kill the child if it still runs, reap it, close the pipe and the spool
        (idempotent)."""
        for stream in (self._tokens, self._spool):
            if stream is not None:
                stream.close()
        self._tokens = self._spool = None
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None


def _spool() -> IO[bytes]:
    """An anonymous file for the child's frames: in memory where Linux offers one."""
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):
            return os.fdopen(os.memfd_create("syncd-csv-part", os.MFD_CLOEXEC), "w+b")
    return tempfile.TemporaryFile()


def _child_main(read: PartsRead, tokens: int, spool: int) -> None:  # pragma: no cover
    """In the child: read the second part, spool it as frames, and leave without
    running any of the parent's clean-up (``os._exit``)."""
    code = 1
    try:
        gc.disable()  # a short-lived process that makes no cycles
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        encode = msgspec.msgpack.Encoder().encode
        for frame in _second_part_frames(read):
            body = encode(frame)
            left = memoryview(body)
            while left:
                left = left[os.write(spool, left) :]
            # Only then is the frame announced: 8 bytes, which never fill the pipe.
            os.write(tokens, _LENGTH.pack(len(body)))
        code = 0
    finally:
        os._exit(code)


def _second_part_frames(read: PartsRead) -> Iterator[_Frame]:
    """The second part as frames of about :data:`FRAME_USERS` users."""
    lines_before = count_lines(read.fd, read.point)
    columns = _Columns(lines_before)
    end: tuple[str, str] | None = None
    try:
        with contextlib.ExitStack() as stack:
            pieces: Iterable[Piece]
            if read.second_by_columns is not None:
                # Arrow is imported here, in the child: the parent never holds it.
                pieces = read.second_by_columns(lines_before + 1, True)
            else:
                text = stack.enter_context(
                    text_range(read.fd, read.point, read.size, read.encoding)
                )
                rows = parse_rows(
                    csv.reader(text, delimiter=read.delimiter, strict=True),
                    read.build_row,
                    width=read.width,
                    label=read.label,
                    path=read.path,
                    first_line=lines_before + 1,
                )
                pieces = (rows,)
            for piece in pieces:
                if isinstance(piece, MappedBatch):
                    # Columns go into the frame as columns: no user objects here.
                    columns.add_mapped(piece.columns, piece.first_line)
                    if columns.count() >= FRAME_USERS:
                        yield columns.frame()
                    continue
                for item in piece:
                    if type(item) is SourceUser:
                        columns.users.append(item)
                        if columns.count() >= FRAME_USERS:
                            yield columns.frame()
                    else:
                        assert isinstance(item, RecordProblem)
                        columns.problems.append(
                            (columns.count(), item.origin.line or 0, item.message)
                        )
    except SourceError as error:
        end = ("source", str(error))
    except UnicodeError as error:
        end = ("decode", decode_reason(error))
    except OSError as error:
        end = ("os", error.strerror or str(error))
    yield columns.frame(last=True, end=end)


_NAME = attrgetter("end_user")
_TAGS = attrgetter("tags")
_START = attrgetter("active_from")
_END = attrgetter("active_to")
_ENABLED = attrgetter("enabled")
_LINE = attrgetter("at")


class _Columns:
    """Users gathered for the next frame, as columns; tag sets and days as tables sent
    once (each frame sends the entries new since the one before)."""

    def __init__(self, lines_before: int) -> None:
        self.lines_before = lines_before
        self.users: list[SourceUser] = []
        """Users added one by one, not yet in the columns (they go in as a batch)."""
        self.problems: list[tuple[int, int, str]] = []
        self._names: list[str] = []
        self._lines: list[int] = []
        self._tag_index: list[int] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._enabled = bytearray()
        self._new_tag_sets: list[Tags] = []
        self._new_days: list[date] = []
        # id() of a tag set's shared tuple / of a date -> its index in the tables the
        # frames send (days: 0 is "no date"). Every object indexed is kept, so that its
        # id cannot be reused by another while the read lasts.
        self._tag_ids: dict[int, int] = {}
        self._day_ids: dict[int, int] = {id(None): 0}
        self._kept: list[object] = []

    def count(self) -> int:
        """The users of the next frame so far."""
        return len(self._names) + len(self.users)

    def add_mapped(self, mapped: MappedColumns, first_line: int) -> None:
        """Add a batch of users given as columns, the first on ``first_line``."""
        self._flush_users()
        count = len(mapped.end_users)
        self._names += mapped.end_users
        self._lines += range(first_line, first_line + count)
        if mapped.tags is None:
            self._tag_index += repeat(self._tag_set(()), count)
        else:
            tag_sets = [self._tag_set(tags) for tags in mapped.tags.keys]
            self._tag_index += map(tag_sets.__getitem__, mapped.tags.rows)
        if mapped.dates is None:
            self._starts += repeat(0, count)
            self._ends += repeat(0, count)
        else:
            starts = [self._day(start) for start, _ in mapped.dates.keys]
            ends = [self._day(end) for _, end in mapped.dates.keys]
            self._starts += map(starts.__getitem__, mapped.dates.rows)
            self._ends += map(ends.__getitem__, mapped.dates.rows)
        if mapped.enabled is None:
            self._enabled += b"\x01" * count
        else:
            flags = [int(flag) for flag in mapped.enabled.keys]
            self._enabled += bytes(map(flags.__getitem__, mapped.enabled.rows))

    def frame(self, *, last: bool = False, end: tuple[str, str] | None = None) -> _Frame:
        """The frame of what was added since the last one."""
        self._flush_users()
        frame = _Frame(
            names=self._names,
            lines=self._lines,
            new_tag_sets=[list(pairs) for pairs in self._new_tag_sets],
            tag_index=self._tag_index,
            new_days=[day.toordinal() for day in self._new_days],
            starts=self._starts,
            ends=self._ends,
            enabled=bytes(self._enabled),
            problems=self.problems,
            lines_before=self.lines_before,
            last=last,
            end=end,
        )
        self._names, self._lines, self._tag_index = [], [], []
        self._starts, self._ends, self._enabled = [], [], bytearray()
        self._new_tag_sets, self._new_days, self.problems = [], [], []
        return frame

    def _flush_users(self) -> None:
        """Move the users added one by one into the columns (one C-level pass each)."""
        users, self.users = self.users, []
        if not users:
            return
        tags = list(map(_TAGS, users))
        self._register(tags, self._tag_ids, self._new_tag_sets)
        starts = list(map(_START, users))
        ends = list(map(_END, users))
        self._register(starts + ends, self._day_ids, self._new_days)
        self._names += map(_NAME, users)
        self._lines += map(_LINE, users)
        self._tag_index += map(self._tag_ids.__getitem__, map(id, tags))
        self._starts += map(self._day_ids.__getitem__, map(id, starts))
        self._ends += map(self._day_ids.__getitem__, map(id, ends))
        self._enabled += bytes(map(int, map(_ENABLED, users)))

    def _tag_set(self, tags: Tags) -> int:
        """The index of ``tags`` in the table of tag sets (added if new)."""
        index = self._tag_ids.get(id(tags))
        if index is None:
            self._register([tags], self._tag_ids, self._new_tag_sets)
            index = self._tag_ids[id(tags)]
        return index

    def _day(self, day: date | None) -> int:
        """The index of ``day`` in the table of days (0: no date; added if new)."""
        index = self._day_ids.get(id(day))
        if index is None:
            self._register([day], self._day_ids, self._new_days)
            index = self._day_ids[id(day)]
        return index

    def _register(self, values: list[Any], ids: dict[int, int], new: list[Any]) -> None:
        """Give the values not seen before the next indexes, and add them to ``new``
        (the table entries the next frame sends)."""
        # One C-level pass over the users' values; the loop runs over distinct ones only.
        for key, value in dict(zip(map(id, values), values, strict=True)).items():
            if key not in ids:
                ids[key] = len(ids)
                if value is not None:
                    new.append(value)
                self._kept.append(value)
