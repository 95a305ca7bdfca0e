"""Reading the config file's YAML as hostile input: no duplicate keys, bounded aliases.

PyYAML's ``safe_load`` accepts two things a config must not: a key given twice (the
last one silently wins, so a second ``max_removals: null`` further down turns a guard
off), and aliases that expand exponentially ("billion laughs": nine levels of nine aliases are
81 aliases and 387 million strings to walk). Both are refused here, with the lines
named: the expanded size is measured before anything walks the document.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_ALIASES = 10_000
"""Far more aliases than a hand-written config needs (the expanded size is the real
bound; this one stops a document that is nothing but aliases early)."""


class ConfigYamlError(ValueError):
    """The YAML is well-formed but not acceptable as a config; ``line`` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that counts aliases and refuses duplicate or non-scalar mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise ConfigYamlError(
                    f"more than {MAX_ALIASES} YAML aliases (*name); a config needs far "
                    "fewer, and expanding them could exhaust memory",
                    event.start_mark.line + 1,
                )
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        # Checked on the nodes as written, before PyYAML flattens merge keys (``<<``) in
        # place: a merged mapping's own duplicates are caught, and keys it brings in
        # are not mistaken for duplicates of the mapping that merges them.
        node: MappingNode = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int] = {}
        merges = 0
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise ConfigYamlError(
                    "a mapping key must be a plain value, not a list or map", line
                )
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges += 1
                if merges > 1:
                    raise ConfigYamlError("'<<' is given twice in one mapping", line)
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise ConfigYamlError(
                    f"key {key_node.value!r} is given twice (lines {seen[key]} and {line}); "
                    "the second would silently replace the first",
                    line,
                )
            seen[key] = line
        return node


MAX_EXPANDED_NODES = 100_000
"""Nodes of the document with every alias expanded; a large config has a few hundred."""


def load_yaml(text: str) -> Any:
    """Parse config text; raises ``yaml.YAMLError`` or :class:`ConfigYamlError`."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Aliases share nodes, so the parsed tree is small, but everything that walks
        # it (variable expansion, validation) pays for the expanded size: measure that
        # first, in time linear in the nodes.
        _check_expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expanded_size(root: Node) -> None:
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise ConfigYamlError("a YAML alias refers to itself", node.start_mark.line + 1)
        in_progress.add(key)
        total = 1
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                total += size(key_node) + size(value_node)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                total += size(item)
        in_progress.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise ConfigYamlError(
                f"the YAML expands to more than {MAX_EXPANDED_NODES:,} nodes through its "
                "aliases (*name); a config needs far fewer",
                node.start_mark.line + 1,
            )
        sizes[key] = total
        return total

    size(root)
