"""Wiring: build the adapters a job needs from its configuration."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date

import httpx

from syncd.config import JobConfig, SourceConfig, SyncdConfig
from syncd.platform.client import PlatformClient
from syncd.runner import JobRunner, Progress, today_utc
from syncd.sources import Source
from syncd.sources.csv import CsvSource
from syncd.state import SqliteStateStore


def build_source(config: SourceConfig, *, lowercase: bool) -> Source:
    """The source adapter for one ``sources:`` entry."""
    return CsvSource(config, lowercase=lowercase)


@contextmanager
def open_job(
    config: SyncdConfig,
    job: JobConfig,
    *,
    progress: Progress | None = None,
    today: Callable[[], date] = today_utc,
    transport: httpx.BaseTransport | None = None,
) -> Iterator[JobRunner]:
    """A runner for ``job`` whose platform client is closed when the block ends."""
    target = job.target
    client = PlatformClient(
        base_url=target.url,
        api_key=target.secret(),
        flavour=target.api,
        batch_size=target.batch_size,
        timeout_s=target.timeout_s,
        max_retries=target.max_retries,
        concurrency=target.concurrency,
        transport=transport,
    )
    with client:
        yield JobRunner(
            job,
            sources=[
                build_source(source, lowercase=job.identity.lowercase) for source in job.sources
            ],
            platform=client,
            state=SqliteStateStore(config.state_dir),
            today=today,
            progress=progress,
        )
