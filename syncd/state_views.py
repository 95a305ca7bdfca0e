"""What ``syncd history`` and ``syncd audit`` show, as pure functions of the records.

Run records and audit entries in, JSON-ready data and one-line descriptions out; no
I/O, so the commands in :mod:`syncd.cli_state` stay thin and these are tested alone.
"""

from __future__ import annotations

from typing import Any

from syncd.config import SyncdConfig
from syncd.mapping import normalize_end_user
from syncd.plan import Plan, diff_users
from syncd.ports import RUN_INTERRUPTED, RUN_RUNNING, AuditEntry, RunRecord
from syncd.state_codec import user_to_json

NO_RUNS = "no runs recorded yet"

_COUNT_KEYS = tuple(Plan().counts())
"""The plan counts a run's summary carries (insert, update, ..., unchanged, ...)."""


def run_to_json(record: RunRecord) -> dict[str, Any]:
    """One recorded run as JSON-ready data: status, counts, error, guard reasons, times."""
    summary = record.summary
    counts = {key: summary[key] for key in _COUNT_KEYS if isinstance(summary.get(key), int)}
    reasons = summary.get("held_because")
    overridden = summary.get("overridden")
    return {
        "run_id": record.run_id,
        "job": record.job,
        "status": record.status,
        "started_at": record.started_at.isoformat(),
        # A run still writing, or whose process died, has no end yet.
        "finished_at": (
            None
            if record.status in (RUN_RUNNING, RUN_INTERRUPTED)
            else record.finished_at.isoformat()
        ),
        "counts": counts,
        "source_users": summary.get("source_users"),
        "platform_users": summary.get("platform_users"),
        "write_calls": summary.get("write_calls", 0),
        "failures": summary.get("failures", 0),
        "error": summary.get("error"),
        "guard_reasons": list(reasons) if isinstance(reasons, list) else [],
        # Set when the run applied a reviewed plan file (`apply --plan`), with the
        # guard reasons that applying it approved.
        "approved_from_plan": summary.get("approved_from_plan"),
        # What the re-read after writes in doubt found (checked, applied, not_applied,
        # unverified), when there were any.
        "settled": summary.get("settled"),
        "overridden": list(overridden) if isinstance(overridden, list) else [],
    }


def run_note(run: dict[str, Any]) -> str:
    """The note column of ``syncd history``, from :func:`run_to_json`'s data: failures,
    the plan file a run applied and what it approved, the error or the hold's reasons."""
    parts = []
    if run["failures"]:
        parts.append(f"{run['failures']} not confirmed.")
    if run["approved_from_plan"]:
        approved = "; ".join(run["overridden"])
        parts.append(
            f"applied plan file {run['approved_from_plan']}"
            + (f", approving: {approved}." if approved else ".")
        )
    settled = run.get("settled")
    if isinstance(settled, dict) and settled.get("checked"):
        found = ", ".join(
            f"{settled.get(key, 0)} {key.replace('_', ' ')}"
            for key in ("applied", "not_applied", "unverified")
        )
        parts.append(f"{settled['checked']} writes in doubt re-read: {found}.")
    reason = run["error"] or "; ".join(run["guard_reasons"])
    if reason:
        parts.append(reason)
    return " ".join(parts)


def audit_to_json(entry: AuditEntry) -> dict[str, Any]:
    """One audit row as JSON-ready data, users in their wire form."""
    return {
        "at": entry.at.isoformat(),
        "job": entry.job,
        "run_id": entry.run_id,
        "end_user": entry.end_user,
        "operation": entry.operation,
        "before": user_to_json(entry.before),
        "after": user_to_json(entry.after),
    }


def describe_change(entry: AuditEntry) -> str:
    """A change in one line: ``tags.department: Eng → Sales; active_to: ∅ → 2026-11-22``."""
    if entry.after is None:
        return "deleted"
    parts = [
        f"{item.name}: {'∅' if item.before is None else item.before} → "
        f"{'∅' if item.after is None else item.after}"
        for item in diff_users(entry.before, entry.after)
    ]
    return "; ".join(parts) or "no field changed"


def audit_keys(config: SyncdConfig, address: str, job: str | None) -> set[str]:
    """The stored end_user(s) ``address`` stands for: normalised like each job's
    end_users (``identity.lowercase`` may differ between jobs)."""
    return {
        normalize_end_user(address, lowercase=selected.identity.lowercase)
        for selected in config.job(job)
    }
