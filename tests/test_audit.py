"""The audit entries of a run: confirmed changes only, one per user, by kind (pure)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.audit import AuditJournal, _Entries, audit_batches
from syncd.model import PlatformUser, make_tags
from syncd.plan import Change, ChangeKind, Plan
from syncd.platform.api import Operation, UsersBodyEncoder
from syncd.ports import (
    AuditBatch,
    AuditedUser,
    ConfirmedSpan,
    SentBody,
    SentUsers,
    WriteFailure,
    WriteOutcome,
)
from syncd.state_codec import decode_sent_chunk

AT = datetime(2026, 11, 22, 12, tzinfo=UTC)
LATER = datetime(2026, 11, 22, 12, 5, tzinfo=UTC)


def user(name: str, dept: str = "Eng", active_to: date | None = None) -> PlatformUser:
    return PlatformUser(name, make_tags({"department": dept}), date(2026, 1, 1), active_to)


def test_only_confirmed_changes_are_audited_one_entry_per_user_by_kind() -> None:
    ended = user("Carol@X.com", active_to=date(2026, 11, 22))
    plan = Plan(
        inserts=(
            Change(ChangeKind.INSERT, user("a@x.com"), None, "new"),
            Change(ChangeKind.INSERT, user("refused@x.com"), None, "new"),
        ),
        updates=(Change(ChangeKind.UPDATE, user("B@X.com", "Sales"), user("B@X.com"), "moved"),),
        ends=(Change(ChangeKind.END, ended, user("Carol@X.com"), "gone"),),
        reactivations=(Change(ChangeKind.REACTIVATE, user("d@x.com"), ended, "back"),),
        deletes=(Change(ChangeKind.DELETE, user("e@x.com"), user("e@x.com"), "purge"),),
    )
    outcomes = [
        WriteOutcome(
            Operation.INSERT,
            2,
            confirmed=["a@x.com"],
            failures=[WriteFailure("refused@x.com", "not confirmed by the platform")],
        ),
        WriteOutcome(Operation.UPDATE, 3, confirmed=["B@X.com", "Carol@X.com", "d@x.com"]),
        WriteOutcome(Operation.DELETE, 1, confirmed=[]),  # the platform failed
    ]
    batches = audit_batches(
        plan,
        outcomes,
        run_id="r1",
        job="corp",
        confirmed_at={Operation.INSERT: AT, Operation.UPDATE: LATER, Operation.DELETE: LATER},
        identity=str.lower,
    )
    users = [list(b.users) for b in batches]
    assert [
        (b.operation, b.at, [u[0] for u in us]) for b, us in zip(batches, users, strict=True)
    ] == [
        ("insert", AT, ["a@x.com"]),
        ("update", LATER, ["b@x.com"]),
        ("end", LATER, ["carol@x.com"]),
        ("reactivate", LATER, ["d@x.com"]),
    ]
    assert users[1] == [("b@x.com", user("B@X.com"), user("B@X.com", "Sales"))]
    assert users[0] == [("a@x.com", None, user("a@x.com"))]
    assert {(b.run_id, b.job) for b in batches} == {("r1", "corp")}


def test_a_confirmed_delete_keeps_the_user_before_and_nothing_after() -> None:
    gone = user("e@x.com", active_to=date(2020, 1, 1))
    plan = Plan(deletes=(Change(ChangeKind.DELETE, gone, gone, "purge"),))
    (only,) = audit_batches(
        plan,
        [WriteOutcome(Operation.DELETE, 1, confirmed=["e@x.com"])],
        run_id="r1",
        job="corp",
        confirmed_at={Operation.DELETE: AT},
        identity=str,
    )
    assert (only.operation, list(only.users)) == ("delete", [("e@x.com", gone, None)])


def test_nothing_confirmed_means_no_batch() -> None:
    plan = Plan(inserts=(Change(ChangeKind.INSERT, user("a@x.com"), None, "new"),))
    assert (
        audit_batches(
            plan,
            [WriteOutcome(Operation.INSERT, 1)],
            run_id="r1",
            job="corp",
            confirmed_at={Operation.INSERT: AT},
            identity=str,
        )
        == []
    )


def test_a_batch_tells_the_store_its_size_and_stays_lazy() -> None:
    names = [f"u{i}@x.com" for i in range(5)]
    plan = Plan(inserts=tuple(Change(ChangeKind.INSERT, user(n), None, "new") for n in names))
    partly = WriteOutcome(Operation.INSERT, 5, confirmed=names[:3], failures=[])
    partly.failures.extend(WriteFailure(n, "refused") for n in names[3:])
    (batch,) = audit_batches(
        plan,
        [partly],
        run_id="r1",
        job="corp",
        confirmed_at={Operation.INSERT: AT},
        identity=str,
    )
    # An upper bound (the changes of the kind), for the store to plan a large insert
    # without holding the rows; iterating yields only the confirmed users.
    assert operator.length_hint(batch.users, 0) == 5
    assert [entry[0] for entry in batch.users] == names[:3]
    assert [entry[0] for entry in batch.users] == names[:3]  # each pass reads the plan


def test_the_journal_reads_what_each_followed_list_gained_and_marks_what_was_written() -> None:
    names = [f"u{i}@x.com" for i in range(5)]
    ended = user("Carol@X.com", active_to=date(2026, 11, 22))
    plan = Plan(
        inserts=tuple(Change(ChangeKind.INSERT, user(n), None, "new") for n in names),
        updates=(Change(ChangeKind.UPDATE, user("B@X.com", "Sales"), user("B@X.com"), "moved"),),
        ends=(Change(ChangeKind.END, ended, user("Carol@X.com"), "gone"),),
        deletes=(Change(ChangeKind.DELETE, user("E@x.com"), user("E@x.com"), "purge"),),
    )
    journal = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    inserted: list[str] = []
    journal.follow(Operation.INSERT, inserted)
    assert len(journal) == 0
    assert journal.pending(AT) == []
    inserted += [names[3], names[1]]  # as a later batch answered first
    inserted.append("not-in-the-plan@x.com")
    assert len(journal) == 3
    pending = journal.pending(AT)
    inserted.append(names[0])  # answered while the first part is being written
    (first,) = journal.batches(pending)
    assert (first.run_id, first.job, first.operation, first.at) == ("r1", "corp", "insert", AT)
    # In the order of the answers; a name that is no change of the plan is left out.
    assert list(first.users) == [(n, None, user(n)) for n in (names[3], names[1])]
    journal.written(pending)
    assert len(journal) == 1
    (second,) = journal.batches(journal.pending(LATER))
    assert [entry[0] for entry in second.users] == [names[0]]  # nothing twice

    updated: list[str] = ["Carol@X.com", "B@X.com"]
    journal.follow(Operation.UPDATE, updated)
    journal.follow(Operation.DELETE, ["E@x.com"])
    batches = journal.batches(journal.pending(LATER))
    assert [(b.operation, b.at, list(b.users)) for b in batches] == [
        ("insert", LATER, [(names[0], None, user(names[0]))]),
        ("end", LATER, [("carol@x.com", user("Carol@X.com"), ended)]),
        ("update", LATER, [("b@x.com", user("B@X.com"), user("B@X.com", "Sales"))]),
        ("delete", LATER, [("e@x.com", user("E@x.com"), None)]),
    ]
    journal.written(journal.pending(LATER))
    assert len(journal) == 0
    journal.forget_written()  # the log they went to is gone: all of them again
    assert len(journal) == 7  # names, the one that is no change included


def _spans_plan() -> tuple[Plan, list[str], list[str]]:
    """Six inserts; two updates, an end and a reactivation (written in that order)."""
    names = [f"u{i}@x.com" for i in range(6)]
    ended = user("Carol@X.com", active_to=date(2026, 11, 22))
    plan = Plan(
        inserts=tuple(Change(ChangeKind.INSERT, user(n), None, "new") for n in names),
        updates=(
            Change(ChangeKind.UPDATE, user("B@X.com", "Sales"), user("B@X.com"), "moved"),
            Change(ChangeKind.UPDATE, user("F@X.com", "Ops"), user("F@X.com"), "moved"),
        ),
        ends=(Change(ChangeKind.END, ended, user("Carol@X.com"), "gone"),),
        reactivations=(Change(ChangeKind.REACTIVATE, user("d@x.com"), ended, "back"),),
    )
    updated = ["B@X.com", "F@X.com", "Carol@X.com", "d@x.com"]  # the update items' order
    return plan, names, updated


def _entries(batches: list[AuditBatch]) -> list[tuple[str, list[AuditedUser]]]:
    return [(batch.operation, list(_users(batch))) for batch in batches]


def _users(batch: AuditBatch) -> Iterable[AuditedUser]:
    assert not isinstance(batch.users, SentUsers)
    return batch.users


@settings(max_examples=200, deadline=None)
@given(
    st.permutations(range(3)),  # the order the three insert batches of two are answered
    st.permutations(range(2)),  # and the two update batches of two
    st.sets(st.integers(0, 4)),  # batches answered without a span (partly confirmed, ...)
    st.integers(1, 7),  # how many answers are in before the journal reads
)
def test_names_placed_by_spans_give_the_entries_found_by_name(
    insert_order: list[int], update_order: list[int], unplaced: set[int], first_read: int
) -> None:
    plan, names, updated = _spans_plan()
    answers = [(Operation.INSERT, names, b) for b in insert_order]
    answers += [(Operation.UPDATE, updated, b) for b in update_order]
    by_span = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    by_name = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    outcomes = {op: WriteOutcome(op, 6) for op in (Operation.INSERT, Operation.UPDATE)}
    named: dict[Operation, list[str]] = {Operation.INSERT: [], Operation.UPDATE: []}
    for operation, outcome in outcomes.items():
        by_span.follow(operation, outcome.confirmed, outcome.spans)
        by_name.follow(operation, named[operation])
    seen: list[tuple[str, list[AuditedUser]]] = []
    expected: list[tuple[str, list[AuditedUser]]] = []
    for number, (operation, items, batch) in enumerate(answers):
        outcome, start = outcomes[operation], 2 * batch
        if number not in unplaced:
            outcome.spans.append(ConfirmedSpan(len(outcome.confirmed), start, 2))
        outcome.confirmed.extend(items[start : start + 2])
        named[operation].extend(items[start : start + 2])
        if number + 1 in (first_read, len(answers)):
            for journal, into in ((by_span, seen), (by_name, expected)):
                pending = journal.pending(AT)
                into.extend(_entries(journal.batches(pending)))
                journal.written(pending)
    assert seen == expected
    assert sum(len(users) for _, users in seen) == 10  # every confirmed change, once


def test_a_span_that_does_not_hold_is_not_believed() -> None:
    plan, names, _ = _spans_plan()
    journal = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    outcome = WriteOutcome(Operation.INSERT, 6)
    journal.follow(Operation.INSERT, outcome.confirmed, outcome.spans)
    outcome.spans.append(ConfirmedSpan(0, 0, 2))  # says items 0-1; the names are 4-5
    outcome.confirmed += names[4:6]
    outcome.spans.append(ConfirmedSpan(2, 2, 2))  # holds
    outcome.confirmed += names[2:4]
    outcome.spans.append(ConfirmedSpan(4, 0, 9))  # longer than the names noted so far
    outcome.confirmed += names[0:1]
    (batch,) = journal.batches(journal.pending(AT))
    assert [entry[0] for entry in batch.users] == [names[i] for i in (4, 5, 2, 3, 0)]
    assert [entry[2] for entry in batch.users] == [user(names[i]) for i in (4, 5, 2, 3, 0)]


def test_changes_placed_by_spans_need_no_dictionary_of_every_change() -> None:
    plan, names, _ = _spans_plan()
    journal = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    outcome = WriteOutcome(Operation.INSERT, 6)
    journal.follow(Operation.INSERT, outcome.confirmed, outcome.spans)
    for start in (4, 0, 2):
        outcome.spans.append(ConfirmedSpan(len(outcome.confirmed), start, 2))
        outcome.confirmed += names[start : start + 2]
    (batch,) = journal.batches(journal.pending(AT))
    assert len(batch.users) == 6
    # A first sync of a million users: the dictionary by name would cost 0.5 s with
    # the GIL held; placed by position, none is built.
    assert journal._by_name == {}


def test_entries_read_by_slices_are_the_entries_read_one_by_one() -> None:
    plan, names, updated = _spans_plan()
    journal = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    journal.follow(Operation.INSERT, names)
    journal.follow(Operation.UPDATE, updated)
    for batch in journal.batches(journal.pending(AT)):
        users = batch.users
        assert isinstance(users, Sequence)
        assert [users[i] for i in range(len(users))] == list(users) == users[0 : len(users)]
        assert users[1:] == list(users)[1:]


def test_names_noted_after_the_read_wait_for_the_next_even_inside_a_span() -> None:
    plan, names, _ = _spans_plan()
    journal = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    outcome = WriteOutcome(Operation.INSERT, 6)
    journal.follow(Operation.INSERT, outcome.confirmed, outcome.spans)
    outcome.spans.append(ConfirmedSpan(0, 0, 6))
    outcome.confirmed += names[:3]
    pending = journal.pending(AT)
    outcome.confirmed += names[3:]  # the same span, noted while the first part is written
    (first,) = journal.batches(pending)
    assert [entry[0] for entry in first.users] == names[:3]
    journal.written(pending)
    (second,) = journal.batches(journal.pending(LATER))
    assert [entry[0] for entry in second.users] == names[3:]


def _sent_inserts(names: list[str]) -> tuple[Plan, WriteOutcome, AuditJournal]:
    """A plan of ``names`` inserted, followed by a journal through an outcome."""
    plan = Plan(inserts=tuple(Change(ChangeKind.INSERT, user(n), None, "new") for n in names))
    journal = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    outcome = WriteOutcome(Operation.INSERT, len(names), keep_sent=True)
    journal.follow(Operation.INSERT, outcome.confirmed, outcome.spans)
    return plan, outcome, journal


def _sent(plan: Plan, outcome: WriteOutcome, start: int, count: int) -> SentBody:
    """Note a wholly confirmed batch of the plan's inserts, as the client does."""
    users = [change.user for change in plan.inserts[start : start + count]]
    body = SentBody(UsersBodyEncoder().encode(users))
    outcome.spans.append(ConfirmedSpan(len(outcome.confirmed), start, count, body))
    outcome.confirmed.extend(u.end_user for u in users)
    return body


def _decoded(batches: list[AuditBatch]) -> list[tuple[str, list[AuditedUser]]]:
    """Each batch's entries, a batch of users as sent decoded as the store reads it."""
    return [
        (
            batch.operation,
            decode_sent_chunk(batch.users.users)
            if isinstance(batch.users, SentUsers)
            else list(batch.users),
        )
        for batch in batches
    ]


def test_inserts_written_by_one_request_are_audited_as_sent_and_the_body_let_go() -> None:
    names = [f"u{i}@x.com" for i in range(7)]
    plan, outcome, journal = _sent_inserts(names)
    first = _sent(plan, outcome, 4, 3)
    outcome.confirmed.append(names[0])  # confirmed without a span (a partial batch)
    second = _sent(plan, outcome, 1, 3)
    batches = journal.batches(journal.pending(AT))
    assert [type(batch.users) for batch in batches] == [SentUsers, _Entries, SentUsers]
    sent = batches[0].users
    assert isinstance(sent, SentUsers)
    assert sent.count == 3
    # The body's users, byte for byte: no second encoding of each user.
    assert sent.users == UsersBodyEncoder().encode([user(n) for n in names[4:7]])[9:-1]
    assert first.content is None
    assert second.content is None
    by_name = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    by_name.follow(Operation.INSERT, [names[i] for i in (4, 5, 6, 0, 1, 2, 3)])
    expected = by_name.batches(by_name.pending(AT))
    assert _flat(batches) == _flat(expected)
    assert len(_flat(batches)) == 7


def _flat(batches: list[AuditBatch]) -> list[tuple[str, AuditedUser]]:
    return [(kind, entry) for kind, entries in _decoded(batches) for entry in entries]


def test_without_its_body_a_span_of_inserts_is_audited_from_the_plan() -> None:
    names = [f"u{i}@x.com" for i in range(4)]
    plan, outcome, journal = _sent_inserts(names)
    _sent(plan, outcome, 0, 2)
    _sent(plan, outcome, 2, 2)
    pending = journal.pending(AT)
    as_sent = _decoded(journal.batches(pending))
    # The append failed (or its file was replaced): the bodies are gone, the plan is not.
    again = journal.batches(pending)
    assert [type(batch.users) for batch in again] == [_Entries]
    assert _flat(again) == [("insert", e) for _, entries in as_sent for e in entries]


def test_only_a_whole_span_of_inserts_that_still_holds_is_audited_as_sent() -> None:
    names = [f"u{i}@x.com" for i in range(6)]
    plan, outcome, journal = _sent_inserts(names)
    body = _sent(plan, outcome, 0, 4)
    # Read half-way through the span's names: each half comes from the plan.
    pending = [replace(journal.pending(AT)[0], end=2)]
    assert [type(b.users) for b in journal.batches(pending)] == [_Entries]
    assert body.content is not None  # kept for when the whole span is read
    # A body that is not a users body (another writer's) is not believed either.
    outcome.spans.append(ConfirmedSpan(len(outcome.confirmed), 4, 2, SentBody(b"[]")))
    outcome.confirmed += names[4:6]
    batches = journal.batches(journal.pending(AT))
    assert [type(b.users) for b in batches] == [SentUsers, _Entries]
    assert [entry[0] for _, entry in _flat(batches)] == names[:4] + names[4:6]


def test_updates_are_never_audited_as_sent() -> None:
    plan, _, updated = _spans_plan()
    journal = AuditJournal(plan, run_id="r1", job="corp", identity=str.lower)
    outcome = WriteOutcome(Operation.UPDATE, 4, keep_sent=True)
    journal.follow(Operation.UPDATE, outcome.confirmed, outcome.spans)
    body = SentBody(UsersBodyEncoder().encode([user("B@X.com", "Sales")]))
    outcome.spans.append(ConfirmedSpan(0, 0, 4, body))
    outcome.confirmed += updated
    batches = journal.batches(journal.pending(AT))
    assert [b.operation for b in batches] == ["update", "end", "reactivate"]
    assert not any(isinstance(b.users, SentUsers) for b in batches)
    assert body.content is not None  # an update needs "before": its body is no entry


def test_a_sent_body_never_shows_its_users_in_a_repr() -> None:
    body = SentBody(b'{"users":[{"end_user":"alice@x.com"}]}')
    assert "alice" not in repr(body)
    assert "bytes" in repr(body)
    body.release()
    assert repr(body) == "SentBody(released)"
    assert "alice" not in repr(SentUsers(b'[{"end_user":"alice@x.com"}]', 1))
