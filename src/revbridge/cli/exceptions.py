"""``revbridge exceptions``: the work queue for people.

Without a subcommand it lists items, as it always has (``--status``, ``--format json``
keep their shapes). The subcommands act on one item; each action is audited with the
``--user`` who did it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from revbridge.cli.common import app_for, config_option, emit, format_option
from revbridge.cli.people import actor, amount, inherited, refusals, user_option
from revbridge.orchestrate.work_queue import ActionResult, ItemDetails, QueueEntry

STATUSES = click.Choice(["open", "resolved"])


def _filters(func: Any) -> Any:
    func = click.option("--status", type=STATUSES, default=None)(func)
    func = click.option("--reason", default=None, help="Only items with this reason.")(func)
    func = click.option("--assignee", default=None, help="Only items assigned to this user.")(func)
    return click.option(
        "--overdue", is_flag=True, default=None, help="Only open items past their SLA."
    )(func)


@click.group("exceptions", invoke_without_command=True)
@config_option
@format_option
@_filters
@click.pass_context
def exceptions(
    ctx: click.Context,
    config_path: str | None,
    fmt: str,
    status: str | None,
    reason: str | None,
    assignee: str | None,
    overdue: bool | None,
) -> None:
    """Exception items for people: reason, status, age against the SLA, assignee, and the
    source they concern. Subcommands act on one item."""
    if ctx.invoked_subcommand is None:
        _list(config_path, fmt, status, reason, assignee, overdue)


@exceptions.command("list")
@click.option("--config", "config_path", default=None, metavar="FILE", help="Config file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default=None)
@_filters
@click.pass_context
def list_command(
    ctx: click.Context,
    config_path: str | None,
    fmt: str | None,
    status: str | None,
    reason: str | None,
    assignee: str | None,
    overdue: bool | None,
) -> None:
    """List items (filters: status, reason, assignee, overdue)."""
    _list(
        inherited(ctx, "config_path", config_path),
        inherited(ctx, "fmt", fmt, "text"),
        inherited(ctx, "status", status),
        inherited(ctx, "reason", reason),
        inherited(ctx, "assignee", assignee),
        inherited(ctx, "overdue", overdue),
    )


def _list(
    config_path: str | None,
    fmt: str,
    status: str | None,
    reason: str | None,
    assignee: str | None,
    overdue: bool | None,
) -> None:
    with app_for(config_path) as app:
        entries = app.work_queue().items(status, reason=reason, assignee=assignee, overdue=overdue)
    emit(fmt, {"exceptions": [e.view() for e in entries]}, lambda: _print_entries(entries))


def _print_entries(entries: list[QueueEntry]) -> None:
    for e in entries:
        i = e.item
        extra = f"  @{i.assignee}" if i.assignee else ""
        extra += "  OVERDUE" if e.overdue else ""
        click.echo(f"#{i.id:<5} {i.status:<8} {i.reason:<22} {i.detail}{extra}")


# ------------------------------------------------------------------------- one item


def _item_command(name: str, help_text: str) -> Callable[[Callable[..., None]], click.Command]:
    """A subcommand taking ID, ``--config``, ``--format`` and ``--user``."""

    def decorate(func: Callable[..., None]) -> click.Command:
        func = click.pass_context(func)
        func = user_option(func)
        func = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default=None)(
            func
        )
        func = click.option(
            "--config", "config_path", default=None, metavar="FILE", help="Config file."
        )(func)
        func = click.argument("item_id", type=int, metavar="ID")(func)
        return exceptions.command(name, help=help_text)(func)

    return decorate


def _act(ctx: click.Context, config_path: str | None, fmt: str | None, action: Any) -> None:
    """Run ``action(work_queue)`` and print what it did."""
    with app_for(inherited(ctx, "config_path", config_path)) as app, refusals():
        result: ActionResult = action(app.work_queue())
    emit(inherited(ctx, "fmt", fmt, "text"), result.view(), lambda: _print_result(result))


def _print_result(result: ActionResult) -> None:
    item = result.entry.item
    state = item.resolution or item.status
    facts = ", ".join(f"{k} {v}" for k, v in result.detail.items() if v not in (None, "", []))
    click.echo(f"#{item.id} {result.action}: {state}{'  (' + facts + ')' if facts else ''}")


@_item_command("show", "One item with its notes, audit trail, approvals and raw message.")
def show(
    ctx: click.Context, item_id: int, config_path: str | None, fmt: str | None, user: str | None
) -> None:
    del user
    with app_for(inherited(ctx, "config_path", config_path)) as app, refusals():
        details = app.work_queue().show(item_id)
    emit(inherited(ctx, "fmt", fmt, "text"), details.view(), lambda: _print_details(details))


def _print_details(details: ItemDetails) -> None:
    view = details.view()
    click.echo(f"#{view['id']} {view['reason']} — {view['status']}")
    click.echo(f"  {view['detail']}")
    click.echo(
        f"  opened {view['opened_at']}  age {view['age_hours']} h  SLA due {view['sla_due']}"
        f"{'  OVERDUE' if view['overdue'] else ''}"
    )
    click.echo(f"  assignee {view['assignee'] or '-'}  resolution {view['resolution'] or '-'}")
    click.echo("  source: " + ", ".join(f"{k}={v}" for k, v in view["source"].items()))
    for note in view["notes"]:
        click.echo(f"  note {note['at']} {note['actor']}: {note['text']}")
    for entry in view["audit"]:
        click.echo(f"  audit {entry['at']} {entry['actor']}: {entry['action']} {entry['detail']}")
    for a in view["approvals"]:
        click.echo(
            f"  approval #{a['id']} {a['kind']} {a['status']} (asked by {a['requested_by']}"
            f"{', decided by ' + a['decided_by'] if a['decided_by'] else ''}) {a['subject']}"
        )
    _print_raw(view["raw"])


def _print_raw(raw: dict[str, Any] | None) -> None:
    if raw is None:
        return
    click.echo(f"  raw #{raw['id']} {raw['name']} sha256 {raw['sha256']}")
    for edit in raw["resubmissions"]:
        click.echo(
            f"    edited copy: raw #{edit['new_raw_id']} by {edit['actor']} at {edit['at']}"
            f" ({edit['outcome']}) {edit['comment']}"
        )
    if raw["resubmission_of"]:
        click.echo(f"    edited copy of raw #{raw['resubmission_of']['original_raw_id']}")


@_item_command("assign", "Give the item to USER.")
@click.argument("assignee", metavar="USER")
def assign(
    ctx: click.Context,
    item_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
    assignee: str,
) -> None:
    _act(ctx, config_path, fmt, lambda q: q.assign(item_id, assignee, actor(user)))


@_item_command("unassign", "Take the item back to the pool.")
def unassign(
    ctx: click.Context, item_id: int, config_path: str | None, fmt: str | None, user: str | None
) -> None:
    _act(ctx, config_path, fmt, lambda q: q.assign(item_id, None, actor(user)))


@_item_command("note", "Add a note to the item.")
@click.argument("text")
def note(
    ctx: click.Context,
    item_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
    text: str,
) -> None:
    _act(ctx, config_path, fmt, lambda q: q.note(item_id, text, actor(user)))


@_item_command("retry", "Run the item's parked job again, or resend a refused journal.")
def retry(
    ctx: click.Context, item_id: int, config_path: str | None, fmt: str | None, user: str | None
) -> None:
    _act(ctx, config_path, fmt, lambda q: q.retry(item_id, actor(user)))


@_item_command("resubmit", "Ingest FILE, a corrected copy of the item's file (kept apart).")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--comment", default="", help="What was corrected, and why.")
def resubmit(
    ctx: click.Context,
    item_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
    file: Path,
    comment: str,
) -> None:
    data = file.read_bytes()
    _act(
        ctx,
        config_path,
        fmt,
        lambda q: q.resubmit(item_id, data, actor(user), comment=comment, name=file.name),
    )


@_item_command("write-off", "Write a denial off (E9); large amounts need a second approver.")
@click.option("--amount", "value", callback=amount, help="Default: the denied amount.")
def write_off(
    ctx: click.Context,
    item_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
    value: Decimal | None,
) -> None:
    _act(ctx, config_path, fmt, lambda q: q.write_off(item_id, actor(user), value))


@_item_command("reject", "Close the item: its input will not be processed.")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
def reject(
    ctx: click.Context,
    item_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
    reason: str,
) -> None:
    _act(ctx, config_path, fmt, lambda q: q.reject(item_id, actor(user), reason))


@_item_command("resolve", "Close the item: dealt with (say how with --note).")
@click.option("--note", "text", default=None, help="How it was dealt with.")
def resolve(
    ctx: click.Context,
    item_id: int,
    config_path: str | None,
    fmt: str | None,
    user: str | None,
    text: str | None,
) -> None:
    _act(ctx, config_path, fmt, lambda q: q.resolve(item_id, actor(user), text))
