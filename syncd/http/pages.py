"""Following page cursors without ever looping: :func:`walk_cursors`."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from syncd.http.policy import ApiPolicy

__all__ = ["DEFAULT_MAX_PAGES", "walk_cursors"]

# Pages of 100 still list ten million items within this bound; a runaway cursor loop
# (a server that never stops naming a next page) stops here.
DEFAULT_MAX_PAGES = 100_000

CursorT = TypeVar("CursorT", bound=Hashable)


def walk_cursors(
    read_page: Callable[[CursorT | None], CursorT | None],
    *,
    policy: ApiPolicy,
    operation: str,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> int:
    """Read pages until one names no next cursor; return how many pages were read.

    ``read_page(cursor)`` fetches and consumes the page at ``cursor`` (None: the first
    page) and returns the page's next cursor, or None on the last page. How a page
    names its successor (a ``next_page_cursor`` field, an ``@odata.nextLink`` URL) is
    the reader's business; each page is dropped before the next is fetched. A cursor
    seen before, or more than ``max_pages`` pages, is ``policy.error``: stopping beats
    listing forever.
    """
    if max_pages < 1:
        raise ValueError("max_pages must be >= 1")
    seen: set[CursorT] = set()
    cursor: CursorT | None = None
    pages = 0
    while True:
        cursor = read_page(cursor)
        pages += 1
        if cursor is None:
            return pages
        if cursor in seen:
            raise policy.error(
                f"{operation}: {policy.subject} returned page cursor {cursor!r} twice; "
                "stopping instead of looping",
                status_code=None,
            )
        if pages >= max_pages:
            raise policy.error(
                f"{operation}: more than {max_pages} pages; stopping", status_code=None
            )
        seen.add(cursor)
