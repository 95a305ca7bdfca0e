"""syncd.http.plain_answer: what it reads, it reads as h11 does; what it declines, h11 reads.

h11 is the reference: each head is fed to an h11 client connection that sent a request,
and the plain reader must either decline it or give h11's status, reason, headers (as
``raw_items()``), body length and keep-alive decision.
"""

from __future__ import annotations

import re

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.http.plain_answer import PlainHead, could_be_plain, head_end, read_plain_head

EMULATOR_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: syncd-emulator \r\nDate: Thu, 03 Dec 2026 09:59:06 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 47801\r\n\r\n"
)


def _after_request(method: str, closes: bool) -> h11.Connection:
    """An h11 client connection that has sent a ``method`` request."""
    connection = h11.Connection(our_role=h11.CLIENT)
    headers = [("Host", "x"), ("Content-Length", "0")]
    if closes:
        headers.append(("Connection", "close"))
    connection.send(h11.Request(method=method, target="/", headers=headers))
    connection.send(h11.EndOfMessage())
    return connection


_LENGTHS = re.compile(rb"(?im)^(content-length[ \t]*:)[^\r\n]*")


def by_h11(head: bytes, *, method: str = "PUT", closes: bool = False) -> PlainHead | None:
    """What h11 reads of ``head`` after a ``method`` request; None if it is no final
    answer with a Content-Length body (or h11 refuses it)."""
    connection = _after_request(method, closes)
    connection.receive_data(head)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Response):
        return None
    lengths = [value for name, value in event.headers if name == b"content-length"]
    if not lengths or any(name == b"transfer-encoding" for name, _ in event.headers):
        return None
    length = int(lengths[0])
    # Keep-alive as h11 decides it: once the body is read, is the connection reusable?
    # (A length too large to feed is read as an empty body: keep-alive does not hang
    # on the length.)
    if length > 1_000_000:
        connection = _after_request(method, closes)
        connection.receive_data(_LENGTHS.sub(rb"\1 0", head))
        connection.next_event()
    else:
        connection.receive_data(b"x" * length)
    for _ in range(8):  # data, end of message: a few events at most
        if isinstance(connection.next_event(), h11.EndOfMessage):
            break
    else:
        raise AssertionError("h11 did not finish the body")
    keep_alive = connection.their_state is h11.DONE and connection.our_state is h11.DONE
    return PlainHead(
        event.status_code, event.reason, list(event.headers.raw_items()), length, keep_alive
    )


def test_the_emulators_answer_is_plain_and_reads_as_h11_reads_it() -> None:
    plain = read_plain_head(EMULATOR_HEAD, method="PUT", request_closes=False)
    assert plain is not None
    assert plain == by_h11(EMULATOR_HEAD)
    assert plain.content_length == 47801
    assert plain.headers[0] == (b"Server", b"syncd-emulator")  # outer blanks stripped


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",  # informational: h11 skips it
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",  # never a body
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",  # another version
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",  # merged: h11's rules
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # read until close
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\n",  # bare LF
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Note: caf\u00e9\r\nContent-Length: 2\r\n\r\n".encode("latin-1"),
        b"HTTP/1.1 200 OK\r\nX-Bad : 1\r\nContent-Length: 2\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 20 + b"2\r\n\r\n",  # h11: 20 digits
    ],
)
def test_anything_but_a_plain_answer_is_left_to_h11(head: bytes) -> None:
    assert read_plain_head(head, method="PUT", request_closes=False) is None


def test_the_longest_length_h11_takes_is_plain() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 19 + b"2\r\n\r\n"
    plain = read_plain_head(head, method="PUT", request_closes=False)
    assert plain is not None
    assert plain == by_h11(head)


def test_the_first_bytes_say_when_an_answer_cannot_be_plain() -> None:
    for start in (b"H", b"HTTP/1.", b"HTTP/1.1 ", b"HTTP/1.1 200 OK\r\n"):
        assert could_be_plain(start)
    for start in (b"\r\n", b"\n", b"\x15\x03\x01", b"HTTP/1.0 ", b"http/1.1 ", b"garbage"):
        assert not could_be_plain(start)


def test_a_head_request_and_a_closing_answer_are_read_as_h11_reads_them() -> None:
    assert read_plain_head(EMULATOR_HEAD, method="HEAD", request_closes=False) is None
    assert read_plain_head(EMULATOR_HEAD, method="CONNECT", request_closes=False) is None
    closing = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n"
    plain = read_plain_head(closing, method="PUT", request_closes=False)
    assert plain is not None
    assert not plain.keep_alive
    assert plain == by_h11(closing)
    asked = read_plain_head(EMULATOR_HEAD, method="PUT", request_closes=True)
    assert asked is not None
    assert not asked.keep_alive
    assert asked == by_h11(EMULATOR_HEAD, closes=True)


def test_the_head_ends_where_h11_ends_it() -> None:
    assert head_end(EMULATOR_HEAD + b'{"users":[]}') == len(EMULATOR_HEAD)
    assert head_end(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n") is None
    assert head_end(b"HTTP/1.1 200 OK\n\n{}") == len(b"HTTP/1.1 200 OK\n\n")
    # Searching on from where the last read ended finds an empty line split across reads.
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    assert head_end(data, len(data) - 5) == len(data)


_GOOD_NAMES = st.sampled_from(
    [b"Content-Type", b"ETag", b"X-Request-Id", b"Retry-After", b"Connection", b"Date",
     b"X_Odd~Name!", b"Set-Cookie"]
)  # fmt: skip
_ODD_NAMES = st.sampled_from(
    [b"content-length", b"Content-Length", b"Transfer-Encoding", b"Bad Name", b""]
)
_NAMES = st.one_of(_GOOD_NAMES, _GOOD_NAMES, _GOOD_NAMES, _ODD_NAMES)
_VALUE_BYTES = st.sampled_from(
    [b"a", b"Z", b"0", b"7", b" ", b"\t", b",", b'"', b"close", b"keep-alive", b"chunked",
     b"\xe9", b"\x00", b"\x7f", b"\x01", b";", b"=", b"\r", b"\n"]
)  # fmt: skip
_CLEAN_VALUES = st.sampled_from(
    [b"application/json", b'"v1"', b"7", b"close", b"keep-alive", b"Keep-Alive, Close",
     b"route=b7; Path=/", b"", b"a  b", b"Thu, 03 Dec 2026 09:59:06 GMT"]
)  # fmt: skip
# Three in four values are ones servers send; the rest are built of odd bytes.
_VALUES = st.one_of(
    _CLEAN_VALUES, _CLEAN_VALUES, _CLEAN_VALUES, st.lists(_VALUE_BYTES, max_size=8).map(b"".join)
)
_SEPARATORS = st.sampled_from([b": ", b":", b":\t", b" : ", b":  "])
_PLAIN_STATUS_LINES = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created", b"HTTP/1.1 200 ", b"HTTP/1.1 200",
     b"HTTP/1.1 413 Payload Too Large", b"HTTP/1.1 503 Service\tUnavailable",
     b"HTTP/1.1 999 Odd"]
)  # fmt: skip
_ODD_STATUS_LINES = st.sampled_from(
    [b"HTTP/1.1 100", b"HTTP/1.1 204 No Content", b"HTTP/1.0 200 OK", b"HTTP/1.1 20 OK",
     b"HTTP/1.1 200 caf\xe9", b"HTTP/2 200"]
)  # fmt: skip
_STATUS_LINES = st.one_of(_PLAIN_STATUS_LINES, _PLAIN_STATUS_LINES, _ODD_STATUS_LINES)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Answer heads near the plain shape: most are plain, many are off by one detail."""
    lines = [draw(_STATUS_LINES)]
    for _ in range(draw(st.integers(0, 4))):
        lines.append(draw(_NAMES) + draw(_SEPARATORS) + draw(_VALUES))
    if draw(st.integers(0, 3)):  # three in four heads give a length
        # Short, or around h11's limit of 20 digits (leading zeros count).
        length = draw(st.integers(0, 99).map(str) | st.text("0123456789", min_size=19, max_size=22))
        lines.insert(draw(st.integers(1, len(lines))), b"Content-Length: " + length.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


@settings(max_examples=3000, deadline=None)
@given(head=heads(), closes=st.booleans())
def test_a_plain_answer_reads_exactly_as_h11_reads_it(head: bytes, closes: bool) -> None:
    plain = read_plain_head(head, method="PUT", request_closes=closes)
    if plain is not None:
        assert plain == by_h11(head, closes=closes)


@pytest.mark.parametrize(
    "head",
    [
        # What servers and gateways in front of an API send, as they send it.
        b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\ncontent-length: 12\r\n"
        b"content-type: application/json\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.25.3\r\nDate: Thu, 03 Dec 2026 10:00:00 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
        b"Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 4\r\n"
        b"x-envoy-upstream-service-time: 3\r\n\r\n",
        b'HTTP/1.1 200 \r\nETag: "v1"   \r\nX-Empty:\r\nContent-Length: 0\r\n\r\n',
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 30\r\nConnection: close\r\n\r\n",
    ],
)
def test_what_servers_usually_send_is_plain_and_reads_as_h11_reads_it(head: bytes) -> None:
    # Without these, the property above could hold by declining everything.
    plain = read_plain_head(head, method="PUT", request_closes=False)
    assert plain is not None
    assert plain == by_h11(head)
