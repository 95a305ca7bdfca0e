"""The ``analytics:`` config section: keys, secrets, durations, identity."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from syncd.config import SyncdConfig, masked_config, parse_config
from syncd.errors import ConfigError
from syncd.report.config import MappingIdentityConfig

BASE = """
jobs:
  - name: corp
    target: {base_url: "http://127.0.0.1:9", api_key: k}
    sources: [{type: csv, path: users.csv, id_column: email}]
"""


def _parse(
    section: str, tmp: Path, environ: dict[str, str] | None = None, *, report: bool = True
) -> SyncdConfig:
    """Load as ``syncd report`` does (``report``), or as every other command does."""
    return parse_config(
        BASE + section, origin="c.yaml", base_dir=tmp, environ=environ or {}, analytics_key=report
    )


def test_defaults_and_masking(tmp_path: Path) -> None:
    config = _parse("analytics: {service_key: sk-secret-1}", tmp_path)
    analytics = config.analytics  # type: ignore[attr-defined]
    assert analytics.base_url == "https://server.codeium.com"
    assert analytics.identity == "end_user"
    assert analytics.cache_ttl_delta == timedelta(hours=3)
    assert analytics.timeout_s == 60
    assert analytics.product is None
    assert "sk-secret-1" not in str(masked_config(config))  # type: ignore[arg-type]
    assert "sk-secret-1" not in repr(analytics)


def test_service_key_file_is_read_at_load_and_paths_resolve(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk-from-file\n", encoding="utf-8")
    (tmp_path / "ids.csv").write_text("uid,email\n", encoding="utf-8")
    section = (
        "analytics:\n  service_key_file: key\n"
        "  identity: {mapping_csv: ids.csv, user_id_column: uid}\n"
    )
    analytics = _parse(section, tmp_path).analytics  # type: ignore[attr-defined]
    assert analytics.secret().get_secret_value() == "sk-from-file"
    assert isinstance(analytics.identity, MappingIdentityConfig)
    assert analytics.identity.mapping_csv == tmp_path / "ids.csv"
    assert analytics.identity.end_user_column == "email"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("analytics: {service_key_file: missing}", "cannot read secret file"),
        ("analytics: {}", "exactly one of 'service_key' or 'service_key_file'"),
        ("analytics: {service_key: a, service_key_file: b}", "exactly one"),
        ("analytics: {service_key: 'a b'}", "printable ASCII"),
        ("analytics: {service_key: k, cache_ttl: soon}", "invalid duration"),
        ("analytics: {service_key: k, base_url: 'ftp://x'}", "http:// or https://"),
        ("analytics: {service_key: k, colour: blue}", "analytics.colour"),
        ("analytics: {service_key: '${NOPE}'}", "NOPE is not set"),
        ("analytics: {service_key: k, rate_window: 25h}", "longer than 24h"),
        ("analytics: {service_key: k, rate_window: 2d}", "longer than 24h"),
        ("analytics: {service_key: k, identity: {mapping_csv: nope.csv}}", "nope.csv"),
    ],
)
def test_problems_are_config_errors(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(section, tmp_path)


def test_commands_without_targets_need_no_service_key(tmp_path: Path) -> None:
    config = parse_config(
        BASE + "analytics: {service_key: '${WINDSURF_SERVICE_KEY}'}",
        origin="c.yaml",
        base_dir=tmp_path,
        environ={},
        without_targets=True,
    )
    assert config.analytics is None


def test_other_commands_check_only_the_structure(tmp_path: Path) -> None:
    # plan / apply / run / check-config: an unset key variable, a missing key file or
    # mapping file do not stop them; the key is resolved only when used.
    for section in (
        "analytics: {service_key: '${WINDSURF_SERVICE_KEY}'}",
        "analytics: {service_key_file: missing-key}",
        "analytics: {service_key: k, identity: {mapping_csv: missing.csv}}",
    ):
        config = _parse(section, tmp_path, report=False)
        assert config.analytics is not None
    unset = _parse("analytics: {service_key: '${WINDSURF_SERVICE_KEY}'}", tmp_path, report=False)
    assert unset.analytics is not None
    with pytest.raises(ConfigError, match="WINDSURF_SERVICE_KEY is not set"):
        unset.analytics.secret()
    status = masked_config(unset)["analytics"]["service_key_status"]
    assert status.startswith("does not resolve: c.yaml: analytics.service_key")
    # Structure is still checked.
    with pytest.raises(ConfigError, match=r"analytics\.colour"):
        _parse("analytics: {service_key: '${X}', colour: blue}", tmp_path, report=False)


def test_a_resolving_key_is_reported_as_such_and_never_shown(tmp_path: Path) -> None:
    config = _parse("analytics: {service_key: '${K}'}", tmp_path, {"K": "sk-shh-1"}, report=False)
    masked = masked_config(config)
    assert masked["analytics"]["service_key_status"] == "resolves"
    assert "sk-shh-1" not in str(masked)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,mail\nu1,a@x\n", "no column email"),
        (b"\xff\xfe\x00bad", "not valid UTF-8"),
    ],
)
def test_a_broken_mapping_file_fails_at_load(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "ids.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        _parse("analytics: {service_key: k, identity: {mapping_csv: ids.csv}}", tmp_path)
