"""Analytics user_id -> end_user: the end_user rule and the mapping CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.errors import ReportError
from syncd.report.config import MappingIdentityConfig
from syncd.report.identity import make_resolver, read_mapping


def test_end_user_rule_normalises_like_the_job() -> None:
    assert make_resolver("end_user", lowercase=True)(" Ann@Example.COM ") == "ann@example.com"
    assert make_resolver("end_user", lowercase=False)("Ann@Example.com") == "Ann@Example.com"
    assert make_resolver("end_user", lowercase=True)("   ") is None


def test_mapping_rule_maps_known_ids_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("\ufeffuser_id,email\nu-1,Ann@Example.com\n", encoding="utf-8")
    resolve = make_resolver(MappingIdentityConfig(mapping_csv=path), lowercase=True)
    assert resolve("u-1") == "ann@example.com"
    assert resolve("U-9") == "u-9"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,mail\n", "no column email"),
        ("user_id,email\n,a@x\n", r"ids.csv:2: empty user_id"),
        ("user_id,email\nu1,a@x\nu1,b@x\n", r"ids.csv:3: user_id u1 is mapped to a@x on line 2"),
    ],
)
def test_mapping_csv_problems_name_the_file_and_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError, match=message):
        read_mapping(MappingIdentityConfig(mapping_csv=path), lowercase=True)


def test_a_missing_mapping_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"identity mapping .*nope.csv: cannot read it"):
        read_mapping(MappingIdentityConfig(mapping_csv=tmp_path / "nope.csv"), lowercase=True)
