"""The daemon's metrics: label sets at zero from the start, runs counted, no user ids."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from syncd.daemon.metrics import DaemonMetrics
from syncd.daemon.status import RunSummary
from syncd.platform.api import ApiFlavour
from tests.daemon.support import metric

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)
URL = "https://backend.example"


def _metrics() -> DaemonMetrics:
    metrics = DaemonMetrics(["applied", "held", "partial", "failed", "busy"])
    metrics.add_job("corp", ["users.csv", "hr"], URL, ApiFlavour.PLATFORM_USERS)
    return metrics


def _summary(status: str, **fields: object) -> RunSummary:
    values: dict[str, object] = {
        "status": status, "exit_code": 0, "run_id": "r", "started_at": T0, "finished_at": T1,
        "counts": {}, "source_users": {"users.csv": 7, "hr": 3}, "platform_users": 9,
        "confirmed": {}, "write_calls": 0, "failures": 0, "reasons": (), "error": None,
        "command": None,
    }  # fmt: skip
    values.update(fields)
    return RunSummary(**values)  # type: ignore[arg-type]


def test_every_label_set_exists_at_zero_before_the_first_run() -> None:
    text = _metrics().render().decode()
    for status in ("applied", "held", "partial", "failed", "busy"):
        assert metric(text, "syncd_runs_total", job="corp", status=status) == 0
    for operation in ("insert", "update", "delete"):
        assert metric(text, "syncd_changes_total", job="corp", operation=operation) == 0
    assert metric(text, "syncd_source_users", job="corp", source="hr") == 0
    assert metric(text, "syncd_guard_held", job="corp") == 0
    assert metric(text, "syncd_run_duration_seconds_count", job="corp") == 0
    for method in ("GET", "PUT", "POST", "DELETE"):
        assert metric(text, "syncd_api_requests_total", target=URL, method=method, code="200") == 0
    assert metric(text, "syncd_build_info", version="0.1.0") == 1
    assert "_created" not in text


def test_runs_are_counted_and_a_hold_shows_until_a_run_passes() -> None:
    metrics = _metrics()
    metrics.observe_run("corp", _summary("applied", confirmed={"insert": 5, "update": 2}))
    metrics.observe_run("corp", _summary("held"))
    metrics.observe_run("corp", _summary("held"))
    text = metrics.render().decode()
    assert metric(text, "syncd_runs_total", job="corp", status="held") == 2
    assert metric(text, "syncd_guard_held", job="corp") == 1
    assert metric(text, "syncd_changes_total", job="corp", operation="insert") == 5
    assert metric(text, "syncd_source_users", job="corp", source="users.csv") == 7
    assert metric(text, "syncd_platform_users", job="corp") == 9
    assert metric(text, "syncd_last_success_timestamp_seconds", job="corp") == T1.timestamp()
    assert metric(text, "syncd_run_duration_seconds_sum", job="corp") == 6.0
    metrics.observe_run("corp", _summary("busy"))  # says nothing about the plan
    assert metric(metrics.render().decode(), "syncd_guard_held", job="corp") == 1
    metrics.observe_run("corp", _summary("partial", failures=3))
    text = metrics.render().decode()
    assert metric(text, "syncd_guard_held", job="corp") == 0
    assert metric(text, "syncd_write_failures_total", job="corp") == 3


def test_requests_are_counted_by_verb_and_code() -> None:
    metrics = _metrics()
    observe = metrics.request_observer(URL)
    observe("PUT", 503)
    observe("PUT", 200)
    observe("GET", None)
    text = metrics.render().decode()
    assert metric(text, "syncd_api_requests_total", target=URL, method="PUT", code="503") == 1
    assert metric(text, "syncd_api_requests_total", target=URL, method="PUT", code="200") == 1
    assert metric(text, "syncd_api_requests_total", target=URL, method="GET", code="error") == 1


def test_the_registry_is_its_own() -> None:
    metrics = _metrics()
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("syncd_runs_total", {"job": "corp", "status": "held"}) is None
