"""``type: ldap``: Active Directory, OpenLDAP and FreeIPA over ldap3.

The package is split by concern: :mod:`.config` (the model and the presets),
:mod:`.values` (pure parsing, decoding and escaping), :mod:`.connection` (failover,
TLS, bind) and :mod:`.source` (the paged, streamed read and the group scope).
"""

from __future__ import annotations

import warnings

# ldap3 2.9 imports names that pyasn1 >= 0.6.2 deprecated; the warning is about ldap3's
# code, not ours, and must not fail a process (or a test run) that turns warnings into
# errors. Importing ldap3 once here, first, keeps it out of every later import.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"\w+Map is deprecated", category=DeprecationWarning)
    import ldap3  # noqa: F401

from syncd.sources import SourceContext, SourceType
from syncd.sources.ldap.config import LdapSourceConfig
from syncd.sources.ldap.source import LdapSource

__all__ = ["SOURCE_TYPE", "LdapSource", "LdapSourceConfig"]


def _build(config: LdapSourceConfig, context: SourceContext) -> LdapSource:
    return LdapSource(config, lowercase=context.lowercase)


SOURCE_TYPE = SourceType(name="ldap", config=LdapSourceConfig, build=_build)
"""The ``type: ldap`` entry of the source registry."""
