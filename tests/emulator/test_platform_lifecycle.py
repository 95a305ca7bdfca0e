"""Platform emulator persistence, robustness over raw sockets, and as a process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from syncd.emulator import PlatformEmulator
from tests.emulator.platform_support import AUTH, EU, KEY, user, wire

# -------------------------------------------------------------------- persistence


def test_data_file_persists_across_stop_and_start(tmp_path: Path) -> None:
    data_file = tmp_path / "state" / "users.json"
    with (
        PlatformEmulator(api_key=KEY, data_file=data_file) as emu,
        httpx.Client(base_url=emu.url, headers=AUTH, timeout=10) as http,
    ):
        http.post(EU.path, json={"users": [user("a", t="1"), user("b")]})
        http.request("DELETE", EU.path, json={"users": ["b"]})
    assert json.loads(data_file.read_text()) == {"users": [user("a", t="1")]}
    assert [p.name for p in data_file.parent.iterdir()] == ["users.json"]  # no temp left

    with (
        PlatformEmulator(api_key=KEY, data_file=data_file) as again,
        httpx.Client(base_url=again.url, headers=AUTH, timeout=10) as http,
    ):
        assert http.get(EU.path).json() == {"users": [user("a", t="1")]}


def test_restart_of_the_same_instance_keeps_url_and_users(tmp_path: Path) -> None:
    emu = PlatformEmulator(api_key=KEY, data_file=tmp_path / "u.json").start()
    try:
        url = emu.url
        emu.seed_users([wire("a")])
        emu.stop()
        assert not emu.running
        with pytest.raises(RuntimeError):
            _ = emu.url
        emu.start()
        assert emu.url == url
        with httpx.Client(base_url=emu.url, headers=AUTH, timeout=10) as http:
            assert [u["end_user"] for u in http.get(EU.path).json()["users"]] == ["a"]
    finally:
        emu.stop()
    assert (tmp_path / "u.json").exists()


def test_corrupt_data_file_is_a_clear_error(tmp_path: Path) -> None:
    data_file = tmp_path / "u.json"
    data_file.write_text('{"users": [')
    with pytest.raises(ValueError, match="cannot load emulator data file"):
        PlatformEmulator(api_key=KEY, data_file=data_file)


# ---------------------------------------------------------------------- robustness


def test_handler_exception_is_500_and_server_keeps_running(
    emulator: PlatformEmulator, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(emulator, "_delete", boom)
    response = client.request("DELETE", EU.path, json={"users": ["a"]})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal emulator error"}
    monkeypatch.undo()
    assert client.get(EU.path).status_code == 200


def test_client_disconnecting_mid_body_does_not_hurt(
    emulator: PlatformEmulator, client: httpx.Client
) -> None:
    host, port = emulator.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            f"POST {EU.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"users": ['.encode()
        )
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            f"GET {EU.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
        )
        # Hang up before reading a large response.
    assert client.post(EU.path, json={"users": [user("a")]}).status_code == 200
    assert set(emulator.users()) == {"a"}


def test_keep_alive_serves_many_requests_on_one_connection(emulator: PlatformEmulator) -> None:
    host, port = emulator.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        sockets = set()
        for index in range(3):
            body = json.dumps({"users": [user(f"u{index}")]})
            connection.request("POST", EU.path, body=body, headers=AUTH)
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            sockets.add(id(connection.sock))
        assert len(sockets) == 1
    finally:
        connection.close()
    assert len(emulator.users()) == 3


def test_chunked_request_body_is_read(emulator: PlatformEmulator, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"users": ['
        yield json.dumps(user("a")).encode()
        yield b"]}"

    response = client.post(EU.path, content=chunks())
    assert response.status_code == 200
    assert "a" in emulator.users()


def test_stop_closes_idle_keep_alive_connections() -> None:
    emu = PlatformEmulator(api_key=KEY).start()
    with httpx.Client(base_url=emu.url, headers=AUTH, timeout=5) as http:
        assert http.get(EU.path).status_code == 200
        started = time.perf_counter()
        emu.stop()
        assert time.perf_counter() - started < 3
        with pytest.raises(httpx.TransportError):
            http.get(EU.path)


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="api_key"):
        PlatformEmulator(api_key="")
    with pytest.raises(ValueError, match="max_batch_size"):
        PlatformEmulator(api_key=KEY, max_batch_size=0)
    with pytest.raises(ValueError, match="page_size"):
        PlatformEmulator(api_key=KEY, page_size=0)


# ------------------------------------------------------------------------ process


def test_cli_process_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "SYNCD_EMULATOR_API_KEY": KEY}
    with subprocess.Popen(
        [sys.executable, "-m", "syncd", "emulator", "platform", "--port", "0", "--users", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            prefix = "syncd emulator listening on "
            assert line.startswith(prefix), line
            url = line.removeprefix(prefix)
            assert url.startswith("http://127.0.0.1:")
            with httpx.Client(base_url=url, headers=AUTH, timeout=10) as http:
                assert len(http.get(EU.path).json()["users"]) == 50
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
            assert process.returncode == 0, stderr
            assert KEY not in stderr
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
