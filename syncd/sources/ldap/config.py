"""The ``type: ldap`` config model and the directory presets (AD, OpenLDAP, FreeIPA).

A preset supplies what differs between directory products: the filter that selects
person entries, how a disabled account is recognised, and how nested group membership
is resolved. Every preset value can be overridden in the config; :meth:`Preset` values
are resolved once, by :meth:`LdapSourceConfig.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from syncd.config_base import FrozenModel, SourceConfigBase, resolve_secret


class Flavor(StrEnum):
    """The directory product; selects a :class:`Preset`."""

    ACTIVE_DIRECTORY = "active_directory"
    OPENLDAP = "openldap"
    FREEIPA = "freeipa"


class GroupStrategy(StrEnum):
    """How membership of the scope groups (nested included) is found."""

    IN_CHAIN = "in_chain"
    """AD's LDAP_MATCHING_RULE_IN_CHAIN on ``memberOf`` (the server resolves nesting)."""
    WALK = "walk"
    """Read the groups' ``member`` / ``uniqueMember`` values, recursively, with cycle
    detection; ``memberOf`` is used for the user search only if the server maintains it."""


@dataclass(frozen=True, slots=True)
class Preset:
    """What a directory product needs by default."""

    person_filter: str
    disabled_filter: str | None
    groups: GroupStrategy


PRESETS: dict[Flavor, Preset] = {
    Flavor.ACTIVE_DIRECTORY: Preset(
        person_filter="(&(objectCategory=person)(objectClass=user))",
        # LDAP_MATCHING_RULE_BIT_AND: bit 0x2 of userAccountControl is ACCOUNTDISABLE.
        disabled_filter="(userAccountControl:1.2.840.113556.1.4.803:=2)",
        groups=GroupStrategy.IN_CHAIN,
    ),
    Flavor.OPENLDAP: Preset(
        person_filter="(objectClass=inetOrgPerson)",
        disabled_filter=None,
        groups=GroupStrategy.WALK,
    ),
    Flavor.FREEIPA: Preset(
        person_filter="(objectClass=inetOrgPerson)",
        disabled_filter="(nsAccountLock=TRUE)",
        groups=GroupStrategy.WALK,
    ),
}

_UNSET = "preset"
"""``disabled_filter`` left at this value takes the preset's filter; ``null`` means none."""


class TagAttribute(FrozenModel):
    """A tag read from a (possibly multi-valued) attribute, its values joined."""

    attribute: str = Field(min_length=1)
    join: str | None = None
    """Join every value with this separator; without it the first value is used."""


TagSource = Annotated[str, Field(min_length=1)] | TagAttribute


@dataclass(frozen=True, slots=True)
class TagRule:
    """One resolved tag: the attribute it reads and how several values combine."""

    tag: str
    attribute: str
    join: str | None


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """The config with the preset applied: what the source actually uses."""

    person_filter: str
    disabled_filter: str | None
    groups: GroupStrategy


class LdapSourceConfig(SourceConfigBase):
    """An LDAP directory (Active Directory, OpenLDAP, FreeIPA); one entry per user."""

    type: Literal["ldap"]
    flavor: Flavor = Flavor.ACTIVE_DIRECTORY
    urls: tuple[str, ...] = Field(min_length=1)
    start_tls: bool = False
    ca_file: Path | None = None
    tls_verify: bool = True
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    bind_password_file: Path | None = None
    base_dn: tuple[str, ...] = Field(min_length=1)
    user_filter: str | None = None
    person_filter: str | None = None
    """Overrides the preset's person filter."""
    groups: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    group_strategy: GroupStrategy | None = None
    """Overrides the preset's way of resolving nested groups."""
    id_attribute: str = Field(min_length=1)
    tags: dict[str, TagSource] = Field(default_factory=dict)
    active_from_attribute: str | None = None
    active_to_attribute: str | None = None
    disabled_filter: str | None = _UNSET
    page_size: int = Field(default=500, ge=1, le=100_000)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("base_dn", mode="before")
    @classmethod
    def _one_or_many_bases(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
                raise ValueError(f"url {url!r} must be ldap://host[:port] or ldaps://host[:port]")
            try:
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                raise ValueError(f"url {url!r} has an invalid port") from None
            if parts.path not in ("", "/"):
                raise ValueError(f"url {url!r}: put the search base in base_dn, not in the url")
        return value

    @field_validator("user_filter", "person_filter", "disabled_filter")
    @classmethod
    def _check_filters(cls, value: str | None) -> str | None:
        if value is not None and value != _UNSET:
            # Only configs with a filter load ldap3's filter parser.
            from syncd.sources.ldap.values import check_filter  # noqa: PLC0415

            problem = check_filter(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, TagSource]) -> dict[str, TagSource]:
        for tag in value:
            if not tag.strip():
                raise ValueError("tag names must not be empty")
        return value

    @model_validator(mode="after")
    def _check_choices(self) -> LdapSourceConfig:
        if self.bind_password is not None and self.bind_password_file is not None:
            raise ValueError("set at most one of 'bind_password' or 'bind_password_file'")
        has_password = self.bind_password is not None or self.bind_password_file is not None
        if has_password and self.bind_dn is None:
            raise ValueError("a bind password needs a 'bind_dn'")
        if self.bind_dn is not None and not has_password:
            raise ValueError("'bind_dn' needs 'bind_password' or 'bind_password_file'")
        if self.start_tls and any(url.lower().startswith("ldaps:") for url in self.urls):
            raise ValueError("start_tls is for ldap:// urls; ldaps:// is already encrypted")
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError("ca_file is only used with tls_verify: true")
        return self

    @property
    def label(self) -> str:
        """How messages name this source: its ``name``, else the first URL's host."""
        return self.name or (urlsplit(self.urls[0]).hostname or self.urls[0])

    def password(self) -> SecretStr | None:
        """The bind password (read from ``bind_password_file`` if given); None: anonymous."""
        if self.bind_dn is None:
            return None
        return resolve_secret(self.bind_password, self.bind_password_file)

    def check_secrets(self) -> None:
        """Read ``bind_password_file`` now, so a missing file fails at load."""
        self.password()

    def settings(self) -> LdapSettings:
        """The preset of :attr:`flavor` with this config's overrides applied."""
        preset = PRESETS[self.flavor]
        return LdapSettings(
            person_filter=self.person_filter or preset.person_filter,
            disabled_filter=(
                preset.disabled_filter if self.disabled_filter == _UNSET else self.disabled_filter
            ),
            groups=self.group_strategy or preset.groups,
        )

    def tag_rules(self) -> tuple[TagRule, ...]:
        """Every tag with its attribute and join separator, sorted by tag name."""
        rules = []
        for tag, source in sorted(self.tags.items()):
            if isinstance(source, str):
                rules.append(TagRule(tag, source, None))
            else:
                rules.append(TagRule(tag, source.attribute, source.join))
        return tuple(rules)
