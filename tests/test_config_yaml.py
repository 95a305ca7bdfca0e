"""The config's YAML read as hostile input: duplicate keys, alias bombs, bad encodings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from syncd.config import load_config, parse_config
from syncd.errors import ConfigError

BASE = """jobs:
  - name: corp
    target: {region: eu, api_key: k-1}
    sources:
      - {type: csv, path: users.csv, id_column: email}
"""


def parse(text: str) -> object:  # the parsed config, when a test needs it
    return parse_config(text, origin="syncd.yaml", base_dir=Path("/etc/syncd"), environ={})


def test_a_key_given_twice_names_both_lines() -> None:
    twice = BASE + "    guard:\n      max_removals: 5\n      max_removals: null\n"
    with pytest.raises(ConfigError, match=r"syncd\.yaml:8: key 'max_removals' is given twice "):
        parse(twice)
    with pytest.raises(ConfigError, match=r"lines 7 and 8"):
        parse(twice)


def test_a_top_level_key_given_twice_is_an_error_too() -> None:
    with pytest.raises(ConfigError, match=r"key 'jobs' is given twice \(lines 1 and 6\)"):
        parse(BASE + "jobs: []\n")


def test_merge_keys_may_be_overridden_as_yaml_defines() -> None:
    text = """jobs:
  - name: corp
    target: &target {region: eu, api_key: k-1, batch_size: 10}
    sources:
      - {type: csv, path: users.csv, id_column: email}
  - name: hr
    target: {<<: *target, batch_size: 20}
    sources:
      - {type: csv, path: hr.csv, id_column: email}
"""
    config = parse_config(text, origin="syncd.yaml", base_dir=Path("/etc/syncd"), environ={})
    assert [job.target.batch_size for job in config.jobs] == [10, 20]


def test_an_alias_bomb_is_refused_quickly() -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        levels.append(f"a{level}: &a{level} [{refs}]")
    bomb = "\n".join(levels) + "\n" + BASE
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"syncd\.yaml:\d+: the YAML expands to more than"):
        parse(bomb)
    assert time.perf_counter() - started < 5  # measured before anything walks it


def test_a_document_of_aliases_is_refused_by_their_count() -> None:
    many = "x: &x 1\nys: [" + ", ".join(["*x"] * 10_001) + "]\n" + BASE
    with pytest.raises(ConfigError, match="more than 10000 YAML aliases"):
        parse(many)


def test_a_config_file_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_bytes(BASE.encode() + b"# caf\xe9 in latin-1\n")
    with pytest.raises(ConfigError, match=r"syncd\.yaml:6: not valid UTF-8"):
        load_config(path, environ={})


def test_keys_brought_in_by_a_merge_are_not_duplicates_even_through_aliases() -> None:
    text = """x-base: &base {batch_size: 5}
jobs:
  - name: corp
    target: &mid {<<: *base, region: eu, api_key: k-1, batch_size: 7}
    sources:
      - {type: csv, path: users.csv, id_column: email}
  - name: hr
    target: *mid
    sources:
      - {type: csv, path: hr.csv, id_column: email}
"""
    with pytest.raises(ConfigError, match="x-base"):  # only the unknown top-level key
        parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t: {<<: {x: 1, x: 2}}\n", "key 'x' is given twice"),
        ("t: {<<: [{x: 1}, {y: 1, y: 2}]}\n", "key 'y' is given twice"),
        ("a: &a {x: 1}\nt: {<<: *a, <<: *a}\n", "'<<' is given twice"),
        ("? [a, b]\n: 1\n", "must be a plain value"),
    ],
)
def test_duplicates_inside_merges_and_non_scalar_keys_are_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text + BASE)
