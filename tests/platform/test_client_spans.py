"""The spans a write notes: where runs of its confirmed names sit among its items.

Against the real emulator on loopback: batches answered out of order by several
workers, a batch the platform confirms only in part, and a batch split by 413.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import msgspec
import pytest
from msgspec.structs import replace
from pydantic import SecretStr

from syncd.emulator import PlatformEmulator
from syncd.model import make_tags
from syncd.platform.api import (
    ApiFlavour,
    Operation,
    OutgoingBody,
    OutgoingUser,
    WireUser,
    outgoing_user,
)
from syncd.platform.client import PlatformClient
from syncd.ports import ConfirmedSpan, WriteOutcome
from tests.platform.test_client import platform_users


@pytest.fixture
def small_batches_emulator(emulator_api_key: str) -> Iterator[PlatformEmulator]:
    """An emulator that answers 413 to a batch of more than 4 users."""
    with PlatformEmulator(api_key=emulator_api_key, max_batch_size=4) as server:
        yield server


def client(emulator: PlatformEmulator, key: str, *, batch_size: int) -> PlatformClient:
    return PlatformClient(
        base_url=emulator.url,
        api_key=SecretStr(key),
        flavour=ApiFlavour.PLATFORM_USERS,
        batch_size=batch_size,
        concurrency=4,
        timeout_s=5.0,
        max_retries=0,
    )


def spans_hold(outcome: WriteOutcome, names: list[str]) -> bool:
    """Each span's names are the items it names, in order, and spans do not overlap."""
    covered = 0
    for span in outcome.spans:
        if span.at < covered:
            return False
        covered = span.at + span.count
        if outcome.confirmed[span.at : covered] != names[span.start : span.start + span.count]:
            return False
    return covered <= len(outcome.confirmed)


def test_every_wholly_confirmed_batch_is_placed_among_the_items(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    users = platform_users(203)
    names = [user.end_user for user in users]
    # One user already there: insert leaves it out, so its batch is confirmed in part.
    emulator.seed_users([WireUser(names[57], {"department": "eng"}, "2026-01-01")])
    with client(emulator, emulator_api_key, batch_size=10) as writer:
        outcome = writer.insert(users)

    assert len(outcome.confirmed) == 202
    assert spans_hold(outcome, names)
    # 21 batches; the one holding user 57 (items 50-59) has no span, every other one has.
    assert sorted(span.start for span in outcome.spans) == [
        start for start in range(0, 203, 10) if start != 50
    ]
    assert sum(span.count for span in outcome.spans) == 193
    unplaced = set(outcome.confirmed) - {
        name for span in outcome.spans for name in names[span.start : span.start + span.count]
    }
    assert unplaced == set(names[50:60]) - {names[57]}


def test_a_batch_split_by_413_and_confirmed_whole_is_one_span(
    small_batches_emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    users = platform_users(30)
    names = [user.end_user for user in users]
    with client(small_batches_emulator, emulator_api_key, batch_size=8) as writer:
        outcome = writer.insert(users)

    assert outcome.ok
    assert outcome.calls > 4  # the batches of 8 were halved
    assert spans_hold(outcome, names)
    assert sorted((span.start, span.count) for span in outcome.spans) == [
        (0, 8), (8, 8), (16, 8), (24, 6),
    ]  # fmt: skip


def test_a_delete_places_its_batches_too(emulator: PlatformEmulator, emulator_api_key: str) -> None:
    users = platform_users(25)
    names = [user.end_user for user in users]
    with client(emulator, emulator_api_key, batch_size=10) as writer:
        writer.insert(users)
        outcome = writer.delete(names)

    assert outcome.ok
    assert spans_hold(outcome, names)
    assert sorted((span.start, span.count) for span in outcome.spans) == [
        (0, 10),
        (10, 10),
        (20, 5),
    ]


def sent_users(span: ConfirmedSpan) -> list[OutgoingUser]:
    assert span.sent is not None
    assert span.sent.content is not None
    return msgspec.json.decode(span.sent.content, type=OutgoingBody).users


def test_an_insert_asked_to_keeps_the_body_that_wrote_each_span(
    emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    users = platform_users(45)
    users[3] = replace(users[3], active_to=date(2026, 12, 31))
    names = [user.end_user for user in users]
    emulator.seed_users([WireUser(names[27], {"department": "eng"}, "2026-01-01")])
    with client(emulator, emulator_api_key, batch_size=10) as writer:
        kept = writer.insert(users, outcome=WriteOutcome(Operation.INSERT, 45, keep_sent=True))
        writer.delete(names)
        plain = writer.insert(users)

    assert sorted(span.start for span in kept.spans) == [0, 10, 30, 40]  # 20-29: in part
    for span in kept.spans:
        # The very users the platform was sent and confirmed, in the stored form.
        assert sent_users(span) == [
            outgoing_user(user) for user in users[span.start : span.start + span.count]
        ]
        assert "bytes" in repr(span.sent)
        assert "user0" not in repr(span.sent)
    assert plain.spans
    assert all(span.sent is None for span in plain.spans)


def test_no_body_is_kept_for_halves_of_a_413_or_for_updates_and_deletes(
    small_batches_emulator: PlatformEmulator, emulator_api_key: str
) -> None:
    users = platform_users(12)
    names = [user.end_user for user in users]

    def asked(operation: Operation) -> WriteOutcome:
        return WriteOutcome(operation, 12, keep_sent=True)

    with client(small_batches_emulator, emulator_api_key, batch_size=4) as writer:
        whole = writer.insert(users[:8], outcome=WriteOutcome(Operation.INSERT, 8, keep_sent=True))
        writer.delete(names[:8])
    with client(small_batches_emulator, emulator_api_key, batch_size=8) as writer:
        halved = writer.insert(users, outcome=asked(Operation.INSERT))
        moved = [replace(user, tags=make_tags({"department": "ops"})) for user in users]
        updated = writer.update(moved, outcome=asked(Operation.UPDATE))
        deleted = writer.delete(names, outcome=asked(Operation.DELETE))

    assert all(span.sent is not None for span in whole.spans)
    assert len(whole.spans) == 2
    # The batch of 8 went as two requests of 4: no one body holds it. The last 4 did.
    spans = sorted(halved.spans, key=lambda span: span.start)
    assert [(span.start, span.count, span.sent is None) for span in spans] == [
        (0, 8, True),
        (8, 4, False),
    ]
    assert halved.ok
    assert updated.ok
    assert deleted.ok
    assert updated.spans
    assert all(span.sent is None for span in updated.spans)
    assert deleted.spans
    assert all(span.sent is None for span in deleted.spans)
