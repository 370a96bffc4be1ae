"""``revbridge replay``: stored messages again, through a chosen mapping and rule set."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from revbridge.cli.common import app_for, config_option, emit, format_option
from revbridge.cli.people import actor, refusals, user_option
from revbridge.errors import ConfigurationError
from revbridge.normalise.x12_835 import MAPPING_VERSION
from revbridge.orchestrate.replay import (
    JournalDiff,
    Outcome,
    PaymentDiff,
    ReplayResult,
    Selection,
    Versions,
    load_rule_set,
)
from revbridge.orchestrate.replay_diff import EventChange, LineDiff

MARKS = {EventChange.ADDED: "+", EventChange.REMOVED: "-", EventChange.CHANGED: "~"}


def _iso_time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 date or time; one without a zone is UTC (the store's time)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO time like 2025-01-06T09:00Z") from exc
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


@click.command()
@config_option
@format_option
@user_option
@click.option("--raw", "raw_ids", type=int, multiple=True, metavar="ID", help="Raw message id.")
@click.option("--payment", metavar="KEY", help="Payment key (TRN03:TRN02) or TRN.")
@click.option("--since", callback=_iso_time, metavar="ISO", help="Received at or after.")
@click.option("--until", callback=_iso_time, metavar="ISO", help="Received before.")
@click.option("--all", "everything", is_flag=True, help="Every stored message.")
@click.option(
    "--rules",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Posting-rule set (default: the configured one).",
)
@click.option("--mapping-version", default=MAPPING_VERSION, show_default=True, metavar="V")
@click.option("--dry-run", is_flag=True, help="Show what would change; post nothing.")
def replay(
    config_path: str | None,
    fmt: str,
    user: str | None,
    raw_ids: tuple[int, ...],
    payment: str | None,
    since: datetime | None,
    until: datetime | None,
    everything: bool,
    rules: Path | None,
    mapping_version: str,
    dry_run: bool,
) -> None:
    """Re-run stored messages through a mapping version and a posting-rule set.

    --dry-run shows the differences in events and journals against what is in effect.
    Applying posts only reversing and adjusting journals for what changed, never a
    duplicate; a replay that changes more than one payment waits for a second person
    (`revbridge approvals approve ID`)."""
    selection = Selection(tuple(raw_ids), payment, since, until, everything)
    with refusals(), app_for(config_path) as app:
        versions = _versions(mapping_version, rules or Path(app.config.ledger["posting_rules"]))
        replayer = app.replayer()
        selected = replayer.select(selection)
        with click.progressbar(
            selected.unit_ids, label="replay", file=sys.stderr, hidden=not sys.stderr.isatty()
        ) as bar:
            result = replayer.dry_run(selected, versions, bar)
        outcome = (
            Outcome()
            if dry_run
            else replayer.apply(result, actor(user), app.work_queue().approvals)
        )
    emit(fmt, replay_view(result, outcome, dry_run), lambda: _print(result, outcome, dry_run))


def _versions(mapping_version: str, rules: Path) -> Versions:
    try:
        return Versions(mapping_version, load_rule_set(rules))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


def replay_view(result: ReplayResult, outcome: Outcome, dry_run: bool) -> dict[str, Any]:
    """The ``--format json`` shape: the dry run, then what applying did (or asked for)."""
    approval = outcome.approval
    return {
        **result.as_dict(),
        "dry_run": dry_run,
        "applied": outcome.applied.as_dict() if outcome.applied else None,
        "approval": None
        if approval is None
        else {
            "id": approval.id,
            "kind": approval.kind,
            "status": approval.status,
            "requested_by": approval.requested_by,
        },
    }


# ------------------------------------------------------------------------------- text


def _print(result: ReplayResult, outcome: Outcome, dry_run: bool) -> None:
    versions = result.versions
    summary = result.summary()
    click.echo(
        f"replay with mapping {versions.mapping}, rules {versions.rules.rules.version} "
        f"({versions.rules.path})"
    )
    click.echo(
        f"units {summary['units']}: differ {summary['differ']}, unchanged "
        f"{summary['unchanged']}, blocked {summary['blocked']}, skipped {summary['skipped']}; "
        f"journals to post {summary['journals_to_post']}"
    )
    for payment in result.payments:
        _print_payment(payment)
    for skipped in result.skipped:
        click.echo(f"skipped unit {skipped.unit_id} (raw {skipped.raw_id}): {skipped.reason}")
    click.echo("")
    _print_outcome(outcome, dry_run)


def _print_payment(payment: PaymentDiff) -> None:
    click.echo(f"\npayment {payment.payment}  (raw {payment.raw_id}, unit {payment.unit_id})")
    if payment.blocked:
        click.echo(f"  blocked: {payment.blocked}")
    if not payment.events:
        click.echo("  events: no change")
    for event in payment.events:
        fields = ", ".join(
            f"{name} {before!r} -> {after!r}" for name, (before, after) in event.fields.items()
        )
        click.echo(
            f"  {MARKS[event.change]} {event.type:<28} segment {event.segment}"
            + (f": {fields}" if fields else "")
        )
    for journal in payment.journals:
        _print_journal(journal)
    for item in payment.exceptions:
        click.echo(f"  opens {item.reason}: {item.detail}")


def _print_journal(diff: JournalDiff) -> None:
    record = diff.in_effect
    effect = f"in effect: {record.journal.key}" if record else "nothing in effect"
    click.echo(f"  journal {diff.key}  {diff.change}  ({effect})")
    for line in diff.lines:
        if line.before:
            click.echo(f"    - {_line(line, line.before)}")
        if line.after:
            click.echo(f"    + {_line(line, line.after)}")
    if diff.lines:
        before = record.journal.total if record else Decimal(0)
        after = diff.rebuilt.total if diff.rebuilt else Decimal(0)
        click.echo(f"    total {before:.2f} -> {after:.2f}")


def _line(line: LineDiff, net: Decimal) -> str:
    """One side of a line difference: the account, its net as Dr/Cr, its dimensions."""
    side = f"Dr {net:>10.2f}" if net > 0 else f"Cr {-net:>10.2f}"
    dims = " ".join(f"{k}={v}" for k, v in sorted(line.dimensions.items()))
    return f"{line.account:>6} {side}  {dims}"


def _print_outcome(outcome: Outcome, dry_run: bool) -> None:
    if dry_run:
        click.echo("dry run: nothing posted")
    elif outcome.approval is not None:
        subject = outcome.approval.subject
        click.echo(
            f"bulk replay (payments {len(subject['payments'])}, journals "
            f"{subject['journals']}) waits for a second person: revbridge approvals approve "
            f"{outcome.approval.id}"
        )
    elif outcome.applied is not None:
        applied = outcome.applied
        click.echo(
            f"prepared journals {len(applied.journals)} (reversals {applied.reversals}) for "
            f"payments {len(applied.payments)}; the worker posts them"
        )
        for key in applied.journals:
            click.echo(f"  {key}")
        for reason in applied.blocked:
            click.echo(f"  not applied: {reason}")
    else:
        click.echo("nothing to apply")
