"""The status page: pure rendering, and the live page rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.daemon.page import REFRESH_S, render_page
from tests.chromium import run_chromium
from tests.daemon.conftest import IDS, HeldDaemon, auth, move_to_held

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXTERNAL = r"""(src|href)\s*=|<link|@import|url\("""
"""Anything that would make a browser fetch another resource."""


def _status(**last: Any) -> dict[str, Any]:
    run = {
        "status": "held",
        "finished_at": NOW.isoformat(),
        "duration_s": 1.25,
        "counts": {"insert": 0, "end": 15, "unchanged": 5},
        "source_users": {"users.csv": 5},
        "platform_users": 20,
        "write_calls": 0,
        "failures": 0,
        "reasons": ["15 removals (end-dates + deletes) exceed max_removals=5"],
        "error": None,
        "apply_command": "syncd apply -c /etc/syncd.yaml --job corp --allow-removals 15",
    }
    run.update(last)
    return {
        "version": "0.1.0",
        "started_at": NOW.isoformat(),
        "now": NOW.isoformat(),
        "jobs": [
            {
                "name": "corp",
                "schedule": "every 15m",
                "running": False,
                "running_since": None,
                "next_run": NOW.isoformat(),
                "held_cycles": 3,
                "last_run": run,
            }
        ],
    }


def test_the_page_shows_the_hold_and_the_command_that_passes_it() -> None:
    history = {"corp": [{"started_at": NOW, "status": "applied", "duration_s": 2.0,
                         "counts": {"insert": 20}, "write_calls": 1, "failures": 0}]}  # fmt: skip
    page = render_page(_status(), history)
    assert f'http-equiv="refresh" content="{REFRESH_S}"' in page
    assert "--allow-removals 15" in page
    assert "held for</th><td>3 consecutive run(s)" in page
    assert "insert 20" in page
    assert "every 15m" in page


def test_the_page_escapes_what_it_shows_and_has_no_script_or_external_asset() -> None:
    page = render_page(_status(error="<script>alert(1)</script>", apply_command=None), {})
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert "cannot be forced" in page
    assert not re.search(EXTERNAL, page)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_live_page_renders_in_headless_chromium(held: HeldDaemon, tmp_path: Path) -> None:
    move_to_held(held)
    response = held.daemon.get("/", headers=auth())
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert not re.search(EXTERNAL, response.text)
    # Chromium cannot send the bearer token: it renders the page saved from the
    # daemon, which works only because the page needs nothing else.
    saved = tmp_path / "status.html"
    saved.write_bytes(response.content)
    screenshot = tmp_path / "status.png"
    flags = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'p'}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000",
        "--window-size=1100,1000",
    ]  # fmt: skip
    shot_code, shot_log = run_chromium([*flags, f"--screenshot={screenshot}", saved.as_uri()])
    assert shot_code == 0, shot_log
    assert _png_size(screenshot) == (1100, 1000)
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    dom_code, dom_log = run_chromium([*flags, "--dump-dom", saved.as_uri()])
    assert dom_code == 0, dom_log
    assert "--allow-removals 15" in dom_log
    assert "Held because" in dom_log
    for log in (shot_log, dom_log):
        assert "CONSOLE" not in log
        assert "Failed to load resource" not in log
    for user in IDS:
        assert user not in dom_log
