"""Logging: JSON or console lines, and no secret in a logged traceback."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from syncd.logs import configure_logging


def _crash_with_a_secret_local() -> None:
    api_key = "sk-live-local-variable-secret"
    headers = {"Authorization": f"Bearer {api_key}"}
    raise RuntimeError(f"boom with {len(headers)} header")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_logged_tracebacks_never_show_local_variables(fmt: str) -> None:
    stream = io.StringIO()
    configure_logging(fmt, "info", stream=stream)  # type: ignore[arg-type]
    try:
        _crash_with_a_secret_local()
    except RuntimeError:
        structlog.get_logger("test").exception("job.crashed", job="corp")
    text = stream.getvalue()
    assert "boom with 1 header" in text  # the traceback is there ...
    assert "_crash_with_a_secret_local" in text
    assert "sk-live-local-variable-secret" not in text  # ... its locals are not


def test_json_lines_carry_bound_context() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    structlog.contextvars.bind_contextvars(run_id="r1")
    try:
        structlog.get_logger("test").info("hello", users=3)
        structlog.get_logger("test").debug("hidden")
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert (record["event"], record["users"], record["run_id"], record["level"]) == (
        "hello",
        3,
        "r1",
        "info",
    )
