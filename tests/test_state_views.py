"""The pure views behind ``syncd history`` and ``syncd audit``."""

from __future__ import annotations

from datetime import UTC, date, datetime

from syncd.model import PlatformUser, make_tags
from syncd.ports import AuditEntry, RunRecord
from syncd.state_views import audit_to_json, describe_change, run_note, run_to_json

AT = datetime(2026, 11, 30, 8, 15, tzinfo=UTC)


def entry(before: PlatformUser | None, after: PlatformUser | None) -> AuditEntry:
    return AuditEntry("r1", AT, "corp", "ada@example.com", "update", before, after)


def ada(department: str | None, active_to: date | None = None) -> PlatformUser:
    tags = make_tags({"department": department} if department else {})
    return PlatformUser("Ada@example.com", tags, date(2026, 1, 5), active_to)


def test_run_to_json_keeps_only_plan_counts_and_lists_the_guard_reasons() -> None:
    record = RunRecord(
        "r1",
        "corp",
        AT,
        AT,
        "held",
        {
            "insert": 3,
            "end": 700,
            "unchanged": 10,
            "not_a_count": 5,
            "update": "garbled",
            "held_because": ["700 removals > max_removals 500"],
            "write_calls": 0,
        },
    )
    data = run_to_json(record)
    assert data["counts"] == {"insert": 3, "end": 700, "unchanged": 10}
    assert data["guard_reasons"] == ["700 removals > max_removals 500"]
    assert (data["status"], data["failures"], data["error"]) == ("held", 0, None)
    assert data["started_at"] == "2026-11-30T08:15:00+00:00"


def test_describe_change_names_each_changed_field_with_before_and_after() -> None:
    change = describe_change(entry(ada("Eng"), ada("Sales", date(2026, 11, 22))))
    assert change == "tags.department: Eng → Sales; active_to: ∅ → 2026-11-22"
    assert describe_change(entry(ada("Eng"), ada(None))) == "tags.department: Eng → ∅"
    assert describe_change(entry(ada("Eng"), None)) == "deleted"
    assert describe_change(entry(ada("Eng"), ada("Eng"))) == "no field changed"


def test_audit_to_json_keeps_the_platform_spelling_in_before_and_after() -> None:
    data = audit_to_json(entry(None, ada("Eng")))
    assert data["end_user"] == "ada@example.com"
    assert data["before"] is None
    assert data["after"]["end_user"] == "Ada@example.com"
    assert data["after"]["tags"] == {"department": "Eng"}


def test_the_history_note_names_the_plan_file_and_what_it_approved() -> None:
    summary: dict[str, object] = {
        "approved_from_plan": "/srv/plan.json",
        "overridden": ["700 removals > max_removals 500"],
        "failures": 2,
    }
    data = run_to_json(RunRecord("r1", "corp", AT, AT, "partial", summary))
    assert run_note(data) == (
        "2 not confirmed. applied plan file /srv/plan.json, approving: "
        "700 removals > max_removals 500."
    )
    held = run_to_json(RunRecord("r2", "corp", AT, AT, "held", {"held_because": ["x", "y"]}))
    assert run_note(held) == "x; y"
    assert run_note(run_to_json(RunRecord("r3", "corp", AT, AT, "applied", {}))) == ""


def test_history_shows_what_the_re_read_of_writes_in_doubt_found() -> None:
    settled = {"checked": 5, "applied": 3, "not_applied": 2, "unverified": 0}
    data = run_to_json(RunRecord("r1", "corp", AT, AT, "applied", {"settled": settled}))
    assert data["settled"] == settled
    assert run_note(data) == "5 writes in doubt re-read: 3 applied, 2 not applied, 0 unverified."


def test_a_running_or_interrupted_run_has_no_end_yet() -> None:
    later = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)
    for status in ("running", "interrupted"):
        assert run_to_json(RunRecord("r1", "corp", AT, later, status, {}))["finished_at"] is None
    assert run_to_json(RunRecord("r1", "corp", AT, later, "failed", {}))["finished_at"] == (
        later.isoformat()
    )
