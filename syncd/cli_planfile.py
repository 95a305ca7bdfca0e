"""``syncd plan --out FILE`` and ``syncd apply --plan FILE``: review, then apply that plan.

The file format and its checks are :mod:`syncd.planfile`; this module runs them over
the job's resources (platform client, state store, job lock) and renders the result.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import structlog
from rich.console import Console

from syncd.cli_options import OutputFormat
from syncd.config import JobConfig, SyncdConfig
from syncd.errors import ConfigError, SyncdError
from syncd.exitcodes import ExitCode, RunStatus, exit_code_for
from syncd.files import write_atomically
from syncd.guard import GuardHistory, Override, Verdict
from syncd.identity import identity_rule_changes, identity_rules
from syncd.locking import busy_message, job_lock, process_holder
from syncd.mapping import normalize_end_user
from syncd.merge import DesiredUsers
from syncd.plan import PlanPolicy
from syncd.planfile import (
    FingerprintingPlatform,
    PlanFile,
    build_plan_file,
    check_integrity,
    check_plan_file,
    check_signature,
    encode_plan_file,
    job_fingerprint,
    load_plan_file,
    parse_max_age,
    plan_from_file,
    sign,
    signing_key,
)
from syncd.planfile_checks import (
    new_guard_reasons,
    platform_problems,
    protected_problems,
)
from syncd.ports import Progress, StateStore
from syncd.render import render_planned, render_result, report_to_json
from syncd.runner import JobRunner, platform_identity, today_utc
from syncd.runs import PlannedRun, new_run_id
from syncd.service import JobReport, open_resources, run_job

log = structlog.get_logger(__name__)


def _print_json(report: JobReport, extra: dict[str, object]) -> None:
    document = {"jobs": [{**report_to_json(report), **extra}]}
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _single_job(config: SyncdConfig, name: str | None) -> JobConfig:
    jobs = config.job(name)
    if len(jobs) != 1:
        names = ", ".join(job.name for job in jobs)
        raise ConfigError(f"a plan file holds one job's plan: choose one with --job ({names})")
    return jobs[0]


def write_plan(
    config: SyncdConfig,
    job_name: str | None,
    out: Path,
    *,
    output: OutputFormat,
    limit: int,
    console: Console,
    err: Console,
) -> ExitCode:
    """Plan one job and write its plan file (also a held plan: it can be approved)."""
    try:
        job = _single_job(config, job_name)
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    show: Callable[[PlannedRun], None] | None = None
    if output is OutputFormat.TABLE:

        def show(planned: PlannedRun) -> None:
            render_planned(console, planned, limit=limit)

    try:
        resources = open_resources(config, job)
    except SyncdError as error:
        err.print(f"[red]job {job.name} failed:[/red] {error}", highlight=False)
        return ExitCode.CONFIG if isinstance(error, ConfigError) else ExitCode.FAILED
    platform = FingerprintingPlatform(resources.platform)
    resources.platform = platform
    with resources:
        report = run_job(
            config, job, apply=False, override=Override(), resources=resources, on_planned=show
        )
    planned = report.planned
    if planned is None or planned.plan is None or platform.fingerprint is None:
        # Nothing to review (a failed read or listing): no file, the error says why.
        if output is OutputFormat.JSON:
            _print_json(report, {"plan_file": None})
        else:
            err.print(f"[red]job {job.name}: no plan written:[/red] {report.error or ''}")
            for reason in report.guard_reasons:
                err.print(f"  • {reason}", highlight=False)
        return report.exit_code if report.exit_code is not ExitCode.OK else ExitCode.FAILED
    plan_file = build_plan_file(
        job=job.name,
        plan=planned.plan,
        verdict=planned.verdict,
        config_fingerprint=job_fingerprint(job),
        platform_fingerprint=platform.fingerprint,
        platform_users=platform.listed,
        created_at=planned.started_at,
        today=today_utc(),
    )
    try:
        key = signing_key(config.state_dir, create=True)
    except ConfigError as error:
        err.print(f"[red]job {job.name}: {error}[/red]", highlight=False)
        return ExitCode.CONFIG
    assert key is not None  # create=True makes one
    plan_file = sign(plan_file, key)
    try:
        write_atomically(out, encode_plan_file(plan_file))
    except OSError as error:
        err.print(f"[red]cannot write the plan file {out}:[/red] {error.strerror}")
        return ExitCode.FAILED
    if output is OutputFormat.JSON:
        _print_json(report, {"plan_file": str(out)})
    else:
        held = " (held: applying the file approves exactly these changes)"
        console.print(
            f"plan written to {out}: {planned.plan.total_changes} changes"
            f"{held if planned.verdict.held else ''}; apply exactly this plan with "
            f"`syncd apply --job {job.name} --plan {out}`",
            highlight=False,
        )
    return report.exit_code


def apply_plan(
    config: SyncdConfig,
    job_name: str | None,
    plan_path: Path,
    *,
    max_age: str,
    output: OutputFormat,
    progress: Progress | None,
    console: Console,
    err: Console,
) -> ExitCode:
    """Apply exactly the changes of a plan file, unless something moved since."""
    try:
        age = parse_max_age(max_age)
        plan_file = load_plan_file(plan_path)
        (job,) = config.job(job_name or plan_file.job)
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    try:
        edited = check_integrity(plan_file) or check_signature(
            plan_file, signing_key(config.state_dir, create=False), config.state_dir
        )
    except ConfigError as error:
        err.print(f"[red]configuration error:[/red] {error}", highlight=False)
        return ExitCode.CONFIG
    if edited:
        # Before the lock and the listing: an edited file is refused as it is.
        message = f"plan file {plan_path} not applied: " + "; ".join(edited)
        log.error("planfile.refused", problems=edited)
        if output is OutputFormat.JSON:
            _print_json(
                _report_error(job, new_run_id(), RunStatus.FAILED, message, code=ExitCode.CONFIG),
                {"plan_file": str(plan_path)},
            )
        else:
            err.print(f"[red]job {job.name}: {message}[/red]", highlight=False)
        return ExitCode.CONFIG
    report = _apply_plan_file(config, job, plan_file, plan_path, max_age=age, progress=progress)
    if output is OutputFormat.JSON:
        _print_json(report, {"plan_file": str(plan_path)})
    elif report.result is not None:
        render_result(console, report.result)
    else:
        err.print(f"[red]job {job.name}: {report.error}[/red]", highlight=False)
    return report.exit_code


def _apply_plan_file(
    config: SyncdConfig,
    job: JobConfig,
    plan_file: PlanFile,
    plan_path: Path,
    *,
    max_age: timedelta,
    progress: Progress | None,
) -> JobReport:
    run_id = new_run_id()
    with structlog.contextvars.bound_contextvars(job=job.name, run_id=run_id):
        try:
            with ExitStack() as stack:
                resources = stack.enter_context(open_resources(config, job))
                platform = FingerprintingPlatform(resources.platform)
                held = stack.enter_context(
                    job_lock(
                        resources.state,
                        job.name,
                        run_id,
                        holder=process_holder(),
                        on_lost=platform.cancel,
                    )
                )
                if held.run_id != run_id:
                    message = busy_message(held, datetime.now(UTC))
                    return _report_error(job, run_id, RunStatus.BUSY, message)
                started_at = datetime.now(UTC)
                platform.list_users()
                assert platform.fingerprint is not None
                problems = check_plan_file(
                    plan_file,
                    job=job.name,
                    config_fingerprint=job_fingerprint(job),
                    platform_fingerprint=platform.fingerprint,
                    platform_users=platform.listed,
                    now=started_at,
                    max_age=max_age,
                )
                planned = _planned_from_file(job, plan_file, resources.state, run_id, started_at)
                planned.plan_file = str(plan_path)
                if not problems:
                    # The fingerprints match; now what the file says is checked against
                    # the config, the platform and the guard (an editor can recompute
                    # the file's own SHA-256).
                    problems = _distrust_file(job, plan_file, planned, platform, resources.state)
                if problems:
                    message = f"plan file {plan_path} not applied: " + "; ".join(problems)
                    log.error("planfile.refused", problems=problems)
                    return _report_error(
                        job, run_id, RunStatus.FAILED, message, code=ExitCode.CONFIG
                    )
                planned.current_users = platform.listed
                runner = JobRunner(
                    job, sources=[], platform=platform, state=resources.state, progress=progress
                )
                log.info(
                    "planfile.applying",
                    file=str(plan_path),
                    changes=planned.plan.total_changes if planned.plan else 0,
                    approved=list(plan_file.guard.reasons),
                )
                result = runner.apply(planned)
            plan = planned.plan
            failures = tuple(f for outcome in result.outcomes for f in outcome.failures)
            return JobReport(
                job=job.name,
                status=result.status,
                exit_code=exit_code_for(result.status),
                run_id=run_id,
                counts=plan.counts() if plan is not None else {},
                write_calls=result.write_calls,
                failures=failures,
                guard_reasons=(),
                error=result.error,
                planned=planned,
                result=result,
            )
        except ConfigError as error:
            return _report_error(job, run_id, RunStatus.FAILED, str(error), code=ExitCode.CONFIG)
        except SyncdError as error:
            log.error("job.failed", error=str(error))
            return _report_error(job, run_id, RunStatus.FAILED, str(error))


def _distrust_file(
    job: JobConfig,
    plan_file: PlanFile,
    planned: PlannedRun,
    platform: FingerprintingPlatform,
    state: StateStore,
) -> list[str]:
    """The checks of :mod:`syncd.planfile_checks` over the file's changes."""
    plan = planned.plan
    assert plan is not None
    identity = functools.partial(platform_identity, lowercase=job.identity.lowercase)
    lowercase = job.identity.lowercase
    protected = frozenset(
        normalize_end_user(name, lowercase=lowercase) for name in job.policy.protected
    )
    problems = protected_problems(plan, protected, identity)
    problems += platform_problems(plan, platform.last, identity)
    removed = 0
    if plan.removals and job.guard.max_removals_per_day is not None:
        removed = state.removals_since(job.name, datetime.now(UTC) - timedelta(days=1))
    rules = identity_rules(job)
    previous = state.job_rules(job.name)
    history = GuardHistory(
        removed_last_day=removed,
        identity_changes=identity_rule_changes(previous, rules) if previous else (),
    )
    problems += new_guard_reasons(
        plan,
        recorded=[*plan_file.guard.reasons, *plan_file.guard.overridden],
        limits=job.guard.limits(),
        history=history,
        today=plan_file.today,
        identity=identity,
    )
    return problems


def _planned_from_file(
    job: JobConfig, plan_file: PlanFile, state: StateStore, run_id: str, started_at: datetime
) -> PlannedRun:
    """The reviewed plan as a run to apply: the guard's reasons count as approved."""
    owned: frozenset[str] = frozenset()
    if job.policy.scope == "owned":
        owned = state.owned_users(job.name)
    return PlannedRun(
        job=job.name,
        run_id=run_id,
        started_at=started_at,
        # No source is read: nothing is adopted in this run beyond confirmed inserts.
        desired=DesiredUsers(users={}, problems=[], conflicts=[], sources=[]),
        current_users=0,
        plan=plan_from_file(plan_file),
        verdict=Verdict(
            held=False,
            overridden=(*plan_file.guard.reasons, *plan_file.guard.overridden),
        ),
        policy=PlanPolicy(scope=job.policy.scope, owned=owned),
        identity_rules=identity_rules(job),
    )


def _report_error(
    job: JobConfig,
    run_id: str,
    status: RunStatus,
    message: str,
    *,
    code: ExitCode | None = None,
) -> JobReport:
    return JobReport(
        job=job.name,
        status=status,
        exit_code=code if code is not None else exit_code_for(status),
        run_id=run_id,
        error=message,
    )
