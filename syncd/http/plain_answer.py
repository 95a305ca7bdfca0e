"""The plain answers of an HTTP/1.1 server, read for a tenth of h11's CPU (pure):
:func:`read_plain_head`.

A first sync of a million users reads two thousand answers of some fifty kilobytes, each
the same shape: ``HTTP/1.1 200 OK``, a handful of ASCII headers, a ``Content-Length``.
h11 reads one in ~130 microseconds of Python (its receive buffer, regular expressions per
line, header validation, state machine), on the threads that also encode the next
batches and absorb the answers. This module reads such an answer's head in a few
microseconds, and declines (None) everything that is not that plain shape, so that
h11 reads it instead: informational and bodiless answers (1xx, 204, 304, a HEAD's, a
CONNECT's), other HTTP versions, chunked or other transfer codings, a missing, repeated,
comma-merged or over-long (more than h11's 20 digits) ``Content-Length``, bare-LF line
ends, folded lines, and any byte but printable ASCII and tabs. What it accepts, it reads
as h11 does (a test holds the two equal on generated heads): the same status, reason,
header names and values (outer blanks stripped, case kept), and the same keep-alive
decision. :func:`could_be_plain` says as soon as the first bytes rule that out, so
that h11 refuses a broken answer as early as it would have.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["PlainHead", "could_be_plain", "head_end", "read_plain_head"]

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([0-9]{3})(?: ([\x20-\x7e\t]*))?")
# h11's field-name is a token; its field-value any non-blank bytes but NUL, with inner
# blanks. Narrower here: printable ASCII only (anything else goes to h11).
_HEADER_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+):[ \t]*([\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?[ \t]*"
)
_DIGITS = re.compile(rb"[0-9]+")
_BLANK_LINE = re.compile(rb"\n\r?\n")
"""Where h11 ends a head: at the first empty line, CRLF or bare LF."""

_NO_BODY_STATUSES = frozenset({204, 304})
_MAX_LENGTH_DIGITS = 20
"""h11 refuses a longer ``Content-Length`` ("bad Content-Length")."""
_STATUS_PREFIX = b"HTTP/1.1 "


class PlainHead(NamedTuple):
    """A plain answer's head, as h11 would have read it."""

    status_code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # (name as sent, value stripped), in order
    content_length: int
    keep_alive: bool  # the answer lets the connection carry another request


def could_be_plain(start: bytes | bytearray) -> bool:
    """False once ``start`` (the first bytes of an answer) cannot begin a plain head:
    h11 then reads the answer, and refuses it at once if it must (an empty first line,
    a TLS alert from a server that expected TLS ...)."""
    head = bytes(start[: len(_STATUS_PREFIX)])
    return _STATUS_PREFIX.startswith(head)


def head_end(data: bytes | bytearray, start: int = 0) -> int | None:
    """The offset just past the head's empty line in ``data`` (looking from ``start``),
    or None while it has not arrived."""
    found = _BLANK_LINE.search(data, start)
    return None if found is None else found.end()


def read_plain_head(head: bytes, *, method: str, request_closes: bool) -> PlainHead | None:
    """Read ``head`` (the bytes up to and including the empty line) of the answer to a
    ``method`` request, or None if it is not a plain answer (then h11 must read it).

    ``request_closes``: the request asked for ``Connection: close`` (h11 then keeps no
    connection either).
    """
    if not head.endswith(b"\r\n\r\n") or method in ("HEAD", "CONNECT"):
        return None
    lines = head[:-4].split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        return None
    code = int(status[1])
    if code < 200 or code in _NO_BODY_STATUSES:
        return None
    headers: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    keep_alive = not request_closes
    for line in lines[1:]:
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            return None  # a folded line, a bare LF, a byte outside printable ASCII ...
        name, value = field[1], field[2] or b""
        lowered = name.lower()
        if lowered == b"content-length":
            if (
                length is not None
                or len(value) > _MAX_LENGTH_DIGITS
                or _DIGITS.fullmatch(value) is None
            ):
                return None  # repeated, merged ("2, 2") or too long: h11's rules decide
            length = value
        elif lowered == b"transfer-encoding":
            return None
        elif lowered == b"connection" and b"close" in (
            token.strip() for token in value.lower().split(b",")
        ):
            keep_alive = False
        headers.append((name, value))
    if length is None:
        return None  # a body read until the connection closes: h11's framing
    return PlainHead(code, status[2] or b"", headers, int(length), keep_alive)
