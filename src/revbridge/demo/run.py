"""``revbridge demo``: a remittance day through the whole flow, into a real ERP.

Everything it makes stays in the work folder: the store, the config, the 835 files, the
Tryton database (started on SQLite when Tryton is installed; else GL CSV files).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.demo.remittance_day import write_day
from revbridge.domain.events import EventType
from revbridge.ingest.x12_files import FileOutcome, ingest_file
from revbridge.observe.trace import Trace, trace
from revbridge.post.tryton_server import TrytonServer, is_available
from revbridge.sample import write_sample
from revbridge.store.base import UnitOfWork

ERP_DATABASE = "revbridge"
ERP_PASSWORD = "admin"
TRACE_KEY = "ACCT0900"

Echo = Callable[[str], None]


@dataclass
class DemoResult:
    files: list[FileOutcome] = field(default_factory=list)
    claims: Counter[str] = field(default_factory=Counter)
    paid_total: Decimal = Decimal(0)
    journals: Counter[str] = field(default_factory=Counter)
    journal_total: Decimal = Decimal(0)
    exceptions: Counter[str] = field(default_factory=Counter)
    target: str = "gl"
    trace: Trace | None = None
    seconds: float = 0.0


def run_demo(workdir: Path, echo: Echo, *, day: date, use_erp: bool = True) -> DemoResult:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    erp = use_erp and is_available()
    with _erp_server(workdir, echo) if erp else _no_erp(echo) as erp_url:
        config_path = write_sample(
            workdir,
            target="erp" if erp else "gl",
            erp_url=erp_url or "http://127.0.0.1:8000/",
            erp_database=ERP_DATABASE,
        )
        config = load_config(config_path, bootstrap.SPECS)
        if erp:
            report = bootstrap.setup_erp_from_config(config, "erp", day.year)
            echo(f"ERP set up: companies {report.companies}")
        files = write_day(workdir / "incoming", day)
        echo(f"generated {len(files)} remittance files in {workdir / 'incoming'}")
        app = bootstrap.build(config)
        try:
            result = _flow(app, files, echo)
        finally:
            app.close()
    result.target = "Tryton (real ERP)" if erp else "GL CSV files"
    result.seconds = time.monotonic() - started
    return result


@contextmanager
def _no_erp(echo: Echo) -> Iterator[str | None]:
    echo("no ERP: journals go to GL CSV files (Tryton not installed, or --no-erp)")
    yield None


@contextmanager
def _erp_server(workdir: Path, echo: Echo) -> Iterator[str]:
    server = TrytonServer(workdir / "erp")
    if ERP_DATABASE not in server.databases():
        echo("creating the Tryton database (modules account + revbridge_erp) ...")
        server.create_database(ERP_DATABASE, ERP_PASSWORD)
    server.start([ERP_DATABASE])
    try:
        echo(f"Tryton serving at {server.base_url} (pid {server.pid})")
        yield server.base_url
    finally:
        server.stop()


def _flow(app: bootstrap.App, files: list[Path], echo: Echo) -> DemoResult:
    result = DemoResult()
    for path in files:
        outcome = ingest_file(app.store, path)
        result.files.append(outcome)
        echo(f"  ingest {outcome.status:<9} {path.name} ({outcome.transactions} transactions)")
    stats = app.worker().run_until_idle()
    echo(f"worker: {stats.processed} jobs done, {stats.retried} retried, {stats.parked} parked")
    with app.store.unit_of_work() as uow:
        _summarise(uow, result)
        result.trace = trace(uow, TRACE_KEY)
    return result


def _summarise(uow: UnitOfWork, result: DemoResult) -> None:
    position = 0
    while batch := uow.events.read_from(position, 5000):
        for stored in batch:
            event = stored.event
            if event.type in (EventType.CLAIM_ADJUDICATED, EventType.CLAIM_REVERSED):
                result.claims[event.data["status_kind"]] += 1
            elif event.type == EventType.REMITTANCE_RECEIVED:
                result.paid_total += Decimal(event.data["total_paid"])
        position = batch[-1].position
    for record in uow.journals.all():
        result.journals[str(record.status)] += 1
        result.journal_total += record.journal.total
    result.exceptions.update(item.reason for item in uow.exceptions.all())
