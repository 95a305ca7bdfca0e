"""The plan's insert pass: each insert is what the full rules make of a source user with
no platform user, and an insert's reason (formatted when read) is the same text, equal,
hashed and shown as if it had been given as a string."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.pretty import pretty_repr

from syncd.guard import Verdict
from syncd.model import Origin, PlatformUser, SourceUser, make_tags
from syncd.plan import Change, ChangeKind, PlanPolicy, _is_purged, _target_state, plan_changes
from syncd.planfile import build_plan_file, encode_plan_file, load_plan_file, plan_from_file

TODAY = date(2026, 11, 22)
NAMES = [f"user{i}@example.com" for i in range(10)]
# Few dates around today, so that ends on, just before and just after today and the
# purge horizon, and reversed ranges, all come up often.
DATES = st.sampled_from(
    [TODAY + timedelta(days=offset) for offset in (-800, -400, -31, -1, 0, 1, 30, 365)]
)
ORIGINS = st.sampled_from(
    [
        Origin("users.csv", 2),
        Origin("users.csv", 1_000_001),
        Origin("corp-ad", dn="CN=Ada,OU=People,DC=corp"),
        Origin("entra"),
    ]
)
TAGS = st.sampled_from([make_tags({"department": "eng"}), make_tags({})])


@st.composite
def source_users(draw: st.DrawFn) -> SourceUser:
    """Any source user, a reversed range included (the mapper refuses one in a row, but
    the plan must not rely on it)."""
    return SourceUser.from_origin(
        draw(st.sampled_from(NAMES)),
        draw(TAGS),
        draw(ORIGINS),
        draw(st.none() | DATES),
        draw(st.none() | DATES),
        draw(st.booleans()),
    )


def _expected_inserts(
    wanted: dict[str, SourceUser], listed: set[str], policy: PlanPolicy, today: date
) -> tuple[list[Change], int]:
    """The inserts and the skipped count, by the rules spelled out with the general
    functions (the target state against no platform user, the purge test)."""
    inserts: list[Change] = []
    skipped = 0
    for end_user, source in wanted.items():
        if end_user in listed or end_user in policy.protected:
            continue
        if not source.enabled and (source.active_to is None or source.active_to > today):
            skipped += 1
            continue
        after = _target_state(source, None, today)
        if _is_purged(after.active_to, policy.purge_before(today)):
            skipped += 1
            continue
        inserts.append(Change(ChangeKind.INSERT, after, None, f"new in {source.origin}"))
    return inserts, skipped


@settings(max_examples=int(os.environ.get("SYNCD_HYPOTHESIS_EXAMPLES", "300")), deadline=None)
@given(
    st.lists(source_users(), max_size=10, unique_by=lambda user: user.end_user),
    st.sets(st.sampled_from(NAMES), max_size=4),
    st.frozensets(st.sampled_from(NAMES), max_size=3),
    st.sampled_from([None, 0, 30, 400]),
    st.sampled_from([TODAY, TODAY + timedelta(days=1)]),
)
def test_each_insert_is_the_full_rules_target_state_with_its_reason(
    sources: list[SourceUser],
    on_platform: set[str],
    protected: frozenset[str],
    purge_after_days: int | None,
    today: date,
) -> None:
    wanted = {user.end_user: user for user in sources}
    listed = on_platform & wanted.keys()
    platform = [PlatformUser(name, make_tags({}), date(2020, 1, 1)) for name in sorted(listed)]
    policy = PlanPolicy(purge_after_days=purge_after_days, protected=protected)
    plan = plan_changes(wanted, platform, policy, today)
    expected, skipped = _expected_inserts(wanted, listed, policy, today)
    assert list(plan.inserts) == expected
    assert [change.reason for change in plan.inserts] == [c.reason for c in expected]
    assert [repr(change) for change in plan.inserts] == [repr(c) for c in expected]
    assert plan.skipped_disabled == skipped
    assert plan.protected == len(protected & wanted.keys())


def test_an_insert_reason_names_the_record_wherever_it_came_from() -> None:
    users = [
        SourceUser.from_origin("a@x.com", (), Origin("hr.csv", 12)),
        SourceUser.from_origin("b@x.com", (), Origin("corp-ad", dn="CN=B,DC=corp")),
        SourceUser.from_origin("c@x.com", (), Origin("entra")),
    ]
    plan = plan_changes({user.end_user: user for user in users}, [], PlanPolicy(), TODAY)
    assert [change.reason for change in plan.inserts] == [
        "new in hr.csv:12",
        "new in corp-ad: CN=B,DC=corp",
        "new in entra",
    ]


def test_a_change_given_its_source_user_is_the_change_given_the_text() -> None:
    user = PlatformUser("a@x.com", make_tags({"department": "eng"}), TODAY)
    source = SourceUser.from_origin("a@x.com", user.tags, Origin("hr.csv", 2))
    lazy = Change(ChangeKind.INSERT, user, None, source)
    text = Change(ChangeKind.INSERT, user, None, "new in hr.csv:2")
    assert lazy.reason == text.reason == "new in hr.csv:2"
    assert lazy == text
    assert text == lazy
    assert not lazy != text  # noqa: SIM202 - __ne__ is defined on its own
    assert hash(lazy) == hash(text)
    assert len({lazy, text}) == 1
    assert repr(lazy) == repr(text)
    assert "reason='new in hr.csv:2'" in repr(lazy)


def test_changes_with_another_reason_kind_or_user_differ() -> None:
    user = PlatformUser("a@x.com", (), TODAY)
    source = SourceUser.from_origin("a@x.com", (), Origin("hr.csv", 2))
    lazy = Change(ChangeKind.INSERT, user, None, source)
    assert lazy != Change(ChangeKind.INSERT, user, None, "new in hr.csv:3")
    assert lazy != Change(ChangeKind.UPDATE, user, None, "new in hr.csv:2")
    assert lazy != Change(ChangeKind.INSERT, PlatformUser("b@x.com", (), TODAY), None, source)
    assert lazy != Change(ChangeKind.INSERT, user, user, source)
    assert lazy != "new in hr.csv:2"
    assert (lazy == object()) is False


def test_a_plan_file_holds_the_insert_reasons_as_text(tmp_path: Path) -> None:
    users = [SourceUser.from_origin(f"u{i}@x.com", (), Origin("hr.csv", i + 2)) for i in range(3)]
    plan = plan_changes({user.end_user: user for user in users}, [], PlanPolicy(), TODAY)
    plan_file = build_plan_file(
        job="corp",
        plan=plan,
        verdict=Verdict(held=False),
        config_fingerprint="sha256:config",
        platform_fingerprint="sha256:platform",
        platform_users=0,
        created_at=datetime(2026, 11, 22, 9, 0, tzinfo=UTC),
        today=TODAY,
    )
    path = tmp_path / "plan.json"
    path.write_bytes(encode_plan_file(plan_file))
    assert b'"new in hr.csv:4"' in path.read_bytes()
    loaded = plan_from_file(load_plan_file(path))
    assert loaded.inserts == plan.inserts
    assert [change.reason for change in loaded.inserts] == [
        "new in hr.csv:2",
        "new in hr.csv:3",
        "new in hr.csv:4",
    ]


def test_rich_shows_a_lazy_reason_as_its_text() -> None:
    source = SourceUser.from_origin("a@x.com", (), Origin("users.csv", 7))
    change = Change(ChangeKind.INSERT, PlatformUser("a@x.com", (), date(2026, 1, 1)), None, source)
    assert "reason='new in users.csv:7'" in pretty_repr(change)
    assert "_why" not in pretty_repr(change)
