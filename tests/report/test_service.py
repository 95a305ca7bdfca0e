"""build_report end to end: platform emulator (eligible) x analytics emulator (active)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import PlatformEmulator
from syncd.emulator.analytics import AnalyticsEmulator
from syncd.errors import ConfigError
from syncd.platform.api import WireUser
from syncd.report.compute import Granularity
from syncd.report.render import to_json
from syncd.report.service import ReportRequest, build_report
from tests.report.conftest import ANALYTICS_KEY

D = date.fromisoformat
PLATFORM_KEY = "sk-platform-report-test"

# The platform's users (the platform keeps its own spelling: Ann is mixed-case there).
PLATFORM_USERS = [
    WireUser("Ann@Example.com", {"department": "Sales"}, "2025-06-01"),
    WireUser("bob@example.com", {"department": "Sales"}, "2026-02-15"),  # joins mid-Feb
    WireUser("cy@example.com", {"department": "Eng"}, "2025-01-01", "2026-02-10"),  # leaves
    WireUser("dee@example.com", {"department": "Eng"}, "2025-01-01", "2025-12-31"),  # gone
    WireUser("eve@example.com", {"department": "Eng"}, "2026-04-01"),  # starts after
    WireUser("gus@example.com", {}, "2026-03-20"),  # no tag, starts on the last day
]
# The analytics API's ids (its own spelling: ANN in upper case).
ACTIVITY = [
    ("ANN@example.com", D("2026-01-12")),
    ("ANN@example.com", D("2026-03-02")),
    ("bob@example.com", D("2026-01-20")),  # before joining
    ("bob@example.com", D("2026-03-03")),
    ("cy@example.com", D("2026-03-04")),  # after leaving
    ("dee@example.com", D("2026-02-05")),  # long gone
    ("Xavier@Example.com", D("2026-02-06")),  # never on the platform
]


@pytest.fixture
def platform() -> Iterator[PlatformEmulator]:
    """A platform emulator holding PLATFORM_USERS."""
    with PlatformEmulator(api_key=PLATFORM_KEY) as emu:
        emu.seed_users(PLATFORM_USERS)
        yield emu


def _config(
    platform: PlatformEmulator, analytics: AnalyticsEmulator, tmp: Path, extra: str = ""
) -> SyncdConfig:
    text = f"""
state_dir: ./state
log: {{format: json, level: warning}}
jobs:
  - name: corp
    target: {{base_url: "{platform.url}", api_key: {PLATFORM_KEY}}}
    sources: [{{type: csv, path: users.csv, id_column: email}}]
analytics:
  base_url: "{analytics.url}"
  service_key: {ANALYTICS_KEY}
{extra}
"""
    return parse_config(text, origin="test.yaml", base_dir=tmp)


REQUEST = ReportRequest(D("2026-01-10"), D("2026-03-20"), Granularity.MONTHLY, ("department",))


def test_the_hand_computed_report_end_to_end(
    platform: PlatformEmulator, analytics: AnalyticsEmulator, tmp_path: Path
) -> None:
    analytics.add_activity(ACTIVITY)
    report = to_json(build_report(_config(platform, analytics, tmp_path), REQUEST))
    numbers = [
        (p["period"], p["eligible"], p["active"], p["active_eligible"], p["active_not_eligible"])
        for p in report["periods"]
    ]
    assert numbers == [
        ("2026-01", 2, 2, 1, 1),  # ann, cy eligible; ann, bob active
        ("2026-02", 3, 2, 0, 2),  # ann, bob, cy eligible; dee, xavier active
        ("2026-03", 3, 3, 2, 1),  # ann, bob, gus eligible; ann, bob, cy active
    ]
    assert [p["activation_rate"] for p in report["periods"]] == [0.5, 0.0, 0.6667]
    total = report["total"]
    assert (total["eligible"], total["active"], total["active_eligible"]) == (4, 5, 2)
    assert total["active_not_eligible"] == 3
    assert report["active_not_eligible_users"] == [
        "cy@example.com",
        "dee@example.com",
        "xavier@example.com",
    ]
    assert report["never_active"] == 2
    assert total["by"]["department"]["Sales"]["activation_rate"] == 1.0
    assert total["by"]["department"]["(no department)"]["active_not_eligible"] == 1  # xavier
    assert report["periods"][0]["by"]["department"]["Sales"]["eligible"] == 1


def test_the_report_never_writes_to_the_platform(
    platform: PlatformEmulator, analytics: AnalyticsEmulator, tmp_path: Path
) -> None:
    analytics.add_activity(ACTIVITY)
    before = platform.users()
    build_report(_config(platform, analytics, tmp_path), REQUEST)
    calls = platform.calls()
    assert calls["list"] == 1
    assert (calls["insert"], calls["update"], calls["delete"]) == (0, 0, 0)
    assert (calls["PUT"], calls["POST"], calls["DELETE"]) == (0, 0, 0)
    assert platform.users() == before


def test_identity_through_a_mapping_csv(
    platform: PlatformEmulator, analytics: AnalyticsEmulator, tmp_path: Path
) -> None:
    (tmp_path / "ids.csv").write_text(
        "uid,mail\nu-1,ann@example.com\nu-2,BOB@example.com\n", encoding="utf-8"
    )
    analytics.add_activity(
        [("u-1", D("2026-03-01")), ("u-2", D("2026-03-01")), ("u-9", D("2026-03-01"))]
    )
    extra = "  identity: {mapping_csv: ids.csv, user_id_column: uid, end_user_column: mail}"
    report = to_json(build_report(_config(platform, analytics, tmp_path, extra), REQUEST))
    march = report["periods"][2]
    assert (march["active"], march["active_eligible"]) == (3, 2)
    assert report["active_not_eligible_users"] == ["u-9"]  # unmapped ids stay visible


def test_several_jobs_need_a_job_name(
    platform: PlatformEmulator, analytics: AnalyticsEmulator, tmp_path: Path
) -> None:
    config = _config(platform, analytics, tmp_path)
    config = config.model_copy(
        update={"jobs": (*config.jobs, config.jobs[0].model_copy(update={"name": "b"}))}
    )
    with pytest.raises(ConfigError, match="choose one with --job"):
        build_report(config, REQUEST)


def test_the_apis_data_freshness_reaches_the_json(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    refreshed = datetime(2026, 3, 21, 6, 0, tzinfo=UTC)
    with AnalyticsEmulator(api_key=ANALYTICS_KEY, data_freshness=refreshed) as analytics:
        analytics.add_activity(ACTIVITY)
        report = to_json(build_report(_config(platform, analytics, tmp_path), REQUEST))
    assert report["data_freshness"] == "2026-03-21T06:00:00Z"


def test_platform_entries_that_normalise_alike_keep_their_gap(
    analytics: AnalyticsEmulator, tmp_path: Path
) -> None:
    # Ann@x (January only) and ann@x (from March) are one user: not eligible in February.
    with PlatformEmulator(api_key=PLATFORM_KEY) as emu:
        emu.seed_users(
            [
                WireUser("Ann@Example.com", {"department": "Old"}, "2025-06-01", "2026-01-31"),
                WireUser("ann@example.com", {"department": "New"}, "2026-03-01"),
            ]
        )
        analytics.add_activity([("ann@example.com", D("2026-02-10"))])
        report = to_json(build_report(_config(emu, analytics, tmp_path), REQUEST))
    assert [p["eligible"] for p in report["periods"]] == [1, 0, 1]
    assert report["active_not_eligible_users"] == ["ann@example.com"]
    assert list(report["total"]["by"]["department"]) == ["New"]
