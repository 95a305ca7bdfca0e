"""Short, secret-free reasons from error responses, for reports and logs."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
import msgspec

__all__ = ["MAX_DETAIL_CHARS", "detail", "failure_reason"]

# Error details from response bodies end up in reports and logs: keep them short.
MAX_DETAIL_CHARS = 300

_MASK = b"**********"


def detail(response: httpx.Response, secrets: Iterable[str] = ()) -> str:
    """A short, human-readable reason from an error response body.

    Every secret is masked in the whole body before anything is cut, so no part of one
    can survive truncation (a proxy may echo the Authorization header). A JSON body
    gives its ``detail`` / ``message`` / ``error`` / ``errors`` member if it has one.
    """
    content = response.content
    for secret in secrets:
        if secret:
            escaped = msgspec.json.encode(secret)[1:-1]  # as it appears in a JSON string
            content = content.replace(secret.encode(), _MASK).replace(escaped, _MASK)
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        text = content.decode("utf-8", errors="replace").strip()
        return " ".join(text.split())[:MAX_DETAIL_CHARS]
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "errors"):
            if key in body:
                body = body[key]
                break
    text = body if isinstance(body, str) else msgspec.json.encode(body).decode()
    return text[:MAX_DETAIL_CHARS]


def failure_reason(response: httpx.Response, secrets: Iterable[str] = ()) -> str:
    """``HTTP <code>: <detail>`` (or ``HTTP <code>`` for an empty body), secrets masked."""
    text = detail(response, secrets)
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"
