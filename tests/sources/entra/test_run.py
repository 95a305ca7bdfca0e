"""Whole runs (``syncd apply``'s path) from the Graph emulator into the Nebuly emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

from syncd.config import SyncdConfig, parse_config
from syncd.emulator import PlatformEmulator
from syncd.emulator.graph import GraphEmulator
from syncd.exitcodes import ExitCode
from syncd.service import open_resources, run_job
from syncd.source_trial import load_sources_config, results_to_json, try_sources
from tests.sources.entra.support import (
    CERT_CLIENT_ID,
    CLIENT_ID,
    SECRET,
    TENANT,
    GraphServer,
    users,
)

WRITE_VERBS = ("PUT", "POST", "DELETE")


def make_config(
    tmp_path: Path,
    graph: GraphEmulator,
    ca_file: Path,
    emulator: PlatformEmulator,
    api_key: str,
    *,
    tenant: str = TENANT,
    extra: str = "",
) -> SyncdConfig:
    text = f"""\
state_dir: {tmp_path / "state"}
jobs:
  - name: corp
    target: {{base_url: "{emulator.url}", api_key: {api_key}}}
    sources:
      - type: entra
        name: corp-entra
        tenant_id: {tenant}
        client_id: {CLIENT_ID}
        client_secret: {SECRET}
        authority_url: {graph.url}
        graph_url: {graph.url}
        ca_file: {ca_file}
        tags: {{department: department}}
{extra}"""
    return parse_config(text, origin="t.yaml", base_dir=tmp_path)


def writes(emulator: PlatformEmulator) -> int:
    calls = emulator.calls()
    return sum(calls.get(verb, 0) for verb in WRITE_VERBS)


def test_a_failure_on_page_7_of_10_aborts_the_run_and_writes_nothing(
    tmp_path: Path,
    graph: GraphEmulator,
    graph_ca_file: Path,
    emulator: PlatformEmulator,
    emulator_api_key: str,
) -> None:
    graph.set_users(users(50))
    graph.fail_page(7, 429)  # Retry-After: 1 every time: the page never comes
    config = make_config(
        tmp_path, graph, graph_ca_file, emulator, emulator_api_key,
        extra="        page_size: 5\n",
    )  # fmt: skip
    report = run_job(config, config.jobs[0], apply=True)
    assert report.exit_code is ExitCode.HELD
    assert any("still failing" in reason for reason in report.guard_reasons)
    assert graph.calls()["list_users"] == 6 + 5  # six pages, then five attempts at the 7th
    assert writes(emulator) == 0
    assert emulator.users() == {}


def test_a_user_disabled_in_graph_is_ended_and_a_third_run_writes_nothing(
    tmp_path: Path,
    graph: GraphEmulator,
    graph_ca_file: Path,
    emulator: PlatformEmulator,
    emulator_api_key: str,
) -> None:
    graph.set_users(users(20))  # one leaver in 20 stays under the guard's 10% ratio
    config = make_config(tmp_path, graph, graph_ca_file, emulator, emulator_api_key)
    first = run_job(config, config.jobs[0], apply=True)
    assert first.exit_code is ExitCode.OK
    assert len(emulator.users()) == 20
    assert emulator.users()["user0000001@contoso.example"].active_from == "2021-02-15"

    graph.update_user(users(2)[1]["id"], accountEnabled=False)
    second = run_job(config, config.jobs[0], apply=True)
    assert second.exit_code is ExitCode.OK
    ended = emulator.users()["user0000001@contoso.example"]
    assert ended.active_to == datetime.now(UTC).date().isoformat()
    assert emulator.users()["user0000000@contoso.example"].active_to is None

    before = writes(emulator)
    third = run_job(config, config.jobs[0], apply=True)
    assert third.exit_code is ExitCode.OK
    assert third.write_calls == 0
    assert writes(emulator) == before
    assert graph.login_calls["token"] == 3  # one app per run here; a daemon keeps it


def test_a_daemons_runs_share_one_token_through_the_kept_source(
    tmp_path: Path,
    graph: GraphEmulator,
    graph_ca_file: Path,
    emulator: PlatformEmulator,
    emulator_api_key: str,
) -> None:
    graph.set_users(users(5))
    config = make_config(tmp_path, graph, graph_ca_file, emulator, emulator_api_key)
    job = config.jobs[0]
    with open_resources(config, job) as resources:  # what syncd run keeps per job
        reports = [run_job(config, job, apply=True, resources=resources) for _ in range(3)]
    assert [r.exit_code for r in reports] == [ExitCode.OK] * 3
    assert graph.login_calls == {"discovery": 1, "instance_discovery": 0, "token": 1}


def test_an_unknown_tenant_holds_the_run_exit_3_not_2(
    tmp_path: Path,
    graph: GraphEmulator,
    graph_ca_file: Path,
    emulator: PlatformEmulator,
    emulator_api_key: str,
) -> None:
    config = make_config(
        tmp_path, graph, graph_ca_file, emulator, emulator_api_key, tenant="nosuch.example"
    )
    report = run_job(config, config.jobs[0], apply=True)
    assert report.exit_code is ExitCode.HELD
    assert any("AADSTS90002" in reason for reason in report.guard_reasons)
    assert writes(emulator) == 0


def test_sources_test_shows_the_users_and_the_credential_expiry(
    tmp_path: Path, graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(4))
    soon = datetime.now(UTC).date().replace(day=1).isoformat()  # already past or today
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
jobs:
  - name: corp
    target: {{base_url: "http://127.0.0.1:9", api_key: unused}}
    sources:
      - type: entra
        name: corp-entra
        tenant_id: {TENANT}
        client_id: {CLIENT_ID}
        client_secret_file: secret.txt
        client_secret_expires: {soon}
        authority_url: {graph.url}
        graph_url: {graph.url}
        ca_file: {graph_ca_file}
"""
    )
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "sources", "test", "-c", str(path), "--output", "json"],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr.decode()
    (result,) = json.loads(done.stdout)["sources"]
    assert result["type"] == "entra"
    assert result["users"] == 4
    assert any("client secret expire" in warning for warning in result["warnings"])
    assert SECRET.encode() not in done.stdout + done.stderr


def test_sources_test_shows_an_expired_certificate_once(
    tmp_path: Path, graph_tls: GraphServer, graph: GraphEmulator
) -> None:
    expired = datetime.now(UTC) - timedelta(days=3)
    leaf = graph_tls.ca.issue_cert(
        "syncd-app.example",
        key_type=trustme.KeyType.RSA,
        not_before=expired - timedelta(days=365),
        not_after=expired,
    )
    (tmp_path / "app.pem").write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
jobs:
  - name: corp
    target: {{base_url: "http://127.0.0.1:9", api_key: unused}}
    sources:
      - type: entra
        name: corp-entra
        tenant_id: {TENANT}
        client_id: {CERT_CLIENT_ID}
        certificate: {{path: app.pem}}
        authority_url: {graph.url}
        graph_url: {graph.url}
        ca_file: {graph_tls.ca_file}
"""
    )
    (result,) = try_sources(load_sources_config(path), None)
    assert result.error is not None
    assert "expired on" in result.error
    assert not any("expired" in warning for warning in result.warnings), result.warnings
    rendered = json.dumps(results_to_json([result]))
    assert rendered.count("expired on") == 1
