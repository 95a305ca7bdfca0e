"""Reading a large plain CSV file by columns, with Apache Arrow's CSV parser.

Python's ``csv`` module parses a row in ~0.85 µs and mapping it to a user costs ~2 µs
more, one Python call per field; a million-row export took ~2 s on two cores. Arrow
parses the same file in C++ in ~0.2 s, into columns; each column is then checked in a
few C-level passes (every id printable Latin-1, every distinct tag combination, date
and enabled value once: :meth:`~syncd.mapping.RecordMapper.map_columns`).

Only a plain file (:mod:`syncd.sources.csv.plain`: each line one record, no quotes) is
read this way; every other file row by row (:mod:`syncd.sources.csv.parts`). The users,
line numbers and problems are those of the row-by-row read, item for item (a test holds
the two equal on generated files):

* a batch whose records are not all plainly valid is mapped row by row, with the same
  row builder, so every problem is the one the row-by-row read reports;
* what Arrow refuses (a row with another number of fields, bytes that are not UTF-8)
  and a field over the ``csv`` module's size limit hand the rest of the file, from the
  first line of that batch, to the row-by-row read, which reports it as it would have
  (every line before is one record, so the line is known).

Arrow parses on a thread pool of its own (native threads, which stay for the life of
the process): a process that has read a file this way no longer forks a reader for a
second part (:func:`syncd.forking.could_fork` counts every thread), and keeps Arrow's
libraries (~40 MB). Its input is read ahead by some dozens of blocks, so a process that
goes on living (the daemon) reads with smaller blocks than a forked child.
"""

from __future__ import annotations

import contextlib
import csv
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import pyarrow  # type: ignore[import-untyped]
import pyarrow.compute  # type: ignore[import-untyped]
import pyarrow.csv  # type: ignore[import-untyped]

from syncd.mapping import Grouped, RecordColumns, RecordMapper
from syncd.model import RecordProblem, SourceUser
from syncd.sources.csv.parts import byte_range
from syncd.sources.csv.plain import MappedBatch, Piece
from syncd.sources.csv.rows import RowBuilder, parse_rows

BLOCK_BYTES = 4 << 20
"""Bytes Arrow parses at a time in a forked child (some 50,000 rows a batch): read ahead
by some dozens of blocks, ~120 MB for a 75 MB file, freed as the child ends."""

BLOCK_BYTES_HERE = 1 << 20
"""Bytes Arrow parses at a time in a process that goes on living: ~50 MB read ahead,
for ~15% more time than 4 MB blocks (1.52 s against 1.33 s for a million rows)."""

_HAND_WAIT_S = 0.1
"""How often the prefetching thread, waiting for room in the queue, looks for a stop."""


@dataclass(frozen=True, slots=True)
class ColumnsRead:
    """One read of a plain file by columns, from the line after the header on
    (:func:`~syncd.sources.csv.plain.plain_data_start`)."""

    fd: int
    start: int
    size: int
    delimiter: str
    width: int
    label: str
    mapper: RecordMapper
    build_row: RowBuilder
    id_index: int
    tag_indexes: Sequence[int]
    active_from_index: int | None
    active_to_index: int | None
    enabled_index: int | None
    whole: Callable[[int], Iterator[SourceUser | RecordProblem]]
    """Read the file row by row from a line on (what Arrow or the size limit refused)."""
    path: Path
    in_child: bool = False
    """Read by a forked child, which ends with the read (larger blocks)."""

    def rows(self, first_line: int) -> ItemsRead:
        """Every item after the header, whose record starts on ``first_line``."""
        return ItemsRead(self.label, self.pieces(first_line))

    def pieces(self, first_line: int) -> Generator[Piece, None, None]:
        """The read in order: a batch of plainly valid records as columns, any other
        batch as its items, and at the end (if Arrow refused something) the items of the
        row-by-row read from there."""
        names = [f"c{index}" for index in range(self.width)]
        try:
            reader = pyarrow.csv.open_csv(
                pyarrow.PythonFile(byte_range(self.fd, self.start, self.size), mode="r"),
                read_options=pyarrow.csv.ReadOptions(
                    column_names=names,
                    block_size=BLOCK_BYTES if self.in_child else BLOCK_BYTES_HERE,
                    use_threads=True,
                ),
                parse_options=pyarrow.csv.ParseOptions(
                    delimiter=self.delimiter,
                    quote_char=False,
                    double_quote=False,
                    escape_char=False,
                    newlines_in_values=False,
                    ignore_empty_lines=False,  # an empty line is a record, as csv counts it
                ),
                convert_options=pyarrow.csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pyarrow.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pyarrow.ArrowInvalid:  # the first block is parsed at once
            yield self.whole(first_line)
            return
        line = first_line
        limit = csv.field_size_limit()
        batches = _prefetched(reader)
        try:
            for batch in batches:
                count = batch.num_rows
                if not count:
                    continue
                if _longest_field(batch) > limit:
                    break  # perhaps over csv's limit (which counts characters): see below
                yield self._batch_piece(batch, line)
                line += count
            else:
                return
        except (pyarrow.ArrowInvalid, _MisreadError):
            pass  # a row of another width, bytes that are not UTF-8: see below
        finally:
            batches.close()  # its thread ends before the reader closes
            reader.close()
            # Arrow's allocator keeps freed blocks for reuse; a daemon reads again only
            # minutes later, so they go back to the system now.
            pyarrow.default_memory_pool().release_unused()
        # The row reader goes on from this batch's first line, and reports what ends
        # the columns here as it would have (every line before is one record).
        yield self.whole(line)

    def _batch_piece(self, batch: Any, line: int) -> MappedBatch | list[SourceUser | RecordProblem]:
        """One batch, its first record on ``line``: as columns, or as its items."""
        column = batch.column
        mapped = self.mapper.map_columns(
            RecordColumns(
                ids=_strings(column(self.id_index)),
                tags=_grouped([column(i) for i in self.tag_indexes]) if self.tag_indexes else None,
                dates=_dates(column, self.active_from_index, self.active_to_index),
                enabled=None
                if self.enabled_index is None
                else _single(_grouped([column(self.enabled_index)])),
            ),
        )
        if mapped is not None:
            return MappedBatch(line, mapped)
        # Not every record is plainly valid: row by row, for the exact problem of each,
        # through the loop of the row reader (one line a row).
        rows = _BatchRows(zip(*map(_strings, batch.columns), strict=True))
        return list(
            parse_rows(
                rows,
                self.build_row,
                width=self.width,
                label=self.label,
                path=self.path,
                first_line=line,
            )
        )


class ItemsRead:
    """The items of a read by columns (:meth:`ColumnsRead.rows`): iterated in C, a
    batch's list at a time (a generator per item would cost more than mapping it);
    :meth:`close` ends the read at once (its thread, Arrow's reader)."""

    __slots__ = ("_items", "_pieces")

    def __init__(self, label: str, pieces: Generator[Piece, None, None]) -> None:
        self._pieces = pieces
        self._items = chain.from_iterable(
            piece.columns.users(label, piece.first_line)
            if isinstance(piece, MappedBatch)
            else piece
            for piece in pieces
        )

    def __iter__(self) -> Iterator[SourceUser | RecordProblem]:
        return self._items

    def close(self) -> None:
        """Stop the read (idempotent)."""
        self._pieces.close()


class _BatchRows:
    """The rows of a batch as a reader of one line a row (for :func:`parse_rows`)."""

    def __init__(self, rows: Iterable[tuple[str, ...]]) -> None:
        self._rows = iter(rows)
        self.line_num = 0

    def __iter__(self) -> _BatchRows:
        return self

    def __next__(self) -> list[str]:
        row = list(next(self._rows))
        self.line_num += 1
        return row


class _MisreadError(Exception):
    """Arrow gave a column that is not its rows' values (a line feed inside a field)."""


_END = object()
"""What the prefetching thread puts in the queue after the last batch."""


def _prefetched(reader: Any) -> Generator[Any, None, None]:
    """The batches of ``reader``, parsed on a thread of their own while this one maps
    the one before (Arrow parses without the GIL, and its streaming reader parses a
    batch only when asked); an error of the reader is raised here, in its turn."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand(item: object) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_HAND_WAIT_S)
                return
            except queue.Full:
                continue

    def fetch() -> None:
        try:
            while not stop.is_set():
                hand(reader.read_next_batch())
        except StopIteration:
            hand(_END)
        except BaseException as error:  # raised on the reading thread, below
            hand(error)

    thread = threading.Thread(target=fetch, name="syncd-csv-columns", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the reader abandoned the read: the thread ends after its batch
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get_nowait()  # room for a batch it waits to hand over
            thread.join(_HAND_WAIT_S / 20)


def _longest_field(batch: Any) -> int:
    """The most bytes any field of ``batch`` holds."""
    longest = 0
    for column in batch.columns:
        value = pyarrow.compute.max(pyarrow.compute.binary_length(column)).as_py()
        longest = max(longest, value or 0)
    return longest


def _strings(array: Any) -> list[str]:
    """The values of a string column as Python strings, in one C-level split: joined by
    line feeds, which no field of a plain file holds (a line break ends its record)."""
    if not len(array):
        return []
    one_list = pyarrow.ListArray.from_arrays(pyarrow.array([0, len(array)], pyarrow.int32()), array)
    joined: str = pyarrow.compute.binary_join(one_list, "\n")[0].as_py()
    values = joined.split("\n")
    if len(values) != len(array):
        raise _MisreadError  # the row reader takes over, from this batch on
    return values


def _ints(array: Any) -> list[int]:
    """The values of an int32 column without nulls as Python ints (through a memoryview
    of its buffer: a tenth of ``to_pylist``'s time)."""
    values = memoryview(array.buffers()[1]).cast("i")
    result: list[int] = values[array.offset : array.offset + len(array)].tolist()
    return result


def _grouped(columns: list[Any]) -> Grouped[tuple[str, ...]]:
    """The distinct combinations of ``columns``' values and each row's index in them."""
    encoded = pyarrow.compute.dictionary_encode(columns[0])
    keys: list[tuple[str, ...]] = [(value,) for value in encoded.dictionary.to_pylist()]
    codes = encoded.indices
    for column in columns[1:]:
        more = pyarrow.compute.dictionary_encode(column)
        values: list[str] = more.dictionary.to_pylist()
        span = len(values)
        # Both factors are at most the batch's row count: no overflow in 64 bits.
        combined = pyarrow.compute.add(
            pyarrow.compute.multiply(codes.cast(pyarrow.int64()), span),
            more.indices.cast(pyarrow.int64()),
        )
        recoded = pyarrow.compute.dictionary_encode(combined)
        keys = [
            keys[code // span] + (values[code % span],) for code in recoded.dictionary.to_pylist()
        ]
        codes = recoded.indices
    return Grouped(keys, _ints(codes))


def _single(group: Grouped[tuple[str, ...]]) -> Grouped[str]:
    return Grouped([key for (key,) in group.keys], group.rows)


def _dates(
    column: Callable[[int], Any], from_index: int | None, to_index: int | None
) -> Grouped[tuple[str | None, str | None]] | None:
    """The (active_from, active_to) pairs of a batch, None for a field not mapped."""
    indexes = [index for index in (from_index, to_index) if index is not None]
    if not indexes:
        return None
    group = _grouped([column(index) for index in indexes])
    if from_index is None:
        return Grouped([(None, raw) for (raw,) in group.keys], group.rows)
    if to_index is None:
        return Grouped([(raw, None) for (raw,) in group.keys], group.rows)
    return Grouped([(start, end) for start, end in group.keys], group.rows)
