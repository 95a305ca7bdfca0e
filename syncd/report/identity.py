"""Analytics ``user_id`` -> the report's user id (a normalised ``end_user``).

``identity: end_user``: the API's ``user_id`` is the end_user, normalised like the job
normalises end_users. ``identity: {mapping_csv: ...}``: a CSV maps each ``user_id`` to
an end_user; ids the file does not know stay as they are (normalised), so they show up
as active users who are not on the platform rather than vanish.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from syncd.errors import ReportError
from syncd.mapping import normalize_end_user
from syncd.report.config import MappingIdentityConfig

__all__ = ["Resolver", "make_resolver", "read_mapping"]

Resolver = Callable[[str], str | None]
"""Returns the report id of an API ``user_id`` (None: unusable, e.g. blank)."""


def make_resolver(identity: str | MappingIdentityConfig, *, lowercase: bool) -> Resolver:
    """The resolver of the configured identity rule."""
    mapping = (
        read_mapping(identity, lowercase=lowercase)
        if isinstance(identity, MappingIdentityConfig)
        else {}
    )

    def resolve(user_id: str) -> str | None:
        try:
            normalised = normalize_end_user(user_id, lowercase=lowercase)
        except ValueError:
            return None
        return mapping.get(user_id.strip(), normalised)

    return resolve


def read_mapping(identity: MappingIdentityConfig, *, lowercase: bool) -> dict[str, str]:
    """``user_id`` -> normalised end_user from the CSV; problems name the file and line."""
    path: Path = identity.mapping_csv
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise ReportError(f"identity mapping {path}: cannot read it: {error.strerror}") from None
    mapping: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [
            c for c in (identity.user_id_column, identity.end_user_column) if c not in columns
        ]
        if missing:
            raise ReportError(
                f"identity mapping {path}: no column {', '.join(missing)} in the header "
                f"(columns: {', '.join(columns) or 'none'})"
            )
        try:
            for row in reader:
                line = reader.line_num
                user_id = (row.get(identity.user_id_column) or "").strip()
                raw = row.get(identity.end_user_column) or ""
                if not user_id:
                    raise ReportError(f"{path}:{line}: empty {identity.user_id_column}")
                try:
                    end_user = normalize_end_user(raw, lowercase=lowercase)
                except ValueError:
                    raise ReportError(f"{path}:{line}: empty {identity.end_user_column}") from None
                known = mapping.get(user_id)
                if known is not None and known != end_user:
                    raise ReportError(
                        f"{path}:{line}: user_id {user_id} is mapped to {known} on line "
                        f"{first_line[user_id]} and to {end_user} here"
                    )
                mapping[user_id] = end_user
                first_line.setdefault(user_id, line)
        except UnicodeDecodeError:
            raise ReportError(f"identity mapping {path}: not valid UTF-8") from None
        except csv.Error as error:
            raise ReportError(f"{path}:{reader.line_num}: {error}") from None
    return mapping
