"""The ``analytics:`` section of the config file: where activity comes from.

The activation report reads who was *active* from the AI tool's analytics API
(``docs/analytics-api.md``) and who was *eligible* from the job target's platform users.

Only ``syncd report`` needs the service key and the identity mapping file: the loader
checks them (:meth:`AnalyticsConfig.check_secrets`) for that command alone. Every other
command checks the section's structure only, so a daemon whose environment holds just
the Nebuly key still starts; ``check-config`` says whether the key resolves.
"""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from syncd.config_base import FrozenModel, resolve_secret
from syncd.errors import ConfigError
from syncd.http import bearer_token_problem

__all__ = [
    "DEFAULT_ANALYTICS_URL",
    "MAX_RATE_WINDOW",
    "UNRESOLVED_KEY",
    "AnalyticsConfig",
    "MappingIdentityConfig",
]

DEFAULT_ANALYTICS_URL = "https://server.codeium.com"

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

MAX_RATE_WINDOW = timedelta(hours=24)
"""The longest ``rate_window``: the budget's rows are kept for a day."""

UNRESOLVED_KEY = "unresolved-analytics-service-key"
"""Stands for a ``service_key`` whose ``${VAR}`` is not set, for commands other than
``syncd report`` (which never see it: for them an unset variable is an error)."""


def _duration(text: str) -> timedelta:
    # Same syntax as the schedule's ``every`` (15m, 3h, 1d); zero is allowed here (no cache).
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number and s, m, h or d (e.g. 3h)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _key_problem(text: str) -> str | None:
    return bearer_token_problem(text, name="the service key")


class MappingIdentityConfig(FrozenModel):
    """Analytics ``user_id`` -> ``end_user`` through a CSV file (two named columns)."""

    mapping_csv: Path
    user_id_column: str = Field(default="user_id", min_length=1)
    end_user_column: str = Field(default="email", min_length=1)

    def check_secrets(self) -> None:
        """Check at load that the mapping file is readable UTF-8 CSV whose header has
        both named columns (its rows are checked, with line numbers, by the report)."""
        path = self.mapping_csv
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), [])
        except OSError as error:
            raise ConfigError(
                f"analytics.identity.mapping_csv: cannot read {path}: {error.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"analytics.identity.mapping_csv: {path} is not valid UTF-8"
            ) from None
        except csv.Error as error:
            raise ConfigError(f"analytics.identity.mapping_csv: {path}:1: {error}") from None
        missing = [c for c in (self.user_id_column, self.end_user_column) if c not in header]
        if missing:
            raise ConfigError(
                f"analytics.identity.mapping_csv: {path} has no column "
                f"{', '.join(missing)} in its header (columns: {', '.join(header) or 'none'}); "
                "set user_id_column / end_user_column to the names it uses"
            )


class AnalyticsConfig(FrozenModel):
    """The analytics API the activation report reads (Windsurf / Devin style)."""

    base_url: str = DEFAULT_ANALYTICS_URL
    service_key: SecretStr | None = None
    service_key_file: Path | None = None
    product: str | None = None
    """Passed through as the ``product`` filter when set."""
    identity: Literal["end_user"] | MappingIdentityConfig = "end_user"
    """``end_user``: the API's ``user_id`` equals the end_user after the job's normalisation."""
    cache_ttl: str = "3h"
    """Within this age a cached answer is used without asking; later it is revalidated."""
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    rate_limit: int = Field(default=10, ge=1, le=10_000)
    """Initial queries the API allows per ``rate_window`` (cursor follows are free)."""
    rate_window: str = "1h"
    """At most 24h (the budget's rows are kept for a day)."""
    _unresolved: str | None = PrivateAttr(default=None)
    """Why the key could not be resolved (commands other than ``report`` only)."""

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        parts = urlsplit(value)
        if "@" in parts.netloc:
            raise ValueError("base_url must not hold credentials; use service_key(_file)")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not have a query (?...) or a fragment (#...)")
        return value.rstrip("/")

    @field_validator("service_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = _key_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("cache_ttl")
    @classmethod
    def _check_ttl(cls, value: str) -> str:
        _duration(value)
        return value

    @field_validator("rate_window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        window = _duration(value)
        if window <= timedelta(0):
            raise ValueError("rate_window must be positive")
        if window > MAX_RATE_WINDOW:
            raise ValueError(f"rate_window {value!r} is longer than 24h, the longest supported")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> AnalyticsConfig:
        if (self.service_key is None) == (self.service_key_file is None):
            raise ValueError("set exactly one of 'service_key' or 'service_key_file'")
        return self

    @property
    def cache_ttl_delta(self) -> timedelta:
        """``cache_ttl`` as a timedelta."""
        return _duration(self.cache_ttl)

    @property
    def rate_window_delta(self) -> timedelta:
        """``rate_window`` as a timedelta."""
        return _duration(self.rate_window)

    def secret(self) -> SecretStr:
        """The service key, read from ``service_key_file`` if that is how it is given."""
        if self._unresolved is not None:
            raise ConfigError(self._unresolved)
        try:
            return resolve_secret(
                self.service_key, self.service_key_file, check=_key_problem, token=True
            )
        except ConfigError as error:
            raise ConfigError(f"analytics.service_key_file: {error}") from None

    def check_secrets(self) -> None:
        """Resolve the key now, so a missing one fails at load (``syncd report`` only;
        the mapping file is checked by its own model)."""
        self.secret()

    def mark_unresolved(self, problem: str) -> None:
        """Record that ``service_key`` names an unset variable (the loader does this for
        commands that never use the key); :meth:`secret` then raises ``problem``."""
        self._unresolved = problem

    def key_problem(self) -> str | None:
        """Why the service key does not resolve, or None when it does (check-config)."""
        try:
            self.secret()
        except ConfigError as error:
            return str(error)
        return None
