"""The one exception hierarchy of syncd.

Every error syncd raises on purpose derives from :class:`SyncdError`. There is one
class per component, and retryability is a mixin at the leaves::

    SyncdError
    ├── ConfigError                     a human must fix the configuration
    ├── SourceError                     a source could not be read completely
    │   └── SourceUnavailableError      + TransientError (LDAP timeout, Graph throttling)
    ├── PlatformError                   the Nebuly API failed the run
    │   ├── AuthenticationError         the API key was refused (401/403)
    │   └── PlatformUnavailableError    + TransientError (outage after every retry)
    ├── StateError                      the state database is unusable
    └── ReportError                     the activation report cannot be built
    TransientError                      mixin: the same call may work later

An error is *transient* when it carries the :class:`TransientError` mixin (see
:func:`is_transient`); every other :class:`SyncdError` is *permanent*: retrying the run
unchanged gives the same error. A daemon retries transient failures on its next cycle
and reports permanent ones.

What an interrupted write had confirmed does not travel on the exception: the caller
passes the :class:`~syncd.ports.WriteOutcome` it owns into the write, and keeps it.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class TransientError(SyncdError):
    """Mixin: something that may work if tried again (timeouts, 429, 5xx, resets)."""


class ConfigError(SyncdError):
    """The configuration (or a file it names) is wrong; a human must fix it."""


class SourceError(SyncdError):
    """A source could not be read completely; never read as "these users are gone"."""


class SourceUnavailableError(SourceError, TransientError):
    """A source did not answer in time or was throttled; the next run may read it."""


class PlatformError(SyncdError):
    """The platform API answered in a way that fails the run (4xx, bad payload)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(PlatformError):
    """The platform refused the API key (401/403)."""


class PlatformUnavailableError(PlatformError, TransientError):
    """The platform kept failing after every retry (connection errors, 429, 5xx)."""


class StateError(SyncdError):
    """The state database cannot be opened, read or written."""


class StateReplacedError(StateError):
    """The state database file was deleted or replaced while a connection held it."""


class ReportError(SyncdError):
    """The activation report cannot be built (analytics API, its budget, its data)."""


def is_transient(error: BaseException) -> bool:
    """True if retrying later may succeed (the error carries :class:`TransientError`)."""
    return isinstance(error, TransientError)
