"""Bounded error messages: lists and values from hostile input are cut to a readable size.

A header with 100,000 columns, a cell of 100 kB or a user listed in 5,000 places must
not turn one error message into megabytes of text (in a terminal, a log line, the run
history). Every list an error message shows goes through :func:`bounded_list`, every
value from the input through :func:`shorten`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

MAX_LISTED = 30
"""At most this many items of a list are shown in one message."""

MAX_VALUE_CHARS = 80
"""A value quoted in a message is cut to about this many characters."""


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` if it is short, else its start and how many characters were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def quoted(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr`` of a value from the input (control characters escaped), cut to ``limit``."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text) - limit} more characters)"


def bounded_list(
    items: Sequence[object],
    *,
    separator: str = ", ",
    limit: int = MAX_LISTED,
    show: Callable[[object], str] = str,
) -> str:
    """The first ``limit`` items joined by ``separator``, then ``... and N more``."""
    shown = separator.join(show(item) for item in items[:limit])
    more = len(items) - limit
    return f"{shown}{separator}... and {more} more" if more > 0 else shown
