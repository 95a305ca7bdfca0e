"""The HTTP layer shared by syncd's API clients (Nebuly platform, Microsoft Graph, analytics).

Layers, each replaceable on its own, in the way httpx separates transport, auth and
client:

* :func:`make_http_client` -- the pooled :class:`httpx.Client` (no redirects, a bad
  proxy setting is a ConfigError);
* :class:`BearerAuth` -- credentials, as an :class:`httpx.Auth` flow run per request;
* :class:`RetryingCaller` -- one request with retries (tenacity: full jitter,
  ``Retry-After``, interruptible sleeps), per-call debug logs and masked error reasons;
* :class:`ApiPolicy` -- what differs per API: retryable and auth statuses, the name
  of its log events, and the syncd errors its failures become;
* :func:`walk_cursors` -- cursor pagination with loop guards;
* :func:`track_connections` -- cancel requests on the wire from another thread;
* :class:`DirectSender` -- the plain requests httpx would send the same way, on
  sockets of its own framed by h11, for half the CPU (the platform client's writes);
  its usual answers are read by :mod:`syncd.http.plain_answer`, as h11 reads them.

The API clients keep only their wire format and their own logic.
"""

from syncd.http.auth import BearerAuth, bearer_token_problem
from syncd.http.cancel import ConnectionTracker, track_connections
from syncd.http.client import make_http_client
from syncd.http.direct import DirectSender
from syncd.http.pages import DEFAULT_MAX_PAGES, walk_cursors
from syncd.http.policy import TRANSIENT_TRANSPORT_ERRORS, ApiPolicy, ErrorFactory
from syncd.http.responses import detail, failure_reason
from syncd.http.retry import (
    CallTally,
    RequestObserver,
    RetryingCaller,
    RetrySettings,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_MAX_PAGES",
    "TRANSIENT_TRANSPORT_ERRORS",
    "ApiPolicy",
    "BearerAuth",
    "CallTally",
    "ConnectionTracker",
    "DirectSender",
    "ErrorFactory",
    "RequestObserver",
    "RetrySettings",
    "RetryingCaller",
    "bearer_token_problem",
    "detail",
    "failure_reason",
    "make_http_client",
    "parse_retry_after",
    "track_connections",
    "walk_cursors",
]
