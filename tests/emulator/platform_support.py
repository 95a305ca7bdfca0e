"""Constants and request helpers shared by the platform-emulator tests."""

from __future__ import annotations

import httpx

from syncd.platform.api import FLAVOURS, ApiFlavour, Operation, WireUser

KEY = "sk-test-Zq8v3N1xSECRET"
AUTH = {"Authorization": f"Bearer {KEY}"}
PU = FLAVOURS[ApiFlavour.PLATFORM_USERS]
EU = FLAVOURS[ApiFlavour.ELIGIBLE_USERS]
MAX_BATCH = 5


def user(end_user: str, active_from: str = "2026-01-01", **tags: str) -> dict[str, object]:
    """A user as JSON, the way a client sends it."""
    return {"end_user": end_user, "tags": tags, "active_from": active_from}


def wire(end_user: str, active_from: str = "2026-01-01", **tags: str) -> WireUser:
    """A user to seed the store with."""
    return WireUser(end_user=end_user, tags=tags, active_from=active_from)


def call(client: httpx.Client, flavour: ApiFlavour, op: Operation, body: object) -> httpx.Response:
    """Send ``body`` as JSON with the verb ``flavour`` uses for ``op``."""
    spec = FLAVOURS[flavour]
    return client.request(spec.method(op), spec.path, json=body)
