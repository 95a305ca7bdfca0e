"""Synthetic Entra ID users and groups for the Graph emulator: demos, tests, benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_DEPARTMENTS = ("Engineering", "Sales", "Marketing", "Support", "Finance", "Legal", "HR", "Ops")
_COUNTRIES = ("DE", "US", "IT", "JP")
_TITLES = ("Engineer", "Manager", "Analyst")


def object_id(index: int, kind: int = 0) -> str:
    """A deterministic GUID for the ``index``-th object of a kind (0 users, 1 groups)."""
    return f"{index:08x}-{kind:04x}-4000-8000-{index:012x}"


def make_graph_user(
    index: int,
    *,
    domain: str = "contoso.example",
    enabled: bool = True,
    guest: bool = False,
    **properties: Any,
) -> dict[str, Any]:
    """One Graph user object with the usual properties; ``properties`` override them."""
    name = f"user{index:07d}"
    upn = f"{name}_ext.example#EXT#@{domain}" if guest else f"{name}@{domain}"
    user: dict[str, Any] = {
        "id": object_id(index),
        "userPrincipalName": upn,
        "mail": f"{name}@{domain}",
        "displayName": f"User {index}",
        "givenName": "User",
        "surname": str(index),
        "accountEnabled": enabled,
        "userType": "Guest" if guest else "Member",
        "department": _DEPARTMENTS[index % len(_DEPARTMENTS)],
        "country": _COUNTRIES[index % len(_COUNTRIES)],
        "jobTitle": _TITLES[index % len(_TITLES)],
        "employeeId": f"E{index:07d}",
        "onPremisesSamAccountName": name,
        "employeeHireDate": f"20{20 + index % 6}-0{1 + index % 9}-15T00:00:00Z",
        "createdDateTime": "2019-03-01T08:30:00Z",
        "employeeLeaveDateTime": None,
    }
    user.update(properties)
    return user


def make_graph_users(
    count: int, *, start: int = 0, domain: str = "contoso.example"
) -> Iterator[dict[str, Any]]:
    """``count`` deterministic member users, enabled, with department/country/title."""
    for index in range(start, start + count):
        yield make_graph_user(index, domain=domain)
