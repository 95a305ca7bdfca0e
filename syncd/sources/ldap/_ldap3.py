"""Imports ldap3 once, with the one warning it raises on import silenced.

ldap3 2.9 imports names that pyasn1 >= 0.6.2 deprecated; the warning is about ldap3's
code, not ours, and must not fail a process (or a test run) that turns warnings into
errors. Every module of this package that uses ldap3 imports this one first, so ldap3
is only loaded (~40 ms of start-up) when an LDAP source is used, not by every config
load.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"\w+Map is deprecated", category=DeprecationWarning)
    import ldap3  # noqa: F401
