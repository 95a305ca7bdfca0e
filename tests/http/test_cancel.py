"""ConnectionTracker: a read blocked on another thread is cut at once, over real sockets."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import trustme

from syncd.http import ConnectionTracker, track_connections
from tests.http.support import Answer, ScriptedServer


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for conn in accepted:
            conn.close()


def _get_in_thread(client: httpx.Client, url: str) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def get() -> None:
        started = time.monotonic()
        try:
            client.get(url)
        except httpx.HTTPError as error:
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=get)
    thread.start()
    return thread, outcome


def _wait_connected(tracker_streams: object, deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not list(tracker_streams):  # type: ignore[call-overload]
        time.sleep(0.01)


def test_cancel_cuts_a_blocked_read_at_once(silent_server: int) -> None:
    with httpx.Client(timeout=30) as client:
        tracker = track_connections(client)
        assert tracker.installed
        thread, outcome = _get_in_thread(client, f"http://127.0.0.1:{silent_server}/")
        _wait_connected(tracker._streams)
        assert tracker.cancel() == 1
        thread.join(5)
        assert not thread.is_alive()
    assert isinstance(outcome["error"], httpx.RemoteProtocolError)
    assert outcome["seconds"] < 2  # not the 30 s timeout


def test_closing_the_socket_does_not_wake_a_blocked_read(silent_server: int) -> None:
    # Why cancel() uses shutdown(): on Linux, close() from another thread leaves recv()
    # blocked until the timeout.
    with httpx.Client(timeout=1.0) as client:
        tracker = track_connections(client)
        thread, outcome = _get_in_thread(client, f"http://127.0.0.1:{silent_server}/")
        _wait_connected(tracker._streams)
        for stream in list(tracker._streams):
            stream.get_extra_info("socket").close()
        thread.join(5)
    assert outcome["seconds"] >= 0.9


def test_after_cancel_no_new_connection_is_made(server: ScriptedServer) -> None:
    server.script(Answer(200, b"{}"))
    with httpx.Client(base_url=server.url, timeout=5) as client:
        tracker = track_connections(client)
        assert client.get("/first").status_code == 200
        tracker.cancel()
        with pytest.raises(httpx.ConnectError, match="cancelled"):
            client.get("/second")
    assert [seen.path for seen in server.seen] == ["/first"]


def test_a_custom_transport_is_not_tracked() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=transport) as client:
        tracker = track_connections(client)
        assert not tracker.installed
        assert tracker.cancel() == 0
        assert client.get("https://x.test/").status_code == 200


def test_cancel_never_lets_a_tls_socket_send_in_clear_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SSLSocket.shutdown drops its TLS state before it shuts the socket down: a send by
    # the owner in between would go out unencrypted. The window is held open here.
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)  # the accepting thread ends even if the client never comes
    accepted: list[ssl.SSLSocket] = []

    def accept() -> None:
        sock, _ = listener.accept()
        sock.settimeout(5)
        accepted.append(server_context.wrap_socket(sock, server_side=True))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(listener.getsockname()[:2], timeout=5)
        tls = client_context.wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        thread.join(timeout=10)
        listener.close()
    server_side = accepted[0]
    tracker = ConnectionTracker()
    tracker.track_socket(tls)
    in_window, go_on = threading.Event(), threading.Event()
    real_shutdown = socket.socket.shutdown

    def slow_shutdown(sock: socket.socket, how: int) -> None:
        in_window.set()
        go_on.wait(5)
        real_shutdown(sock, how)

    monkeypatch.setattr(socket.socket, "shutdown", slow_shutdown)
    cancelling = threading.Thread(target=tracker.cancel)
    cancelling.start()
    try:
        assert in_window.wait(5)
        secret = b"Authorization: Bearer not-for-the-wire"
        tls.send(secret)
        go_on.set()
        cancelling.join(timeout=5)
        # What reached the server, read below TLS: ciphertext only.
        server_side.settimeout(2)
        wire = socket.socket.recv(server_side, 65536)
        assert wire
        assert secret not in wire
    finally:
        go_on.set()
        cancelling.join(timeout=5)
        tls.close()
        server_side.close()
