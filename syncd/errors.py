"""The one exception hierarchy of syncd.

Every error syncd raises on purpose derives from :class:`SyncdError`. The three
branches tell the caller what to do: fix the configuration, retry later, or give up
on this run.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""

    outcome: object | None = None
    """What a write had confirmed before it failed (see ``platform.client.partial_outcome``)."""


class ConfigError(SyncdError):
    """The configuration (or a file it names) is wrong; a human must fix it."""


class TransientError(SyncdError):
    """Something that may work if tried again (timeouts, 429, 5xx, connection resets)."""


class PermanentError(SyncdError):
    """Something that fails the run and will not fix itself by retrying."""


class SourceError(PermanentError):
    """A source could not be read completely; never read as "these users are gone"."""


class StateError(PermanentError):
    """The state database cannot be opened, read or written."""


class PlatformError(PermanentError):
    """The platform API answered in a way that fails the run (4xx, bad payload)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(PlatformError):
    """The platform refused the API key (401/403)."""


class PlatformUnavailableError(TransientError):
    """The platform kept failing after every retry (connection errors, 429, 5xx)."""
