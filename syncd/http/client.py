"""The one way syncd builds an :class:`httpx.Client`."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from syncd import __version__
from syncd.errors import ConfigError

__all__ = ["make_http_client"]


def make_http_client(
    base_url: str,
    *,
    auth: httpx.Auth | None,
    timeout_s: float,
    concurrency: int = 1,
    transport: httpx.BaseTransport | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """A connection-pooled client for one API, sized for ``concurrency`` threads.

    Sends ``User-Agent: syncd/<version>`` and ``Accept: application/json`` (``headers``
    adds to or overrides them); never follows redirects. A setting httpx cannot use,
    typically a malformed proxy variable (``HTTPS_PROXY`` ...), is a ConfigError.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be > 0")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    default_headers = {"User-Agent": f"syncd/{__version__}", "Accept": "application/json"}
    default_headers.update(headers or {})
    try:
        return httpx.Client(
            base_url=base_url,
            auth=auth,
            headers=default_headers,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            # A redirect would be followed without the Authorization header
            # (cross-origin) or silently change the target; a moved API is a
            # configuration problem.
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max(100, concurrency + 1),
                max_keepalive_connections=concurrency + 1,
            ),
        )
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise ConfigError(
            f"cannot set up HTTP for {base_url.rstrip('/')}: {type(error).__name__}: {error} "
            "(check the proxy environment variables)"
        ) from None
