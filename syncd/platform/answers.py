"""Reading the platform's answers to writes (pure): which users a 2xx confirmed.

Insert and update answers list the users written; a delete answer says nothing per
user (its status is the confirmation) but must still be a JSON object when it has a
body. An answer of another shape is a :class:`~syncd.errors.PlatformError` naming the
operation, the call and the content type.
"""

from __future__ import annotations

import httpx
import msgspec

from syncd.errors import PlatformError
from syncd.platform.api import FlavourSpec, Operation

__all__ = ["answered_names", "check_delete_body"]


class _ConfirmedUser(msgspec.Struct, gc=False):
    """Only what confirmation needs from an insert/update response user."""

    end_user: str


class _ConfirmResponse(msgspec.Struct, gc=False):
    """Insert/update response, read leniently: extra fields and odd tags do not matter."""

    users: list[_ConfirmedUser]


# Built once: a first sync reads two thousand answers of 500 users each.
_decode_confirmation = msgspec.json.Decoder(_ConfirmResponse).decode
_decode_any = msgspec.json.Decoder().decode


def answered_names(spec: FlavourSpec, operation: Operation, response: httpx.Response) -> list[str]:
    """The end_users an insert / update answer lists as written, in its order.

    A list, not a set: the platform answers a batch in the order it was sent, so the
    caller confirms the usual answer with one list comparison and builds a set only
    for an answer that differs.
    """
    try:
        body = _decode_confirmation(response.content)
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError
        raise _bad_body_error(spec, operation, response, error) from None
    return [user.end_user for user in body.users]


def check_delete_body(spec: FlavourSpec, response: httpx.Response) -> None:
    """Raise unless a delete answer is empty or a JSON object."""
    if not response.content.strip():
        return  # 204 No Content, or an empty 200: the status is the confirmation
    try:
        body = _decode_any(response.content)
    except msgspec.DecodeError as error:
        raise _bad_body_error(spec, Operation.DELETE, response, error) from None
    if not isinstance(body, dict):
        raise _bad_body_error(
            spec, Operation.DELETE, response, f"expected a JSON object, got {type(body).__name__}"
        )


def _bad_body_error(
    spec: FlavourSpec, operation: Operation, response: httpx.Response, problem: object
) -> PlatformError:
    content_type = response.headers.get("Content-Type", "no content type")
    return PlatformError(
        f"{operation}: {spec.method(operation)} {spec.path} answered "
        f"HTTP {response.status_code} with an unexpected body ({content_type}): {problem}",
        status_code=response.status_code,
    )
