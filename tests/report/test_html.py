"""The HTML page: self-contained, escaped, and rendered by headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

from syncd.model import make_tags
from syncd.report.compute import EligibleUser, Granularity, compute_report
from syncd.report.html import render_html
from tests.chromium import run_chromium
from tests.report.test_compute import PLATFORM
from tests.report.test_render import sample_report

D = date.fromisoformat


class _References(HTMLParser):
    """Collects every attribute that could load something, and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
                self.urls.append(value or "")


def test_html_references_nothing_external() -> None:
    page = render_html(sample_report())
    parser = _References()
    parser.feed(page)
    assert parser.urls == []
    assert not {"script", "link", "img", "iframe", "object", "embed"} & parser.tags
    assert "url(" not in page
    assert "@import" not in page
    assert not re.search(r"https?://", page)
    # The data, escaped: the leakage list and the definitions are in the page.
    assert "<li>x</li>" in page
    assert "Definitions" in page
    assert "2026-03-21T06:00:00Z" in page
    assert page.count("<svg") == 3  # rate line, eligible vs active, per-department bars


def test_html_escapes_data() -> None:
    platform = [*PLATFORM]
    report = compute_report(
        start=D("2026-01-10"),
        end=D("2026-01-12"),
        granularity=Granularity.DAILY,
        eligible=platform,
        activity={"<script>alert(1)</script>": 1},
    )
    page = render_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("headless Chromium is not installed (Debian package chromium)")
    return binary


def _render_in_chromium(page: Path, png: Path, profile: Path) -> str:
    """Screenshot ``page``; return Chromium's log. Offline: every host maps to nothing."""
    command = [
        _chromium(),
        "--headless",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=900,1800",
        f"--screenshot={png}",
        page.as_uri(),
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
    code, output = run_chromium(command)
    assert code == 0, output[-2000:]
    return output


def _console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Failed to load" in line]


def test_html_renders_in_headless_chromium_without_console_errors(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_report()), encoding="utf-8")
    png = tmp_path / "report.png"
    log = _render_in_chromium(page, png, tmp_path / "profile")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # charts and text, not a blank page
    assert _console_lines(log) == []
    # The check can fail: a page that logs an error is caught the same way.
    bad = tmp_path / "bad.html"
    bad.write_text('<script>console.error("broken-page")</script>', encoding="utf-8")
    bad_log = _render_in_chromium(bad, tmp_path / "bad.png", tmp_path / "profile2")
    assert any("broken-page" in line for line in _console_lines(bad_log))


def test_a_daily_report_draws_areas_instead_of_180_columns() -> None:
    report = compute_report(
        start=D("2026-01-01"),
        end=D("2026-06-29"),
        granularity=Granularity.DAILY,
        eligible=PLATFORM,
        activity={"a": (1 << 180) - 1},
    )
    page = render_html(report)
    assert page.count("<polygon") == 2
    assert "<rect" not in page.split("Eligible and active users")[1].split("<h2>")[0]


def test_axis_labels_stay_inside_the_chart() -> None:
    # 180 daily periods: the last label sits near the right edge, where a centred
    # YYYY-MM-DD label (about 62 px at 11 px) used to be cut off.
    report = compute_report(
        start=D("2026-01-01"),
        end=D("2026-06-29"),
        granularity=Granularity.DAILY,
        eligible=PLATFORM,
        activity={},
    )
    page = render_html(report)
    labels = re.findall(r'<text x="([\d.]+)" y="\d+" text-anchor="(\w+)">(\d{4}-\d\d-\d\d)<', page)
    assert labels
    for x, anchor, _ in labels:
        left = {"start": 0.0, "middle": 31.0, "end": 62.0}[anchor]
        assert float(x) - left >= 0
        assert float(x) - left + 62.0 <= 720


def test_long_group_values_end_with_an_ellipsis_and_keep_the_full_value() -> None:
    long_value = "Research and Development, Europe and Middle East"
    platform = [EligibleUser("z", D("2026-01-01"), None, make_tags({"department": long_value}))]
    report = compute_report(
        start=D("2026-01-01"),
        end=D("2026-01-31"),
        granularity=Granularity.MONTHLY,
        eligible=platform,
        activity={},
        by=("department",),
    )
    page = render_html(report)
    assert f"<title>{long_value}</title>{long_value[:27]}…</text>" in page
