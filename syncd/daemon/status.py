"""What the daemon remembers about each job, and the documents it serves (pure).

A :class:`RunSummary` is cut from a :class:`~syncd.service.JobReport` as soon as the
run ends: counts, redacted reasons and timings only. The report itself (which holds the
desired users and the plan, hundreds of MB at a million users) is dropped, so nothing
grows from run to run.

The HTTP side shows **no user id**: guard reasons list example records and users, and
error messages may quote a user; :func:`redact` removes both, keeping the counts.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from syncd.ports import RUN_INTERRUPTED, RUN_RUNNING, RunRecord
from syncd.service import JobReport

__all__ = ["JobState", "RunSummary", "apply_command", "history_rows", "redact", "status_document"]

# "12 source record(s) could not be used: a; b; ...; and 2 more (note)": the guard's
# listing shape (see syncd.guard._listed). The items name records and users.
_LISTING = re.compile(r"^(?P<head>\d+ [^:]+): .*?(?P<note> \([^()]*\))?$")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_EMAIL = re.compile(r"[^\s;,:'\"()<>]+@[^\s;,:'\"()<>]+")
# An LDAP distinguished name (uid=jdoe,ou=people,dc=corp): its first part names a user.
_DN = re.compile(r"\b(?:[A-Za-z][\w-]*=[^,;\s]+,)+[A-Za-z][\w-]*=[^,;\s]+")


def redact(text: str) -> str:
    """``text`` without user ids: listings cut to their count; quotes, addresses and
    distinguished names masked."""
    match = _LISTING.match(text)
    if match is not None:
        text = match.group("head") + (match.group("note") or "")
    text = _QUOTED.sub("'…'", text)
    text = _DN.sub("<dn>", text)
    return _EMAIL.sub("<user>", text)


def apply_command(config_path: Path, job: str, report: JobReport) -> str | None:
    """The ``syncd apply`` an operator runs to accept a held plan, if one can pass it."""
    planned = report.planned
    if not report.held or planned is None or planned.plan is None:
        return None  # a failed source read cannot be forced: there is nothing to apply
    options = planned.verdict.options  # what the guard says passes this hold, exactly
    if not options:
        return None
    base = f"syncd apply -c {shlex.quote(str(config_path))} --job {shlex.quote(job)}"
    return " ".join([base, *(shlex.quote(option) for option in options)])


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One finished run, reduced to what the endpoints show (no user id)."""

    status: str
    exit_code: int
    run_id: str | None
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]
    source_users: dict[str, int]
    platform_users: int | None
    confirmed: dict[str, int]
    write_calls: int
    failures: int
    reasons: tuple[str, ...]
    error: str | None
    command: str | None

    @property
    def duration_s(self) -> float:
        """Wall time of the run."""
        return (self.finished_at - self.started_at).total_seconds()

    @classmethod
    def from_report(
        cls,
        report: JobReport,
        *,
        started_at: datetime,
        finished_at: datetime,
        config_path: Path,
    ) -> RunSummary:
        """Cut the summary from ``report`` (which the caller then drops)."""
        planned = report.planned
        sources: dict[str, int] = {}
        platform_users: int | None = None
        if planned is not None:
            sources = {
                source.label: source.users
                for source in planned.desired.sources
                if source.error is None
            }
            platform_users = planned.current_users if planned.plan is not None else None
        confirmed: dict[str, int] = {}
        if report.result is not None:
            for outcome in report.result.outcomes:
                name = outcome.operation.value
                confirmed[name] = confirmed.get(name, 0) + len(outcome.confirmed)
        return cls(
            status=str(report.status.value),
            exit_code=int(report.exit_code),
            run_id=report.run_id,
            started_at=started_at,
            finished_at=finished_at,
            counts=dict(report.counts),
            source_users=sources,
            platform_users=platform_users,
            confirmed=confirmed,
            write_calls=report.write_calls,
            failures=len(report.failures),
            reasons=tuple(redact(reason) for reason in report.guard_reasons),
            error=redact(report.error) if report.error else None,
            command=apply_command(config_path, report.job, report),
        )

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON data."""
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "counts": self.counts,
            "source_users": self.source_users,
            "platform_users": self.platform_users,
            "confirmed": self.confirmed,
            "write_calls": self.write_calls,
            "failures": self.failures,
            "reasons": list(self.reasons),
            "error": self.error,
            "apply_command": self.command,
        }


@dataclass(slots=True)
class JobState:
    """The daemon's live view of one job (mutated under the daemon's lock)."""

    name: str
    schedule: str
    running_since: datetime | None = None
    next_run: datetime | None = None
    last: RunSummary | None = None
    runs: int = 0
    held_cycles: int = 0
    """Consecutive runs held by the guard (0 once a run passes)."""
    by_status: dict[str, int] = field(default_factory=dict)

    def finished(self, summary: RunSummary) -> None:
        """Take in a finished run (keeps only this one: constant memory)."""
        self.last = summary
        self.runs += 1
        self.by_status[summary.status] = self.by_status.get(summary.status, 0) + 1
        if summary.status == "held":
            self.held_cycles += 1
        elif summary.status != "busy":
            # A run skipped because the job ran elsewhere says nothing about the hold.
            self.held_cycles = 0

    def to_json(self) -> dict[str, Any]:
        """The job's state as JSON data."""
        return {
            "name": self.name,
            "schedule": self.schedule,
            "running": self.running_since is not None,
            "running_since": self.running_since.isoformat() if self.running_since else None,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "runs": self.runs,
            "runs_by_status": dict(self.by_status),
            "held_cycles": self.held_cycles,
            "last_run": self.last.to_json() if self.last is not None else None,
        }


def status_document(
    jobs: list[JobState], *, version: str, started_at: datetime, now: datetime
) -> dict[str, Any]:
    """The ``/status`` document."""
    return {
        "version": version,
        "started_at": started_at.isoformat(),
        "now": now.isoformat(),
        "jobs": [job.to_json() for job in jobs],
    }


_HISTORY_COUNTS = ("insert", "update", "reactivate", "end", "delete")


def history_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Recorded runs reduced to counts for the page (their reasons may name users)."""
    rows = []
    for record in records:
        summary = record.summary
        rows.append(
            {
                "run_id": record.run_id,
                "started_at": record.started_at,
                # A run still writing, or whose process died, has no duration yet.
                "duration_s": None
                if record.status in (RUN_RUNNING, RUN_INTERRUPTED)
                else (record.finished_at - record.started_at).total_seconds(),
                "status": record.status,
                "counts": {
                    name: int(value)
                    for name in _HISTORY_COUNTS
                    if isinstance(value := summary.get(name), int)
                },
                "write_calls": summary.get("write_calls", 0),
                "failures": summary.get("failures", 0),
            }
        )
    return rows
