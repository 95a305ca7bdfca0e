"""run_job and JobResources against the emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import structlog
from structlog.testing import capture_logs

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import PlatformEmulator
from syncd.exitcodes import ExitCode
from syncd.model import Origin, RecordProblem, SourceUser, make_tags
from syncd.runner import PlannedRun, RunStatus
from syncd.service import JobResources, open_resources, run_job
from syncd.state import SqliteStateStore

CONFIG = """
state_dir: ./state
jobs:
  - name: corp
    target: {base_url: "${URL}", KEY, batch_size: 2, max_retries: 0}
    sources:
      - {type: csv, path: users.csv, id_column: email}
"""


def make_config(tmp_path: Path, url: str, key: str, *, key_line: str | None = None) -> SyncdConfig:
    return parse_config(
        CONFIG.replace("KEY", key_line or 'api_key: "${API_KEY}"'),
        origin="test",
        base_dir=tmp_path,
        environ={"URL": url, "API_KEY": key},
    )


def write_users(tmp_path: Path, names: list[str]) -> None:
    (tmp_path / "users.csv").write_text("email\n" + "".join(f"{n}\n" for n in names))


@pytest.fixture
def config(tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str) -> SyncdConfig:
    write_users(tmp_path, ["a@example.com", "b@example.com", "c@example.com"])
    return make_config(tmp_path, emulator.url, emulator_api_key)


def test_plan_only_reports_the_plan_and_writes_nothing(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    seen: list[PlannedRun] = []
    report = run_job(config, config.jobs[0], apply=False, on_planned=seen.append)
    assert (report.status, report.exit_code) == (RunStatus.PLANNED, ExitCode.OK)
    assert report.counts["insert"] == 3
    assert report.write_calls == 0
    assert report.result is None
    assert seen == [report.planned]
    assert emulator.calls()["insert"] == 0
    assert not (config.state_dir).exists()  # plan creates no state


def test_apply_reports_writes_and_records_the_run(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.APPLIED, ExitCode.OK)
    assert report.write_calls == 2  # ceil(3 / 2)
    assert sorted(emulator.users()) == ["a@example.com", "b@example.com", "c@example.com"]
    assert set(report.timings) >= {"read_sources", "list_platform", "plan", "apply"}
    last = SqliteStateStore(config.state_dir).last_run("corp")
    assert last is not None
    assert last.run_id == report.run_id
    assert last.status == "applied"


def test_a_held_plan_is_reported_with_its_reasons(
    config: SyncdConfig, emulator: PlatformEmulator, tmp_path: Path
) -> None:
    assert run_job(config, config.jobs[0], apply=True).exit_code is ExitCode.OK
    write_users(tmp_path, [])
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.HELD, ExitCode.HELD)
    assert report.held
    assert report.guard_reasons
    assert all(u.active_to is None for u in emulator.users().values())


def test_a_missing_secret_file_at_run_time_is_a_config_outcome(
    tmp_path: Path, emulator: PlatformEmulator
) -> None:
    write_users(tmp_path, ["a@example.com"])
    (tmp_path / "key").write_text("sk-file\n")
    config = make_config(tmp_path, emulator.url, "", key_line="api_key_file: key")
    (tmp_path / "key").unlink()
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.FAILED, ExitCode.CONFIG)
    assert report.error is not None
    assert "cannot read secret file" in report.error
    assert report.planned is None
    assert not report.unexpected


def test_an_unreachable_platform_is_a_failed_outcome(tmp_path: Path, unused_port: int) -> None:
    write_users(tmp_path, ["a@example.com"])
    config = make_config(tmp_path, f"http://127.0.0.1:{unused_port}", "k")
    report = run_job(config, config.jobs[0], apply=True)
    assert (report.status, report.exit_code) == (RunStatus.FAILED, ExitCode.FAILED)
    assert report.error is not None
    assert "ConnectError" in report.error
    assert report.run_id is not None


class ScriptedSource:
    """A source that yields given users, or raises a bug; counts how often it is opened."""

    def __init__(self, names: list[str], *, bug: bool = False) -> None:
        self.names = names
        self.bug = bug
        self.opened = 0
        self.closed = 0

    @property
    def label(self) -> str:
        return "scripted"

    def __enter__(self) -> Self:
        self.opened += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed += 1

    def read(self) -> Iterator[SourceUser | RecordProblem]:
        if self.bug:
            raise RuntimeError("a bug in a source")
        for line, name in enumerate(self.names, start=2):
            yield SourceUser(name, make_tags({}), Origin("scripted", line))


def _resources(config: SyncdConfig, source: ScriptedSource) -> JobResources:
    built = open_resources(config, config.jobs[0])
    return JobResources(
        config.jobs[0],
        platform=built.platform,
        sources=[source],
        state=built.state,
        close=built.platform.close,  # type: ignore[attr-defined]
    )


def test_an_unexpected_error_is_a_failed_outcome_and_logged(config: SyncdConfig) -> None:
    with _resources(config, ScriptedSource([], bug=True)) as resources, capture_logs() as logs:
        report = run_job(config, config.jobs[0], apply=True, resources=resources)
    assert (report.exit_code, report.unexpected) == (ExitCode.FAILED, True)
    assert report.error == "RuntimeError: a bug in a source"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["job.crashed"]


def test_resources_are_reused_across_runs_and_closed_once(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    source = ScriptedSource(["a@example.com", "b@example.com"])
    with _resources(config, source) as resources:
        first = run_job(config, config.jobs[0], apply=True, resources=resources)
        emulator.reset_counters()
        second = run_job(config, config.jobs[0], apply=True, resources=resources)
        assert (source.opened, source.closed) == (1, 0)
    assert (source.opened, source.closed) == (1, 1)
    assert first.write_calls == 1
    assert second.write_calls == 0
    assert emulator.calls()["insert"] == 0
    assert first.run_id != second.run_id


def test_the_log_context_is_bound_for_the_run_and_unbound_after(config: SyncdConfig) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(caller="kept")
    with capture_logs() as logs:
        run_job(config, config.jobs[0], apply=True)
    assert [e["event"] for e in logs if e["event"] in ("sources.read", "run.finished")] == [
        "sources.read",
        "run.finished",
    ]
    # The run's keys are gone; what the caller bound before is untouched.
    assert structlog.contextvars.get_contextvars() == {"caller": "kept"}
    structlog.contextvars.clear_contextvars()


def test_log_lines_of_a_run_carry_its_job_and_run_id(config: SyncdConfig) -> None:
    structlog.contextvars.clear_contextvars()
    seen: list[dict[str, object]] = []

    def keep(planned: PlannedRun) -> None:
        seen.append(dict(structlog.contextvars.get_contextvars()))

    report = run_job(config, config.jobs[0], apply=False, on_planned=keep)
    assert seen == [{"job": "corp", "run_id": report.run_id}]


def test_an_interruption_propagates_after_the_run_is_recorded(
    config: SyncdConfig, emulator: PlatformEmulator
) -> None:
    class Interrupting:
        def start(self, operation: object, total: int) -> object:
            def advance(count: int) -> None:
                raise KeyboardInterrupt

            return advance

        def finish(self, operation: object) -> None:
            pass

    with pytest.raises(KeyboardInterrupt):
        run_job(config, config.jobs[0], apply=True, progress=Interrupting())  # type: ignore[arg-type]
    last = SqliteStateStore(config.state_dir).last_run("corp")
    assert last is not None
    assert last.status == "failed"
    assert "interrupted" in str(last.summary["error"])
    assert structlog.contextvars.get_contextvars() == {}
