"""``type: entra``: Microsoft Entra ID (Azure AD) users through Microsoft Graph.

Split by concern: :mod:`.config` (the model, the national clouds, the credentials),
:mod:`.auth` (MSAL tokens and the httpx auth flow), :mod:`.graph` (pure: the queries
and the mapping of Graph users) and :mod:`.source` (the paged read over the shared
HTTP layer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.sources import SourceContext, SourceType
from syncd.sources.entra.config import EntraSourceConfig

if TYPE_CHECKING:
    from syncd.sources.entra.source import EntraSource

__all__ = ["SOURCE_TYPE", "EntraSourceConfig"]


def _build(config: EntraSourceConfig, context: SourceContext) -> EntraSource:
    # MSAL and requests are imported when a job has an Entra source, not by every
    # config load (they cost ~0.25 s of start-up).
    from syncd.sources.entra.source import EntraSource  # noqa: PLC0415 - see above

    return EntraSource(config, lowercase=context.lowercase)


SOURCE_TYPE = SourceType(name="entra", config=EntraSourceConfig, build=_build)
"""The ``type: entra`` entry of the source registry."""
