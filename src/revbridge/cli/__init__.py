"""The ``revbridge`` command. Every command takes ``--config`` (or ``$REVBRIDGE_CONFIG``)."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from revbridge import bootstrap
from revbridge.cli import export as export_command
from revbridge.cli import replay as replay_command
from revbridge.cli import retention as retention_command
from revbridge.cli import worker as worker_command
from revbridge.cli.api import api as api_command
from revbridge.cli.approvals import approvals as approvals_command
from revbridge.cli.common import app_for, config_option, emit, format_option
from revbridge.cli.exceptions import exceptions as exceptions_command
from revbridge.config import DEFAULT_NAME
from revbridge.demo.run import DemoResult, run_demo
from revbridge.errors import ConfigurationError
from revbridge.ingest.x12_files import FileOutcome, ingest_file, iter_files
from revbridge.observe.trace import Trace, line_view, trace
from revbridge.orchestrate.retention import RetentionSchedule
from revbridge.orchestrate.worker import RunStats
from revbridge.registry import reference_markdown
from revbridge.sample import write_sample
from revbridge.store.base import JournalRecord


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
def main(verbose: bool) -> None:
    """revbridge: revenue-cycle messages in, balanced journals to the ERP out."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# ------------------------------------------------------------------------------- init


@main.command()
@config_option
def init(config_path: str | None) -> None:
    """Create the store and a sample config (with master data and posting rules)."""
    path = Path(config_path or DEFAULT_NAME)
    config = write_sample(path.parent, path.name)
    with app_for(str(config)) as app:
        click.echo(f"config: {config}\nstore:  {app.config.store.options['path']}")


@main.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the config file against the component specs; say which line is wrong."""
    try:
        config = bootstrap.read_config(config_path)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{config.path}: ok")


@main.command()
@click.option("--write", type=click.Path(path_type=Path), help="Write the reference here.")
@click.option("--check", type=click.Path(path_type=Path), help="Fail if this file is stale.")
def docs(write: Path | None, check: Path | None) -> None:
    """Print (or write, or check) the configuration reference generated from the specs."""
    text = reference_markdown(bootstrap.ALL_SPECS) + "\n"
    if check is not None:
        if not check.exists() or check.read_text() != text:
            raise click.ClickException(f"{check} is stale: run `revbridge docs --write {check}`")
        click.echo(f"{check}: up to date")
    elif write is not None:
        write.write_text(text)
    else:
        click.echo(text, nl=False)


# ----------------------------------------------------------------------------- ingest, run


@main.command()
@config_option
@format_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def ingest(config_path: str | None, fmt: str, paths: tuple[Path, ...]) -> None:
    """Store files (or every file in folders): accepted / duplicate / rejected per file."""
    outcomes: list[FileOutcome] = []
    unreadable: list[str] = []
    files = list(iter_files(list(paths)))
    with (
        app_for(config_path) as app,
        click.progressbar(
            files, label="ingest", file=sys.stderr, hidden=not sys.stderr.isatty()
        ) as bar,
    ):
        for path in bar:
            try:
                outcomes.append(ingest_file(app.store, path))
            except OSError as exc:
                unreadable.append(f"{path}: {exc.strerror or exc}")
    emit(
        fmt,
        {"files": [o.as_dict() for o in outcomes], "unreadable": unreadable},
        lambda: _print_outcomes(outcomes, unreadable),
    )
    if unreadable:
        sys.exit(1)


def _print_outcomes(outcomes: list[FileOutcome], unreadable: list[str]) -> None:
    for o in outcomes:
        click.echo(
            f"{o.status:<9} {o.path}  ({o.transactions} transactions: {o.new} new, "
            f"{o.duplicates} duplicate, {o.rejected} rejected)"
        )
        for problem in o.problems:
            click.echo(f"          ! {problem}")
    for line in unreadable:
        click.echo(f"unreadable {line}", err=True)


@main.command()
@config_option
@click.option("--until-idle", is_flag=True, required=True, help="Exit when no work is due.")
def run(config_path: str | None, until_idle: bool) -> None:
    """Process all pending work."""
    with app_for(config_path) as app:
        stats = app.worker().run_until_idle(
            progress=_job_counter() if sys.stderr.isatty() else None
        )
    click.echo(
        f"processed {stats.processed} jobs ({_kinds(stats.by_kind)}); "
        f"retried {stats.retried}; parked {stats.parked}"
    )


def _job_counter() -> Callable[[RunStats], None]:
    """A one-line counter on a terminal, redrawn at most five times a second."""
    last = [0.0]

    def show(stats: RunStats) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            click.echo(f"\r{stats.processed} jobs ({_kinds(stats.by_kind)})", nl=False, err=True)

    return show


def _kinds(by_kind: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) or "none"


@main.command()
@config_option
def serve(config_path: str | None) -> None:
    """Run the service: watch the drop folders and work the queue until interrupted
    (SIGTERM or Ctrl-C: the job in hand is finished first)."""
    with app_for(config_path) as app:
        stop = threading.Event()
        seconds = min((float(s.options["poll_seconds"]) for s in app.config.inputs), default=2.0)
        retention = retention_command.schedule(app)
        loop = worker_command.WorkLoop(
            app.worker(),
            stop,
            max_wait_seconds=float(app.config.worker["poll_seconds"]),
            tick=worker_command.Tick(lambda: _serve_tick(app, retention), seconds),
        )
        click.echo("revbridge serving; Ctrl-C to stop")
        with worker_command.graceful_signals(stop):
            loop.run()
        click.echo("stopped")


def _serve_tick(app: bootstrap.App, retention: RetentionSchedule) -> None:
    """What ``serve`` does besides jobs: pick up files, and retention when it is due."""
    _poll_inputs(app)
    retention.tick()


def _poll_inputs(app: bootstrap.App) -> None:
    for source in app.config.inputs:
        folder = Path(source.options["path"])
        accepted = Path(source.options["accepted_dir"] or folder / "accepted")
        rejected = Path(source.options["rejected_dir"] or folder / "rejected")
        for path in iter_files([folder], source.options["pattern"]):
            outcome = ingest_file(app.store, path, channel=source.name)
            destination = rejected if outcome.status == "rejected" else accepted
            destination.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), destination / path.name)


# ---------------------------------------------------------------------------- read models


@main.command()
@config_option
@format_option
def journals(config_path: str | None, fmt: str) -> None:
    """Every journal with its key, status, ERP document id and lines."""
    with app_for(config_path) as app, app.store.unit_of_work() as uow:
        records = uow.journals.all()
    emit(fmt, {"journals": [journal_view(r) for r in records]}, lambda: _print_journals(records))


def journal_view(record: JournalRecord) -> dict[str, Any]:
    j = record.journal
    return {
        "key": j.key,
        "status": str(record.status),
        "erp_document_id": record.erp_document_id,
        "target": record.target,
        "entity": j.entity,
        "date": j.date.isoformat(),
        "kind": j.kind,
        "rule_version": j.rule_version,
        "total": f"{j.total:f}",
        "lines": [line_view(line) for line in j.lines],
    }


def _print_journals(records: list[JournalRecord]) -> None:
    for r in records:
        click.echo(
            f"{r.journal.key:<48} {r.status!s:<9} {r.journal.total:>12} "
            f"{len(r.journal.lines):>4} lines  doc {r.erp_document_id or '-'}"
        )


@main.command("trace")
@config_option
@format_option
@click.argument("key")
def trace_command(config_path: str | None, fmt: str, key: str) -> None:
    """From a TRN, payer claim number, patient control number or journal key to the raw
    segments, the events and the journal lines."""
    with app_for(config_path) as app, app.store.unit_of_work() as uow:
        result = trace(uow, key)
    if not result.found:
        raise click.ClickException(f"nothing found for {key!r}")
    emit(
        fmt,
        {
            "key": key,
            "segments": result.segments,
            "events": result.events,
            "journals": result.journals,
        },
        lambda: print_trace(result),
    )


def print_trace(result: Trace) -> None:
    click.echo(f"trace {result.key}")
    click.echo("  raw segments:")
    for s in result.segments:
        click.echo(f"    {s['file']} #{s['segment']:<5} {s['text']}")
    click.echo("  events:")
    for e in result.events:
        click.echo(f"    {e['type']:<28} segment {e['source']['segment']}  {e['id']}")
    click.echo("  journal lines:")
    for j in result.journals:
        click.echo(f"    {j['key']} ({j['status']}, ERP document {j['erp_document_id'] or '-'})")
        for line in j["lines"]:
            if line["matches"] or result.key == j["key"]:
                click.echo(
                    f"      {line['account']:>6} Dr {line['debit']:>10} Cr "
                    f"{line['credit']:>10}  {line['description']}"
                )


# ------------------------------------------------------------------------------ demo, erp


@main.command()
@config_option
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("demo-work"),
    show_default=True,
    help="Everything the demo makes stays here.",
)
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Remittance date (default: today, UTC).",
)
@click.option("--no-erp", is_flag=True, help="Book to GL CSV files even if Tryton is installed.")
def demo(config_path: str | None, workdir: Path, day: datetime | None, no_erp: bool) -> None:
    """The main job: a realistic remittance day through the whole flow into a real ERP.

    The demo writes its own config into --workdir (--config is not used)."""
    del config_path
    when = day.date() if day else datetime.now(UTC).date()
    result = run_demo(workdir.resolve(), click.echo, day=when, use_erp=not no_erp)
    _print_demo(result)


def _print_demo(result: DemoResult) -> None:
    click.echo("\n=== summary")
    click.echo(
        f"files:      {len(result.files)} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(_statuses(result).items()))})"
    )
    click.echo(
        f"claims:     {sum(result.claims.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.claims.items()))})"
    )
    click.echo(f"paid (BPR02 total): {result.paid_total:,.2f} USD")
    click.echo(
        f"journals:   {sum(result.journals.values())} to {result.target} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.journals.items()))}); "
        f"debits {result.journal_total:,.2f} USD"
    )
    click.echo(
        f"exceptions: {sum(result.exceptions.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.exceptions.items()))})"
    )
    if result.trace is not None and result.trace.found:
        click.echo("")
        print_trace(result.trace)
    click.echo(f"\ndone in {result.seconds:.1f} s")


def _statuses(result: DemoResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in result.files:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts


@main.group()
def erp() -> None:
    """Work with the ERP behind the `erp_tryton` output."""


@erp.command("setup")
@config_option
@click.option("--year", type=int, default=None, help="Fiscal year to open (default: this year).")
@click.option("--output", "output_name", default=None, help="Output name (default: ledger target).")
def erp_setup(config_path: str | None, year: int | None, output_name: str | None) -> None:
    """Create currency, companies (one per legal entity), fiscal year and chart in Tryton."""
    try:
        config = bootstrap.read_config(config_path)
        report = bootstrap.setup_erp_from_config(
            config, output_name or config.ledger["target"], year or datetime.now(UTC).year
        )
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"companies: {report.companies}")
    click.echo(
        "changed: " + (", ".join(report.created + report.updated) or "nothing (already set up)")
    )


main.add_command(export_command.export)
main.add_command(replay_command.replay)
main.add_command(retention_command.retention)
main.add_command(exceptions_command)
main.add_command(approvals_command)
main.add_command(api_command)
main.add_command(worker_command.worker)
