"""systemd notify: datagrams on a real unix socket, from Notifier and from the daemon."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.daemon.notify import Notifier
from syncd.emulator import PlatformEmulator
from tests.daemon.support import DaemonProcess, free_port, job_yaml, write_config, write_csv


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to an abstract name, and its ``$NOTIFY_SOCKET`` spelling."""
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def _receive_until(
    sock: socket.socket, wanted: str, timeout_s: float, into: list[str]
) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            into.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if into[-1].startswith(wanted):
            return into
    raise AssertionError(f"no {wanted!r} within {timeout_s} s; got {into}")


def test_notifier_sends_one_datagram_per_message(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000"})
    assert notifier.enabled
    assert notifier.watchdog_s == 4.0
    notifier.ready()
    notifier.status("corp: applied\nnext")
    notifier.stopping()
    assert [sock.recv(4096) for _ in range(3)] == [
        b"READY=1",
        b"STATUS=corp: applied next",
        b"STOPPING=1",
    ]


def test_notifier_on_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        Notifier({"NOTIFY_SOCKET": str(path)}).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"


def test_without_notify_socket_nothing_is_sent_and_a_dead_socket_is_harmless(
    tmp_path: Path,
) -> None:
    assert not Notifier({}).enabled
    Notifier({}).ready()
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready()  # logged, not raised
    other_pid = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other_pid.watchdog_s is None


def test_the_daemon_notifies_ready_watchdog_status_and_stopping(
    tmp_path: Path, emulator: PlatformEmulator, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    csv = tmp_path / "users.csv"
    write_csv(csv, ["a@corp.example"])
    port = free_port()
    config = write_config(tmp_path, [job_yaml("corp", emulator.url, csv)], port=port)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
    messages: list[str] = []
    with DaemonProcess(config, port, env=env) as daemon:
        _receive_until(sock, "READY=1", 20, messages)
        _receive_until(sock, "STATUS=corp: applied", 20, messages)
        watchdogs = [m for m in messages if m == "WATCHDOG=1"]
        while len(watchdogs) < 2:
            _receive_until(sock, "WATCHDOG=1", 5, messages)
            watchdogs = [m for m in messages if m == "WATCHDOG=1"]
        daemon.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        _receive_until(sock, "STOPPING=1", 8, messages)
        assert daemon.process.wait(8) == 0  # type: ignore[union-attr]
    assert messages.index("READY=1") < messages.index("STOPPING=1")
