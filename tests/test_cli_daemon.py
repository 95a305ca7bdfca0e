"""``syncd run`` and ``syncd healthcheck`` in process (the daemon itself: tests/daemon)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from syncd.cli import app
from syncd.cli_daemon import DEFAULT_HEALTH_URL, check_health, health_url
from syncd.config import ServerConfig
from tests.daemon.support import job_yaml

runner = CliRunner()


@pytest.fixture(autouse=True)
def _keep_logging_config() -> Iterator[None]:
    """``syncd run`` configures structlog for the process; undo it for later tests."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:9464", "http://127.0.0.1:9464"),
        ("0.0.0.0:8000", "http://127.0.0.1:8000"),
        ("[::]:9464", "http://[::1]:9464"),
        ("[::1]:9", "http://[::1]:9"),
        ("metrics.local:80", "http://metrics.local:80"),
    ],
)
def test_health_url_reaches_a_wildcard_listen_on_loopback(listen: str, url: str) -> None:
    assert health_url(ServerConfig(listen=listen)) == url


def test_healthcheck_fails_against_nothing(unused_port: int) -> None:
    result = runner.invoke(app, ["healthcheck", "--url", f"http://127.0.0.1:{unused_port}"])
    assert result.exit_code == 1
    assert not check_health(f"http://127.0.0.1:{unused_port}", timeout_s=1)


def test_healthcheck_reads_the_url_from_the_config(tmp_path: Path, unused_port: int) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f'server: {{listen: "0.0.0.0:{unused_port}"}}\njobs:'
        + job_yaml("a", "http://127.0.0.1:9", tmp_path / "u.csv"),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["healthcheck", "-c", str(config)])
    assert result.exit_code == 1
    assert f"http://127.0.0.1:{unused_port}/healthz" in result.output
    assert DEFAULT_HEALTH_URL == "http://127.0.0.1:9464"


def test_healthcheck_with_a_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: 3\n", encoding="utf-8")
    assert runner.invoke(app, ["healthcheck", "-c", str(bad)]).exit_code == 2


def test_run_refuses_a_job_without_a_schedule(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "jobs:" + job_yaml("manual", "http://127.0.0.1:9", tmp_path / "u.csv", every=None),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 2
    assert "none for: manual" in result.output


def test_run_without_a_config_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2
    assert "no config file" in result.output


def test_run_with_a_missing_token_file_is_a_usage_error(tmp_path: Path, unused_port: int) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f'server: {{listen: "127.0.0.1:{unused_port}", '
        f"auth_token_file: {tmp_path / 'none'}}}\njobs:"
        + job_yaml("a", "http://127.0.0.1:9", tmp_path / "u.csv"),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 2
    assert "cannot read secret file" in result.output


def test_run_cannot_start_on_an_unusable_state_dir(tmp_path: Path, unused_port: int) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state folder should be\n", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(
        f'state_dir: {blocker}\nserver: {{listen: "127.0.0.1:{unused_port}"}}\njobs:'
        + job_yaml("a", "http://127.0.0.1:9", tmp_path / "u.csv"),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 1
    assert "cannot start" in result.output


def test_run_cannot_start_when_the_listen_address_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            f'state_dir: {tmp_path / "state"}\nserver: {{listen: "127.0.0.1:{port}"}}\njobs:'
            + job_yaml("a", "http://127.0.0.1:9", tmp_path / "u.csv"),
            encoding="utf-8",
        )
        result = runner.invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 1
    assert "in use" in result.output
