"""Configuration: YAML parsed once into frozen, validated models.

Strings may reference environment variables as ``${VAR}`` (``$$`` is a literal ``$``);
an undefined variable is an error naming the key path. Secrets can also come from a
file (``api_key_file``). Relative paths are resolved against the config file's folder,
so a config behaves the same whatever the working directory of the daemon.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd.errors import ConfigError
from syncd.platform.api import REGION_BASE_URLS, ApiFlavour, api_key_problem

_VAR_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogConfig(_Frozen):
    """Logging: ``auto`` writes human-readable lines on a TTY and JSON otherwise."""

    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``15m``, ``2h`` or ``1d``."""
    match = _DURATION_PATTERN.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number and s, m, h or d (e.g. 15m)")
    amount, unit = int(match.group(1)), match.group(2)
    if amount <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return timedelta(**{_DURATION_UNITS[unit]: amount})


class ScheduleConfig(_Frozen):
    """When the daemon runs a job: ``{every: 15m}`` or ``{cron: "*/15 * * * *"}``."""

    every: str | None = None
    cron: str | None = None

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronTrigger.from_crontab(value)
            except ValueError as error:
                raise ValueError(f"invalid cron expression {value!r}: {error}") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleConfig:
        if (self.every is None) == (self.cron is None):
            raise ValueError("set exactly one of 'every' (e.g. 15m) or 'cron'")
        return self

    @property
    def interval(self) -> timedelta | None:
        """The interval of an ``every`` schedule."""
        return None if self.every is None else parse_duration(self.every)


class TargetConfig(_Frozen):
    """The Nebuly project to write to."""

    region: Literal["us", "eu"] | None = None
    base_url: str | None = None
    api: ApiFlavour = ApiFlavour.PLATFORM_USERS
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    batch_size: int = Field(default=500, ge=1, le=100_000)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_retries: int = Field(default=5, ge=0, le=20)
    concurrency: int = Field(default=4, ge=1, le=32)

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = api_key_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _check_choices(self) -> TargetConfig:
        if (self.region is None) == (self.base_url is None):
            raise ValueError("set exactly one of 'region' (us | eu) or 'base_url'")
        if (self.api_key is None) == (self.api_key_file is None):
            raise ValueError("set exactly one of 'api_key' or 'api_key_file'")
        return self

    @property
    def url(self) -> str:
        """The API base URL (from ``base_url`` or the documented URL of ``region``)."""
        if self.base_url is not None:
            return self.base_url
        assert self.region is not None  # guaranteed by _check_choices
        return REGION_BASE_URLS[self.region]

    def secret(self) -> SecretStr:
        """The API key, read from ``api_key_file`` if that is how it is given."""
        if self.api_key is not None:
            return self.api_key
        assert self.api_key_file is not None
        return read_secret_file(self.api_key_file)


def read_secret_file(path: Path) -> SecretStr:
    """Read a secret from a file (Kubernetes/Docker secrets), without its final newline."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"cannot read secret file {path}: {error.strerror}") from None
    problem = api_key_problem(text)
    if problem is not None:
        raise ConfigError(f"secret file {path}: {problem}")
    return SecretStr(text)


class CsvSourceConfig(_Frozen):
    """A CSV file; one row per user."""

    type: Literal["csv"]
    name: str | None = None
    path: Path
    id_column: str
    tags: dict[str, str] = Field(default_factory=dict)
    active_from_column: str | None = None
    active_to_column: str | None = None
    enabled_column: str | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for tag, column in value.items():
            if not tag.strip() or not column.strip():
                raise ValueError("tag names and column names must not be empty")
        return value

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @property
    def label(self) -> str:
        """How errors name this source."""
        return self.name or self.path.name


SourceConfig = Annotated[CsvSourceConfig, Field(discriminator="type")]


class IdentityConfig(_Frozen):
    """How ``end_user`` is normalised: always trimmed and NFC; lower-cased by default."""

    lowercase: bool = True


class PolicyConfig(_Frozen):
    """What the job does to users it no longer finds, and which users it owns."""

    on_missing: Literal["end_date", "delete", "ignore"] = "end_date"
    purge_after_days: int | None = Field(default=None, ge=0)
    scope: Literal["all", "owned"] = "all"
    protected: tuple[Annotated[str, Field(min_length=1, pattern=r"\S")], ...] = ()


class GuardConfig(_Frozen):
    """Thresholds above which a plan is held instead of applied."""

    max_removals: int | None = Field(default=500, ge=0)
    max_removal_ratio: float | None = Field(default=0.10, ge=0, le=1)


class JobConfig(_Frozen):
    """One source-to-project synchronisation."""

    name: str = Field(pattern=_JOB_NAME_PATTERN)
    schedule: ScheduleConfig | None = None
    target: TargetConfig
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    identity: IdentityConfig = IdentityConfig()
    policy: PolicyConfig = PolicyConfig()
    guard: GuardConfig = GuardConfig()

    @model_validator(mode="after")
    def _unique_source_labels(self) -> JobConfig:
        labels = [source.label for source in self.sources]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(
                f"sources share the name {', '.join(duplicates)}: give each a distinct 'name'"
            )
        return self


class SyncdConfig(_Frozen):
    """The whole configuration file."""

    state_dir: Path = Path("./state")
    log: LogConfig = LogConfig()
    jobs: tuple[JobConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_job_names(self) -> SyncdConfig:
        names = [job.name for job in self.jobs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"job names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def job(self, name: str | None) -> tuple[JobConfig, ...]:
        """The named job, or every job when ``name`` is None."""
        if name is None:
            return self.jobs
        for job in self.jobs:
            if job.name == name:
                return (job,)
        known = ", ".join(job.name for job in self.jobs)
        raise ConfigError(f"no job named {name!r} in the config (jobs: {known})")


def expand_variables(tree: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` in every string of a parsed YAML tree; ``$$`` stands for ``$``."""
    if isinstance(tree, dict):
        return {
            key: expand_variables(value, environ, _join(path, str(key)))
            for key, value in tree.items()
        }
    if isinstance(tree, list):
        return [expand_variables(item, environ, f"{path}[{i}]") for i, item in enumerate(tree)]
    if isinstance(tree, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "$"
            if name not in environ:
                raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")
            return environ[name]

        return _VAR_PATTERN.sub(substitute, tree)
    return tree


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _format_location(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "csv":
            # pydantic adds the discriminator tag to the path; users never wrote it.
            continue
        else:
            text = _join(text, part)
    return text or "<root>"


def _resolve_paths(config: SyncdConfig, base: Path) -> SyncdConfig:
    def absolute(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    jobs = []
    for job in config.jobs:
        sources = tuple(
            source.model_copy(update={"path": absolute(source.path)}) for source in job.sources
        )
        target = job.target
        if target.api_key_file is not None:
            target = target.model_copy(update={"api_key_file": absolute(target.api_key_file)})
        jobs.append(job.model_copy(update={"sources": sources, "target": target}))
    return config.model_copy(update={"state_dir": absolute(config.state_dir), "jobs": tuple(jobs)})


def parse_config(
    text: str, *, origin: str, base_dir: Path, environ: Mapping[str, str] | None = None
) -> SyncdConfig:
    """Parse and validate config text; errors name ``origin`` and the key path."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: expected a mapping with at least 'jobs' at the top level")
    try:
        tree = expand_variables(tree, os.environ if environ is None else environ)
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from None
    try:
        config = SyncdConfig.model_validate(tree)
    except ValidationError as error:
        items = error.errors()
        # A failed item also makes its tuple "too short"; keep only the precise error.
        problems = [
            f"  {_format_location(item['loc'])}: {item['msg']}"
            for item in items
            if not (
                item["type"] == "too_short"
                and any(
                    len(o["loc"]) > len(item["loc"]) and o["loc"][: len(item["loc"])] == item["loc"]
                    for o in items
                )
            )
        ]
        raise ConfigError(f"{origin}: invalid configuration:\n" + "\n".join(problems)) from None
    config = _resolve_paths(config, base_dir)
    for job in config.jobs:
        if job.target.api_key_file is not None:
            # Read now so that a missing secret is a config error, not a failed run.
            job.target.secret()
    return config


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> SyncdConfig:
    """Read, expand and validate the config file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    return parse_config(text, origin=str(path), base_dir=path.resolve().parent, environ=environ)


def masked_config(config: SyncdConfig) -> dict[str, Any]:
    """The resolved config as plain data, secrets replaced by ``'**********'``."""
    data: dict[str, Any] = config.model_dump(mode="json")
    for job in data["jobs"]:
        if job["target"].get("api_key") is not None:
            job["target"]["api_key"] = "**********"
    return data
