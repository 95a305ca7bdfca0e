"""The reusable emulator server, proven with a tiny emulated API defined here.

``NotesEmulator`` is a store plus routes, the way every emulator plugs into
:class:`EmulatorServer`: the base must bring auth, counters, faults, the control
endpoints, the lifecycle and the mock transport without knowing anything about notes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from enum import StrEnum

import httpx
import msgspec
import pytest

from syncd.emulator import EmulatorServer, EndpointFaults
from syncd.emulator.server import (
    LISTENING_PREFIX,
    Call,
    Response,
    Route,
    detail_response,
    json_response,
)

KEY = "sk-test-notes-7Hq2SECRET"
AUTH = {"Authorization": f"Bearer {KEY}"}
ALL_VERBS = ("GET", "PUT", "POST", "PATCH", "DELETE")


class NoteOp(StrEnum):
    LIST = "list"
    CREATE = "create"
    READ = "read"
    DELETE = "delete"


class Note(msgspec.Struct):
    id: str
    text: str


class NotesBody(msgspec.Struct):
    notes: list[Note]


class NotesEmulator(EmulatorServer[NoteOp]):
    """A notes API: ``/notes`` (GET list, POST create) and ``/notes/{id}`` (GET, DELETE)."""

    def __init__(
        self, *, api_key: str = KEY, seed: int = 0, counted_verbs: tuple[str, ...] = ALL_VERBS
    ) -> None:
        super().__init__(api_key=api_key, operations=NoteOp, seed=seed, counted_verbs=counted_verbs)
        self.notes: dict[str, str] = {}
        self.stops = 0

    def route(self, path: str) -> Route[NoteOp] | None:
        if path == "/notes":
            return Route({"GET": NoteOp.LIST, "POST": NoteOp.CREATE})
        note_id = path.removeprefix("/notes/")
        if note_id != path and "/" not in note_id:
            return Route({"GET": NoteOp.READ, "DELETE": NoteOp.DELETE}, {"id": note_id})
        return None

    def handle(self, call: Call[NoteOp]) -> Response:
        if call.operation is NoteOp.LIST:
            return json_response(200, {"ids": sorted(self.notes)})
        if call.operation is NoteOp.CREATE:
            body = msgspec.json.decode(call.request.body, type=NotesBody)
            created = [note.id for note in body.notes if note.id not in call.refused]
            self.notes.update((n.id, n.text) for n in body.notes if n.id in created)
            return json_response(201, {"created": created})
        note_id = call.params["id"]
        if note_id not in self.notes:
            return detail_response(404, "no such note")
        if call.operation is NoteOp.DELETE:
            del self.notes[note_id]
            return Response(204, content_type=None)
        return json_response(200, {"id": note_id, "text": self.notes[note_id]})

    def extra_stats(self) -> dict[str, object]:
        return {"notes": len(self.notes)}

    def after_stop(self) -> None:
        self.stops += 1


@pytest.fixture
def notes() -> Iterator[NotesEmulator]:
    with NotesEmulator() as emu:
        yield emu


@pytest.fixture
def client(notes: NotesEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=notes.url, headers=AUTH, timeout=10) as http:
        yield http


def create(http: httpx.Client, *ids: str) -> httpx.Response:
    return http.post("/notes", json={"notes": [{"id": i, "text": f"text {i}"} for i in ids]})


def zero_calls(**counts: int) -> dict[str, int]:
    return {**dict.fromkeys([*(op.value for op in NoteOp), *ALL_VERBS], 0), **counts}


# ------------------------------------------------------------------ routes, auth


def test_routes_with_path_parameters_reach_the_store(
    notes: NotesEmulator, client: httpx.Client
) -> None:
    assert create(client, "a", "b").json() == {"created": ["a", "b"]}
    assert client.get("/notes/a").json() == {"id": "a", "text": "text a"}
    assert client.get("/notes/").json() == {"ids": ["a", "b"]}  # trailing slash ignored
    assert client.delete("/notes/a").status_code == 204
    missing = client.get("/notes/a")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no such note"}
    assert notes.notes == {"b": "text b"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": ""},
    ],
)
@pytest.mark.parametrize("path", ["/notes", "/notes/a", "/_emulator/stats", "/_emulator/faults"])
def test_bad_key_is_401_before_counting_and_never_echoed(
    notes: NotesEmulator, headers: dict[str, str], path: str
) -> None:
    with httpx.Client(base_url=notes.url, timeout=10) as anonymous:
        response = anonymous.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or missing API key"}
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    assert KEY not in response.text
    assert notes.calls() == zero_calls()


def test_unknown_path_is_404_even_without_a_key(notes: NotesEmulator) -> None:
    with httpx.Client(base_url=notes.url, timeout=10) as anonymous:
        for path in ("/", "/nowhere", "/notes/a/b", "/_emulator"):
            assert anonymous.get(path).status_code == 404, path
    assert notes.calls() == zero_calls()


def test_unrouted_verb_is_405_with_the_route_verbs(
    notes: NotesEmulator, client: httpx.Client
) -> None:
    for method, path, allow in [
        ("PUT", "/notes", "GET, POST"),
        ("HEAD", "/notes", "GET, POST"),
        ("PATCH", "/notes/a", "GET, DELETE"),
        ("POST", "/_emulator/stats", "GET"),
        ("GET", "/_emulator/reset-counters", "POST"),
        ("GET", "/_emulator/faults", "POST, DELETE"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allow
    assert notes.calls() == zero_calls()


def test_repr_masks_the_key(notes: NotesEmulator) -> None:
    text = repr(notes)
    assert KEY not in text
    assert text == f"NotesEmulator({notes.url}, api_key='***')"


def test_constructor_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match="api_key"):
        NotesEmulator(api_key="")


# ---------------------------------------------------------------------- counters


def test_counters_per_operation_and_verb(notes: NotesEmulator, client: httpx.Client) -> None:
    create(client, "a")
    client.get("/notes")
    client.get("/notes/a")
    client.get("/notes/zzz")  # a 404 of the API itself is still a call
    client.delete("/notes/a")
    client.get("/_emulator/stats")  # control calls are not counted
    expected = zero_calls(list=1, create=1, read=2, delete=1, GET=3, POST=1, DELETE=1)
    assert notes.calls() == expected
    notes.reset_counters()
    assert notes.calls() == zero_calls()


def test_counted_verbs_are_listed_at_zero_and_others_counted_when_used() -> None:
    emu = NotesEmulator(counted_verbs=("GET",))
    assert emu.calls() == {"list": 0, "create": 0, "read": 0, "delete": 0, "GET": 0}
    with httpx.Client(transport=emu.mock_transport(), base_url="http://notes", headers=AUTH) as h:
        create(h, "a")
    assert emu.calls()["POST"] == 1


# ------------------------------------------------------------------------ faults


def test_throttle_then_fail_then_recover_only_on_that_operation(
    notes: NotesEmulator, client: httpx.Client
) -> None:
    notes.set_faults(NoteOp.LIST, EndpointFaults(fail_next=1, throttle_next=2, retry_after_s=2))
    throttled = client.get("/notes")
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
    assert notes.faults(NoteOp.LIST).throttle_next == 1
    assert client.get("/notes").status_code == 429
    failed = client.get("/notes")
    assert failed.status_code == 503
    assert failed.json() == {"detail": "Service Unavailable (emulated fault)"}
    assert client.get("/notes").status_code == 200
    assert create(client, "a").status_code == 201  # other operations are not affected
    assert notes.calls()["list"] == 4  # faulted calls are counted


@pytest.mark.parametrize(("seconds", "header"), [(0.5, "0.5"), (3, "3"), (0, "0")])
def test_retry_after_header_format(
    notes: NotesEmulator, client: httpx.Client, seconds: float, header: str
) -> None:
    notes.set_faults(NoteOp.READ, EndpointFaults(throttle_next=1, retry_after_s=seconds))
    assert client.get("/notes/a").headers["retry-after"] == header


def test_latency_is_added_to_that_operation_only(
    notes: NotesEmulator, client: httpx.Client
) -> None:
    client.get("/notes")  # warm the connection
    notes.set_faults(NoteOp.LIST, EndpointFaults(latency_ms=250))
    started = time.perf_counter()
    assert client.get("/notes").status_code == 200
    assert time.perf_counter() - started >= 0.25
    started = time.perf_counter()
    assert client.get("/notes/a").status_code == 404
    assert time.perf_counter() - started < 0.25


def test_error_rate_is_seeded() -> None:
    def statuses(seed: int) -> list[int]:
        emu = NotesEmulator(seed=seed)
        emu.set_faults(NoteOp.LIST, EndpointFaults(error_rate=0.5))
        with httpx.Client(transport=emu.mock_transport(), base_url="http://n", headers=AUTH) as h:
            return [h.get("/notes").status_code for _ in range(40)]

    first = statuses(3)
    assert first == statuses(3)
    assert first != statuses(4)
    assert set(first) == {200, 503}


def test_refuse_users_reaches_the_handler(notes: NotesEmulator, client: httpx.Client) -> None:
    notes.set_faults(NoteOp.CREATE, EndpointFaults(refuse_users=frozenset({"b"})))
    assert create(client, "a", "b", "c").json() == {"created": ["a", "c"]}
    assert set(notes.notes) == {"a", "c"}


def test_set_faults_copies_validates_and_clears(notes: NotesEmulator) -> None:
    faults = EndpointFaults(fail_next=2)
    notes.set_faults(NoteOp.READ, faults)
    faults.fail_next = 7
    assert notes.faults(NoteOp.READ) == EndpointFaults(fail_next=2)
    assert notes.faults(NoteOp.LIST) == EndpointFaults()
    for bad, field in [
        (EndpointFaults(throttle_next=-1), "throttle_next"),
        (EndpointFaults(latency_ms=-1), "latency_ms"),
        (EndpointFaults(error_rate=-0.1), "error_rate"),
    ]:
        with pytest.raises(ValueError, match=field):
            notes.set_faults(NoteOp.READ, bad)
    notes.clear_faults()
    assert notes.faults(NoteOp.READ) == EndpointFaults()


# ------------------------------------------------------------- control endpoints


def test_control_endpoints_speak_the_api_operations(
    notes: NotesEmulator, client: httpx.Client
) -> None:
    create(client, "a")
    assert client.get("/_emulator/stats").json() == {
        "calls": zero_calls(create=1, POST=1),
        "notes": 1,
    }
    assert client.post("/_emulator/reset-counters").json() == {"message": "counters reset"}
    assert notes.calls() == zero_calls()

    answer = client.post(
        "/_emulator/faults",
        json={"operation": "read", "throttle_next": 1, "retry_after_s": 4, "refuse_users": ["z"]},
    )
    assert answer.status_code == 200
    assert answer.json()["operation"] == "read"
    assert answer.json()["refuse_users"] == ["z"]
    assert notes.faults(NoteOp.READ) == EndpointFaults(
        throttle_next=1, retry_after_s=4, refuse_users=frozenset({"z"})
    )
    assert client.get("/notes/a").headers["retry-after"] == "4"

    # An operation of another API (the platform's "insert") is not one of this API's.
    refused = client.post("/_emulator/faults", json={"operation": "insert", "fail_next": 1})
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("invalid faults body")

    client.post("/_emulator/faults", json={"operation": "list", "fail_next": 1})
    assert client.delete("/_emulator/faults").json() == {"message": "faults cleared"}
    assert client.get("/notes").status_code == 200


# --------------------------------------------------------------------- lifecycle


def test_url_running_and_idempotent_start_stop() -> None:
    emu = NotesEmulator()
    assert not emu.running
    with pytest.raises(RuntimeError, match="not started"):
        _ = emu.url
    assert repr(emu) == "NotesEmulator(stopped, api_key='***')"
    try:
        assert emu.start() is emu
        url = emu.url
        assert url.startswith("http://127.0.0.1:")
        emu.start()
        assert emu.url == url
    finally:
        emu.stop()
    emu.stop()
    assert not emu.running
    assert emu.stops == 1


def test_restart_keeps_the_port_and_the_store() -> None:
    emu = NotesEmulator()
    try:
        url = emu.start().url
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as http:
            create(http, "a")
        emu.stop()
        assert emu.stops == 1
        assert emu.start().url == url
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as http:
            assert http.get("/notes").json() == {"ids": ["a"]}
    finally:
        emu.stop()
    assert emu.stops == 2


def test_stop_closes_idle_keep_alive_connections() -> None:
    emu = NotesEmulator().start()
    try:
        with httpx.Client(base_url=emu.url, headers=AUTH, timeout=5) as http:
            assert http.get("/notes").status_code == 200
            started = time.perf_counter()
            emu.stop()
            assert time.perf_counter() - started < 3
            with pytest.raises(httpx.TransportError):
                http.get("/notes")
    finally:
        emu.stop()


def test_handler_exception_is_500_logged_and_the_server_survives(
    notes: NotesEmulator,
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A body that does not decode makes the notes handler raise (it does no validation).
    with caplog.at_level(logging.ERROR, logger="syncd.emulator"):
        broken = client.post("/notes", content=b"not json")
    assert broken.status_code == 500
    assert broken.json() == {"detail": "Internal emulator error"}
    assert "emulator handler failed on POST /notes" in caplog.text
    assert create(client, "a").status_code == 201


def test_unreadable_content_length_is_400_and_closes_the_connection(notes: NotesEmulator) -> None:
    host, port = notes.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            f"POST /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Length: twelve\r\n\r\n".encode()
        )
        answer = b""
        while chunk := raw.recv(4096):  # the server closes: recv returns b"" at the end
            answer += chunk
    head = answer.decode("latin-1")
    assert head.startswith("HTTP/1.1 400 ")
    assert "Connection: close" in head
    assert head.endswith('{"detail":"invalid Content-Length"}')
    assert notes.calls() == zero_calls()


def test_serve_forever_prints_the_url_once_and_stops_on_sigterm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu = NotesEmulator()
    before = signal.getsignal(signal.SIGTERM)

    def send_sigterm_once_serving() -> None:
        deadline = time.monotonic() + 10
        while not emu.running and time.monotonic() < deadline:
            time.sleep(0.01)
        # serve_forever installs its handler before start(), so this never kills pytest.
        if emu.running:
            os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_sigterm_once_serving)
    sender.start()
    try:
        emu.serve_forever()
    finally:
        sender.join()
        emu.stop()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{LISTENING_PREFIX}http://127.0.0.1:")
    assert not emu.running
    assert emu.stops == 1
    assert signal.getsignal(signal.SIGTERM) == before


# ---------------------------------------------------------------- mock transport


@pytest.fixture
def mock(notes: NotesEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=notes.mock_transport(), base_url="http://notes", headers=AUTH) as h:
        yield h


def test_mock_transport_answers_like_http(
    notes: NotesEmulator, client: httpx.Client, mock: httpx.Client
) -> None:
    def exchange(http: httpx.Client) -> list[tuple[int, bytes, str | None, str | None]]:
        responses = [
            create(http, "m"),
            http.get("/notes/m"),
            http.get("/notes/none"),
            http.put("/notes"),
            http.get("/notes", headers={"Authorization": "Bearer wrong"}),
            http.get("/nowhere"),
            http.delete("/notes/m"),
        ]
        return [
            (r.status_code, r.content, r.headers.get("content-type"), r.headers.get("allow"))
            for r in responses
        ]

    over_mock = exchange(mock)
    assert over_mock == exchange(client)
    assert [status for status, *_ in over_mock] == [201, 200, 404, 405, 401, 404, 204]
    assert notes.calls() == zero_calls(create=2, read=4, delete=2, GET=4, POST=2, DELETE=2)


def test_mock_transport_applies_faults_and_control_without_a_socket() -> None:
    emu = NotesEmulator()
    emu.set_faults(NoteOp.CREATE, EndpointFaults(throttle_next=1, retry_after_s=0.5))
    with httpx.Client(transport=emu.mock_transport(), base_url="http://n", headers=AUTH) as h:
        throttled = create(h, "a")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "0.5"
        assert create(h, "a").status_code == 201
        assert h.get("/_emulator/stats").json()["notes"] == 1
    assert not emu.running
    assert emu.calls()["create"] == 2
