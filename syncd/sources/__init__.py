"""Sources: adapters that read users from a directory, and the registry of their types.

Each source type lives in its own module of this package with its config model and its
adapter, and exposes one :class:`SourceType` as ``SOURCE_TYPE``. The registry lists
those modules; the config schema (the discriminated union of ``sources:`` entries) and
:func:`build_source` are assembled from it, so adding a type means adding a module and
one line to ``_SOURCE_MODULES``, and touches no other source's code.

Every source implements the :class:`~syncd.ports.Source` protocol and passes the
shared contract suite in ``tests/sources/test_contract.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from syncd.config_base import SourceConfigBase
from syncd.ports import Source

__all__ = ["Source", "SourceContext", "SourceType", "build_source", "source_types"]

# The built-in source types, by module. Order is the order of the config docs.
_SOURCE_MODULES = ("syncd.sources.csv", "syncd.sources.ldap", "syncd.sources.entra")


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source needs from its job besides its own config entry."""

    lowercase: bool
    """Lower-case ``end_user`` after trimming and NFC (``identity.lowercase``)."""


@dataclass(frozen=True, slots=True)
class SourceType:
    """One ``type:`` of source: its config model and how to build its adapter."""

    name: str
    """The value of ``type:`` in the config."""
    config: type[SourceConfigBase]
    """Its config model; its ``type`` field must be ``Literal[name]``."""
    build: Callable[[Any, SourceContext], Source]
    """Builds the (unopened) adapter from a validated config entry."""


@cache
def source_types() -> tuple[SourceType, ...]:
    """Every registered source type (imports their modules once)."""
    types = tuple(importlib.import_module(name).SOURCE_TYPE for name in _SOURCE_MODULES)
    names = [source_type.name for source_type in types]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two source modules register the same type: {names}")
    return types


def build_source(config: SourceConfigBase, context: SourceContext) -> Source:
    """The adapter for one validated ``sources:`` entry (looked up by its ``type``)."""
    for source_type in source_types():
        if source_type.name == config.type:
            if not isinstance(config, source_type.config):
                raise TypeError(
                    f"a {type(config).__name__} says type {config.type!r}, whose config "
                    f"model is {source_type.config.__name__}"
                )
            return source_type.build(config, context)
    raise TypeError(f"no source type {config.type!r} is registered")
