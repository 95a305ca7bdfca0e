"""Configuration: YAML parsed once into frozen, validated models.

Strings may reference environment variables as ``${VAR}`` (``$$`` is a literal ``$``);
an undefined variable is an error naming the key path. Every secret can also come from
a file (``api_key_file``, a source's ``*_file`` keys). Relative paths are resolved
against the config file's folder, so a config behaves the same whatever the working
directory of the daemon.

The ``sources:`` entries are a discriminated union on ``type`` assembled from the
source registry (:mod:`syncd.sources`): each source module owns its config model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from syncd.config_base import (
    FrozenModel,
    SourceConfigBase,
    read_secret_file,
    resolve_paths,
    resolve_secret,
    walk_models,
)
from syncd.config_yaml import ConfigYamlError, load_yaml
from syncd.errors import ConfigError
from syncd.guard import GuardLimits
from syncd.platform.api import REGION_BASE_URLS, ApiFlavour, api_key_problem
from syncd.report.config import UNRESOLVED_KEY, AnalyticsConfig
from syncd.sources import source_types

__all__ = [
    "GuardConfig",
    "IdentityConfig",
    "JobConfig",
    "LogConfig",
    "PolicyConfig",
    "ScheduleConfig",
    "ServerConfig",
    "SourceConfig",
    "StateConfig",
    "SyncdConfig",
    "TargetConfig",
    "load_config",
    "masked_config",
    "parse_config",
    "parse_duration",
    "read_secret_file",
]

_VAR_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class LogConfig(FrozenModel):
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


class ScheduleConfig(FrozenModel):
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
            # Only a cron schedule pays for apscheduler (with tzlocal and zoneinfo): most
            # configs have none, and plan / apply never schedule anything.
            from apscheduler.triggers.cron import (  # type: ignore[import-untyped]  # noqa: PLC0415
                CronTrigger,
            )

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


class TargetConfig(FrozenModel):
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
        if value is None:
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        parts = urlsplit(value)
        if "@" in parts.netloc:
            # Never echo it: the part before the @ is a user name and password.
            raise ValueError(
                "base_url must not hold credentials (user:password@host); give the key "
                "with api_key or api_key_file"
            )
        if parts.query or parts.fragment:
            raise ValueError("base_url must not have a query (?...) or a fragment (#...)")
        return value.rstrip("/")

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
        return resolve_secret(self.api_key, self.api_key_file, check=api_key_problem, token=True)

    def check_secrets(self) -> None:
        """Read ``api_key_file`` now, so a missing key is a config error, not a failed run."""
        self.secret()


def _source_config_union() -> Any:
    """The ``sources:`` entry type: a union of the registered configs, on ``type``."""
    configs = tuple(source_type.config for source_type in source_types())
    return Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:
    SourceConfig = SourceConfigBase
else:
    SourceConfig = _source_config_union()


class IdentityConfig(FrozenModel):
    """How ``end_user`` is normalised: always trimmed and NFC; lower-cased by default."""

    lowercase: bool = True


class PolicyConfig(FrozenModel):
    """What the job does to users it no longer finds, and which users it owns."""

    on_missing: Literal["end_date", "delete", "ignore"] = "end_date"
    purge_after_days: int | None = Field(default=None, ge=0)
    scope: Literal["all", "owned"] = "all"
    protected: tuple[Annotated[str, Field(min_length=1, pattern=r"\S")], ...] = ()


class GuardConfig(FrozenModel):
    """Thresholds above which a plan is held instead of applied ("more than"; null: off)."""

    max_removals: int | None = Field(default=500, ge=0)
    max_removal_ratio: float | None = Field(default=0.10, ge=0, le=1)
    max_removals_per_day: int | None = Field(default=1000, ge=0)
    """Removals confirmed in the last 24 hours plus this plan's."""
    max_updates: int | None = Field(default=1000, ge=0)
    """Updates of active users (tags or dates changed)."""
    max_update_ratio: float | None = Field(default=None, ge=0, le=1)
    max_destructive_updates: int | None = Field(default=100, ge=0)
    """Updates that empty a tag, move an active_from past today, or set an active_to in
    the past on a user enabled in the source."""
    max_destructive_update_ratio: float | None = Field(default=0.20, ge=0, le=1)
    max_start_days_ahead: int = Field(default=366, ge=0, le=36_500)
    """A source record whose active_from is more than this many days after today is a
    bad record (a broken export or mapping), not a future joiner."""

    def limits(self) -> GuardLimits:
        """The thresholds as the pure guard takes them."""
        return GuardLimits(
            max_removals=self.max_removals,
            max_removal_ratio=self.max_removal_ratio,
            max_removals_per_day=self.max_removals_per_day,
            max_updates=self.max_updates,
            max_update_ratio=self.max_update_ratio,
            max_destructive_updates=self.max_destructive_updates,
            max_destructive_update_ratio=self.max_destructive_update_ratio,
        )


class JobConfig(FrozenModel):
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


class StateConfig(FrozenModel):
    """The state database (``state_dir``): how long history is kept."""

    retention_days: int = Field(default=400, ge=1, le=36_500)
    """Runs and audit rows older than this are deleted (400: a year-over-year question
    can still be answered)."""


class ServerConfig(FrozenModel):
    """The daemon's HTTP endpoints (health, readiness, metrics, status)."""

    listen: str = "127.0.0.1:9464"
    """``host:port``; a container listens on ``0.0.0.0:9464``."""
    auth_token_file: Path | None = None
    """When set, ``/status`` and ``/`` require ``Authorization: Bearer <token>``."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen {value!r} must be host:port, e.g. 127.0.0.1:9464")
        return value

    def check_secrets(self) -> None:
        """Read ``auth_token_file`` now, so an unreadable token is a config error."""
        if self.auth_token_file is not None:
            read_secret_file(self.auth_token_file, token=True)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``; brackets around an IPv6 host are removed."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class SyncdConfig(FrozenModel):
    """The whole configuration file."""

    state_dir: Path = Path("./state")
    state: StateConfig = StateConfig()
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    jobs: tuple[JobConfig, ...] = Field(min_length=1)
    analytics: AnalyticsConfig | None = None
    """The analytics API of ``syncd report activation`` (see syncd.report)."""

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
        elif part in _source_type_names() and text.endswith("]"):
            # pydantic adds the discriminator tag to the path; users never wrote it.
            continue
        else:
            text = _join(text, part)
    return text or "<root>"


def _source_type_names() -> frozenset[str]:
    return frozenset(source_type.name for source_type in source_types())


# Stands in for every job's target when a command never talks to the platform
# (``sources test``, ``history``, ``audit``): they need no API key or its variable.
_PLACEHOLDER_TARGET = {"base_url": "http://127.0.0.1:9", "api_key": "not-used-by-this-command"}


def parse_config(
    text: str,
    *,
    origin: str,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
    without_targets: bool = False,
    analytics_key: bool = False,
) -> SyncdConfig:
    """Parse and validate config text; errors name ``origin`` and the key path.

    ``without_targets`` replaces every job's ``target`` with a placeholder before
    anything is expanded, for commands that never call the platform.
    ``analytics_key`` (``syncd report``) resolves the ``analytics`` service key and checks
    its mapping file at load; without it only the section's structure is checked.
    """
    try:
        tree = load_yaml(text)
    except ConfigYamlError as error:
        raise ConfigError(f"{origin}:{error.line}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: expected a mapping with at least 'jobs' at the top level")
    if without_targets and isinstance(tree.get("jobs"), list):
        for job in tree["jobs"]:
            if isinstance(job, dict) and "target" in job:
                job["target"] = dict(_PLACEHOLDER_TARGET)
        tree.pop("analytics", None)  # nor the analytics service key
    environ = os.environ if environ is None else environ
    # -- activation report: the analytics key is resolved for ``syncd report`` only --
    unresolved_key = None if analytics_key else _defer_analytics_key(tree, environ)
    try:
        tree = expand_variables(tree, environ)
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
    config = resolve_paths(config, base_dir)
    report_models: set[int] = set()
    if config.analytics is not None:
        report_models = {id(model) for model in walk_models(config.analytics)}
        if unresolved_key is not None:
            config.analytics.mark_unresolved(f"{origin}: {unresolved_key}")
    for model in walk_models(config):
        # Secret files are read now, so a missing one is a config error, not a failed run.
        if not isinstance(model, FrozenModel):
            continue
        if id(model) not in report_models:
            model.check_secrets()
        elif analytics_key:  # the analytics key and mapping file: `syncd report` only
            try:
                model.check_secrets()
            except ConfigError as error:
                raise ConfigError(f"{origin}: {error}") from None
    return config


def _defer_analytics_key(tree: dict[str, Any], environ: Mapping[str, str]) -> str | None:
    """Put a placeholder for an analytics ``service_key`` whose ``${VAR}`` is not set;
    return why (None when it resolves, or there is none)."""
    section = tree.get("analytics")
    if not isinstance(section, dict) or not isinstance(section.get("service_key"), str):
        return None
    try:
        expand_variables(section["service_key"], environ, "analytics.service_key")
    except ConfigError as error:
        section["service_key"] = UNRESOLVED_KEY
        return str(error)
    return None


def load_config(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    without_targets: bool = False,
    analytics_key: bool = False,
) -> SyncdConfig:
    """Read, expand and validate the config file at ``path`` (see :func:`parse_config`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"config file {path}:{line}: not valid UTF-8 ({error.reason} at byte {error.start}); "
            "save the file as UTF-8"
        ) from None
    return parse_config(
        text,
        origin=str(path),
        base_dir=path.resolve().parent,
        environ=environ,
        without_targets=without_targets,
        analytics_key=analytics_key,
    )


def masked_config(config: SyncdConfig) -> dict[str, Any]:
    """The resolved config as plain data, every secret replaced by ``'**********'``.

    Every secret field is a ``SecretStr`` (a test checks that for every model, the
    registered sources' included), and pydantic dumps those masked.
    """
    data: dict[str, Any] = config.model_dump(mode="json")
    if config.analytics is not None:
        # Only `syncd report` needs the key; the others load without it, so say here.
        problem = config.analytics.key_problem()
        data["analytics"]["service_key_status"] = (
            "resolves" if problem is None else f"does not resolve: {problem}"
        )
    return data
