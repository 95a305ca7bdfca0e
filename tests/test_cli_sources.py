"""End-to-end: ``syncd sources test`` as a subprocess, over a CSV file and a real slapd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sources.ldap.servers import SLAPD_PEOPLE_DN, DirectoryServer, free_port, start_slapd

PEOPLE = 12


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    """A slapd holding PEOPLE people (one without mail) under ou=people."""
    ldif = "".join(
        f"dn: uid=p{i:02d},{SLAPD_PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: p{i:02d}\n"
        f"cn: P {i}\nsn: P\nmail: P{i:02d}@Example.com\ndepartmentNumber: D{i % 2}\n\n"
        for i in range(PEOPLE)
    )
    ldif += f"dn: uid=nomail,{SLAPD_PEOPLE_DN}\nobjectClass: inetOrgPerson\ncn: x\nsn: x\n\n"
    server = start_slapd(tmp_path_factory.mktemp("cli-slapd"), ldif=ldif)
    try:
        yield server
    finally:
        server.stop()


def _write_config(tmp_path: Path, server: DirectoryServer, *, password: str) -> Path:
    (tmp_path / "people.csv").write_text("email,dept\na@x.com,Sales\nb@x.com,HR\n,Nobody\n")
    (tmp_path / "ldap.pw").write_text(password + "\n")
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"""\
jobs:
  - name: corp
    target: {{region: eu, api_key: "${{NEBULY_API_KEY}}"}}
    sources:
      - {{type: csv, name: hr, path: people.csv, id_column: email, tags: {{dept: dept}}}}
      - type: ldap
        name: directory
        flavor: openldap
        urls: ["{server.ldap_url}"]
        start_tls: true
        ca_file: {server.ca_file}
        bind_dn: "{server.admin_dn}"
        bind_password_file: ldap.pw
        base_dn: "{server.base_dn}"
        id_attribute: mail
        tags: {{department: departmentNumber}}
  - name: other
    target: {{base_url: "http://127.0.0.1:9", api_key_file: missing-key-file}}
    sources:
      - {{type: csv, path: people.csv, id_column: email}}
"""
    )
    return config


def _syncd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NEBULY_API_KEY", "SYNCD_CONFIG")}
    env["COLUMNS"] = "160"  # rich wraps tables to the terminal width
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_json_output_of_every_source_without_a_platform_key(
    tmp_path: Path, directory: DirectoryServer
) -> None:
    config = _write_config(tmp_path, directory, password=directory.admin_password)
    result = _syncd("sources", "test", "-c", str(config), "--output", "json")
    assert result.returncode == 0, result.stderr
    sources = json.loads(result.stdout)["sources"]
    by_name = {(s["job"], s["source"]): s for s in sources}
    assert set(by_name) == {("corp", "hr"), ("corp", "directory"), ("other", "people.csv")}
    hr = by_name["corp", "hr"]
    assert (hr["ok"], hr["users"], hr["problems"]) == (True, 2, 1)
    assert hr["problem_list"] == ["hr:4: empty id column 'email'"]
    ldap = by_name["corp", "directory"]
    assert (ldap["ok"], ldap["users"], ldap["problems"], ldap["error"]) == (True, PEOPLE, 1, None)
    assert ldap["problem_list"] == [f"directory: uid=nomail,{SLAPD_PEOPLE_DN}: no attribute 'mail'"]
    assert len(ldap["sample"]) == 10
    first = next(u for u in ldap["sample"] if u["end_user"] == "p01@example.com")
    assert first["tags"] == {"department": "D1"}
    assert first["origin"] == f"directory: uid=p01,{SLAPD_PEOPLE_DN}"
    assert ldap["seconds"] >= 0


def test_table_output_and_job_selection(tmp_path: Path, directory: DirectoryServer) -> None:
    config = _write_config(tmp_path, directory, password=directory.admin_password)
    result = _syncd("sources", "test", "-c", str(config), "--job", "corp")
    assert result.returncode == 0, result.stderr
    assert "corp / directory (ldap): ok, 12 users, 1 problems" in result.stdout
    assert "corp / hr (csv): ok, 2 users, 1 problems" in result.stdout
    assert "p00@example.com" in result.stdout
    assert "other" not in result.stdout


def test_a_failed_read_exits_1_with_the_error_and_no_traceback(
    tmp_path: Path, directory: DirectoryServer
) -> None:
    config = _write_config(tmp_path, directory, password="wrong-Password-77")
    result = _syncd("sources", "test", "-c", str(config), "-j", "corp", "-o", "json")
    assert result.returncode == 1
    sources = {s["source"]: s for s in json.loads(result.stdout)["sources"]}
    assert sources["hr"]["ok"]
    assert not sources["directory"]["ok"]
    assert "invalid credentials" in sources["directory"]["error"]
    assert "invalid credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert "wrong-Password-77" not in result.stdout + result.stderr


def test_an_unreachable_directory_exits_1(tmp_path: Path, directory: DirectoryServer) -> None:
    config = _write_config(tmp_path, directory, password=directory.admin_password)
    config.write_text(
        config.read_text().replace(directory.ldap_url, f"ldap://127.0.0.1:{free_port()}")
    )
    result = _syncd("sources", "test", "-c", str(config), "-j", "corp")
    assert result.returncode == 1
    assert "cannot connect to any LDAP server" in result.stderr
    assert "Traceback" not in result.stderr


def test_configuration_errors_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "jobs:\n  - name: j\n    target: {region: eu, api_key: k}\n    sources:\n"
        "      - {type: ldap, urls: ['http://x'], base_dn: 'dc=x', id_attribute: mail}\n"
    )
    result = _syncd("sources", "test", "-c", str(config))
    assert result.returncode == 2
    assert "jobs[0].sources[0].urls" in result.stderr
    assert _syncd("sources", "test", "-c", str(tmp_path / "missing.yaml")).returncode == 2
    assert _syncd("sources", "test", "-c", str(config), "-j", "nope").returncode == 2
