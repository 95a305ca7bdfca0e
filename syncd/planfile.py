"""Plan files: review a plan, then apply exactly that plan (``terraform plan -out``).

``syncd plan --out plan.json`` writes every change of a job's plan with the guard's
verdict, the job, when it was made, and two fingerprints: the job's config and the
platform list the plan was computed from. ``syncd apply --plan plan.json`` re-reads the
platform and applies exactly those changes, unless something moved since:

* the platform list is not the one the plan was made from (someone else wrote);
* the job's config changed (another mapping, policy or target);
* the plan is older than ``--max-age`` (default 24 h), or for another job, or not a
  plan file of this version;
* the file was edited: its changes or verdict do not match the SHA-256 written with
  them (and, since an editor can recompute those, the checks of
  :mod:`syncd.planfile_checks` at apply: no protected user, every ``before`` is the
  platform's user now, and the guard finds no reason the file did not record).

Each refusal says what moved (exit 2). A held plan applied this way passes the guard
for exactly the changes it lists: reading the file is the operator's approval.

A file that is not a valid plan (a bad date, a user listed twice, a change without the
``before`` its kind needs) is a :class:`~syncd.errors.ConfigError` naming the file and
the entry, found when it is loaded: before the job's lock is taken or anything listed.

This module is pure (the file's shape, its checks, the fingerprints); the commands
are in :mod:`syncd.cli_planfile`. The file holds no secret: the config fingerprint is
taken from the config with its secrets masked, and users are names, tags and dates.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import msgspec

from syncd import __version__
from syncd.config import JobConfig
from syncd.errors import ConfigError
from syncd.guard import Verdict
from syncd.model import PlatformUser, SourceUser, make_tags
from syncd.plan import Change, ChangeKind, Plan
from syncd.ports import PlatformPort, ProgressCallback, WriteOutcome

__all__ = [
    "PLAN_FORMAT",
    "FingerprintingPlatform",
    "PlanFile",
    "build_plan_file",
    "check_integrity",
    "check_plan_file",
    "check_signature",
    "content_digests",
    "encode_plan_file",
    "job_fingerprint",
    "load_plan_file",
    "parse_max_age",
    "plan_from_file",
    "platform_fingerprint",
    "sign",
    "signing_key",
    "validate_plan_file",
]

PLAN_FORMAT = "syncd-plan/3"
"""Version 2 added the SHA-256 of the changes and of the verdict, and active_managed;
version 3 the signature with the state directory's key."""

# A plan file is read whole; a million changes take ~150 MB. This bounds a wrong file.
_MAX_FILE_BYTES = 2 * 1024**3


class PlanUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A user as the plan file holds it (the wire form: ISO dates, tags as a mapping)."""

    end_user: str
    tags: dict[str, str]
    active_from: str
    active_to: str | None = None


class PlanChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One change: its kind, the user as it will be written, as it was, and why."""

    kind: ChangeKind
    user: PlanUser
    before: PlanUser | None
    reason: str


class PlanGuard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The guard's verdict when the plan was made."""

    held: bool
    reasons: list[str]
    overridden: list[str]


class PlanFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole document of ``syncd plan --out``."""

    format: str
    syncd_version: str
    job: str
    created_at: Annotated[datetime, msgspec.Meta(tz=True)]
    """Aware (UTC when written): a naive time could not be compared with now."""
    today: date
    config_fingerprint: str
    platform_fingerprint: str
    platform_users: int
    active_managed: int
    """The plan's :attr:`~syncd.plan.Plan.active_managed` (what removal ratios are
    measured against), for the guard's second look at apply time."""
    counts: dict[str, int]
    guard: PlanGuard
    guard_sha256: str
    """SHA-256 of ``guard``, canonical JSON: see :func:`content_digests`."""
    changes_sha256: str
    """SHA-256 of ``changes``, canonical JSON."""
    changes: list[PlanChange]
    signature: str = ""
    """HMAC-SHA256 of everything above with the state directory's plan signing key
    (:func:`signing_key`): whoever can edit the file but not read that key cannot
    make an edited file pass (the SHA-256 above can be recomputed by anyone)."""


# -------------------------------------------------------------------- fingerprints


def job_fingerprint(job: JobConfig) -> str:
    """A SHA-256 of the job's resolved config, secrets masked (so never derived from
    a secret): any change of mapping, policy, guard or target changes it."""
    data = job.model_dump(mode="json")
    return "sha256:" + hashlib.sha256(msgspec.json.encode(data, order="sorted")).hexdigest()


def platform_fingerprint(users: Iterable[PlatformUser]) -> str:
    """A SHA-256 of a platform list, independent of the order the platform sent it in."""
    digest = hashlib.sha256()
    for user in sorted(users, key=lambda user: user.end_user):
        active_to = user.active_to.isoformat() if user.active_to is not None else ""
        tags = "\x1e".join(f"{name}\x1d{value}" for name, value in user.tags)
        line = f"{user.end_user}\x1f{tags}\x1f{user.active_from.isoformat()}\x1f{active_to}\n"
        digest.update(line.encode("utf-8", "surrogatepass"))
    return "sha256:" + digest.hexdigest()


def content_digests(guard: PlanGuard, changes: Sequence[PlanChange]) -> tuple[str, str]:
    """SHA-256 of the verdict and of the changes, each as canonical JSON (keys sorted,
    no white space): what ``plan --out`` wrote, so an edit of either is seen."""

    def digest(value: object) -> str:
        return "sha256:" + hashlib.sha256(msgspec.json.encode(value, order="sorted")).hexdigest()

    return digest(guard), digest(list(changes))


class FingerprintingPlatform:
    """A :class:`~syncd.ports.PlatformPort` that remembers the fingerprint of the last
    list it returned; writes go straight through."""

    def __init__(self, inner: PlatformPort) -> None:
        self.inner = inner
        self.fingerprint: str | None = None
        self.listed: int = 0
        self.last: list[PlatformUser] = []
        """The last list returned (apply --plan checks each change's ``before`` in it)."""

    def list_users(self, *, known: Mapping[str, SourceUser] | None = None) -> list[PlatformUser]:
        """The inner list, fingerprinted (``known`` as in :class:`~syncd.ports.PlatformPort`)."""
        users = self.inner.list_users(known=known)
        self.fingerprint = platform_fingerprint(users)
        self.listed = len(users)
        # A copy: the runner empties the list it plans from (it frees users as it goes).
        self.last = list(users)
        return users

    def insert(
        self,
        users: Sequence[PlatformUser],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Insert through the inner port."""
        return self.inner.insert(users, progress, outcome=outcome, distinct=distinct)

    def update(
        self,
        users: Sequence[PlatformUser],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Update through the inner port."""
        return self.inner.update(users, progress, outcome=outcome, distinct=distinct)

    def delete(
        self,
        end_users: Sequence[str],
        progress: ProgressCallback | None = None,
        *,
        outcome: WriteOutcome | None = None,
        distinct: bool = False,
    ) -> WriteOutcome:
        """Delete through the inner port."""
        return self.inner.delete(end_users, progress, outcome=outcome, distinct=distinct)

    def cancel(self) -> None:
        """Cancel the inner client, if it can be (a lost job lock)."""
        cancel = getattr(self.inner, "cancel", None)
        if cancel is not None:
            cancel()


# ------------------------------------------------------------------ build and read


def _plan_user(user: PlatformUser) -> PlanUser:
    return PlanUser(
        user.end_user,
        dict(user.tags),
        user.active_from.isoformat(),
        user.active_to.isoformat() if user.active_to is not None else None,
    )


def _platform_user(user: PlanUser) -> PlatformUser:
    return PlatformUser(
        user.end_user,
        make_tags(user.tags),
        date.fromisoformat(user.active_from),
        date.fromisoformat(user.active_to) if user.active_to is not None else None,
    )


def build_plan_file(
    *,
    job: str,
    plan: Plan,
    verdict: Verdict,
    config_fingerprint: str,
    platform_fingerprint: str,
    platform_users: int,
    created_at: datetime,
    today: date,
) -> PlanFile:
    """The plan file of a computed plan (every change, in the plan's order)."""
    guard = PlanGuard(verdict.held, list(verdict.reasons), list(verdict.overridden))
    changes = [
        PlanChange(
            change.kind,
            _plan_user(change.user),
            _plan_user(change.before) if change.before is not None else None,
            change.reason,
        )
        for change in plan.changes()
    ]
    guard_sha256, changes_sha256 = content_digests(guard, changes)
    return PlanFile(
        format=PLAN_FORMAT,
        syncd_version=__version__,
        job=job,
        created_at=created_at.astimezone(UTC),
        today=today,
        config_fingerprint=config_fingerprint,
        platform_fingerprint=platform_fingerprint,
        platform_users=platform_users,
        active_managed=plan.active_managed,
        counts=plan.counts(),
        guard=guard,
        guard_sha256=guard_sha256,
        changes_sha256=changes_sha256,
        changes=changes,
    )


def encode_plan_file(plan_file: PlanFile) -> bytes:
    """The file's bytes: JSON, one document."""
    return msgspec.json.format(msgspec.json.encode(plan_file), indent=1) + b"\n"


def load_plan_file(path: Path) -> PlanFile:
    """Read a plan file; a ConfigError naming the file when it is not one."""
    try:
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            raise ConfigError(f"plan file {path}: {size} bytes is too large for a plan file")
        content = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"plan file {path}: cannot read it: {error.strerror}") from None
    try:
        header = msgspec.json.decode(content, type=_Header)
    except msgspec.DecodeError as error:
        raise ConfigError(f"plan file {path}: not a syncd plan file ({error})") from None
    if header.format != PLAN_FORMAT:
        raise ConfigError(
            f"plan file {path}: format {header.format!r}, this syncd reads {PLAN_FORMAT!r}"
        )
    try:
        plan_file = msgspec.json.decode(content, type=PlanFile)
    except msgspec.DecodeError as error:
        raise ConfigError(f"plan file {path}: invalid: {error}") from None
    problems = validate_plan_file(plan_file)
    if problems:
        raise ConfigError(f"plan file {path}: invalid: " + "; ".join(problems))
    return plan_file


def validate_plan_file(plan_file: PlanFile) -> list[str]:
    """What makes a decoded plan file unusable (empty: none), each naming its entry:
    dates that are not ISO dates, a user listed twice, a ``before`` missing where the
    kind needs one (or present on an insert), counts that are not counts."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, change in enumerate(plan_file.changes):
        where = f"changes[{index}] ({change.kind.value} {change.user.end_user!r})"
        for label, planned in (("user", change.user), ("before", change.before)):
            if planned is None:
                continue
            for field in ("active_from", "active_to"):
                value = getattr(planned, field)
                if value is None:
                    continue
                try:
                    date.fromisoformat(value)
                except ValueError:
                    problems.append(f"{where}: {label}.{field} {value!r} is not a date")
        if not change.user.end_user.strip():
            problems.append(f"{where}: the end_user is empty")
        if change.kind is ChangeKind.INSERT:
            if change.before is not None:
                problems.append(f"{where}: an insert has no user before it")
        elif change.before is None:
            problems.append(f"{where}: a {change.kind.value} needs the user before it")
        elif change.before.end_user != change.user.end_user:
            problems.append(
                f"{where}: the user before is {change.before.end_user!r}, another end_user"
            )
        first = seen.setdefault(change.user.end_user, index)
        if first != index:
            problems.append(f"{where}: the end_user is listed twice (first in changes[{first}])")
    if plan_file.active_managed < 0 or plan_file.platform_users < 0:
        problems.append("active_managed and platform_users must be >= 0")
    for name, count in plan_file.counts.items():
        if count < 0:
            problems.append(f"counts.{name}: {count} is not a count")
    return problems


SIGNING_KEY_FILE = "plan-signing.key"
"""In ``state_dir``: the key plan files are signed with (mode 0600, never printed)."""
_KEY_BYTES = 32


def signing_key(state_dir: Path, *, create: bool) -> bytes | None:
    """The state directory's plan signing key; with ``create``, made if missing.

    32 random bytes, hex, in a 0600 file next to the state database: a plan file can
    be applied only with the state directory it was planned with. None when missing
    and not ``create``; ConfigError naming the file when unreadable.
    """
    path = state_dir / SIGNING_KEY_FILE
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        if not create:
            return None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the plan signing key {path}: {error}") from None
    else:
        if len(key) < _KEY_BYTES:
            # An empty or cut file (a crash while it was written) would be a key anyone
            # knows: refuse it rather than sign or check with it.
            raise ConfigError(
                f"the plan signing key {path} is damaged ({len(key)} bytes): delete it; "
                "plan files signed with it can then no longer be applied"
            )
        return key
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return signing_key(state_dir, create=False)  # another plan made it just now
    except OSError as error:
        raise ConfigError(f"cannot create the plan signing key {path}: {error}") from None
    key = secrets.token_bytes(_KEY_BYTES)
    with os.fdopen(descriptor, "w", encoding="ascii") as sink:
        sink.write(key.hex())
    return key


def sign(plan_file: PlanFile, key: bytes) -> PlanFile:
    """``plan_file`` with its :attr:`PlanFile.signature` set."""
    return msgspec.structs.replace(plan_file, signature=_signature(plan_file, key))


def _signature(plan_file: PlanFile, key: bytes) -> str:
    unsigned = msgspec.json.encode(msgspec.structs.replace(plan_file, signature=""), order="sorted")
    return "hmac-sha256:" + hmac.new(key, unsigned, hashlib.sha256).hexdigest()


def check_signature(plan_file: PlanFile, key: bytes | None, state_dir: Path) -> list[str]:
    """Empty if ``plan_file`` was signed with this state directory's key."""
    if key is None:
        return [
            f"there is no plan signing key in {state_dir}: a plan file can only be "
            "applied with the state directory it was made with"
        ]
    if not hmac.compare_digest(plan_file.signature, _signature(plan_file, key)):
        return [
            "the plan file's signature does not match: it was modified after it was "
            "written, or made with another state directory: make a new plan"
        ]
    return []


def check_integrity(plan_file: PlanFile) -> list[str]:
    """Empty if the changes and the verdict are those ``plan --out`` wrote."""
    guard_sha256, changes_sha256 = content_digests(plan_file.guard, plan_file.changes)
    edited = [
        what
        for what, written, now in (
            ("its changes", plan_file.changes_sha256, changes_sha256),
            ("the guard's verdict", plan_file.guard_sha256, guard_sha256),
        )
        if written != now
    ]
    if not edited:
        return []
    return [
        f"the plan file was modified after it was written ({' and '.join(edited)} do not "
        "match the SHA-256 written with them): make a new plan"
    ]


class _Header(msgspec.Struct):
    format: str = ""


def plan_from_file(plan_file: PlanFile) -> Plan:
    """The plan the file lists, as the runner applies it."""
    by_kind: dict[ChangeKind, list[Change]] = {kind: [] for kind in ChangeKind}
    for change in plan_file.changes:
        before = _platform_user(change.before) if change.before is not None else None
        by_kind[change.kind].append(
            Change(change.kind, _platform_user(change.user), before, change.reason)
        )
    counts = plan_file.counts
    return Plan(
        inserts=tuple(by_kind[ChangeKind.INSERT]),
        updates=tuple(by_kind[ChangeKind.UPDATE]),
        ends=tuple(by_kind[ChangeKind.END]),
        reactivations=tuple(by_kind[ChangeKind.REACTIVATE]),
        deletes=tuple(by_kind[ChangeKind.DELETE]),
        unchanged=counts.get("unchanged", 0),
        skipped_disabled=counts.get("skipped_disabled", 0),
        untouched_missing=counts.get("untouched_missing", 0),
        protected=counts.get("protected", 0),
        active_managed=plan_file.active_managed,
        active_removals=sum(
            1
            for change in (*by_kind[ChangeKind.END], *by_kind[ChangeKind.DELETE])
            if change.before is not None
            and (change.before.active_to is None or change.before.active_to > plan_file.today)
        ),
    )


# ------------------------------------------------------------------------- checks


def parse_max_age(text: str) -> timedelta:
    """``24h``, ``90m``, ``2d`` or ``3600s`` (a ConfigError otherwise)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = text[:-1], text[-1:].lower()
    if unit not in units or not value.isdigit() or int(value) == 0:
        raise ConfigError(f"--max-age {text!r}: expected a number and s, m, h or d, e.g. 24h")
    return timedelta(seconds=int(value) * units[unit])


def check_plan_file(
    plan_file: PlanFile,
    *,
    job: str,
    config_fingerprint: str,
    platform_fingerprint: str,
    platform_users: int,
    now: datetime,
    max_age: timedelta,
) -> list[str]:
    """What moved since the plan was made; empty when it may be applied as it is."""
    problems: list[str] = []
    if plan_file.job != job:
        problems.append(f"the plan is for job {plan_file.job!r}, not {job!r}")
    age = now - plan_file.created_at
    if age > max_age:
        problems.append(
            f"the plan was made {_duration(age)} ago ({plan_file.created_at:%Y-%m-%d %H:%M} "
            f"UTC), more than --max-age {_duration(max_age)}: make a new plan"
        )
    elif age < -timedelta(minutes=5):
        problems.append(f"the plan is dated {_duration(-age)} in the future: check the clock")
    if plan_file.config_fingerprint != config_fingerprint:
        problems.append(
            "the job's config changed since the plan was made (mapping, policy, guard or "
            "target): make a new plan"
        )
    if plan_file.platform_fingerprint != platform_fingerprint:
        problems.append(
            f"the platform list changed since the plan was made ({plan_file.platform_users} "
            f"users then, {platform_users} now): make a new plan"
        )
    return problems


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h".replace(".0h", "h")
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"
