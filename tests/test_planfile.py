"""Plan files: ``syncd plan --out`` then ``syncd apply --plan`` (pure parts, then the CLI
as a subprocess against the emulator over HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from syncd.config import parse_config
from syncd.emulator import PlatformEmulator
from syncd.errors import ConfigError
from syncd.guard import Verdict
from syncd.model import PlatformUser, make_tags
from syncd.plan import Change, ChangeKind, Plan
from syncd.planfile import (
    PLAN_FORMAT,
    PlanFile,
    build_plan_file,
    check_integrity,
    check_plan_file,
    content_digests,
    encode_plan_file,
    job_fingerprint,
    load_plan_file,
    parse_max_age,
    plan_from_file,
    platform_fingerprint,
    sign,
    signing_key,
)
from syncd.platform.api import WireUser

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def user(name: str, dept: str = "Eng", active_to: date | None = None) -> PlatformUser:
    return PlatformUser(name, make_tags({"department": dept}), date(2026, 1, 1), active_to)


def sample_plan() -> Plan:
    return Plan(
        inserts=(Change(ChangeKind.INSERT, user("new@x.com"), None, "new in the source"),),
        updates=(Change(ChangeKind.UPDATE, user("a@x.com", "Sales"), user("a@x.com"), "moved"),),
        ends=(
            Change(
                ChangeKind.END,
                user("b@x.com", active_to=date(2026, 11, 22)),
                user("b@x.com"),
                "missing from the source",
            ),
        ),
        reactivations=(),
        deletes=(Change(ChangeKind.DELETE, user("c@x.com"), user("c@x.com"), "purge"),),
        unchanged=7,
        untouched_missing=2,
    )


def sample_file(**overrides: object) -> bytes:
    plan_file = build_plan_file(
        job="corp",
        plan=sample_plan(),
        verdict=Verdict(held=True, reasons=("2 removals above max_removals=1",)),
        config_fingerprint="sha256:config",
        platform_fingerprint="sha256:platform",
        platform_users=10,
        created_at=NOW,
        today=NOW.date(),
    )
    document = json.loads(encode_plan_file(plan_file))
    document.update(overrides)
    return json.dumps(document).encode()


# ---------------------------------------------------------------------------- pure


def test_a_plan_file_round_trips_every_change(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(sample_file())
    loaded = load_plan_file(path)
    assert loaded.format == PLAN_FORMAT
    assert loaded.job == "corp"
    assert loaded.guard.held
    assert loaded.guard.reasons == ["2 removals above max_removals=1"]
    assert loaded.created_at == NOW
    plan = plan_from_file(loaded)
    assert plan.inserts == sample_plan().inserts
    assert plan.updates == sample_plan().updates
    assert plan.ends == sample_plan().ends
    assert plan.deletes == sample_plan().deletes
    assert plan.counts()["unchanged"] == 7
    assert loaded.counts == sample_plan().counts()


def test_the_platform_fingerprint_ignores_order_and_sees_every_field() -> None:
    users = [user("a@x.com"), user("b@x.com")]
    base = platform_fingerprint(users)
    assert platform_fingerprint(reversed(users)) == base
    assert platform_fingerprint([user("a@x.com", "Ops"), user("b@x.com")]) != base
    ended = user("a@x.com", active_to=date(2026, 2, 1))
    assert platform_fingerprint([ended, user("b@x.com")]) != base
    assert platform_fingerprint(users[:1]) != base


def test_the_config_fingerprint_follows_the_job_and_not_its_secret(tmp_path: Path) -> None:
    text = """
jobs:
  - name: corp
    target: {base_url: "http://127.0.0.1:1", api_key: KEY}
    sources: [{type: csv, path: users.csv, id_column: email, tags: {department: D}}]
"""

    def fingerprint(source: str) -> str:
        config = parse_config(source, origin="t", base_dir=tmp_path)
        return job_fingerprint(config.jobs[0])

    base = fingerprint(text.replace("KEY", "sk-one-1234567890"))
    # Another key: the same fingerprint (it is taken with secrets masked).
    assert fingerprint(text.replace("KEY", "sk-two-0987654321")) == base
    assert fingerprint(text.replace("KEY", "k").replace("D}", "Dept}")) != base
    assert "sk-one" not in base


def test_checks_say_what_moved(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_bytes(sample_file())
    plan_file = load_plan_file(tmp_path / "plan.json")
    fine = check_plan_file(
        plan_file,
        job="corp",
        config_fingerprint="sha256:config",
        platform_fingerprint="sha256:platform",
        platform_users=10,
        now=NOW + timedelta(hours=1),
        max_age=timedelta(hours=24),
    )
    assert fine == []
    problems = check_plan_file(
        plan_file,
        job="other",
        config_fingerprint="sha256:changed",
        platform_fingerprint="sha256:moved",
        platform_users=11,
        now=NOW + timedelta(hours=30),
        max_age=timedelta(hours=24),
    )
    assert problems == [
        "the plan is for job 'corp', not 'other'",
        "the plan was made 30h ago (2026-11-22 09:00 UTC), more than --max-age 1d: make a new plan",
        "the job's config changed since the plan was made (mapping, policy, guard or "
        "target): make a new plan",
        "the platform list changed since the plan was made (10 users then, 11 now): "
        "make a new plan",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("90m", 5400), ("2d", 172800), ("30s", 30)]
)
def test_max_age_is_parsed(text: str, seconds: int) -> None:
    assert parse_max_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "0h", "1w", "-1h", "1.5h"])
def test_a_bad_max_age_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-age"):
        parse_max_age(text)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "not a syncd plan file"),
        (b'{"format": "syncd-plan/99"}', "format 'syncd-plan/99'"),
        (b'{"format": "syncd-plan/3", "job": 3}', "invalid"),
        (b'{"format": "syncd-plan/1", "job": "corp"}', "format 'syncd-plan/1'"),
    ],
)
def test_a_file_that_is_not_a_plan_file_is_a_config_error_naming_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_plan_file(path)
    assert str(path) in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_plan_file(tmp_path / "missing.json")


# ----------------------------------------------------------------------- the CLI

CONFIG = """
state_dir: ./state
log: {{format: json, level: warning}}
jobs:
  - name: corp
    target:
      base_url: {url}
      api_key: ${{NEBULY_API_KEY}}
      batch_size: 5
      max_retries: 1
    sources:
      - {{type: csv, path: users.csv, id_column: email, tags: {{department: {column}}}}}
{extra}"""


class Workspace:
    def __init__(self, path: Path, emulator: PlatformEmulator, key: str) -> None:
        self.path, self.emulator, self.key = path, emulator, key
        self.write_config()

    def write_config(self, column: str = "Department", extra: str = "") -> None:
        (self.path / "syncd.yaml").write_text(
            CONFIG.format(url=self.emulator.url, column=column, extra=extra), encoding="utf-8"
        )

    def users(self, names: list[str], dept: str = "Eng") -> None:
        lines = "".join(f"{name},{dept}\n" for name in names)
        (self.path / "users.csv").write_text("email,Department\n" + lines, encoding="utf-8")

    def syncd(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "NEBULY_API_KEY": self.key, "NO_COLOR": "1"}
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args, "-c", str(self.path / "syncd.yaml")],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def writes(self) -> int:
        calls = self.emulator.calls()
        return calls["insert"] + calls["update"] + calls["delete"]


def names(count: int, start: int = 0) -> list[str]:
    return [f"user{i:02d}@example.com" for i in range(start, start + count)]


@pytest.fixture
def ws(tmp_path: Path, emulator: PlatformEmulator, emulator_api_key: str) -> Workspace:
    return Workspace(tmp_path, emulator, emulator_api_key)


def test_plan_out_then_apply_plan_writes_exactly_the_reviewed_changes(ws: Workspace) -> None:
    ws.users(names(12))
    planned = ws.syncd("plan", "--out", "plan.json")
    assert planned.returncode == 0, planned.stderr
    assert "plan written to plan.json: 12 changes" in planned.stdout
    assert ws.writes() == 0
    document = json.loads((ws.path / "plan.json").read_text())
    assert [c["user"]["end_user"] for c in document["changes"]] == names(12)
    assert ws.key not in (ws.path / "plan.json").read_text()
    assert oct((ws.path / "plan.json").stat().st_mode & 0o777) == "0o600"
    as_json = ws.syncd("plan", "--out", "again.json", "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    (entry,) = json.loads(as_json.stdout)["jobs"]
    assert (entry["job"], entry["plan_file"]) == ("corp", "again.json")
    assert json.loads((ws.path / "again.json").read_text())["changes"] == document["changes"]

    # The source changes after the review: the reviewed plan is what is applied.
    ws.users([*names(12), "late@example.com"])
    applied = ws.syncd("apply", "--plan", "plan.json")
    assert applied.returncode == 0, applied.stderr
    assert sorted(ws.emulator.users()) == names(12)
    assert ws.emulator.calls()["insert"] == 3  # ceil(12 / 5)


def test_a_held_plan_applied_from_its_file_passes_the_guard_for_exactly_its_changes(
    ws: Workspace,
) -> None:
    ws.emulator.seed_users([WireUser(n, {"department": "Eng"}, "2026-01-01") for n in names(10)])
    ws.users(names(4))  # 6 of 10 leave: far above max_removal_ratio 10%
    planned = ws.syncd("plan", "--out", "plan.json")
    assert planned.returncode == 3, planned.stderr
    assert "held" in planned.stdout
    assert ws.syncd("apply").returncode == 3
    assert ws.writes() == 0

    applied = ws.syncd("apply", "--plan", "plan.json")
    assert applied.returncode == 0, applied.stderr
    ended = sorted(n for n, u in ws.emulator.users().items() if u.active_to is not None)
    assert ended == names(6, start=4)
    assert ws.emulator.calls()["update"] == 2  # ceil(6 / 5), and nothing else


def test_a_platform_that_changed_since_the_plan_is_refused(ws: Workspace) -> None:
    ws.users(names(3))
    assert ws.syncd("plan", "--out", "plan.json").returncode == 0
    ws.emulator.seed_users([WireUser("handmade@example.com", {}, "2026-01-01")])
    refused = ws.syncd("apply", "--plan", "plan.json")
    assert refused.returncode == 2
    assert "the platform list changed since the plan was made (0 users then, 1 now)" in (
        " ".join(refused.stderr.split())
    )
    assert ws.writes() == 0


def test_a_config_that_changed_since_the_plan_is_refused(ws: Workspace) -> None:
    ws.users(names(3))
    assert ws.syncd("plan", "--out", "plan.json").returncode == 0
    ws.write_config(column="Team")
    refused = ws.syncd("apply", "--plan", "plan.json")
    assert refused.returncode == 2
    assert "the job's config changed since the plan was made" in " ".join(refused.stderr.split())
    assert ws.writes() == 0


def test_a_plan_older_than_max_age_is_refused(ws: Workspace) -> None:
    ws.users(names(3))
    assert ws.syncd("plan", "--out", "plan.json").returncode == 0
    path = ws.path / "plan.json"
    document = json.loads(path.read_text())
    made = datetime.fromisoformat(document["created_at"]) - timedelta(hours=30)
    document["created_at"] = made.isoformat()
    _rehash(document, ws.path / "state")  # as if it had been written 30 hours ago
    path.write_text(json.dumps(document))
    refused = ws.syncd("apply", "--plan", "plan.json")
    assert refused.returncode == 2
    assert "more than --max-age 1d" in " ".join(refused.stderr.split())
    assert ws.writes() == 0
    assert ws.syncd("apply", "--plan", "plan.json", "--max-age", "2d").returncode == 0
    assert sorted(ws.emulator.users()) == names(3)


def test_plan_out_needs_one_job_and_a_bad_file_is_exit_2(ws: Workspace) -> None:
    ws.users(names(1))
    (ws.path / "bad.json").write_text("{}")
    bad = ws.syncd("apply", "--plan", "bad.json")
    assert bad.returncode == 2
    assert "bad.json" in bad.stderr
    text = (ws.path / "syncd.yaml").read_text()
    second = text.split("jobs:\n", 1)[1].replace("name: corp", "name: other")
    (ws.path / "syncd.yaml").write_text(text + second)
    several = ws.syncd("plan", "--out", "plan.json")
    assert several.returncode == 2
    assert "choose one with --job" in several.stderr
    assert not (ws.path / "plan.json").exists()


# ------------------------------------------------------------------ a malformed file


def _one_change(**fields: object) -> dict[str, object]:
    change: dict[str, object] = {
        "kind": "end",
        "user": {
            "end_user": "b@x.com",
            "tags": {},
            "active_from": "2026-01-01",
            "active_to": "2026-11-22",
        },
        "before": {"end_user": "b@x.com", "tags": {}, "active_from": "2026-01-01"},
        "reason": "missing",
    }
    change.update(fields)
    return change


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            [_one_change(user={"end_user": "b@x.com", "tags": {}, "active_from": "2026-13-01"})],
            r"changes\[0\] \(end 'b@x.com'\): user.active_from '2026-13-01' is not a date",
        ),
        (
            [_one_change(), _one_change(kind="delete")],
            r"changes\[1\] \(delete 'b@x.com'\): the end_user is listed twice "
            r"\(first in changes\[0\]\)",
        ),
        ([_one_change(before=None)], r"changes\[0\] \(end 'b@x.com'\): a end needs the user"),
        ([_one_change(kind="insert")], r"an insert has no user before it"),
        ([_one_change(kind="rename")], r"Invalid enum value 'rename' - at `\$.changes\[0\].kind`"),
        ([_one_change(reason=3)], r"Expected `str`, got `int` - at `\$.changes\[0\].reason`"),
    ],
)
def test_a_malformed_plan_file_is_a_config_error_naming_the_entry(
    tmp_path: Path, changes: list[dict[str, object]], message: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(sample_file(changes=changes))
    with pytest.raises(ConfigError, match=message) as caught:
        load_plan_file(path)
    assert str(path) in str(caught.value)


def test_a_plan_file_with_a_naive_time_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(sample_file(created_at="2026-11-22T09:00:00"))
    with pytest.raises(ConfigError, match="invalid"):
        load_plan_file(path)


def test_an_edit_of_the_changes_or_the_verdict_breaks_their_sha256(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(sample_file())
    assert check_integrity(load_plan_file(path)) == []
    document = json.loads(sample_file())
    document["guard"]["held"] = False
    path.write_text(json.dumps(document))
    (problem,) = check_integrity(load_plan_file(path))
    assert problem.startswith("the plan file was modified after it was written (the guard's")
    document = json.loads(sample_file())
    document["changes"][2]["reason"] = "approved by nobody"
    path.write_text(json.dumps(document))
    assert "its changes do not match" in check_integrity(load_plan_file(path))[0]


# ----------------------------------------------------------------- a tampered file

GUARDED = """\
    policy: {protected: [boss@example.com]}
    guard: {max_removals: 1, max_removal_ratio: null}
"""


def _rehash(document: dict[str, Any], key_from: Path | None = None) -> None:
    """What an editor who knows the format does: recompute the file's own SHA-256;
    with ``key_from`` (a state directory), one who can also read its signing key."""
    plan_file = msgspec.json.decode(json.dumps(document).encode(), type=PlanFile)
    document["guard_sha256"], document["changes_sha256"] = content_digests(
        plan_file.guard, plan_file.changes
    )
    if key_from is not None:
        key = signing_key(key_from, create=False)
        assert key is not None
        rehashed = msgspec.json.decode(json.dumps(document).encode(), type=PlanFile)
        document["signature"] = sign(rehashed, key).signature


def _end(name: str, today: str) -> dict[str, Any]:
    before = {
        "end_user": name,
        "tags": {"department": "Eng"},
        "active_from": "2026-01-01",
        "active_to": None,
    }
    return {
        "kind": "end",
        "user": {**before, "active_to": today},
        "before": before,
        "reason": "missing from the source",
    }


@pytest.fixture
def held(ws: Workspace) -> dict[str, Any]:
    """A real held plan: 5 of 20 users leave, max_removals 1; boss is protected."""
    ws.write_config(extra=GUARDED)
    everyone = [*names(20), "boss@example.com"]
    ws.emulator.seed_users([WireUser(n, {"department": "Eng"}, "2026-01-01") for n in everyone])
    ws.users([*names(15), "boss@example.com"])
    planned = ws.syncd("plan", "--out", "plan.json")
    assert planned.returncode == 3, planned.stderr
    document: dict[str, Any] = json.loads((ws.path / "plan.json").read_text())
    assert len(document["changes"]) == 5
    return document


def _tamper(
    ws: Workspace, document: dict[str, Any], *, rehash: bool, resign: bool = False
) -> str:
    today = document["today"]
    document["changes"] += [_end(name, today) for name in names(10)]
    boss = {
        "end_user": "boss@example.com",
        "tags": {"department": "Eng"},
        "active_from": "2026-01-01",
        "active_to": None,
    }
    document["changes"].append({"kind": "delete", "user": boss, "before": boss, "reason": "x"})
    document["guard"]["held"] = False
    if rehash:
        _rehash(document, ws.path / "state" if resign else None)
    (ws.path / "tampered.json").write_text(json.dumps(document))
    applied = ws.syncd("apply", "--plan", "tampered.json")
    assert applied.returncode == 2, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stderr
    assert ws.writes() == 0
    return " ".join(applied.stderr.split())


def test_a_tampered_plan_file_is_refused(ws: Workspace, held: dict[str, Any]) -> None:
    message = _tamper(ws, held, rehash=False)
    assert "the plan file was modified after it was written" in message
    assert ws.emulator.calls()["list"] == 1  # the plan's; apply listed nothing
    as_json = ws.syncd("apply", "--plan", "tampered.json", "--output", "json")
    assert as_json.returncode == 2
    (entry,) = json.loads(as_json.stdout)["jobs"]
    assert "the plan file was modified after it was written" in entry["error"]
    assert entry["plan_file"] == "tampered.json"


def test_recomputed_hashes_do_not_pass_without_the_state_directory_s_key(
    ws: Workspace, held: dict[str, Any]
) -> None:
    message = _tamper(ws, held, rehash=True)
    assert "the plan file's signature does not match" in message
    assert ws.emulator.calls()["list"] == 1  # refused before anything was listed
    key = ws.path / "state" / "plan-signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text() not in (ws.path / "plan.json").read_text()


def test_a_plan_file_needs_the_state_directory_it_was_made_with(
    ws: Workspace, held: dict[str, Any]
) -> None:
    (ws.path / "state" / "plan-signing.key").unlink()
    applied = ws.syncd("apply", "--plan", "plan.json")
    assert applied.returncode == 2
    assert "there is no plan signing key in" in " ".join(applied.stderr.split())
    assert ws.writes() == 0


def test_a_tampered_plan_file_signed_again_is_still_refused_naming_why(
    ws: Workspace, held: dict[str, Any]
) -> None:
    # Defence in depth: even an editor who can read the state directory's key does
    # not get protected users, unrecorded holds or edited befores through.
    message = _tamper(ws, held, rehash=True, resign=True)
    assert "1 user(s) of policy.protected, which no run may touch: delete boss@example.com" in (
        message
    )
    assert "the guard holds the plan for a reason the file does not record: 16 removals" in (
        message
    )


def test_a_before_that_is_not_the_platforms_user_is_refused(
    ws: Workspace, held: dict[str, Any]
) -> None:
    # An end disguised as an update (it would dodge the removal limits), and a before
    # edited to hide what the change takes away.
    held["changes"][0]["kind"] = "update"
    held["changes"][1]["before"]["tags"] = {"department": "Sales"}
    _rehash(held, ws.path / "state")
    (ws.path / "edited.json").write_text(json.dumps(held))
    applied = ws.syncd("apply", "--plan", "edited.json")
    assert applied.returncode == 2
    message = " ".join(applied.stderr.split())
    assert "2 change(s) do not match the platform" in message
    assert "update user15@example.com: its before and after make it end" in message
    assert "end user16@example.com: the user before is not the platform's" in message
    assert ws.writes() == 0


def test_the_untouched_held_plan_still_applies_and_history_says_so(
    ws: Workspace, held: dict[str, Any]
) -> None:
    applied = ws.syncd("apply", "--plan", "plan.json")
    assert applied.returncode == 0, applied.stderr
    ended = sorted(n for n, u in ws.emulator.users().items() if u.active_to is not None)
    assert ended == names(5, start=15)
    history = ws.syncd("history", "--output", "json")
    (run, *_) = json.loads(history.stdout)["runs"]
    assert run["approved_from_plan"] == "plan.json"
    assert run["source_users"] is None
    assert run["overridden"] == held["guard"]["reasons"]
    assert any("max_removals=1" in reason for reason in run["overridden"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("baddate", "user.active_to '2026-02-30' is not a date"),
        ("twice", "the end_user is listed twice"),
    ],
)
def test_a_malformed_plan_file_is_exit_2_before_anything_is_listed(
    ws: Workspace, held: dict[str, Any], edit: str, message: str
) -> None:
    if edit == "baddate":
        held["changes"][0]["user"]["active_to"] = "2026-02-30"
    else:
        held["changes"].append(held["changes"][0])
    (ws.path / "bad.json").write_text(json.dumps(held))
    lists = ws.emulator.calls()["list"]
    applied = ws.syncd("apply", "--plan", "bad.json")
    assert applied.returncode == 2
    assert "Traceback" not in applied.stderr
    assert message in " ".join(applied.stderr.split())
    assert ws.emulator.calls()["list"] == lists
    assert ws.writes() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "plan.json", "--force"], "--force cannot be used with --plan"),
        (
            ["--plan", "plan.json", "--allow-removals", "3", "--allow-updates", "2"],
            "--allow-removals, --allow-updates cannot be used with --plan",
        ),
        (["--plan", "plan.json", "--accept-identity-rules"], "--accept-identity-rules cannot"),
        (["--plan", "plan.json", "--limit", "5"], "--limit cannot be used with --plan"),
        (["--max-age", "2h"], "--max-age applies to --plan only"),
    ],
)
def test_apply_options_that_a_plan_file_would_ignore_are_refused(
    ws: Workspace, args: list[str], message: str
) -> None:
    ws.users(names(2))
    assert ws.syncd("plan", "--out", "plan.json").returncode == 0
    refused = ws.syncd("apply", *args)
    assert refused.returncode == 2
    assert message in " ".join(refused.stderr.split())
    assert ws.writes() == 0


def test_the_signing_key_is_made_once_private_and_a_damaged_one_is_refused(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    assert signing_key(state, create=False) is None
    key = signing_key(state, create=True)
    assert key is not None
    assert len(key) == 32
    assert (state / "plan-signing.key").stat().st_mode & 0o777 == 0o600
    assert signing_key(state, create=True) == key  # kept, not replaced
    (state / "plan-signing.key").write_text("")  # a crash while it was written
    with pytest.raises(ConfigError, match="is damaged"):
        signing_key(state, create=True)
