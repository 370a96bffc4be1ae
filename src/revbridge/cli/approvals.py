"""``revbridge approvals``: requests that need a second person (large write-offs).

Without a subcommand it lists requests. Whoever asked for a request may not decide it.
"""

from __future__ import annotations

from typing import Any

import click

from revbridge.cli.common import app_for, config_option, emit, format_option
from revbridge.cli.people import actor, inherited, refusals, user_option
from revbridge.orchestrate.work_queue import approval_view
from revbridge.store.base import Approval

STATUSES = click.Choice(["pending", "approved", "refused"])


@click.group("approvals", invoke_without_command=True)
@config_option
@format_option
@click.option("--status", type=STATUSES, default=None)
@click.pass_context
def approvals(ctx: click.Context, config_path: str | None, fmt: str, status: str | None) -> None:
    """Requests waiting for (or decided by) a second person."""
    if ctx.invoked_subcommand is None:
        _list(config_path, fmt, status)


@approvals.command("list")
@click.option("--config", "config_path", default=None, metavar="FILE", help="Config file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default=None)
@click.option("--status", type=STATUSES, default=None)
@click.pass_context
def list_command(
    ctx: click.Context, config_path: str | None, fmt: str | None, status: str | None
) -> None:
    """List requests (optionally of one status)."""
    _list(
        inherited(ctx, "config_path", config_path),
        inherited(ctx, "fmt", fmt, "text"),
        inherited(ctx, "status", status),
    )


def _list(config_path: str | None, fmt: str, status: str | None) -> None:
    with app_for(config_path) as app:
        found = app.work_queue().approval_list(status)
    emit(fmt, {"approvals": [approval_view(a) for a in found]}, lambda: _print(found))


def _print(found: list[Approval]) -> None:
    for a in found:
        decided = f" by {a.decided_by}" if a.decided_by else ""
        click.echo(
            f"#{a.id:<5} {a.status:<9}{decided} {a.kind:<10} asked by {a.requested_by} "
            f"{dict(a.subject)}"
        )


def _decision(func: Any) -> Any:
    func = click.pass_context(func)
    func = user_option(func)
    func = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default=None)(func)
    func = click.option(
        "--config", "config_path", default=None, metavar="FILE", help="Config file."
    )(func)
    return click.argument("approval_id", type=int, metavar="ID")(func)


@approvals.command("approve")
@_decision
def approve(
    ctx: click.Context,
    approval_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
) -> None:
    """Approve a request and carry it out (in one transaction)."""
    with app_for(inherited(ctx, "config_path", config_path)) as app, refusals():
        outcome = dict(app.work_queue().approve(approval_id, actor(user)))
    emit(
        inherited(ctx, "fmt", fmt, "text"),
        {"approval_id": approval_id, "status": "approved", "outcome": outcome},
        lambda: click.echo(
            f"#{approval_id} approved: " + ", ".join(f"{k} {v}" for k, v in outcome.items())
        ),
    )


@approvals.command("refuse")
@_decision
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
def refuse(
    ctx: click.Context,
    approval_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
    reason: str,
) -> None:
    """Refuse a request; nothing is carried out."""
    with app_for(inherited(ctx, "config_path", config_path)) as app, refusals():
        approval = app.work_queue().refuse(approval_id, actor(user), reason)
    emit(
        inherited(ctx, "fmt", fmt, "text"),
        approval_view(approval),
        lambda: click.echo(f"#{approval_id} refused by {approval.decided_by}"),
    )
