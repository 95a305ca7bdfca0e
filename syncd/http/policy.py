"""What differs between the HTTP APIs syncd talks to: :class:`ApiPolicy`.

The machinery (retries, logging, masking, paging) is the same for every API; which
statuses are worth a retry and which syncd errors a failure becomes are not. The
Nebuly platform turns an outage into a PlatformUnavailableError, Microsoft Graph into
a SourceUnavailableError: each client declares one policy and passes it to the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from syncd.errors import SyncdError

__all__ = ["TRANSIENT_TRANSPORT_ERRORS", "ApiPolicy", "ErrorFactory"]

# Network-level failures worth another attempt. Not every httpx.TransportError is:
# UnsupportedProtocol or a ProxyError from a bad proxy setting will not heal by waiting.
TRANSIENT_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


class ErrorFactory(Protocol):
    """Builds the syncd error for a failure; ``status_code`` is None without a response.

    An error class whose constructor takes ``(message, *, status_code=None)`` is one
    (PlatformError); for one that does not (SourceError), wrap it in a function.
    """

    def __call__(self, message: str, /, *, status_code: int | None = None) -> SyncdError: ...


@dataclass(frozen=True, slots=True)
class ApiPolicy:
    """How one HTTP API fails, and which syncd errors its failures become.

    * ``name`` prefixes the log events of its calls: ``"<name> call"``,
      ``"<name> call failed"`` and ``"<name> call failed; retrying"``.
    * ``subject`` names the API in error messages ("the platform returned ...").
    * ``retryable_statuses``: answers retried with backoff (or ``Retry-After``).
    * ``auth_statuses``: answers that mean the credentials were refused.
    * ``unavailable``: the error once every retry failed (a TransientError).
    * ``error``: the error of any other failed call, answer or body.
    * ``auth_error`` with ``auth_message``: the credentials were refused; the message
      is formatted with ``{status}`` and ``{target}`` (the base URL).
    * ``retryable_errors``: transport exceptions retried like retryable statuses.
    """

    name: str
    subject: str
    retryable_statuses: frozenset[int]
    auth_statuses: frozenset[int]
    unavailable: ErrorFactory
    error: ErrorFactory
    auth_error: ErrorFactory
    auth_message: str = "{target} refused the credentials (HTTP {status})"
    retryable_errors: tuple[type[Exception], ...] = TRANSIENT_TRANSPORT_ERRORS

    def refused(self, status: int, target: str) -> SyncdError:
        """The auth error for an answer with an auth status."""
        message = self.auth_message.format(status=status, target=target)
        return self.auth_error(message, status_code=status)
