"""One activation report: platform users (eligible) x analytics activity (active).

:func:`build_report` is what ``syncd report activation`` calls, and what tests call: it
reads the job target's platform users through the
:class:`~syncd.ports.PlatformPort` (a GET only: the report never writes to the
platform), reads activity through an :class:`~syncd.ports.ActivitySource` (the
analytics client, with its cache and budget in the state folder's
:class:`~syncd.ports.ApiLedger`), and computes the numbers with the pure
:func:`~syncd.report.compute.compute_report`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import structlog

from syncd.config import JobConfig, SyncdConfig
from syncd.errors import ConfigError
from syncd.mapping import normalize_end_user
from syncd.platform.client import PlatformClient
from syncd.ports import ActivitySource, ApiLedger, PlatformPort
from syncd.report.client import Activity, AnalyticsClient, Waiter
from syncd.report.compute import (
    ActivationReport,
    EligibleUser,
    Granularity,
    bit_mapper,
    compute_report,
    make_periods,
    period_index,
)
from syncd.report.identity import Resolver, make_resolver
from syncd.state import SqliteStateStore
from syncd.state_http_cache import SqliteApiLedger

__all__ = ["ReportRequest", "build_report", "eligible_users", "report_masks"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What ``syncd report activation`` was asked for."""

    start: date
    end: date
    granularity: Granularity = Granularity.MONTHLY
    by: tuple[str, ...] = ()
    job: str | None = None


def select_job(config: SyncdConfig, name: str | None) -> JobConfig:
    """The job whose target holds the platform users; ``--job`` is needed with several."""
    if name is None and len(config.jobs) > 1:
        names = ", ".join(job.name for job in config.jobs)
        raise ConfigError(f"the config has several jobs ({names}): choose one with --job")
    return config.job(name)[0]


def eligible_users(platform: PlatformPort, *, lowercase: bool) -> list[EligibleUser]:
    """The platform's users with normalised ids (one GET; nothing is written).

    Entries whose names normalise alike keep their own ranges here; the report unites
    them (:func:`~syncd.report.compute.eligible_masks`).
    """
    users: list[EligibleUser] = []
    for user in platform.list_users():
        try:
            name = normalize_end_user(user.end_user, lowercase=lowercase)
        except ValueError:
            continue  # a blank end_user cannot be matched with any activity
        users.append(EligibleUser(name, user.active_from, user.active_to, user.tags))
    return users


def report_masks(
    activity: Activity, start: date, end: date, granularity: Granularity, resolve: Resolver
) -> dict[str, int]:
    """Activity as bit masks over the report's periods, by resolved user id.

    Buckets outside the report's range are dropped; ids that resolve alike are united.
    """
    index = period_index(make_periods(start, end, granularity))
    targets = [index.get(label, -1) for label in activity.labels]
    dropped = targets.count(-1)
    if dropped:
        log.warning("analytics.buckets_outside_range", buckets=dropped)
    move = bit_mapper(targets)
    masks: dict[str, int] = {}
    for user_id, mask in activity.users.items():
        user = resolve(user_id)
        if user is None:
            continue
        bits = move(mask)
        if bits:
            masks[user] = masks.get(user, 0) | bits
    return masks


def build_report(
    config: SyncdConfig,
    request: ReportRequest,
    *,
    platform: PlatformPort | None = None,
    activity: ActivitySource | None = None,
    ledger: ApiLedger | None = None,
    waiter: Waiter | None = None,
    stop: threading.Event | None = None,
) -> ActivationReport:
    """Build the activation report; adapters not given are made from ``config``.

    ``waiter`` (``--wait``) waits for the budget; without it a spent budget raises
    :class:`~syncd.report.errors.BudgetExhaustedError` at once.
    """
    if request.end < request.start:
        raise ConfigError(f"--to {request.end} is before --from {request.start}")
    job = select_job(config, request.job)
    analytics = config.analytics
    if analytics is None and activity is None:
        raise ConfigError(
            "the config has no 'analytics' section: add analytics.service_key (or "
            "service_key_file) to read who was active"
        )
    lowercase = job.identity.lowercase
    resolve = make_resolver(analytics.identity if analytics else "end_user", lowercase=lowercase)
    with _platform(job, platform) as port:
        eligible = eligible_users(port, lowercase=lowercase)
    with _activity(config, activity, ledger, waiter, stop) as source:
        fetched = source.fetch(request.start, request.end, request.granularity)
    masks = report_masks(fetched, request.start, request.end, request.granularity, resolve)
    log.info(
        "report.built",
        eligible=len(eligible),
        active_ids=len(masks),
        queries=fetched.queries,
        cached=fetched.cached,
    )
    return compute_report(
        start=request.start,
        end=request.end,
        granularity=request.granularity,
        eligible=eligible,
        activity=masks,
        by=request.by,
        data_freshness=fetched.freshness,
    )


@contextmanager
def _platform(job: JobConfig, given: PlatformPort | None) -> Iterator[PlatformPort]:
    if given is not None:
        yield given
        return
    target = job.target
    with PlatformClient(
        base_url=target.url,
        api_key=target.secret(),
        flavour=target.api,
        timeout_s=target.timeout_s,
        max_retries=target.max_retries,
    ) as client:
        yield client


@contextmanager
def _activity(
    config: SyncdConfig,
    given: ActivitySource | None,
    ledger: ApiLedger | None,
    waiter: Waiter | None,
    stop: threading.Event | None,
) -> Iterator[ActivitySource]:
    if given is not None:
        yield given
        return
    analytics = config.analytics
    assert analytics is not None  # checked by build_report
    if ledger is None:
        ledger = SqliteApiLedger(SqliteStateStore(config.state_dir))
    with AnalyticsClient(
        base_url=analytics.base_url,
        service_key=analytics.secret(),
        ledger=ledger,
        product=analytics.product,
        cache_ttl=analytics.cache_ttl_delta,
        rate_limit=analytics.rate_limit,
        rate_window=analytics.rate_window_delta,
        timeout_s=analytics.timeout_s,
        waiter=waiter,
        stop=stop,
    ) as client:
        yield client


def groups_of(by: Sequence[str]) -> tuple[str, ...]:
    """``--by`` values without repeats, in the order given."""
    return tuple(dict.fromkeys(tag.strip() for tag in by if tag.strip()))
