"""Trace: from a business key (TRN, payer claim number, patient control number) or a
journal key to the raw segments, the events, and the ERP journal lines — and back."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from revbridge.domain.events import Event, EventType
from revbridge.domain.journal import JournalLine
from revbridge.domain.money import money_str
from revbridge.formats.x12.tokenizer import Delimiters, segments_from_bytes
from revbridge.store.base import JournalRecord, Unit, UnitOfWork

LOOP_ENDS = {"CLP", "PLB", "SE", "LX"}


@dataclass
class Trace:
    key: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    journals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.events or self.journals)


def trace(uow: UnitOfWork, key: str) -> Trace:
    result = Trace(key)
    events = [s.event for s in uow.events.by_key(key)]
    journal_keys = set(uow.journals.keys_by_source(key))
    journal_keys |= {e.keys["journal"] for e in events if "journal" in e.keys}
    if uow.journals.get(key) is not None:
        journal_keys.add(key)
        events = _events_of_journal(uow, key) or events
    result.events = [_event_view(e) for e in events]
    result.segments = list(_segments(uow, events))
    result.journals = [_journal_view(r, key) for r in _records(uow, sorted(journal_keys))]
    return result


def _events_of_journal(uow: UnitOfWork, journal_key: str) -> list[Event]:
    prepared = [s.event for s in uow.events.by_key(journal_key)]
    if not prepared:
        return []
    return [
        s.event
        for s in uow.events.by_correlation(prepared[0].correlation_id)
        if s.event.type not in (EventType.JOURNAL_PREPARED, EventType.JOURNAL_POSTED)
        or s.event.keys.get("journal") == journal_key
    ]


def _records(uow: UnitOfWork, keys: Iterable[str]) -> list[JournalRecord]:
    return [r for r in (uow.journals.get(k) for k in keys) if r is not None]


def _event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "keys": dict(event.keys),
        "source": event.source.as_dict(),
        "data": dict(event.data),
    }


def _segments(uow: UnitOfWork, events: list[Event]) -> Iterable[dict[str, Any]]:
    """The raw segments each business event came from (a claim: its whole CLP loop)."""
    wanted: dict[int, set[int]] = {}
    for event in events:
        if event.source.segment is not None and event.type not in (
            EventType.JOURNAL_PREPARED,
            EventType.JOURNAL_POSTED,
            EventType.REMITTANCE_RECEIVED,
        ):
            wanted.setdefault(event.source.unit_id, set()).add(event.source.segment)
    for unit_id, numbers in sorted(wanted.items()):
        yield from _unit_segments(uow, unit_id, numbers)


def _unit_segments(uow: UnitOfWork, unit_id: int, numbers: set[int]) -> Iterable[dict[str, Any]]:
    unit = uow.units.get(unit_id)
    try:
        raw = uow.raw.get(unit.raw_id)
    except KeyError:  # its month was dropped by retention: the unit remains, the bytes do not
        yield _dropped(unit, min(numbers))
        return
    data = uow.raw.read(unit.raw_id, unit.byte_start, unit.byte_end)
    delimiters = Delimiters.decode(unit.envelope["delimiters"])
    inside = False
    for segment in segments_from_bytes(data, delimiters, unit.first_segment, unit.byte_start):
        if segment.number in numbers:
            inside = segment.id == "CLP"
        elif segment.id in LOOP_ENDS:
            inside = False
        if segment.number in numbers or inside:
            yield {
                "file": raw.name,
                "raw_id": raw.id,
                "unit_id": unit_id,
                "segment": segment.number,
                "offset": segment.offset,
                "text": delimiters.element.join(segment.elements),
            }


def _dropped(unit: Unit, segment: int) -> dict[str, Any]:
    return {
        "file": "(dropped by retention)",
        "raw_id": unit.raw_id,
        "unit_id": unit.id,
        "segment": segment,
        "offset": None,
        "text": f"raw message {unit.raw_id} is no longer stored; unit {unit.id} was"
        f" {unit.natural_key} (sha256 {unit.content_hash[:12]}...)",
    }


def line_view(line: JournalLine) -> dict[str, Any]:
    """One journal line as people and ``--format json`` read it (amounts as strings)."""
    return {
        "account": line.account,
        "debit": money_str(line.debit),
        "credit": money_str(line.credit),
        "description": line.description,
        "dimensions": dict(line.dimensions),
        "source": dict(line.source),
    }


def _journal_view(record: JournalRecord, key: str) -> dict[str, Any]:
    journal = record.journal
    return {
        "key": journal.key,
        "status": str(record.status),
        "erp_document_id": record.erp_document_id,
        "target": record.target,
        "date": journal.date.isoformat(),
        "lines": [
            {"line": n, **line_view(line), "matches": key in line.source.values()}
            for n, line in enumerate(journal.lines, start=1)
        ],
    }
