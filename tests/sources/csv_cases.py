"""What the CSV source's tests share: the mapping of their files, and forks counted by
a process that reads as a single-threaded one would (it may fork its reader)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from syncd import forking
from syncd.sources.csv import CsvSourceConfig, parts

HEADER = "email,Department,Country,start_date,end_date,enabled"


def config(path: Path, **overrides: Any) -> CsvSourceConfig:
    """A source of ``path`` mapping every column of :data:`HEADER`."""
    values: dict[str, Any] = {
        "type": "csv",
        "path": path,
        "id_column": "email",
        "tags": {"department": "Department", "country": "Country"},
        "active_from_column": "start_date",
        "active_to_column": "end_date",
        "enabled_column": "enabled",
    }
    return CsvSourceConfig.model_validate(values | overrides)


def count_forks(monkeypatch: pytest.MonkeyPatch, forks: list[int]) -> None:
    """Append the pid of each reader the CSV source forks to ``forks``; the process
    counts as one thread on two CPUs, so it forks (an idle thread another test left,
    or Arrow's pool after a read by columns here, would rule the fork out)."""
    monkeypatch.setattr(forking.threading, "active_count", lambda: 1)
    monkeypatch.setattr(forking, "os_thread_count", lambda: 1)
    monkeypatch.setattr(parts, "usable_cpus", lambda: 2.0)
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(parts.os, "fork", fork)
    forks.clear()
