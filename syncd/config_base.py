"""Building blocks of the configuration models, shared by ``config`` and every source.

Kept apart from :mod:`syncd.config` so that a source module can define its own config
model (``sources/csv.py`` defines ``CsvSourceConfig``) without importing the whole
file schema, which is itself assembled from the registered sources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr

from syncd.errors import ConfigError

_Model = TypeVar("_Model", bound=BaseModel)

SecretCheck = Callable[[str], str | None]
"""Returns why a secret's text is unusable, or None when it is fine."""


class FrozenModel(BaseModel):
    """Base of every config model: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def check_secrets(self) -> None:
        """Read every secret file this model names, so a missing one fails at load.

        Models with ``*_file`` secrets override this; the loader calls it on every model.
        """


class SourceConfigBase(FrozenModel):
    """What every ``sources:`` entry has: its ``type`` and an optional ``name``."""

    type: str
    name: str | None = None

    @property
    def label(self) -> str:
        """How messages name this source (the configured name, else a type default)."""
        return self.name or self.type


def read_secret_file(
    path: Path, *, check: SecretCheck | None = None, token: bool = False
) -> SecretStr:
    """Read a secret from a file (Kubernetes/Docker secrets, systemd credentials).

    A password keeps its white space: only one line break at the end is removed (``echo``
    adds one). A ``token`` (an API key, a bearer token) cannot contain white space, so
    any around it is removed. ``check`` validates the text for its use; its message
    never quotes the secret.
    """
    try:
        raw = path.read_text(encoding="utf-8")
        text = raw.strip() if token else _without_final_line_break(raw)
    except OSError as error:
        raise ConfigError(f"cannot read secret file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path}: not valid UTF-8 text") from None
    if not text:
        raise ConfigError(f"secret file {path}: the file is empty")
    problem = check(text) if check is not None else None
    if problem is not None:
        raise ConfigError(f"secret file {path}: {problem}")
    return SecretStr(text)


def _without_final_line_break(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def resolve_secret(
    value: SecretStr | None,
    file: Path | None,
    *,
    check: SecretCheck | None = None,
    token: bool = False,
) -> SecretStr:
    """The secret given inline (``key``) or in a file (``key_file``); exactly one is set.

    ``token`` and ``check`` apply to the file's text as in :func:`read_secret_file`.
    """
    if value is not None:
        return value
    if file is None:
        raise ConfigError("no secret given (set the value or its *_file key)")
    return read_secret_file(file, check=check, token=token)


def walk_models(model: BaseModel) -> Iterator[BaseModel]:
    """``model`` and every model nested in its fields (tuples and dicts included)."""
    yield model
    for name in type(model).model_fields:
        yield from _models_in(getattr(model, name))


def _models_in(value: Any) -> Iterator[BaseModel]:
    if isinstance(value, BaseModel):
        yield from walk_models(value)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _models_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _models_in(item)


def resolve_paths(model: _Model, base: Path) -> _Model:
    """A copy of ``model`` with every relative ``Path`` field made absolute under ``base``.

    Works on any model, so a new source's file fields (a CA bundle, a password file) are
    resolved against the config file's folder without this code knowing them.
    """
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        resolved = _resolve_value(value, base)
        if resolved is not value:
            updates[name] = resolved
    return model.model_copy(update=updates) if updates else model


def _resolve_value(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return resolve_paths(value, base)
    if isinstance(value, tuple):
        items = tuple(_resolve_value(item, base) for item in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value
