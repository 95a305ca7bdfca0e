"""The fault campaign (bench/fault_campaign.py), short: ~50 seeded schedules.

The long run (>= 1,000 schedules) is ``python bench/fault_campaign.py``; its figures
are in bench/RESULTS.md.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from syncd.ports import WriteFailure
from syncd.runner import JobRunner, RunResult, RunStatus
from tests.bench_modules import load_bench_module


@pytest.fixture(scope="module")
def campaign() -> ModuleType:
    return load_bench_module("fault_campaign")


def test_fifty_schedules_break_no_invariant(campaign: ModuleType) -> None:
    totals = campaign.run_campaign(seed=7, schedules=50, kill_every=25)
    assert [str(violation) for violation in totals.violations] == []
    assert totals.schedules == 50
    assert totals.runs >= 150
    # Every kind of fault was injected, the kills included, and some writes were only
    # known to be applied because the platform was re-read.
    assert set(totals.faults) == set(campaign.FAULT_KINDS)
    assert totals.faults["kill"] == 2
    # Counted from the emulator's fault counters: every kind fired in some run, and
    # never in more runs than it was set up for.
    assert all(totals.faults_fired[kind] > 0 for kind in campaign.FAULT_KINDS)
    assert all(totals.faults_fired[kind] <= totals.faults[kind] for kind in totals.faults)
    assert totals.settled_applied > 0
    assert set(totals.converged_after) <= {1, 2}
    assert sum(totals.converged_after.values()) == 50


def test_a_schedule_is_replayed_from_its_seed(campaign: ModuleType) -> None:
    first = campaign.run_campaign(seed=11, schedules=1, only=4, kill_every=0)
    again = campaign.run_campaign(seed=11, schedules=1, only=4, kill_every=0)
    assert first.faults == again.faults
    assert first.runs == again.runs
    assert first.violations == again.violations == []


def test_the_campaign_catches_failures_reported_for_writes_that_happened(
    campaign: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that takes every unconfirmed user for a failure (as syncd 0.1 did):
    # then a write applied before its connection dropped is reported as failed, and
    # the campaign must see it, and say how to replay it.
    monkeypatch.setattr("syncd.platform.client.UncertainFailure", WriteFailure)
    totals = campaign.run_campaign(seed=7, schedules=8, kill_every=0)
    broken = [v for v in totals.violations if v.invariant == "reported failed, but held"]
    assert broken
    assert f"--replay {broken[0].schedule}" in str(broken[0])


# The checker's own tests: a deliberately broken runner must be caught. Each mutant
# is one the campaign once missed.


def _invariants(totals: object) -> set[str]:
    return {violation.invariant for violation in totals.violations}  # type: ignore[attr-defined]


def test_the_campaign_catches_a_runner_that_never_re_reads(
    campaign: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Writes in doubt stay "may have been applied" although the platform could say.
    monkeypatch.setattr(JobRunner, "_settle", lambda self, plan, result: None)
    totals = campaign.run_campaign(seed=7, schedules=8, kill_every=0)
    assert "doubt left after the re-read" in _invariants(totals)


def test_the_campaign_catches_a_recovered_run_reported_as_failed(
    campaign: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The re-read found every write applied, yet the run says it failed.
    status = JobRunner._status

    def failed_after_all(self: JobRunner, plan: object, result: object, error: object) -> object:
        outcome = status(self, plan, result, error)  # type: ignore[arg-type]
        return RunStatus.FAILED if error is not None else outcome

    monkeypatch.setattr(JobRunner, "_status", failed_after_all)
    totals = campaign.run_campaign(seed=7, schedules=8, kill_every=0)
    assert "failed run holds its whole plan" in _invariants(totals)


def test_the_campaign_catches_an_audit_log_missing_settled_users(
    campaign: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Users the re-read found applied are left out of the audit journal.
    settle_outcomes = JobRunner._settle_outcomes

    def settled_but_not_audited(
        self: JobRunner, plan: object, result: RunResult, *args: object
    ) -> None:
        audit, result.audit = result.audit, None
        try:
            settle_outcomes(self, plan, result, *args)  # type: ignore[arg-type]
        finally:
            result.audit = audit

    monkeypatch.setattr(JobRunner, "_settle_outcomes", settled_but_not_audited)
    totals = campaign.run_campaign(seed=7, schedules=8, kill_every=0)
    assert "confirmed, not audited" in _invariants(totals)
