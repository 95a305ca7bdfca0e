"""The building blocks of config models: path resolution, secret files, model walks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from syncd.config_base import FrozenModel, resolve_paths, resolve_secret, walk_models
from syncd.errors import ConfigError


class Inner(FrozenModel):
    ca_file: Path | None = None
    files: tuple[Path, ...] = ()


class Outer(FrozenModel):
    state_dir: Path
    inner: Inner
    inners: tuple[Inner, ...] = ()
    label: str = "relative/not/a/path"


def test_every_relative_path_field_is_resolved_whatever_the_model() -> None:
    model = Outer(
        state_dir=Path("state"),
        inner=Inner(ca_file=Path("ca.pem"), files=(Path("a"), Path("/abs/b"))),
        inners=(Inner(ca_file=Path("/etc/ca.pem")), Inner()),
    )
    resolved = resolve_paths(model, Path("/etc/syncd"))
    assert resolved.state_dir == Path("/etc/syncd/state")
    assert resolved.inner.ca_file == Path("/etc/syncd/ca.pem")
    assert resolved.inner.files == (Path("/etc/syncd/a"), Path("/abs/b"))
    assert resolved.inners[0].ca_file == Path("/etc/ca.pem")
    assert resolved.inners[1] is model.inners[1]  # nothing to change: the same object
    assert resolved.label == "relative/not/a/path"
    assert model.state_dir == Path("state")  # the original is frozen and untouched


def test_walk_models_visits_nested_models() -> None:
    model = Outer(state_dir=Path("s"), inner=Inner(), inners=(Inner(), Inner()))
    assert [type(m).__name__ for m in walk_models(model)] == ["Outer", "Inner", "Inner", "Inner"]


def test_resolve_secret_inline_or_from_file_with_its_check(tmp_path: Path) -> None:
    assert resolve_secret(SecretStr("inline"), None).get_secret_value() == "inline"
    path = tmp_path / "token"
    path.write_text("has space\n")
    assert resolve_secret(None, path).get_secret_value() == "has space"
    with pytest.raises(ConfigError, match=r"secret file .*token: no spaces allowed") as caught:
        resolve_secret(None, path, check=lambda text: "no spaces allowed" if " " in text else None)
    assert "has space" not in str(caught.value)
    with pytest.raises(ConfigError, match="no secret given"):
        resolve_secret(None, None)
