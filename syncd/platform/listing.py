"""Decoding of one list response (wire format: ``docs/nebuly-api.md``) as it arrives.

A million users arrive in one body of ~120 MB. :class:`PageReader` decodes it while it
is read, a bounded chunk (256 kB) at a time, so the whole body is never in memory; every
malformed user object becomes a :class:`~syncd.errors.PlatformError` naming the user
and the field. The decoded users go to a :class:`UserSink`
(:class:`~syncd.platform.listed.ListedUsers`), which converts them.

Pure: no I/O. The client feeds the bytes (:mod:`syncd.platform.client`).
"""

from __future__ import annotations

import re
from typing import Any, Final, Protocol

import msgspec

from syncd.errors import PlatformError
from syncd.model import PlatformUser
from syncd.platform.api import Pagination

__all__ = ["CHUNK_BYTES", "ListedUser", "PageReader", "UserSink", "bad_tag"]

CHUNK_BYTES: Final = 1 << 18
"""Body bytes decoded at a time: ~2,000 users, well under a MB of decoded objects at once.
Larger chunks are no faster and leave larger holes in the C heap (measured: +5 MB of
resident memory after a million-user list at 1 MB chunks)."""

# JSON white space is exactly these four bytes (RFC 8259); runs are bounded so that a
# split point cut between two reads is found again from a bounded overlap.
_WS = rb"[ \t\n\r]{0,64}"
_SPLIT_SPAN = 4 * 64 + len(b'},{"end_user":')
"""The longest match of _SPLIT."""

# The start of a list response as the platform writes it: {"users":[
_PREFIX = re.compile(rb"[ \t\n\r]*\{[ \t\n\r]*\"users\"[ \t\n\r]*:[ \t\n\r]*\[")
_PREFIX_WINDOW = 4096
"""Bytes that must have arrived before a body without that start is collected whole."""

# A split point: the end of one user object and the start of the next, as
#     } , { "end_user" :       (with optional white space)
# Such bytes are never inside a JSON string. A quotation mark inside a string is
# escaped (preceded by a backslash); the one before end_user is preceded by "{" or by
# white space, so it opens or closes a string. It cannot close one: after a closing
# quote JSON allows only white space , : ] or }, never the letter e. So it opens the
# string "end_user", and the "{" "," "}" before it (only white space between them and
# it) are outside any string: structural. A "}" , "{" sequence then closes an element
# of an array and opens the next. That array may still be a nested one (an unknown
# field holding objects keyed end_user); a chunk cut there is not balanced JSON, its
# strict decode fails, and the reader stops splitting (see PageReader). Conversely a
# chunk that decodes, from a cut known right, is balanced: its own cut is right too.
_SPLIT = re.compile(rb"\}" + _WS + rb"," + _WS + rb"(\{)" + _WS + rb"\"end_user\"" + _WS + rb":")

_PAGE_PREFIX = b'{"users":['
_STREAM_CHUNKS = 4
"""Chunks' worth of bytes without a split point before the reader collects the rest."""

_GROUP = 4096
"""Users decoded at a time from a body decoded whole (a fallback), see PageReader."""

_PREALLOCATED_MAX: Final = 256 << 20
"""The most a fallback buffer is sized in advance from the Content-Length (a header
claims anything); a larger body grows the buffer as it arrives."""

# msgspec names the failing element of a decoded chunk as ``$[12]`` in its messages.
_ITEM_PATH = re.compile(r"\$\[(\d+)\]([^`\s]*)")
_BYTE_POSITION = re.compile(r"\(byte (\d+)\)")


class ListedUser(msgspec.Struct, gc=False):
    """A listed user object, for decoding only: ``tags`` stays JSON text.

    The platform repeats a few tag sets across a million users: each distinct text is
    decoded and made canonical once (by :class:`~syncd.platform.listed.ListedUsers`),
    instead of a dict per user that is turned into a tuple and sorted.
    """

    end_user: str
    tags: msgspec.Raw = msgspec.Raw(b"{}")
    active_from: str | None = None
    active_to: str | None = None


class _RawPage(msgspec.Struct):
    """A list response with its users left undecoded (a body decoded whole)."""

    users: list[msgspec.Raw]
    pagination: Pagination | None = None


_CHUNK_DECODER = msgspec.json.Decoder(list[ListedUser])
_RAW_USERS = msgspec.json.Decoder(list[msgspec.Raw])
_PAGE_DECODER = msgspec.json.Decoder(_RawPage)


class UserSink(Protocol):
    """Where a :class:`PageReader` puts what it decoded."""

    def convert(self, wires: list[ListedUser], out: list[PlatformUser]) -> None:
        """Append ``wires`` to ``out`` as PlatformUsers (a PlatformError for a bad one)."""
        ...

    def commit(self, users: list[PlatformUser]) -> None:
        """The page was read whole: ``users`` are its users."""
        ...


class PageReader:
    """Decodes one list response from its bytes as they arrive (:meth:`feed`, then
    :meth:`finish`) into ``users``, through ``sink``.

    The body ``{"users":[ {user}, {user}, ... ], "pagination": ...}`` is cut between two
    users (see _SPLIT) about every ``chunk_bytes``; each chunk is decoded strictly, in
    one typed msgspec call, and converted, then dropped. Only the start of the body is
    checked by pattern: what follows the last cut is decoded as a whole response (the
    cut-off start replaced by ``{"users":[``), which checks the end of the array, the
    pagination and the end of the body. The chunks, their separators and that rest
    together are exactly the body, so the body is checked whole.

    Correctness never depends on the layout. A body that does not start with
    ``{"users":[`` (other key order), that offers no cut point (other key order in the
    user objects), or whose chunk is not valid JSON (a broken body, or a cut inside a
    nested array) is collected from there on into one buffer (sized from
    ``expected_size``, the Content-Length, when known, up to 256 MB) and decoded whole
    at the end; a body too large for memory is a PlatformError naming its size.

    A user object that repeats a key is taken as JSON decoders do: the last value wins,
    and an earlier value is not checked (so ``"tags"`` twice with an invalid first set
    is no error). Finding repeats would mean a second parse of every user object.
    """

    def __init__(
        self,
        sink: UserSink,
        users: list[PlatformUser],
        *,
        expected_size: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be >= 1")
        self._sink = sink
        self._users = users
        self._expected = expected_size
        self._chunk = chunk_bytes
        self._buffer = bytearray()
        self._received = 0
        self._streaming: bool | None = None  # None: the start is not checked yet
        self._collected = -1  # collecting into a sized buffer: bytes in it; else -1
        self._start = 0  # streaming: where the next users start in the buffer
        self._scan = 0  # streaming: where to look for the next cut
        self._dropped = 0  # body bytes before the buffer's start, less _PAGE_PREFIX
        self._decoded = 0  # users of this page decoded so far

    @property
    def streaming(self) -> bool:
        """False once the reader collects the rest of the body to decode it whole."""
        return self._streaming is not False

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the body; decodes what can be decoded already."""
        self._received += len(data)
        if self._streaming is False:
            self._collect(data)
            return
        self._buffer += data
        if self._streaming is None:
            match = _PREFIX.match(self._buffer)
            if match is None:
                if len(self._buffer) >= _PREFIX_WINDOW:
                    self._collect_rest()
                return
            self._streaming = True
            self._start = self._scan = match.end()
        self._cut()

    def finish(self) -> str | None:
        """The body is complete: decode what is left, commit the page's users to the
        sink, and return the next page's cursor (None on the last page)."""
        if self._collected >= 0:
            del self._buffer[self._collected :]
        rest = self._buffer
        self._buffer = bytearray()
        try:
            page = _PAGE_DECODER.decode(rest)
        except msgspec.ValidationError as error:
            raise PlatformError(
                f"list: the platform's response has an unexpected shape: {error}"
            ) from None
        except msgspec.DecodeError as error:
            raise PlatformError(
                f"list: the platform's response is not valid JSON ({self._in_body(error)})"
            ) from None
        raws = page.users
        for start in range(0, len(raws), _GROUP):
            group = raws[start : start + _GROUP]
            chunk = b"".join((b"[", b",".join(group), b"]"))
            try:
                wires = _CHUNK_DECODER.decode(chunk)
            except msgspec.ValidationError as error:
                raise _invalid_user_error(group, self._decoded, error) from None
            self._sink.convert(wires, self._users)
            self._decoded += len(wires)
        self._sink.commit(self._users)
        return page.pagination.next_page_cursor if page.pagination is not None else None

    def _cut(self) -> None:
        """Decode every whole chunk the buffer holds."""
        buffer = self._buffer
        while len(buffer) - self._start >= self._chunk:
            match = _SPLIT.search(buffer, max(self._scan, self._start + self._chunk))
            if match is None:
                if len(buffer) - self._start > _STREAM_CHUNKS * self._chunk:
                    self._collect_rest()  # no cut in sight: another layout
                else:
                    self._scan = max(self._scan, len(buffer) - _SPLIT_SPAN)
                return
            if not self._decode_chunk(match.start() + 1):
                self._collect_rest()
                return
            # The cut-off users become {"users":[ again: the buffer stays a response.
            following = match.start(1)
            buffer[:following] = _PAGE_PREFIX
            self._dropped += following - len(_PAGE_PREFIX)
            self._start = self._scan = len(_PAGE_PREFIX)

    def _decode_chunk(self, end: int) -> bool:
        """Decode the users from the buffer's start to ``end`` (just after a ``}``);
        False if they are not valid JSON (the caller stops cutting)."""
        with memoryview(self._buffer) as view:
            chunk = b"".join((b"[", view[self._start : end], b"]"))
        try:
            wires = _CHUNK_DECODER.decode(chunk)
        except msgspec.ValidationError as error:
            # The chunk is balanced JSON up to the bad user, so the cut was right and
            # the user is bad; name it if the chunk is whole JSON, else decode the rest
            # whole, which finds the same error.
            try:
                raws = _RAW_USERS.decode(chunk)
            except msgspec.DecodeError:
                return False
            raise _invalid_user_error(raws, self._decoded, error) from None
        except msgspec.DecodeError:
            return False
        self._sink.convert(wires, self._users)
        self._decoded += len(wires)
        return True

    def _collect_rest(self) -> None:
        """From now on collect the body into one buffer, to decode it whole."""
        self._streaming = False
        held = len(self._buffer)
        missing = min((self._expected or 0) - self._received, _PREALLOCATED_MAX)
        try:
            if missing > 0:
                # The size is known: one buffer of that size, filled in place (no
                # growth, no copy of what was received).
                buffer = bytearray(held + missing)
                buffer[:held] = self._buffer
                self._collected = held
            else:
                # A fresh buffer without the cut-off front, so it grows in place.
                buffer = bytearray(self._buffer)
        except MemoryError:
            raise self._too_large(held + missing) from None
        self._buffer = buffer

    def _collect(self, data: bytes) -> None:
        if self._collected >= 0:
            end = self._collected + len(data)
            if end <= len(self._buffer):
                self._buffer[self._collected : end] = data
                self._collected = end
                return
            # More than announced, or than preallocated: grow from here.
            del self._buffer[self._collected :]
            self._collected = -1
        try:
            self._buffer += data
        except MemoryError:
            raise self._too_large(len(self._buffer) + len(data)) from None

    def _too_large(self, size: int) -> PlatformError:
        """The error for a body whose buffer of ``size`` bytes cannot be allocated."""
        announced = f" (Content-Length {self._expected})" if self._expected is not None else ""
        return PlatformError(
            f"list: the platform's response{announced} does not fit in memory: "
            f"a buffer of {size:,} bytes could not be allocated"
        )

    def _in_body(self, error: msgspec.DecodeError) -> str:
        """msgspec's message with its byte positions counted in the whole body."""
        dropped = self._dropped
        if not dropped:
            return str(error)
        return _BYTE_POSITION.sub(lambda m: f"(byte {int(m.group(1)) + dropped})", str(error))


def bad_tag(text: bytes, message: str) -> str:
    """``tags.<name>`` for the first tag whose value is not a string, else ``tags``."""
    if not message.endswith("`$`") and " - at `$[" in message:
        try:
            pairs = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return "tags"
        if isinstance(pairs, dict):
            bad = [key for key, value in pairs.items() if not isinstance(value, str)]
            if bad:
                return f"tags.{bad[0]}"
    return "tags"


def _invalid_user_error(
    chunk: list[msgspec.Raw], offset: int, error: msgspec.ValidationError
) -> PlatformError:
    """A PlatformError naming the listed user (and field) msgspec could not decode."""
    message = str(error)
    match = _ITEM_PATH.search(message)
    if match is None:
        return PlatformError(f"list: the platform's response has an unexpected shape: {message}")
    index = int(match.group(1))
    field_path = match.group(2).lstrip(".") or "user object"
    reason = message.split(" - at ", 1)[0]
    # Only on this error path: decode the one user without a schema to find its name.
    name: Any = None
    try:
        user = msgspec.json.decode(chunk[index])
        name = user.get("end_user")
    except (msgspec.DecodeError, IndexError, AttributeError):
        pass
    who = f"user {name!r}" if isinstance(name, str) else f"user #{offset + index} (no end_user)"
    return PlatformError(
        f"list: the platform returned {who} with an invalid {field_path}: {reason}"
    )
