"""Authentication of syncd's HTTP clients, as :class:`httpx.Auth` flows.

httpx runs an auth flow for every request it sends, retries included, so the caller
layer (:mod:`syncd.http.retry`) never touches credentials. An auth also says which
secrets it sends (:meth:`BearerAuth.secrets`), so that an error body echoing one of
them can be masked before it reaches a log or a report.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx
import pydantic

__all__ = ["BearerAuth", "bearer_token_problem"]


def bearer_token_problem(token: str, *, name: str = "the token") -> str | None:
    """Why ``token`` cannot be sent as a bearer token, or None if it can.

    httpx/h11 quote an illegal header value in their exception, which would put the
    secret in a traceback; such a token is refused up front, without quoting it.
    ``name`` says what the token is in the message ("the API key").
    """
    if not token:
        return f"{name} is empty"
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        return f"{name} must be printable ASCII without spaces or newlines"
    return None


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request, for a token that does not expire.

    The token is held as a :class:`pydantic.SecretStr` and never appears in ``repr``.
    An unusable token (empty, spaces, non-ASCII) is refused with a ValueError that does
    not quote it.

    Extension point, for a token that expires (Microsoft Graph through MSAL): subclass
    :class:`httpx.Auth` the same way, and override ``sync_auth_flow`` (not
    ``auth_flow``: acquiring a token does network I/O under a lock, see the httpx
    docs). The flow sets the current token and yields the request; when the response
    is a 401 it acquires a fresh token (MSAL serves it from its cache until close to
    expiry, and refreshes it when told the old one was refused) and yields the request
    once more. ``secrets()`` then returns the client secret and the current token. The
    caller layer needs no change: a second 401 reaches it as an auth status.
    """

    def __init__(self, token: pydantic.SecretStr, *, name: str = "the token") -> None:
        problem = bearer_token_problem(token.get_secret_value(), name=name)
        if problem is not None:
            raise ValueError(problem)
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Set the Authorization header and send the request once."""
        self.authorize(request)
        yield request

    def authorize(self, request: httpx.Request) -> None:
        """Set the Authorization header (the whole flow: one step, no answer needed)."""
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"

    def secrets(self) -> tuple[str, ...]:
        """What this auth sends that must never be shown (to mask echoed error bodies)."""
        return (self._token.get_secret_value(),)

    def __repr__(self) -> str:
        return f"BearerAuth(token={self._token!r})"
