"""syncd.http.direct: requests on sockets of its own, byte for byte what httpx sends and reads.

Each test sends through a real httpx client and through the sender, to a real loopback
server that records the bytes it receives (:mod:`tests.http.raw_server`).
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest
import trustme

from syncd.http import BearerAuth, ConnectionTracker, DirectSender, make_http_client
from syncd.http.cancel import track_connections
from syncd.http.requests import RequestBuilder
from tests.http.raw_server import RawAnswer, RawServer, answer

TOKEN = "direct-test-token-0123456789"
PATH = "/api/external/platform-users"
BODY = b'{"users":[{"end_user":"ada@example.com","tags":{},"active_from":"2026-01-01"}]}'


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    server.start()
    yield server
    server.stop()


class Pair:
    """One httpx client, its tracker, and the sender for it."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, concurrency: int = 2) -> None:
        self.http = make_http_client(
            url,
            auth=BearerAuth(pydantic.SecretStr(TOKEN)),
            timeout_s=timeout_s,
            concurrency=concurrency,
        )
        self.tracker = track_connections(self.http)
        sender = DirectSender.for_client(self.http, self.tracker)
        assert sender is not None
        self.sender = sender
        self.builder = RequestBuilder(self.http)

    def request(
        self, method: str = "PUT", body: bytes = BODY, timeout: httpx.Timeout | None = None
    ) -> httpx.Request:
        return self.builder.build(
            method, PATH, body, None, {"Content-Type": "application/json"}, timeout
        )

    def via_httpx(
        self, method: str = "PUT", body: bytes = BODY, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        return self.http.send(self.request(method, body, timeout))

    def via_sender(
        self, method: str = "PUT", body: bytes = BODY, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        request = self.request(method, body, timeout)
        assert self.sender.takes(request)
        return self.sender.send(request)

    def close(self) -> None:
        self.sender.close()
        self.http.close()


@pytest.fixture
def pair(raw_server: RawServer) -> Iterator[Pair]:
    made = Pair(raw_server.url)
    yield made
    made.close()


def test_the_request_on_the_wire_is_the_one_httpx_sends(raw_server: RawServer, pair: Pair) -> None:
    for method, body in (("PUT", BODY), ("POST", BODY), ("DELETE", b'{"users":["a"]}')):
        pair.via_httpx(method, body)
        pair.via_sender(method, body)
    sent = raw_server.requests
    assert len(sent) == 6
    for by_httpx, by_sender in zip(sent[::2], sent[1::2], strict=True):
        assert by_sender.data == by_httpx.data
    assert f"Authorization: Bearer {TOKEN}".encode() in sent[1].head
    assert sent[1].head.startswith(b"PUT " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:")


@pytest.mark.parametrize(
    "scripted",
    [
        answer(200, b'{"users":[]}', "Content-Type: application/json", "X-Many: 1", "X-Many: 2"),
        answer(201, gzip.compress(b'{"users":["zipped"]}'), "Content-Encoding: gzip"),
        RawAnswer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        ),
        answer(503, b"busy", "Retry-After: 7"),
        answer(404, b""),
        # What a parser other than h11 (httpx's) could read differently:
        RawAnswer(
            "HTTP/1.1 200 OK\r\nX-Note: caf\u00e9\r\nContent-Length: 2\r\n\r\n{}".encode("latin-1")
        ),
        RawAnswer(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        ),
        answer(200, b"{}", *(f"X-Header-{number}: {number}" for number in range(150))),
        RawAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}"),
        answer(200, b'"v1"', 'ETag: "v1"   '),
    ],
    ids=[
        "headers",
        "gzip",
        "chunked",
        "retry-after",
        "empty",
        "non-ascii-header",
        "early-hints",
        "150-headers",
        "merged-content-length",
        "trailing-spaces",
    ],
)
def test_an_answer_reads_as_httpx_reads_it(
    raw_server: RawServer, pair: Pair, scripted: RawAnswer
) -> None:
    raw_server.script(scripted, scripted)
    by_httpx, by_sender = pair.via_httpx(), pair.via_sender()
    assert by_sender.status_code == by_httpx.status_code
    assert by_sender.headers.multi_items() == by_httpx.headers.multi_items()
    assert by_sender.content == by_httpx.content
    assert by_sender.http_version == by_httpx.http_version == "HTTP/1.1"
    assert by_sender.reason_phrase == by_httpx.reason_phrase
    assert by_sender.request.url == by_httpx.request.url
    assert by_sender.elapsed.total_seconds() > 0


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"
        b'{"users":[]}',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["plain", "chunked"],
)
def test_an_answer_arriving_a_byte_at_a_time_reads_as_httpx_reads_it(
    raw_server: RawServer, pair: Pair, data: bytes
) -> None:
    # The plain reader looks for the end of the head across reads, and for the body's
    # last byte; h11 reads what it declines.
    raw_server.script(RawAnswer(data, drip=True), RawAnswer(data, drip=True))
    by_httpx, by_sender = pair.via_httpx(), pair.via_sender()
    assert by_sender.status_code == by_httpx.status_code == 200
    assert by_sender.headers.multi_items() == by_httpx.headers.multi_items()
    assert by_sender.content == by_httpx.content
    assert pair.via_sender().status_code == 200  # the connection carries on
    assert [request.connection for request in raw_server.requests][1:] == [1, 1]


def test_bytes_after_a_plain_answer_are_never_read_as_the_next_answer(
    raw_server: RawServer, pair: Pair
) -> None:
    stray = b'HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"stray"}'
    raw_server.script(
        RawAnswer(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"first":1}' + stray),
        answer(200, b'{"second":2}'),
    )
    assert pair.via_sender().json() == {"first": 1}
    assert pair.via_sender().json() == {"second": 2}
    assert [request.connection for request in raw_server.requests] == [0, 1]


def test_bytes_h11_kept_after_an_answer_are_read_as_httpx_reads_them(
    raw_server: RawServer, pair: Pair
) -> None:
    # h11 keeps what came after a chunked answer and reads it as the next answer; the
    # plain reader must not skip those bytes for the socket's.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n"
    kept = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nZ"
    answers = [RawAnswer(chunked + kept), answer(201, b"Y")]
    raw_server.script(*answers, *answers)
    by_httpx = [pair.via_httpx().content, pair.via_httpx().content]
    # httpx read the second answer from what h11 kept, before the server took its own
    # answer for that request from the script: wait for it, or the sender's request on
    # its own connection could take that answer first.
    assert raw_server.wait_for_requests(2)
    by_sender = [pair.via_sender().content, pair.via_sender().content]
    assert by_sender == by_httpx == [b"A", b"Z"]


def test_an_answer_after_early_hints_is_the_answer_to_its_own_request(
    raw_server: RawServer, pair: Pair
) -> None:
    # http.client would return the 103, keep the connection, and hand the next request
    # the 200 meant for this one.
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    raw_server.script(
        RawAnswer(hints + b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"first":1}'),
        answer(200, b'{"second":2}'),
    )
    assert pair.via_sender().json() == {"first": 1}
    assert pair.via_sender().json() == {"second": 2}
    assert [request.connection for request in raw_server.requests] == [0, 0]


def test_a_slow_but_steady_reader_is_no_write_timeout() -> None:
    # The write timeout bounds each send, as in httpcore, not the whole body: a body of
    # 32 MB that the server drains in ~1.3 s goes through with a write timeout of 0.3 s
    # (large enough that the socket buffers alone cannot take it within one timeout).
    server = RawServer(slow_read=(256 * 1024, 0.01))
    server.start()
    made = Pair(server.url)
    timeout = httpx.Timeout(10, write=0.3)
    try:
        body = b"x" * (32 * 1024 * 1024)
        assert made.via_httpx(body=body, timeout=timeout).status_code == 200
        started = time.monotonic()
        assert made.via_sender(body=body, timeout=timeout).status_code == 200
        assert time.monotonic() - started > 0.3  # it did take longer than one timeout
        assert server.requests[-1].body == body
    finally:
        made.close()
        server.stop()


def test_a_connection_carries_request_after_request(raw_server: RawServer, pair: Pair) -> None:
    for _ in range(5):
        assert pair.via_sender().status_code == 200
    assert [request.connection for request in raw_server.requests] == [0] * 5


def test_an_answer_that_closes_its_connection_is_not_followed_on_it(
    raw_server: RawServer, pair: Pair
) -> None:
    # The server says so, and leaves the connection open: it still is not reused.
    raw_server.script(answer(200, b"{}", "Connection: close", then="keep"))
    pair.via_sender()
    pair.via_sender()
    assert [request.connection for request in raw_server.requests] == [0, 1]


def test_an_idle_connection_the_server_closed_is_replaced_not_failed(
    raw_server: RawServer, pair: Pair
) -> None:
    # The server closes without saying so: the next request must not go out on it.
    raw_server.script(answer(200, then="close"))
    pair.via_sender()
    assert raw_server.closed_by_server.wait(5)  # on loopback, its FIN is in with it
    assert pair.via_sender().status_code == 200
    assert [request.connection for request in raw_server.requests] == [0, 1]


def test_an_idle_connection_past_its_expiry_is_replaced(raw_server: RawServer) -> None:
    http = make_http_client(raw_server.url, auth=None, timeout_s=5)
    sender = DirectSender(
        http, ConnectionTracker(), ssl_context=None, max_idle=2, keepalive_expiry_s=1.0
    )
    builder = RequestBuilder(http)
    try:
        sender.send(builder.build("PUT", PATH, BODY, None, {}, None))
        sender.send(builder.build("PUT", PATH, BODY, None, {}, None))
        time.sleep(1.5)
        sender.send(builder.build("PUT", PATH, BODY, None, {}, None))
        assert [request.connection for request in raw_server.requests] == [0, 0, 1]
        assert raw_server.closed_by_client.wait(5)  # the expired one was closed
    finally:
        sender.close()
        http.close()


def test_close_closes_the_idle_connections(raw_server: RawServer, pair: Pair) -> None:
    pair.via_sender()
    assert not raw_server.closed_by_client.is_set()
    pair.sender.close()
    assert raw_server.closed_by_client.wait(5)
    assert not pair.sender.takes(pair.request())


def _refused() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there


@pytest.mark.parametrize(
    ("scripted", "error"),
    [
        (None, httpx.ConnectError),
        (RawAnswer(then="no-answer"), httpx.RemoteProtocolError),
        (RawAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "close"),
         httpx.RemoteProtocolError),
        (RawAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "stall"),
         httpx.ReadTimeout),
        (RawAnswer(b"", "stall"), httpx.ReadTimeout),
        (RawAnswer(b"garbage\r\n\r\n", "close"), httpx.RemoteProtocolError),
    ],
    ids=["refused", "no-answer", "cut-body", "stalled-body", "stalled", "garbage"],
)  # fmt: skip
def test_a_failure_raises_the_exception_httpx_raises(
    raw_server: RawServer, scripted: RawAnswer | None, error: type[httpx.HTTPError]
) -> None:
    url = _refused() if scripted is None else raw_server.url
    pair = Pair(url, timeout_s=0.3)
    try:
        if scripted is not None:
            raw_server.script(scripted, scripted)
        with pytest.raises(httpx.HTTPError) as by_httpx:
            pair.via_httpx()
        started = time.monotonic()
        with pytest.raises(httpx.HTTPError) as by_sender:
            pair.via_sender()
        assert type(by_httpx.value) is error
        assert type(by_sender.value) is error
        assert by_sender.value.request.url == by_httpx.value.request.url
        assert time.monotonic() - started < 3
        if error is httpx.RemoteProtocolError:
            # h11's words, also for an answer the plain reader handed to it part-read.
            assert str(by_sender.value) == str(by_httpx.value)
    finally:
        pair.close()


@pytest.mark.parametrize(
    "scripted",
    [
        RawAnswer(b"\x15\x03\x01\x00\x02\x02\x28", "close"),  # a TLS alert to plain HTTP
        RawAnswer(b"\x15\x03\x01\x00\x02\x02\x28", "stall"),
        RawAnswer(b"\r\n", "stall"),  # an empty first line
        RawAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 25 + b"2\r\n\r\n{}"),
    ],
    ids=["tls-alert", "tls-alert-then-stall", "empty-line-then-stall", "length-too-long"],
)
def test_a_broken_answer_fails_at_once_as_with_httpx(
    raw_server: RawServer, scripted: RawAnswer
) -> None:
    # The plain reader hands an answer to h11 as soon as its first bytes rule a plain
    # head out, so h11 refuses it at once, not after the read timeout.
    pair = Pair(raw_server.url, timeout_s=5.0)
    try:
        raw_server.script(scripted, scripted)
        with pytest.raises(httpx.HTTPError) as by_httpx:
            pair.via_httpx()
        started = time.monotonic()
        with pytest.raises(httpx.HTTPError) as by_sender:
            pair.via_sender()
        assert time.monotonic() - started < 2.5
        assert type(by_sender.value) is type(by_httpx.value) is httpx.RemoteProtocolError
        assert str(by_sender.value) == str(by_httpx.value)
    finally:
        pair.close()


def test_a_cookie_the_server_sets_goes_to_the_client_and_httpx_sends_from_then_on(
    raw_server: RawServer, pair: Pair
) -> None:
    raw_server.script(answer(200, b"{}", "Set-Cookie: route=b7; Path=/"))
    pair.via_sender()
    assert pair.http.cookies.get("route") == "b7"
    request = pair.request()
    assert not pair.sender.takes(request)
    pair.http.send(request)
    assert b"Cookie: route=b7" in raw_server.requests[-1].head


def test_cancel_cuts_a_request_waiting_for_its_answer_and_refuses_new_ones(
    raw_server: RawServer,
) -> None:
    raw_server.script(RawAnswer(b"", "stall"))
    pair2 = Pair(raw_server.url, timeout_s=60)
    failure: list[BaseException] = []

    def send() -> None:
        try:
            pair2.via_sender()
        except BaseException as error:  # the test looks at it
            failure.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        assert raw_server.wait_for_requests(1)
        started = time.monotonic()
        assert pair2.tracker.cancel() == 1
        thread.join(timeout=5)
        assert time.monotonic() - started < 2
        assert [type(error) for error in failure] == [httpx.RemoteProtocolError]
        with pytest.raises(httpx.ConnectError, match="cancelled"):
            pair2.via_sender()
    finally:
        thread.join(timeout=5)
        pair2.close()


def test_tls_is_verified_with_the_context_httpx_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    server = RawServer(tls=context)
    server.start()
    try:
        # Not trusted yet: the sender refuses the server as httpx does.
        untrusting = Pair(server.url)
        try:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                untrusting.via_httpx()
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                untrusting.via_sender()
        finally:
            untrusting.close()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        trusting = Pair(server.url)
        try:
            # The sender first: its connection offers httpcore's ALPN on its own.
            assert trusting.via_sender().status_code == 200
            assert trusting.via_httpx().status_code == 200
            assert trusting.via_sender().status_code == 200
        finally:
            trusting.close()
        sent = server.requests[-3:]
        assert sent[1].data == sent[0].data
        assert sent[2].connection == sent[0].connection != sent[1].connection
        assert server.alpn[-2:] == ["http/1.1", "http/1.1"]
    finally:
        server.stop()


class _OwnTransport(httpx.HTTPTransport):
    """Someone's own transport, built on httpx's: it decides what goes out."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(418)


def _sender_for(http: httpx.Client) -> DirectSender | None:
    try:
        return DirectSender.for_client(http, track_connections(http))
    finally:
        http.close()


def test_httpx_keeps_what_it_must_send_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9"
    assert _sender_for(make_http_client(url, auth=None, timeout_s=1)) is not None
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert _sender_for(make_http_client(url, auth=None, timeout_s=1, transport=mock)) is None
    own = _OwnTransport()
    assert _sender_for(make_http_client(url, auth=None, timeout_s=1, transport=own)) is None
    basic = httpx.BasicAuth("user", "password")
    assert _sender_for(make_http_client(url, auth=basic, timeout_s=1)) is None
    hooked = make_http_client(url, auth=None, timeout_s=1)
    hooked.event_hooks["request"].append(lambda request: None)
    assert _sender_for(hooked) is None
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert _sender_for(make_http_client(url, auth=None, timeout_s=1)) is None
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert _sender_for(make_http_client(url, auth=None, timeout_s=1)) is not None


def test_a_request_to_another_origin_or_with_a_stream_is_not_taken(pair: Pair) -> None:
    other = pair.http.build_request("PUT", "http://127.0.0.2:1/x", content=BODY)
    assert not pair.sender.takes(other)
    streamed = pair.http.build_request("PUT", PATH, content=iter([BODY]))
    assert not pair.sender.takes(streamed)
    assert pair.sender.takes(pair.request())


def test_an_international_host_is_dialled_as_httpx_dials_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "ß" is "ss" under IDNA 2003 (Python's own encoding of a str host) and "xn--fa-hia"
    # under IDNA 2008 (httpx's): dialling the other name would hand the token to whoever
    # holds it. Both paths dial through socket.create_connection; nothing listens.
    dialled: list[str] = []

    def refuse(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        dialled.append(address[0])
        raise ConnectionRefusedError(111, "refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    pair = Pair("http://fa\u00df.example:9")
    try:
        with pytest.raises(httpx.ConnectError):
            pair.via_httpx()
        with pytest.raises(httpx.ConnectError):
            pair.via_sender()
    finally:
        pair.close()
    assert dialled == ["xn--fa-hia.example", "xn--fa-hia.example"]


def test_several_threads_share_a_sender_and_each_gets_its_own_answer(
    raw_server: RawServer,
) -> None:
    # The server echoes each request's body: an answer meant for another request, or a
    # connection handed to two threads at once, shows as a body that is not one's own.
    raw_server.echo = True
    pair = Pair(raw_server.url, concurrency=4)  # keeps up to 5 idle: none is ever closed
    errors: list[BaseException] = []

    def send(worker: int) -> None:
        try:
            for number in range(25):
                body = f'{{"worker":{worker},"number":{number}}}'.encode()
                assert pair.via_sender(body=body).content == body
        except BaseException as error:  # the test looks at it
            errors.append(error)

    threads = [threading.Thread(target=send, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join(timeout=30)
    finally:
        pair.close()
    assert errors == []
    assert len(raw_server.requests) == 100
    assert raw_server.connections <= 4  # kept alive: at most one per thread


@pytest.mark.parametrize(
    ("method", "body", "scripted"),
    [
        ("HEAD", b"", answer(200, b"", "Content-Type: application/json")),
        ("GET", b"", answer(204, b"")),
        ("GET", b"", RawAnswer(b"HTTP/1.1 204 No Content\r\n\r\n")),
        ("GET", b"", RawAnswer(b'HTTP/1.1 304 Not Modified\r\nETag: "v2"\r\n\r\n')),
        ("DELETE", b"", answer(200, b"{}")),
    ],
    ids=["head", "204", "204-no-length", "304", "delete-without-body"],
)
def test_requests_and_answers_without_a_body_go_as_with_httpx(
    raw_server: RawServer, pair: Pair, method: str, body: bytes, scripted: RawAnswer
) -> None:
    raw_server.script(scripted, scripted, answer(200, b'{"next":1}'), answer(200, b'{"next":2}'))
    by_httpx = pair.via_httpx(method, body)
    by_sender = pair.via_sender(method, body)
    sent = raw_server.requests
    assert sent[1].data == sent[0].data
    assert (by_sender.status_code, by_sender.content) == (by_httpx.status_code, by_httpx.content)
    assert by_sender.headers.multi_items() == by_httpx.headers.multi_items()
    # The connection is left clean: the next answer on it is the next request's own.
    assert pair.via_sender().json() == {"next": 1}
    assert raw_server.requests[-1].connection == sent[1].connection


def test_a_server_that_stops_reading_is_a_write_timeout() -> None:
    server = RawServer(slow_read=(1, 30.0))  # reads one byte, then nothing for 30 s
    server.start()
    made = Pair(server.url)
    timeout = httpx.Timeout(10, write=0.3)
    body = b"x" * (64 * 1024 * 1024)  # more than any socket buffers hold
    try:
        with pytest.raises(httpx.WriteTimeout):
            made.via_httpx(body=body, timeout=timeout)
        started = time.monotonic()
        with pytest.raises(httpx.WriteTimeout):
            made.via_sender(body=body, timeout=timeout)
        assert time.monotonic() - started < 5
    finally:
        made.close()
        server.stop()
