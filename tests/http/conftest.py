"""Fixtures of the tests of :mod:`syncd.http`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.http.support import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A started :class:`ScriptedServer` on a random loopback port."""
    scripted = ScriptedServer()
    scripted.start()
    yield scripted
    scripted.stop()
