"""The directory the session Samba AD DC is loaded with, as typed values and LDIF.

Layout under ``DC=example,DC=test``:

* ``OU=Staff`` -- the people a sync reads (:data:`STAFF`): enabled, disabled (two ways),
  with and without an ``accountExpires``, non-ASCII names, and accounts with a password
  for bind tests (expired account, expired password, one to lock out);
* ``OU=Groups`` -- ``g-all`` > ``g-eng`` > ``g-platform`` > alice (alice is three levels
  below ``g-all``), a cycle ``g-cycle-a`` <-> ``g-cycle-b``, and ``g-big`` with
  :data:`BIG_GROUP_SIZE` members from ``OU=Bulk``;
* ``CN=Users`` -- the service account the source binds with (:data:`SERVICE_DN`).

The domain locks an account after :data:`LOCKOUT_THRESHOLD` bad passwords. Everything
here is pure: the fixture writes the LDIF and ``ldbadd`` loads it before Samba starts.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

BASE_DN = "DC=example,DC=test"
STAFF_DN = f"OU=Staff,{BASE_DN}"
GROUPS_DN = f"OU=Groups,{BASE_DN}"
BULK_DN = f"OU=Bulk,{BASE_DN}"
USERS_DN = f"CN=Users,{BASE_DN}"
UPN_SUFFIX = "example.test"

NEVER_EXPIRES = 9223372036854775807
"""``accountExpires`` of an account that never expires (0 means the same)."""
UAC_ENABLED = 512  # NORMAL_ACCOUNT
UAC_DISABLED = 514  # NORMAL_ACCOUNT | ACCOUNTDISABLE
UAC_DISABLED_NO_EXPIRE = 66050  # | DONT_EXPIRE_PASSWORD: disabled only by bit 0x2
UAC_SERVICE = 66048  # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
LOCKOUT_THRESHOLD = 3
BIG_GROUP_SIZE = 1600
"""Members of ``g-big``: above AD's MaxValRange of 1500 values per read."""
BATCH_SIZE = 500

_FILETIME_EPOCH_OFFSET_S = 11_644_473_600  # 1601-01-01 -> 1970-01-01


def filetime(moment: datetime) -> int:
    """``moment`` as a Windows FILETIME (100 ns ticks since 1601-01-01 UTC)."""
    return (int(moment.timestamp()) + _FILETIME_EPOCH_OFFSET_S) * 10_000_000


CAROL_EXPIRES = datetime(2031, 6, 30, 12, 0, tzinfo=UTC)
OLGA_EXPIRED = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AdUser:
    """A user account of the test domain."""

    sam: str
    given_name: str
    surname: str
    department: str | None = None
    uac: int = UAC_ENABLED
    account_expires: int = NEVER_EXPIRES
    password: str | None = None
    """Only accounts that must bind get one (each costs about 20 ms to load)."""
    must_change_password: bool = False
    """``pwdLastSet: 0``: a bind answers ``data 773``."""
    container: str = STAFF_DN
    display_name: str | None = None

    @property
    def cn(self) -> str:
        """The RDN value: the display name."""
        return self.display_name or f"{self.given_name} {self.surname}"

    @property
    def dn(self) -> str:
        """The distinguished name."""
        return f"CN={self.cn},{self.container}"

    @property
    def mail(self) -> str:
        """The e-mail address (the ``end_user`` of a sync)."""
        return f"{self.sam}@{UPN_SUFFIX}"

    @property
    def upn(self) -> str:
        """The userPrincipalName, usable as a bind name."""
        return f"{self.sam}@{UPN_SUFFIX}"

    @property
    def enabled(self) -> bool:
        """False when the ACCOUNTDISABLE bit (0x2) is set."""
        return not self.uac & 0x2


ALICE = AdUser("alice", "Alice", "Anders", "Engineering", password="Alice-Passw0rd!")
BOB = AdUser("bob", "Bob", "Brown", "Sales", uac=UAC_DISABLED)
DINA = AdUser("dina", "Dina", "Dunn", "Sales", uac=UAC_DISABLED_NO_EXPIRE)
CAROL = AdUser("carol", "Carol", "Clark", "Engineering", account_expires=filetime(CAROL_EXPIRES))
DAVE = AdUser("dave", "Dave", "Davis", "Finance", account_expires=0)
JURGEN = AdUser("juergen.mueller", "Jürgen", "Müller", "Forschung & Entwicklung")
LILEI = AdUser("li.lei", "雷", "李", "研发", display_name="李雷")
OLGA = AdUser(
    "olga", "Olga", "Olsen", "Legal",
    account_expires=filetime(OLGA_EXPIRED), password="Olga-Passw0rd!",
)  # fmt: skip
LOCKY = AdUser("locky", "Lock", "Key", "Support", password="Locky-Passw0rd!")
PAT = AdUser(
    "pat", "Pat", "Pending", "Support", password="Pat-Passw0rd!", must_change_password=True
)
SERVICE = AdUser(
    "svc-sync", "Sync", "Service", uac=UAC_SERVICE, password="Svc-Sync-Passw0rd!",
    container=USERS_DN, display_name="svc-sync",
)  # fmt: skip
SERVICE_DN = SERVICE.dn
SERVICE_PASSWORD = SERVICE.password or ""

STAFF: tuple[AdUser, ...] = (ALICE, BOB, DINA, CAROL, DAVE, JURGEN, LILEI, OLGA, LOCKY, PAT)
"""Everyone under ``OU=Staff``."""


def bulk_user(index: int) -> AdUser:
    """The ``index``-th member of ``g-big`` (no password: cheap to load)."""
    return AdUser(f"bulk{index:04d}", "Bulk", f"{index:04d}", container=BULK_DN)


def group_dn(name: str) -> str:
    """The DN of the test group ``name``."""
    return f"CN={name},{GROUPS_DN}"


def _unicode_pwd(password: str) -> str:
    """The base64 ``unicodePwd`` value: the quoted password in UTF-16-LE."""
    return base64.b64encode(f'"{password}"'.encode("utf-16-le")).decode("ascii")


def _b64(value: str) -> str:
    """An LDIF ``attr:: value`` for non-ASCII text."""
    return base64.b64encode(value.encode()).decode("ascii")


def _attribute(name: str, value: str) -> str:
    """One LDIF line, base64-encoded when the value is not plain ASCII."""
    if value.isascii() and not value.startswith((" ", ":", "<")):
        return f"{name}: {value}"
    return f"{name}:: {_b64(value)}"


def user_ldif(user: AdUser) -> str:
    """The LDIF add record of ``user``."""
    lines = [
        _attribute("dn", user.dn),
        "objectClass: user",
        f"sAMAccountName: {user.sam}",
        f"userPrincipalName: {user.upn}",
        f"mail: {user.mail}",
        _attribute("givenName", user.given_name),
        _attribute("sn", user.surname),
        _attribute("displayName", user.cn),
        f"userAccountControl: {user.uac}",
        f"accountExpires: {user.account_expires}",
    ]
    if user.department:
        lines.append(_attribute("department", user.department))
    if user.password:
        lines.append(f"unicodePwd:: {_unicode_pwd(user.password)}")
    return "\n".join(lines) + "\n"


def group_ldif(name: str, members: Iterable[str]) -> str:
    """The LDIF add record of a global security group in ``OU=Groups``."""
    lines = [f"dn: {group_dn(name)}", "objectClass: group", f"sAMAccountName: {name}"]
    lines += [_attribute("member", member) for member in members]
    return "\n".join(lines) + "\n"


def _ou_ldif(dn: str) -> str:
    return f"dn: {dn}\nobjectClass: organizationalUnit\n"


GROUP_MEMBERS: dict[str, tuple[str, ...]] = {
    "g-platform": (ALICE.dn,),
    "g-eng": (group_dn("g-platform"), CAROL.dn),
    "g-all": (group_dn("g-eng"),),
    "g-cycle-b": (JURGEN.dn,),
    "g-cycle-a": (DAVE.dn, group_dn("g-cycle-b")),
}
"""Groups and their direct members, in an order where members exist before groups.
The cycle is closed by :func:`modify_ldif` (``g-cycle-b`` gets ``g-cycle-a``)."""


def records() -> list[str]:
    """Every add record, parents before children, members before their groups."""
    out = [_ou_ldif(dn) for dn in (STAFF_DN, GROUPS_DN, BULK_DN)]
    out += [user_ldif(user) for user in (*STAFF, SERVICE)]
    bulk = [bulk_user(index) for index in range(BIG_GROUP_SIZE)]
    out += [user_ldif(user) for user in bulk]
    out += [group_ldif(name, members) for name, members in GROUP_MEMBERS.items()]
    out.append(group_ldif("g-big", (user.dn for user in bulk)))
    return out


def add_batches(batch_size: int = BATCH_SIZE) -> list[str]:
    """:func:`records` as LDIF documents of at most ``batch_size`` entries."""
    entries = records()
    return ["\n".join(entries[i : i + batch_size]) for i in range(0, len(entries), batch_size)]


def modify_ldif(extra: Sequence[str] = ()) -> str:
    """Changes that need existing entries: the cycle, lockout policy, must-change."""
    changes = [
        f"dn: {group_dn('g-cycle-b')}\nchangetype: modify\nadd: member\n"
        f"member: {group_dn('g-cycle-a')}\n-\n",
        f"dn: {BASE_DN}\nchangetype: modify\nreplace: lockoutThreshold\n"
        f"lockoutThreshold: {LOCKOUT_THRESHOLD}\n-\n",
        *(
            _attribute("dn", user.dn) + "\nchangetype: modify\nreplace: pwdLastSet\n"
            "pwdLastSet: 0\n-\n"
            for user in STAFF
            if user.must_change_password
        ),
        *extra,
    ]
    return "\n".join(changes)
