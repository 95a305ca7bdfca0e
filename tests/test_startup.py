"""Start-up: each ``syncd`` command imports what it uses and not the rest.

Each command runs in a fresh interpreter that records ``sys.modules`` when the command
has finished, so an import added at the top of a module that every command loads (a
config model importing apscheduler, a command module importing the report's
arithmetic) fails here instead of quietly costing every run its start-up time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from syncd import startup
from syncd.cli import app
from syncd.emulator import PlatformEmulator

# Runs the command through the typer app, as ``syncd.cli.main`` does (without its fast
# ``os._exit``, which would skip the report, and without the collector's pause of
# ``syncd.startup``, tested in tests/test_startup_gc.py), with the console script's own
# modules imported, then writes the names of the imported modules to the file named by
# the first argument and exits with the command's code.
CHILD = """
import json, sys
out, args = sys.argv[1], sys.argv[2:]
import syncd.process_exit, syncd.startup
from syncd.cli import app
code = 0
try:
    app(args=args)
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else 1
with open(out, "w", encoding="utf-8") as file:
    json.dump(sorted(sys.modules), file)
sys.exit(code)
"""

# Imports syncd.cli once, then shows each command's help in a forked copy of itself: a
# fork starts from exactly the state of a fresh ``syncd`` process, so each help's
# modules are its own, at the cost of one interpreter for all of them. Each fork writes
# ``{"code", "modules"}`` and its output to files named by the command's index.
HELPS_CHILD = """
import json, os, sys, traceback
folder, paths = sys.argv[1], json.loads(sys.argv[2])
from syncd.cli import app
# Typer checks every option of a command (--help included) with pydantic: load it once
# here rather than in every fork.
import pydantic
for index, path in enumerate(paths):
    pid = os.fork()
    if pid == 0:
        with open(os.path.join(folder, f"{index}.out"), "w", encoding="utf-8") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            code = 0
            try:
                app(args=[*path, "--help"])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 99
            sys.stdout.flush()
            with open(os.path.join(folder, f"{index}.json"), "w", encoding="utf-8") as f:
                json.dump({"code": code, "modules": sorted(sys.modules)}, f)
        os._exit(0)
    os.waitpid(pid, 0)
"""

# Never needed to start a command or show its help (help is plain click text: rich's
# help rendering alone cost ~0.2 s of start-up; ``logging`` is for commands that log).
HEAVY_FOR_HELP = (
    "apscheduler",
    "httpx",
    "ldap3",
    "logging",
    "markdown_it",
    "msal",
    "pygments",
    "rich",
    "structlog",
    "yaml",
    "syncd.config",
    "syncd.emulator",
    "syncd.report.compute",
    "syncd.service",
)
# ... nor, for ``syncd --help`` alone, what only running a command needs.
HEAVY_FOR_ROOT_HELP = (*HEAVY_FOR_HELP, "msgspec", "orjson", "pydantic", "hmac", "secrets")
# A CSV-only plan or apply (not on a terminal): no other source's code, no daemon, report
# or emulator, no plan-file signing, no cron parser, no progress bars.
UNUSED_BY_CSV_SYNC = (
    "apscheduler",
    "ldap3",
    "msal",
    "rich.progress",  # progress bars: only for an apply on a terminal
    "syncd.cli_planfile",
    "syncd.daemon",
    "syncd.emulator",
    "syncd.planfile",
    "syncd.report.compute",
    "syncd.report.service",
    "syncd.sources.entra.source",
    "syncd.sources.ldap.source",
)

CONFIG = """
state_dir: ./state
log: {{format: json, level: info}}
jobs:
  - name: corp
    target: {{base_url: "{url}", api_key: "${{NEBULY_API_KEY}}", max_retries: 0,
              timeout_s: 5}}
    sources:
      - {{type: csv, path: users.csv, id_column: email}}
{schedule}"""


@dataclass(frozen=True)
class Started:
    """What one command did in its own interpreter."""

    code: int
    modules: frozenset[str]
    stdout: str
    stderr: str

    def loaded(self, names: tuple[str, ...]) -> list[str]:
        """Those of ``names`` that were imported (a package or any of its modules)."""
        return sorted(
            name
            for name in names
            if any(module == name or module.startswith(f"{name}.") for module in self.modules)
        )


def start(args: list[str], folder: Path, env: dict[str, str] | None = None) -> Started:
    """Run ``syncd ARGS`` in a new interpreter (working directory ``folder``)."""
    out = folder / f"modules-{os.getpid()}-{'-'.join(args).replace('/', '_')[:80]}.json"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    child_env.update(env or {})
    child_env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), *args],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=folder,
        timeout=60,
        check=False,
    )
    modules = (
        frozenset(json.loads(out.read_text(encoding="utf-8"))) if out.exists() else frozenset()
    )
    return Started(result.returncode, modules, result.stdout, result.stderr)


def command_paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command of the app, as the words that name it (``("report", "activation")``)."""
    context = typer.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        yield (*prefix, name)
        if isinstance(command, TyperGroup):
            yield from command_paths(command, (*prefix, name))


@pytest.fixture
def workspace(tmp_path: Path, emulator: PlatformEmulator) -> Path:
    """A config with one CSV source and one user, against a running emulator."""
    (tmp_path / "users.csv").write_text("email\nada@example.com\n", encoding="utf-8")
    (tmp_path / "syncd.yaml").write_text(
        CONFIG.format(url=emulator.url, schedule=""), encoding="utf-8"
    )
    return tmp_path


def test_root_help_loads_typer_and_the_command_modules_only(tmp_path: Path) -> None:
    started = start(["--help"], tmp_path)

    assert started.code == 0, started.stderr
    assert "check-config" in started.stdout
    assert "syncd.cli_report" in started.modules  # the check sees what was imported
    assert started.loaded(HEAVY_FOR_ROOT_HELP) == []


def test_no_command_help_loads_what_only_running_it_needs(tmp_path: Path) -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    paths = list(command_paths(group))
    assert ("report", "activation") in paths  # the walk reaches nested commands

    # Its own session, so that a fork left behind by a failure is stopped with it.
    child = subprocess.Popen(
        [sys.executable, "-c", HELPS_CHILD, str(tmp_path), json.dumps(paths)],
        env={k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")},
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        assert child.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    for index, path in enumerate(paths):
        output = (tmp_path / f"{index}.out").read_text(encoding="utf-8")
        recorded = json.loads((tmp_path / f"{index}.json").read_text(encoding="utf-8"))
        started = Started(recorded["code"], frozenset(recorded["modules"]), output, output)
        assert started.code == 0, (path, output)
        assert "Usage" in output, path
        assert started.loaded(HEAVY_FOR_HELP) == [], " ".join(path)


def test_csv_plan_loads_no_other_source_daemon_report_or_emulator(
    workspace: Path, emulator_api_key: str
) -> None:
    key = {"NEBULY_API_KEY": emulator_api_key}
    started = start(["plan", "-c", "syncd.yaml", "--output", "json"], workspace, key)

    assert started.code == 0, started.stderr
    assert json.loads(started.stdout)["jobs"][0]["job"] == "corp"
    assert "syncd.service" in started.modules  # it did plan
    assert started.loaded(UNUSED_BY_CSV_SYNC) == []


def test_csv_apply_loads_no_other_source_daemon_report_or_emulator(
    workspace: Path, emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    key = {"NEBULY_API_KEY": emulator_api_key}
    started = start(["apply", "-c", "syncd.yaml"], workspace, key)

    assert started.code == 0, started.stderr
    assert list(emulator.users()) == ["ada@example.com"]
    assert started.loaded(UNUSED_BY_CSV_SYNC) == []


def test_check_config_does_not_load_the_sync_service(workspace: Path) -> None:
    started = start(["check-config", "-c", "syncd.yaml"], workspace, {"NEBULY_API_KEY": "x" * 20})

    assert started.code == 0, started.stderr
    assert json.loads(started.stdout)["jobs"][0]["target"]["api_key"] == "**********"
    assert started.loaded(("syncd.service", "syncd.runner", "syncd.cli_sync", "apscheduler")) == []


def test_a_cron_schedule_is_still_checked_at_load(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("email\nada@example.com\n", encoding="utf-8")
    schedule = '    schedule: {cron: "61 * * * *"}\n'
    (tmp_path / "syncd.yaml").write_text(
        CONFIG.format(url="http://127.0.0.1:9", schedule=schedule), encoding="utf-8"
    )

    started = start(["check-config", "-c", "syncd.yaml"], tmp_path, {"NEBULY_API_KEY": "x" * 20})

    assert started.code == 2
    assert "invalid cron expression '61 * * * *'" in started.stderr
    assert "apscheduler" in started.modules


# Runs the console script's entry point with syncd.cli's own main replaced (the command
# itself is not the point), then prints what structlog and rich look like afterwards,
# and a logged exception in console format.
STRUCTLOG_CHILD = """
import io, json, sys
sys.argv = ["syncd", *sys.argv[1:]]
import syncd.cli
syncd.cli.main = lambda: None
from syncd.startup import main
main()
imported = "structlog" in sys.modules
import structlog.dev
from syncd.logs import configure_logging
out = io.StringIO()
configure_logging("console", "info", out)
def failing(api_key="sk-local-secret-value"):
    raise RuntimeError("boom")
try:
    failing()
except RuntimeError:
    structlog.get_logger().exception("run.failed")
import rich.console  # rich itself is still there for the plan tables
print(json.dumps({
    "imported_by_main": imported,
    "structlog_sees_rich": structlog.dev.rich is not None,
    "rich_traceback": "rich.traceback" in sys.modules,
    "rich_pretty": "rich.pretty" in sys.modules,
    "rich_console": rich.console.Console is not None,
    "better_exceptions": structlog.dev.better_exceptions is not None,
    "log": out.getvalue(),
}))
"""


def run_entry_point(
    args: list[str], folder: Path, env: dict[str, str] | None = None, *, flags: tuple[str, ...] = ()
) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, *flags, "-c", STRUCTLOG_CHILD, *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env=os.environ | (env or {}),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    recorded: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return recorded


@pytest.mark.parametrize("command", ["apply", "check-config", "run", "sources test"])
def test_a_command_imports_structlog_without_rich_tracebacks(tmp_path: Path, command: str) -> None:
    recorded = run_entry_point([*command.split(), "-c", "syncd.yaml"], tmp_path)

    assert recorded["imported_by_main"]
    assert not recorded["structlog_sees_rich"]
    assert not recorded["rich_traceback"]
    assert not recorded["rich_pretty"]
    assert recorded["rich_console"]
    # Tracebacks are still logged, plainly, without the frame's local variables.
    assert "RuntimeError: boom" in recorded["log"]
    assert ", in failing" in recorded["log"]
    assert "sk-local-secret-value" not in recorded["log"]


@pytest.mark.parametrize(
    "args",
    [["--help"], ["apply", "--help"], [], ["version"], ["report"], ["sources", "--help"]],
)
def test_help_version_and_a_bare_group_do_not_import_structlog_early(
    tmp_path: Path, args: list[str]
) -> None:
    recorded = run_entry_point(args, tmp_path)

    assert not recorded["imported_by_main"]
    # Imported later, the usual way, structlog finds rich: the same logs either way.
    assert recorded["structlog_sees_rich"]
    assert "RuntimeError: boom" in recorded["log"]
    assert "sk-local-secret-value" not in recorded["log"]


def test_an_installed_better_exceptions_is_hidden_too(tmp_path: Path) -> None:
    # With rich hidden, structlog would take better_exceptions for its tracebacks and
    # warn (DeprecationWarning) at import: an error under -W error.
    (tmp_path / "better_exceptions.py").write_text(
        "def format_exception(*args):\n    return ['better']\n", encoding="utf-8"
    )
    # The child runs in tmp_path with -c: the stub is importable from its working folder.
    recorded = run_entry_point(
        ["apply", "-c", "syncd.yaml"],
        tmp_path,
        flags=("-W", "error:better-exceptions support is deprecated:DeprecationWarning"),
    )

    assert recorded["imported_by_main"]
    assert not recorded["structlog_sees_rich"]
    assert not recorded["better_exceptions"]
    assert "RuntimeError: boom" in recorded["log"]


def test_every_command_but_version_counts_as_one_that_logs() -> None:
    # A new command must be placed on one side or the other, on purpose.
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert commands - {"version"} == set(startup.LOGGING_COMMANDS)
