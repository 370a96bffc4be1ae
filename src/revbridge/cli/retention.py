"""``revbridge retention``: drop the months of raw messages and events past retention.

The policy and its rules are in ``orchestrate/retention.py``; ``serve`` runs the same job
on its own (``schedule``), a deployment of ``revbridge worker`` processes runs this command
from cron (hourly is right: a run that has nothing to do is cheap).
"""

from __future__ import annotations

import sys

import click

from revbridge import bootstrap
from revbridge.cli.common import app_for, config_option, emit, format_option
from revbridge.errors import ConfigurationError
from revbridge.orchestrate.retention import (
    Action,
    Decision,
    RetentionReport,
    RetentionSchedule,
)
from revbridge.store.base import Family


@click.command("retention")
@config_option
@format_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show what would be dropped and why the other months are kept; change nothing.",
)
def retention(config_path: str | None, fmt: str, dry_run: bool) -> None:
    """Take up the current month, then drop whole months of raw messages and events that
    the `retention` section lets go: past their keep months, archived (events, if an
    archive is set) and needed by no open work. Every drop is audited. Exits 1 if a month
    could not be dropped (another session held its table too long: run it again)."""
    with app_for(config_path) as app:
        try:
            report = app.retention_job().run(dry_run=dry_run)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from exc
    emit(fmt, report.as_dict(), lambda: print_report(report))
    if report.failed:
        sys.exit(1)


def schedule(app: bootstrap.App) -> RetentionSchedule:
    """The job as ``serve`` runs it: the whole job now and then, new months on time."""
    return RetentionSchedule(app.retention_job())


def print_report(report: RetentionReport) -> None:
    dry = " (dry run: nothing changed)" if report.dry_run else ""
    click.echo(f"retention at {report.at:%Y-%m-%d %H:%M} UTC{dry}")
    click.echo(_policy_line(report))
    if report.created:
        made = ", ".join(f"{m.family} {m.month:%Y-%m}" for m in report.created)
        click.echo(f"created: {made}")
    for decision in report.decisions:
        click.echo(_decision_line(decision))


def _policy_line(report: RetentionReport) -> str:
    policy = report.policy
    if policy is None:
        return "policy: none (no retention section): every month is kept"
    parts = []
    for family in Family.ALL:
        limit = report.cutoff(family)
        when = "" if limit is None else f", months with nothing after {limit:%Y-%m-%d} go"
        parts.append(f"{family} kept {policy.keep_months(family)} months{when}")
    archive = f"; events archived to {policy.archive!r} first" if policy.archive else ""
    return "policy: " + "; ".join(parts) + archive


def _decision_line(decision: Decision) -> str:
    month = decision.month
    keys = f"{month.low}..{'' if month.high is None else month.high - 1}"
    span = (
        "empty"
        if month.first_at is None or month.last_at is None
        else f"{month.first_at:%Y-%m-%d} .. {month.last_at:%Y-%m-%d}"
    )
    action = "would drop" if decision.action == Action.DROP else decision.action
    rows = f" ({decision.rows_dropped:,} rows)" if decision.rows_dropped else ""
    return (
        f"{month.family:<6} {month.month:%Y-%m}  keys {keys:<23} {month.rows:>12,} rows"
        f"  {span:<24} {action}{rows}: {decision.reason}"
    )
