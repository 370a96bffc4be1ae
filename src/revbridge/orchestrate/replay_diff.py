"""What a replay changes: events compared place by place, journals compared by money.

Pure functions over domain objects (no store), so the comparison rules can be read and
tested on their own. Two events are "the same place" when they have the same type and
come from the same segment (the n-th such event of that segment: one CAS segment holds up
to six adjustments). Two journals are "the same" when they move the same net amount on
every (account, dimensions) pair: descriptions, source references, dates and line order
do not change what the ledger holds, so they do not make a difference worth posting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from revbridge.domain.events import Event
from revbridge.domain.journal import Journal, JournalLine
from revbridge.domain.money import ZERO, money_str


class EventChange(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class EventDiff:
    """One event the chosen mapping adds, no longer emits, or emits differently."""

    change: EventChange
    type: str
    segment: int | None
    fields: Mapping[str, tuple[Any, Any]]  # name -> (stored, replayed), for CHANGED

    def as_dict(self) -> dict[str, Any]:
        return {
            "change": str(self.change),
            "type": self.type,
            "segment": self.segment,
            "fields": {k: {"before": b, "after": a} for k, (b, a) in self.fields.items()},
        }


Place = tuple[int, str, int]  # (segment, type, n-th of that type in the segment)


def diff_events(stored: Sequence[Event], replayed: Sequence[Event]) -> list[EventDiff]:
    """Added, removed and changed events, in segment order. ``recorded_at`` is when the
    event was written, not what it says, so it is not compared."""
    before, after = _by_place(stored), _by_place(replayed)
    diffs: list[EventDiff] = []
    for place in sorted(before.keys() | after.keys()):
        old, new = before.get(place), after.get(place)
        if old is None and new is not None:
            diffs.append(EventDiff(EventChange.ADDED, new.type, new.source.segment, {}))
        elif new is None and old is not None:
            diffs.append(EventDiff(EventChange.REMOVED, old.type, old.source.segment, {}))
        elif old is not None and new is not None and (fields := _changed_fields(old, new)):
            diffs.append(EventDiff(EventChange.CHANGED, new.type, new.source.segment, fields))
    return diffs


def _by_place(events: Iterable[Event]) -> dict[Place, Event]:
    places: dict[Place, Event] = {}
    seen: dict[tuple[int, str], int] = {}
    for event in events:
        segment = -1 if event.source.segment is None else event.source.segment
        n = seen.get((segment, event.type), 0)
        seen[(segment, event.type)] = n + 1
        places[(segment, event.type, n)] = event
    return places


def _changed_fields(old: Event, new: Event) -> dict[str, tuple[Any, Any]]:
    pairs: dict[str, tuple[Any, Any]] = {
        "id": (old.id, new.id),
        "schema_version": (old.schema_version, new.schema_version),
        "occurred_at": (old.occurred_at.isoformat(), new.occurred_at.isoformat()),
        "correlation_id": (old.correlation_id, new.correlation_id),
        "keys": (dict(old.keys), dict(new.keys)),
    }
    for name in old.data.keys() | new.data.keys():
        pairs[f"data.{name}"] = (old.data.get(name), new.data.get(name))
    return {name: pair for name, pair in sorted(pairs.items()) if pair[0] != pair[1]}


# ------------------------------------------------------------------------------ journals


class JournalChange(StrEnum):
    UNCHANGED = "unchanged"
    CHANGED = "changed"  # reverse the journal in effect, post an adjusting journal
    NEW = "new"  # nothing in effect: post the adjusting journal only
    GONE = "gone"  # the chosen versions build nothing: reverse the journal in effect only


@dataclass(frozen=True, slots=True)
class LineDiff:
    """The net (debit - credit) on one account and set of dimensions, before and after."""

    account: str
    dimensions: Mapping[str, str]
    before: Decimal
    after: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "dimensions": dict(self.dimensions),
            "before": money_str(self.before),
            "after": money_str(self.after),
        }


NetKey = tuple[str, tuple[tuple[str, str], ...]]


def nets(lines: Iterable[JournalLine]) -> dict[NetKey, Decimal]:
    """Net movement per (account, dimensions); accounts that net to zero are left out."""
    totals: dict[NetKey, Decimal] = {}
    for line in lines:
        key = (line.account, tuple(sorted(line.dimensions.items())))
        totals[key] = totals.get(key, ZERO) + line.net
    return {key: value for key, value in totals.items() if value}


def diff_lines(before: Journal | None, after: Journal | None) -> list[LineDiff]:
    """Every (account, dimensions) whose net differs, in account order."""
    old = nets(before.lines) if before else {}
    new = nets(after.lines) if after else {}
    return [
        LineDiff(
            account, dict(dims), old.get((account, dims), ZERO), new.get((account, dims), ZERO)
        )
        for account, dims in sorted(old.keys() | new.keys())
        if old.get((account, dims), ZERO) != new.get((account, dims), ZERO)
    ]


def journal_change(before: Journal | None, after: Journal | None) -> JournalChange | None:
    """How the journal under one key changes; None when there is none before or after."""
    if before is None:
        return None if after is None else JournalChange.NEW
    if after is None:
        return JournalChange.GONE
    if nets(before.lines) == nets(after.lines):
        return JournalChange.UNCHANGED
    return JournalChange.CHANGED
