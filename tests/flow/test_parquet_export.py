"""Parquet export read back with DuckDB: complete, incremental, never duplicated."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import duckdb
from click.testing import CliRunner

from revbridge import bootstrap
from revbridge.cli import main
from revbridge.ingest.x12_files import ingest_file
from revbridge.post.parquet_export import ParquetExport
from tests.conftest import WORKED_EXAMPLE


def _flow(app: bootstrap.App, *paths: Path) -> None:
    for path in paths:
        ingest_file(app.store, path)
    app.worker().run_until_idle(max_wait_seconds=0)


def _export(app: bootstrap.App) -> ParquetExport:
    return bootstrap.make_exports(app.config)["analytics"]


def _sql(export: ParquetExport, query: str) -> list[tuple[object, ...]]:
    root = export.root.as_posix()
    return duckdb.sql(query.replace("{root}", root)).fetchall()


def test_export_matches_the_store_and_balances(app: bootstrap.App) -> None:
    _flow(app, WORKED_EXAMPLE)
    export = _export(app)
    report = export.run(app.store)
    with app.store.unit_of_work() as uow:
        events = uow.events.count()
        journals = uow.journals.all()
        exceptions = len(uow.exceptions.all())
    assert report.rows["events"] == events
    assert report.rows["exceptions"] == exceptions
    assert _sql(export, "SELECT count(*) FROM '{root}/events/*.parquet'") == [(events,)]
    with app.store.unit_of_work() as uow:
        stored = [(s.position, dict(s.event.data)) for s in uow.events.read_from(0, events)]
    data = _sql(export, "SELECT position, data FROM '{root}/events/*.parquet' ORDER BY position")
    assert [(position, json.loads(text)) for position, text in data] == stored
    per_journal = _sql(
        export,
        "SELECT journal_key, sum(debit), sum(credit) FROM '{root}/journal_lines/*.parquet'"
        " GROUP BY journal_key ORDER BY journal_key",
    )
    assert [row[0] for row in per_journal] == sorted(r.journal.key for r in journals)
    assert all(debit == credit for _, debit, credit in per_journal)
    assert sum(Decimal(str(row[1])) for row in per_journal) == Decimal("2687.50")
    postings = _sql(
        export, "SELECT journal_key, erp_document_id FROM '{root}/journal_postings/*.parquet'"
    )
    assert sorted(postings) == sorted((r.journal.key, r.erp_document_id) for r in journals)


def test_export_is_incremental_and_idempotent(app: bootstrap.App, tmp_path: Path) -> None:
    _flow(app, WORKED_EXAMPLE)
    export = _export(app)
    first = export.run(app.store)
    assert export.run(app.store).rows == {}  # nothing new
    resend = tmp_path / "other.835"
    resend.write_bytes(
        WORKED_EXAMPLE.read_bytes().replace(b"12345~", b"12399~").replace(b"000004711", b"1")
    )
    _flow(app, resend)
    second = export.run(app.store)
    assert second.rows.get("audit", 0) > 0
    total = _sql(export, "SELECT count(*), count(DISTINCT position) FROM '{root}/events/*.parquet'")
    with app.store.unit_of_work() as uow:
        assert total == [(uow.events.count(), uow.events.count())]
    assert first.rows["events"] + second.rows.get("events", 0) == total[0][0]


def test_an_interrupted_run_leaves_no_duplicates(app: bootstrap.App) -> None:
    _flow(app, WORKED_EXAMPLE)
    export = _export(app)
    export.run(app.store)
    lines = _sql(export, "SELECT count(*) FROM '{root}/journal_lines/*.parquet'")
    # A crash after the journal parts but before the events part of a range: simulate by
    # removing the last events part; its journal parts are now beyond the watermark.
    parts = sorted((export.root / "events").glob("part-*.parquet"))
    parts[-1].unlink()
    export.run(app.store)
    assert _sql(export, "SELECT count(*) FROM '{root}/journal_lines/*.parquet'") == lines
    events = _sql(
        export, "SELECT count(*), count(DISTINCT position) FROM '{root}/events/*.parquet'"
    )
    assert events[0][0] == events[0][1]


def test_export_command(app: bootstrap.App, deployment: Path) -> None:
    _flow(app, WORKED_EXAMPLE)
    runner = CliRunner()
    result = runner.invoke(main, ["export", "--config", str(deployment), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"events"' in result.output
    again = runner.invoke(main, ["export", "--config", str(deployment)])
    assert again.exit_code == 0 and "analytics: nothing new" in again.output
