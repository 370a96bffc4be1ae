"""Output ``parquet_export``: events, journals and exception history as Parquet for analysts.

Reporting reads these files (DuckDB, pandas, a warehouse loader), never the live store.
Each run appends what is new since the last run, as part files named by the range of
source positions (events) or ids (exceptions, audit) they hold:

    <path>/events/part-<first>-<last>.parquet          one row per canonical event
    <path>/journal_lines/part-<first>-<last>.parquet   lines of journals prepared in range
    <path>/journal_postings/part-<first>-<last>.parquet  ERP document per posted journal
    <path>/exceptions/part-<first>-<last>.parquet      exception items as opened
    <path>/audit/part-<first>-<last>.parquet           every audited action (who, when)

There is no cursor file to get out of step: the watermark of a table is the highest
``last`` among its part files, and a part appears only by an atomic rename. The journal
tables are derived from events and written before the events part of the same range; parts
of theirs beyond the events watermark are left-overs of an interrupted run and are removed
before the next one, so a crash can never duplicate a row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from revbridge.domain.events import EventType
from revbridge.registry import ComponentSpec, Field
from revbridge.store.base import AuditEntry, ExceptionItem, Store, StoredEvent, UnitOfWork

SPEC = ComponentSpec(
    "outputs",
    "parquet_export",
    "Exports events, journals and exception history incrementally to Parquet files for "
    "reporting (readable by DuckDB), so analysts never query the live store.",
    (
        Field("path", "path", "Folder of the Parquet dataset.", example="analytics"),
        Field(
            "batch_size",
            "int",
            "Source rows per part file.",
            default=50_000,
            example=50_000,
        ),
    ),
)

MONEY = pa.decimal128(20, 2)  # Arrow refuses (never rounds) a value with more scale
TIMESTAMP = pa.timestamp("us", tz="UTC")
_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")

EVENTS_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("id", pa.string()),
        ("type", pa.string()),
        ("schema_version", pa.int32()),
        ("occurred_at", TIMESTAMP),
        ("recorded_at", TIMESTAMP),
        ("entity", pa.string()),
        ("facility", pa.string()),
        ("correlation_id", pa.string()),
        ("causation_id", pa.string()),
        ("keys", pa.string()),
        ("source", pa.string()),
        ("data", pa.string()),
    ]
)
LINES_SCHEMA = pa.schema(
    [
        ("event_position", pa.int64()),
        ("journal_key", pa.string()),
        ("line_no", pa.int32()),
        ("entity", pa.string()),
        ("journal_date", pa.date32()),
        ("kind", pa.string()),
        ("rule_version", pa.string()),
        ("currency", pa.string()),
        ("account", pa.string()),
        ("debit", MONEY),
        ("credit", MONEY),
        ("description", pa.string()),
        ("facility", pa.string()),
        ("payer", pa.string()),
        ("financial_class", pa.string()),
        ("dimensions", pa.string()),
        ("source", pa.string()),
    ]
)
POSTINGS_SCHEMA = pa.schema(
    [
        ("event_position", pa.int64()),
        ("journal_key", pa.string()),
        ("target", pa.string()),
        ("erp_document_id", pa.string()),
        ("posted_at", TIMESTAMP),
    ]
)
EXCEPTIONS_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("opened_at", TIMESTAMP),
        ("subject", pa.string()),
    ]
)
AUDIT_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("at", TIMESTAMP),
        ("actor", pa.string()),
        ("action", pa.string()),
        ("subject_type", pa.string()),
        ("subject_id", pa.string()),
        ("detail", pa.string()),
    ]
)


@dataclass
class ExportReport:
    """Rows written per table by one run."""

    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def add(self, table: str, count: int, path: Path) -> None:
        self.rows[table] = self.rows.get(table, 0) + count
        self.files.append(path)


class ParquetExport:
    def __init__(self, root: Path, batch_size: int = 50_000) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.root, self.batch_size = root, batch_size

    def run(self, store: Store) -> ExportReport:
        """Export everything new since the last run; safe to interrupt and run again."""
        report = ExportReport()
        self._drop_orphans()
        self._export_events(store, report)
        self._export_by_id(store, "exceptions", EXCEPTIONS_SCHEMA, _exception_rows, report)
        self._export_by_id(store, "audit", AUDIT_SCHEMA, _audit_rows, report)
        return report

    def watermark(self, table: str) -> int:
        return max((last for _, last in self._parts(table)), default=0)

    # -- events and the journal tables derived from them ------------------------------------

    def _export_events(self, store: Store, report: ExportReport) -> None:
        while True:
            with store.unit_of_work() as uow:
                events = uow.events.read_from(self.watermark("events"), self.batch_size)
                if not events:
                    return
                lines, postings = _journal_rows(uow, events)
            first, last = events[0].position, events[-1].position
            self._write("journal_lines", LINES_SCHEMA, lines, first, last, report)
            self._write("journal_postings", POSTINGS_SCHEMA, postings, first, last, report)
            self._write("events", EVENTS_SCHEMA, _event_rows(events), first, last, report)

    def _drop_orphans(self) -> None:
        """Derived parts beyond the events watermark come from an interrupted run."""
        done = self.watermark("events")
        for table in ("journal_lines", "journal_postings"):
            for first, last in self._parts(table):
                if first > done:
                    (self.root / table / _name(first, last)).unlink()

    # -- tables read by id ----------------------------------------------------------------------

    def _export_by_id(
        self,
        store: Store,
        table: str,
        schema: pa.Schema,
        rows_of: Callable[[UnitOfWork, int, int], tuple[list[dict[str, Any]], int, int]],
        report: ExportReport,
    ) -> None:
        while True:
            with store.unit_of_work() as uow:
                rows, first, last = rows_of(uow, self.watermark(table), self.batch_size)
            if not rows:
                return
            self._write(table, schema, rows, first, last, report)

    # -- files --------------------------------------------------------------------------------

    def _parts(self, table: str) -> list[tuple[int, int]]:
        folder = self.root / table
        if not folder.is_dir():
            return []
        found = (_PART.match(entry.name) for entry in folder.iterdir())
        return sorted((int(m[1]), int(m[2])) for m in found if m)

    def _write(
        self,
        table: str,
        schema: pa.Schema,
        rows: Sequence[Mapping[str, Any]],
        first: int,
        last: int,
        report: ExportReport,
    ) -> None:
        """Write one part atomically (temporary name, fsync, rename); empty parts are skipped."""
        if not rows:
            return
        folder = self.root / table
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / _name(first, last)
        temporary = folder / f".{final.name}.tmp"
        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        report.add(table, len(rows), final)


def _name(first: int, last: int) -> str:
    return f"part-{first:012d}-{last:012d}.parquet"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _event_rows(events: Iterable[StoredEvent]) -> list[dict[str, Any]]:
    rows = []
    for stored in events:
        event = stored.event
        rows.append(
            {
                "position": stored.position,
                "id": event.id,
                "type": event.type,
                "schema_version": event.schema_version,
                "occurred_at": event.occurred_at,
                "recorded_at": event.recorded_at,
                "entity": event.entity,
                "facility": event.facility,
                "correlation_id": event.correlation_id,
                "causation_id": event.causation_id,
                "keys": _json(dict(event.keys)),
                "source": _json(event.source.as_dict()),
                "data": _json(dict(event.data)),  # a mapping, as read: not always a dict
            }
        )
    return rows


def _journal_rows(
    uow: UnitOfWork, events: Iterable[StoredEvent]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    postings: list[dict[str, Any]] = []
    for stored in events:
        event = stored.event
        if event.type == EventType.JOURNAL_PREPARED:
            lines.extend(_lines_of(uow, stored.position, event.keys["journal"]))
        elif event.type == EventType.JOURNAL_POSTED:
            postings.append(
                {
                    "event_position": stored.position,
                    "journal_key": event.keys["journal"],
                    "target": event.data.get("target"),
                    "erp_document_id": event.data.get("erp_document_id"),
                    "posted_at": event.recorded_at,
                }
            )
    return lines, postings


def _lines_of(uow: UnitOfWork, position: int, key: str) -> list[dict[str, Any]]:
    record = uow.journals.get(key)
    if record is None:
        raise LookupError(f"event {position} names journal {key}, which is not stored")
    journal = record.journal
    return [
        {
            "event_position": position,
            "journal_key": journal.key,
            "line_no": number,
            "entity": journal.entity,
            "journal_date": journal.date,
            "kind": journal.kind,
            "rule_version": journal.rule_version,
            "currency": journal.currency,
            "account": line.account,
            "debit": line.debit,
            "credit": line.credit,
            "description": line.description,
            "facility": line.dimensions.get("facility"),
            "payer": line.dimensions.get("payer"),
            "financial_class": line.dimensions.get("financial_class"),
            "dimensions": _json(dict(line.dimensions)),
            "source": _json(dict(line.source)),
        }
        for number, line in enumerate(journal.lines, start=1)
    ]


def _exception_rows(
    uow: UnitOfWork, after: int, limit: int
) -> tuple[list[dict[str, Any]], int, int]:
    items: list[ExceptionItem] = uow.exceptions.read_from(after, limit)
    rows = [
        {
            "id": item.id,
            "reason": item.reason,
            "detail": item.detail,
            "opened_at": item.opened_at,
            "subject": _json(dict(item.subject)),
        }
        for item in items
    ]
    return rows, (items[0].id if items else 0), (items[-1].id if items else 0)


def _audit_rows(uow: UnitOfWork, after: int, limit: int) -> tuple[list[dict[str, Any]], int, int]:
    entries: list[AuditEntry] = uow.audit.read_from(after, limit)
    rows = [
        {
            "id": entry.id,
            "at": entry.at,
            "actor": entry.actor,
            "action": entry.action,
            "subject_type": entry.subject_type,
            "subject_id": entry.subject_id,
            "detail": _json(dict(entry.detail)),
        }
        for entry in entries
    ]
    return rows, (entries[0].id if entries else 0), (entries[-1].id if entries else 0)
