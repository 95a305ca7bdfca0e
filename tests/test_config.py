"""Config: validation with key paths, ${VAR} expansion, secret files, masking."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, SecretStr

from syncd.config import (
    SyncdConfig,
    load_config,
    masked_config,
    parse_config,
    parse_duration,
    read_secret_file,
)
from syncd.errors import ConfigError
from syncd.platform.api import ApiFlavour
from syncd.sources.csv import CsvSourceConfig

MINIMAL = """
jobs:
  - name: corp
    target:
      region: eu
      api_key: ${NEBULY_API_KEY}
    sources:
      - type: csv
        path: users.csv
        id_column: email
"""


def parse(text: str, environ: dict[str, str] | None = None, base: Path = Path("/etc/syncd")):  # type: ignore[no-untyped-def]
    return parse_config(
        text,
        origin="syncd.yaml",
        base_dir=base,
        environ={"NEBULY_API_KEY": "k-123"} | (environ or {}),
    )


def test_minimal_config_has_documented_defaults() -> None:
    config = parse(MINIMAL)
    job = config.jobs[0]
    assert job.target.url == "https://backend.eu.nebuly.com"
    assert job.target.api is ApiFlavour.PLATFORM_USERS
    assert job.target.batch_size == 500
    assert job.target.secret().get_secret_value() == "k-123"
    assert job.policy.on_missing == "end_date"
    assert job.policy.scope == "all"
    assert job.guard.max_removals == 500
    assert job.guard.max_removal_ratio == 0.10
    assert job.identity.lowercase is True
    # Relative paths are resolved against the config file's folder.
    assert job.sources[0].path == Path("/etc/syncd/users.csv")
    assert config.state_dir == Path("/etc/syncd/state")


def test_us_region_and_custom_base_url() -> None:
    assert parse(MINIMAL.replace("region: eu", "region: us")).jobs[0].target.url == (
        "https://backend.nebuly.com"
    )
    custom = parse(MINIMAL.replace("region: eu", "base_url: http://127.0.0.1:8080/"))
    assert custom.jobs[0].target.url == "http://127.0.0.1:8080"


def test_undefined_variable_names_the_key_path() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(MINIMAL, origin="syncd.yaml", base_dir=Path("."), environ={})
    assert str(error.value) == (
        "syncd.yaml: jobs[0].target.api_key: environment variable NEBULY_API_KEY is not set"
    )


def test_double_dollar_is_a_literal_dollar() -> None:
    config = parse(MINIMAL.replace("${NEBULY_API_KEY}", "'pa$$word'"))
    assert config.jobs[0].target.secret().get_secret_value() == "pa$word"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("id_column: email", "id_column: email\n        colour: red"),
            "jobs[0].sources[0].colour: Extra inputs are not permitted",
        ),
        (
            ("region: eu", "region: eu\n      batch_size: 0"),
            "jobs[0].target.batch_size: Input should be greater than or equal to 1",
        ),
        (("region: eu", "region: mars"), "jobs[0].target.region: Input should be 'us' or 'eu'"),
        (
            ("region: eu", "region: eu\n      base_url: http://x"),
            "set exactly one of 'region' (us | eu) or 'base_url'",
        ),
        (("name: corp", "name: 'bad name!'"), "jobs[0].name: String should match pattern"),
        (("type: csv", "type: ldif"), "jobs[0].sources[0]"),
        (
            ("    sources:", "    guard: {max_removal_ratio: 2}\n    sources:"),
            "jobs[0].guard.max_removal_ratio: Input should be less than or equal to 1",
        ),
        (
            ("    sources:", "    policy: {on_missing: vanish}\n    sources:"),
            "jobs[0].policy.on_missing: Input should be 'end_date', 'delete' or 'ignore'",
        ),
        (("    sources:", "    schedule: {every: 15x}\n    sources:"), "invalid duration '15x'"),
        (
            ("    sources:", "    schedule: {cron: '* * *'}\n    sources:"),
            "invalid cron expression",
        ),
        (
            ("    sources:", "    schedule: {every: 5m, cron: '*/5 * * * *'}\n    sources:"),
            "set exactly one of 'every'",
        ),
        (
            ("id_column: email", "id_column: email\n        delimiter: ';;'"),
            "jobs[0].sources[0].delimiter",
        ),
        (
            ("id_column: email", "id_column: email\n        encoding: klingon"),
            "unknown encoding 'klingon'",
        ),
    ],
)
def test_invalid_values_are_reported_with_their_key_path(
    edit: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse(MINIMAL.replace(*edit))
    assert message in str(error.value)
    assert str(error.value).startswith("syncd.yaml: ")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^syncd.yaml:3: invalid YAML"):
        parse("jobs:\n  - name: a\n  b: [\n")


def test_duplicate_job_names_and_source_names_are_errors() -> None:
    twice = MINIMAL + MINIMAL.replace("jobs:\n", "")
    with pytest.raises(ConfigError, match="job names must be unique; repeated: corp"):
        parse(twice)
    two_sources = MINIMAL + "      - {type: csv, path: other/users.csv, id_column: email}\n"
    with pytest.raises(ConfigError, match=r"sources share the name users\.csv"):
        parse(two_sources)


def test_api_key_file_is_read_and_missing_file_is_a_config_error(tmp_path: Path) -> None:
    secret = tmp_path / "nebuly.key"
    secret.write_text("s3cr3t-from-file\n")
    text = MINIMAL.replace("api_key: ${NEBULY_API_KEY}", "api_key_file: nebuly.key")
    config = parse(text, base=tmp_path)
    assert config.jobs[0].target.secret().get_secret_value() == "s3cr3t-from-file"
    secret.unlink()
    with pytest.raises(ConfigError, match=r"cannot read secret file .*nebuly\.key"):
        parse(text, base=tmp_path)


def test_secrets_are_masked_in_dump_and_repr() -> None:
    config = parse(MINIMAL)
    assert "k-123" not in repr(config)
    assert "k-123" not in str(masked_config(config))
    assert masked_config(config)["jobs"][0]["target"]["api_key"] == "**********"


def test_load_config_from_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(MINIMAL)
    config = load_config(path, environ={"NEBULY_API_KEY": "x"})
    assert config.jobs[0].sources[0].path == tmp_path / "users.csv"
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_job_selection() -> None:
    config = parse(MINIMAL)
    assert [job.name for job in config.job("corp")] == ["corp"]
    with pytest.raises(ConfigError, match=r"no job named 'hr' in the config \(jobs: corp\)"):
        config.job("hr")


def test_durations() -> None:
    assert parse_duration("15m").total_seconds() == 900
    assert parse_duration("2h").total_seconds() == 7200
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration("0s")


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "config" / "example.yaml"
    config = load_config(example, environ={"NEBULY_API_KEY": "x"})
    assert config.jobs


@pytest.mark.parametrize("key", ["sk secret", "sk-secret\\n", "sk-\u00e9t\u00e9"])
def test_an_unusable_api_key_is_a_config_error_that_does_not_quote_it(key: str) -> None:
    actual = key.replace("\\n", "\n")
    with pytest.raises(ConfigError) as error:
        parse(MINIMAL, environ={"NEBULY_API_KEY": actual})
    assert "jobs[0].target.api_key" in str(error.value)
    assert "printable ASCII" in str(error.value)
    assert actual.strip() not in str(error.value)


# Field names that hold a secret; each must be a SecretStr (or name a file with *_file).
_SECRET_NAME = re.compile(r"(key|password|secret|token|credential)s?$", re.IGNORECASE)


def _model_classes(root: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """``root`` and every model class its fields can hold (unions and tuples unpacked)."""
    seen: set[type[BaseModel]] = set()
    pending: list[Any] = [root]
    while pending:
        item = pending.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item in seen:
                continue
            seen.add(item)
            yield item
            pending.extend(field.annotation for field in item.model_fields.values())
        else:
            pending.extend(get_args(item))


def test_every_secret_field_is_a_secret_type() -> None:
    classes = list(_model_classes(SyncdConfig))
    assert CsvSourceConfig in classes  # the registered sources are walked too
    secret_fields = []
    for model in classes:
        for name, field in model.model_fields.items():
            if _SECRET_NAME.search(name):
                secret_fields.append(f"{model.__name__}.{name}")
                assert SecretStr in get_args(field.annotation) or field.annotation is SecretStr, (
                    f"{model.__name__}.{name} holds a secret but is not a SecretStr"
                )
    assert "TargetConfig.api_key" in secret_fields


def test_check_config_masks_every_secret(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k-from-file-77\n")
    inline = parse(MINIMAL, base=tmp_path)
    from_file = parse(
        MINIMAL.replace("api_key: ${NEBULY_API_KEY}", "api_key_file: key"), base=tmp_path
    )
    for config, secret in ((inline, "k-123"), (from_file, "k-from-file-77")):
        shown = json.dumps(masked_config(config)) + repr(config) + str(config)
        assert secret not in shown
    assert masked_config(inline)["jobs"][0]["target"]["api_key"] == "**********"


def test_a_secret_file_keeps_inner_spaces_and_drops_only_the_line_break(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(" pass word \n")
    assert read_secret_file(path).get_secret_value() == " pass word "
    path.write_text("pass\n\n")
    assert read_secret_file(path).get_secret_value() == "pass\n"
    path.write_text("pass\r\n")
    assert read_secret_file(path).get_secret_value() == "pass"
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        read_secret_file(path)


def test_a_bad_source_type_names_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.sources\[0\]"):
        parse(MINIMAL.replace("type: csv", "type: nosuch"))
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.sources\[0\]\.id_column: Field required"):
        parse(MINIMAL.replace("        id_column: email\n", ""))


def test_an_api_key_file_drops_the_white_space_around_the_key(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("  sk-padded \n\n")
    text = MINIMAL.replace("api_key: ${NEBULY_API_KEY}", "api_key_file: key")
    assert parse(text, base=tmp_path).jobs[0].target.secret().get_secret_value() == "sk-padded"


def test_an_unreadable_status_token_file_is_a_config_error(tmp_path: Path) -> None:
    text = MINIMAL + "server: {listen: '127.0.0.1:9464', auth_token_file: token}\n"
    with pytest.raises(ConfigError, match=r"cannot read secret file .*token"):
        parse(text, base=tmp_path)
    (tmp_path / "token").write_text("t0ken\n")
    assert parse(text, base=tmp_path).server.auth_token_file == tmp_path / "token"


def test_a_base_url_with_credentials_or_a_query_is_refused_without_echoing_it() -> None:
    with_credentials = MINIMAL.replace("region: eu", "base_url: https://bob:hunter2@api.test")
    with pytest.raises(ConfigError, match="must not hold credentials") as caught:
        parse(with_credentials)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="must not have a query"):
        parse(MINIMAL.replace("region: eu", "base_url: https://api.test/?token=x"))
