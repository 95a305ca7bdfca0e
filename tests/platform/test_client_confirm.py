"""Per-user confirmation of insert / update answers that are not the batch in its order.

The usual answer (the batch itself, in order) is confirmed with one list comparison;
these answers take the slower path, which must still check every user of the batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date

import httpx
import pytest
from pydantic import SecretStr

from syncd.model import PlatformUser, make_tags
from syncd.platform.api import ApiFlavour
from syncd.platform.client import PlatformClient, WriteFailure

Rewrite = Callable[[list[dict[str, object]]], list[dict[str, object]]]


def users(count: int) -> list[PlatformUser]:
    tags = make_tags({"department": "eng"})
    return [PlatformUser(f"u{i:02d}@x.com", tags, date(2026, 1, 1)) for i in range(count)]


def client_answering(rewrite: Rewrite) -> PlatformClient:
    """A client whose platform answers each write with ``rewrite(the users sent)``."""

    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["users"]
        return httpx.Response(200, json={"users": rewrite(sent)})

    return PlatformClient(
        base_url="https://platform.test",
        api_key=SecretStr("k"),
        flavour=ApiFlavour.PLATFORM_USERS,
        batch_size=4,
        concurrency=1,  # batches in turn: the confirmed list is in a known order
        max_retries=0,
        transport=httpx.MockTransport(handler),
    )


@pytest.mark.parametrize("operation", ["insert", "update"])
@pytest.mark.parametrize(
    "rewrite",
    [
        lambda sent: sent[::-1],
        lambda sent: [{"end_user": "stranger@x.com", "tags": {}}, *sent],
        lambda sent: sent + sent,
    ],
    ids=["reversed", "with an extra user", "each user twice"],
)
def test_an_answer_in_another_order_or_with_more_users_confirms_the_batch(
    rewrite: Rewrite, operation: str
) -> None:
    with client_answering(rewrite) as client:
        outcome = getattr(client, operation)(users(10))
    assert outcome.ok
    assert outcome.confirmed == [user.end_user for user in users(10)]  # in batch order
    assert outcome.calls == 3


def test_a_reordered_answer_that_leaves_users_out_fails_exactly_those() -> None:
    def rewrite(sent: list[dict[str, object]]) -> list[dict[str, object]]:
        return [user for user in sent[::-1] if user["end_user"] not in {"u01@x.com", "u06@x.com"}]

    with client_answering(rewrite) as client:
        outcome = client.insert(users(8))
    assert outcome.failures == [
        WriteFailure("u01@x.com", "not confirmed by the platform"),
        WriteFailure("u06@x.com", "not confirmed by the platform"),
    ]
    assert outcome.confirmed == [f"u{i:02d}@x.com" for i in (0, 2, 3, 4, 5, 7)]


def test_an_answer_as_long_as_the_batch_but_with_another_user_is_not_a_confirmation() -> None:
    def rewrite(sent: list[dict[str, object]]) -> list[dict[str, object]]:
        return [*sent[:-1], {"end_user": "stranger@x.com"}]

    with client_answering(rewrite) as client:
        outcome = client.insert(users(4))
    assert outcome.failures == [WriteFailure("u03@x.com", "not confirmed by the platform")]
    assert outcome.confirmed == ["u00@x.com", "u01@x.com", "u02@x.com"]
