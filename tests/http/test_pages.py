"""walk_cursors: every page once, and never a loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
import pytest
from pydantic import SecretStr

from syncd.errors import SourceError
from syncd.http import BearerAuth, RetryingCaller, make_http_client, walk_cursors
from tests.http.support import GRAPH_LIKE, Answer, ScriptedServer


def reader(
    pages: Mapping[str | None, str | None], asked: list[str | None]
) -> Callable[[str | None], str | None]:
    """A page reader over ``pages`` (cursor -> next cursor) that records what it read."""

    def read_page(cursor: str | None) -> str | None:
        asked.append(cursor)
        return pages[cursor]

    return read_page


def test_pages_are_read_in_order_until_one_names_no_successor() -> None:
    asked: list[str | None] = []
    pages = walk_cursors(
        reader({None: "b", "b": "c", "c": None}, asked), policy=GRAPH_LIKE, operation="users"
    )
    assert pages == 3
    assert asked == [None, "b", "c"]


def test_a_single_page_is_one_read() -> None:
    asked: list[str | None] = []
    assert walk_cursors(reader({None: None}, asked), policy=GRAPH_LIKE, operation="u") == 1
    assert asked == [None]


def test_a_repeated_cursor_stops_with_the_policys_error() -> None:
    asked: list[str | None] = []
    loop = {None: "b", "b": "c", "c": "b"}
    with pytest.raises(SourceError) as caught:
        walk_cursors(reader(loop, asked), policy=GRAPH_LIKE, operation="users")
    assert str(caught.value) == (
        "users: Microsoft Graph returned page cursor 'b' twice; stopping instead of looping"
    )
    assert asked == [None, "b", "c"]  # the page naming "b" again is the last one read


def test_too_many_pages_stop_with_the_policys_error() -> None:
    calls = 0

    def endless(cursor: int | None) -> int:
        nonlocal calls
        calls += 1
        return (cursor or 0) + 1  # always a new cursor: only the page bound stops it

    with pytest.raises(SourceError, match=r"^users: more than 5 pages; stopping$"):
        walk_cursors(endless, policy=GRAPH_LIKE, operation="users", max_pages=5)
    assert calls == 5


def test_max_pages_must_allow_a_page() -> None:
    with pytest.raises(ValueError, match="max_pages"):
        walk_cursors(lambda cursor: None, policy=GRAPH_LIKE, operation="u", max_pages=0)


class GraphPage(msgspec.Struct):
    value: list[str]
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")


def test_next_links_over_http(server: ScriptedServer) -> None:
    """Graph names the next page by a full URL rather than a cursor field."""
    server.script(
        Answer(
            body=msgspec.json.encode(
                {"value": ["a", "b"], "@odata.nextLink": f"{server.url}/users?skip=2"}
            )
        ),
        Answer(
            body=msgspec.json.encode(
                {"value": ["c"], "@odata.nextLink": f"{server.url}/users?skip=3"}
            )
        ),
        Answer(body=msgspec.json.encode({"value": ["d"]})),
    )
    names: list[str] = []
    with make_http_client(server.url, auth=BearerAuth(SecretStr("tok")), timeout_s=5.0) as http:
        caller = RetryingCaller(http, GRAPH_LIKE)

        def read_page(link: str | None) -> str | None:
            path = link or "/users"
            response = caller.call("users", "GET", path)
            caller.raise_for_status(response, "users", "GET", path)
            page = msgspec.json.decode(response.content, type=GraphPage)
            names.extend(page.value)
            return page.next_link

        pages = walk_cursors(read_page, policy=GRAPH_LIKE, operation="users")
    assert (pages, names) == (3, ["a", "b", "c", "d"])
    assert [seen.path for seen in server.seen] == ["/users", "/users?skip=2", "/users?skip=3"]
