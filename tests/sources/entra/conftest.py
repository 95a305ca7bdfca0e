"""Fixtures of the Entra tests: one Graph emulator over HTTPS per session.

The emulator's certificate is signed by a CA made with ``trustme``
(:func:`~tests.sources.entra.support.start_graph`); its PEM is ``graph_ca_file``, the
``ca_file`` of every source under test. ``graph`` hands each test the session
emulator emptied (users, groups, faults, tokens, counters).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.emulator.graph import GraphEmulator
from tests.sources.entra.support import GraphServer, start_graph


@pytest.fixture(scope="session")
def graph_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphServer]:
    """The session's Graph emulator with its CA and app certificate."""
    server = start_graph(tmp_path_factory.mktemp("graph"))
    try:
        yield server
    finally:
        server.emulator.stop()


@pytest.fixture
def graph_ca_file(graph_tls: GraphServer) -> Path:
    """The PEM of the CA that signed the emulator's certificate."""
    return graph_tls.ca_file


@pytest.fixture
def graph(graph_tls: GraphServer) -> Iterator[GraphEmulator]:
    """The session emulator, empty and without faults for this test."""
    emulator = graph_tls.emulator
    emulator.reset()
    try:
        yield emulator
    finally:
        emulator.reset()
