"""``type: ldap``: Active Directory, OpenLDAP and FreeIPA over ldap3.

The package is split by concern: :mod:`.config` (the model and the presets),
:mod:`.values` (pure parsing, decoding and escaping), :mod:`.connection` (failover,
TLS, bind) and :mod:`.source` (the paged, streamed read and the group scope).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncd.sources import SourceContext, SourceType
from syncd.sources.ldap.config import LdapSourceConfig

if TYPE_CHECKING:
    from syncd.sources.ldap.source import LdapSource

__all__ = ["SOURCE_TYPE", "LdapSource", "LdapSourceConfig"]


def _build(config: LdapSourceConfig, context: SourceContext) -> LdapSource:
    # ldap3 is imported when a job has an LDAP source, not by every config load.
    from syncd.sources.ldap.source import LdapSource  # noqa: PLC0415 - see above

    return LdapSource(config, lowercase=context.lowercase)


def __getattr__(name: str) -> Any:
    """``LdapSource`` is imported on first use (it imports ldap3)."""
    if name == "LdapSource":
        from syncd.sources.ldap.source import LdapSource  # noqa: PLC0415 - lazily

        return LdapSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SOURCE_TYPE = SourceType(name="ldap", config=LdapSourceConfig, build=_build)
"""The ``type: ldap`` entry of the source registry."""
