"""Retention on SQLite: the same months as on PostgreSQL, deleted in bulk by key range.

SQLite has no partitions. ``partitions`` records each month's key range instead: the current
month is open-ended (``high`` NULL) until ``advance`` closes it at the last key handed out
(exact: the unit of work holds the database write lock, and keys are AUTOINCREMENT) and
opens the next. ``drop`` deletes a closed month's rows with a few range deletes, in one
transaction: raw parts and raw messages by their key (primary key and ``(raw_id, part_no)``
ranges), the event key index by its primary key for each key of the month's events (no
scan of the index), then the events.

That is the embedded trade-off: a month goes in one transaction, never row by row as data
ages, but the deletes still touch every row of the month (the writer waits meanwhile), and
the file does not shrink: SQLite reuses the freed pages for new rows (``VACUUM`` returns
them to the file system, offline).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from revbridge.domain.journal import JournalStatus
from revbridge.errors import StoreError
from revbridge.store import codec
from revbridge.store.base import (
    Family,
    JobStatus,
    MonthPartition,
    OpenWork,
    RetentionRepository,
    month_of,
)

if TYPE_CHECKING:
    from revbridge.store.sqlite import _Tx

_NO_END = (1 << 63) - 1  # the end of an open month's range, for queries
_UNFINISHED_JOBS = (JobStatus.READY, JobStatus.LEASED, JobStatus.PARKED)
_UNPOSTED_JOURNALS = tuple(s.value for s in JournalStatus if s != JournalStatus.POSTED)


@dataclass(frozen=True, slots=True)
class _Layout:
    family: str
    main: str
    key: str
    time: str


_LAYOUTS = {
    Family.RAW: _Layout(Family.RAW, "raw_messages", "id", "received_at"),
    Family.EVENTS: _Layout(Family.EVENTS, "events", "position", "recorded_at"),
}


def _layout(family: str) -> _Layout:
    try:
        return _LAYOUTS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r} (known: {list(_LAYOUTS)})") from None


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


# Open work that needs a month of raw messages: through the units cut from them.
_RAW_OPEN_WORK = f"""
WITH month_units AS (
    SELECT id, status FROM units WHERE raw_id >= :low AND raw_id < :high
)
SELECT
    (SELECT count(*) FROM month_units WHERE status = 'pending'),
    (SELECT count(*) FROM jobs
     WHERE status IN {_in(_UNFINISHED_JOBS)}
       AND CAST(json_extract(payload, '$.unit_id') AS INTEGER) IN (SELECT id FROM month_units)),
    (SELECT count(*) FROM journals
     WHERE status IN {_in(_UNPOSTED_JOURNALS)} AND unit_id IN (SELECT id FROM month_units)),
    (SELECT count(*) FROM exceptions
     WHERE status = 'open'
       AND (CAST(json_extract(subject, '$.raw_id') AS INTEGER) BETWEEN :low AND :high - 1
            OR CAST(json_extract(subject, '$.unit_id') AS INTEGER)
               IN (SELECT id FROM month_units)))
"""

# Open work that needs a month of events: jobs of its correlations (journal jobs read their
# events), journals whose journal.prepared event it holds (posting reads it), exception
# items naming a unit its events came from.
_EVENTS_OPEN_WORK = f"""
WITH month_events AS (
    SELECT correlation_id, CAST(json_extract(source, '$.unit_id') AS INTEGER) AS unit_id
    FROM events WHERE position >= :low AND position < :high
)
SELECT
    0,
    (SELECT count(*) FROM jobs
     WHERE status IN {_in(_UNFINISHED_JOBS)}
       AND (json_extract(payload, '$.correlation_id') IN (SELECT correlation_id FROM month_events)
            OR CAST(json_extract(payload, '$.unit_id') AS INTEGER)
               IN (SELECT unit_id FROM month_events))),
    (SELECT count(*) FROM journals AS j
     WHERE j.status IN {_in(_UNPOSTED_JOURNALS)}
       AND EXISTS (SELECT 1 FROM event_keys AS k
                   WHERE k.value = j.key AND k.position >= :low AND k.position < :high)),
    (SELECT count(*) FROM exceptions
     WHERE status = 'open'
       AND CAST(json_extract(subject, '$.unit_id') AS INTEGER)
           IN (SELECT unit_id FROM month_events))
"""

# A month of events: its key index rows, found by primary key from the events' own keys.
_DELETE_EVENT_KEYS = """
DELETE FROM event_keys WHERE (value, position) IN (
    SELECT k.value, e.position FROM events AS e, json_each(e.keys) AS k
    WHERE e.position >= :low AND e.position < :high
)
"""


class SQLiteRetention(RetentionRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    # ------------------------------------------------------------------------- reading

    def months(self, family: str) -> list[MonthPartition]:
        layout = _layout(family)
        rows = self._tx.all(
            "SELECT month, low, high, opened_at, closed_at FROM partitions"
            " WHERE family = ? ORDER BY low",
            (family,),
        )
        return [self._month(layout, row) for row in rows]

    def _month(self, layout: _Layout, row: tuple[Any, ...]) -> MonthPartition:
        low, high = int(row[1]), row[2]
        stats = self._tx.one(
            f"SELECT count(*), min({layout.key}), max({layout.key}) FROM {layout.main}"
            f" WHERE {layout.key} >= ? AND {layout.key} < ?",
            (low, _NO_END if high is None else high),
        )
        count, first_key, last_key = stats if stats is not None else (0, None, None)
        return MonthPartition(
            family=layout.family,
            month=date.fromisoformat(row[0]),
            low=low,
            high=high,
            opened_at=codec.optional_datetime(row[3]),
            closed_at=codec.optional_datetime(row[4]),
            rows=int(count),
            first_key=first_key,
            last_key=last_key,
            first_at=self._time(layout, first_key),
            last_at=self._time(layout, last_key),
        )

    def _time(self, layout: _Layout, key: int | None) -> datetime | None:
        if key is None:
            return None
        row = self._tx.one(
            f"SELECT {layout.time} FROM {layout.main} WHERE {layout.key} = ?", (key,)
        )
        return None if row is None else codec.from_micros(row[0])

    def open_work(self, family: str, month: date) -> OpenWork:
        low, high, _ = self._bounds(family, month)
        query = _RAW_OPEN_WORK if family == Family.RAW else _EVENTS_OPEN_WORK
        row = self._named(query, {"low": low, "high": _NO_END if high is None else high})
        return OpenWork(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    # ------------------------------------------------------------------------ changing

    def advance(self, now: datetime) -> list[MonthPartition]:
        at = codec.to_micros(now)
        this_month = month_of(now)
        opened: list[MonthPartition] = []
        for layout in _LAYOUTS.values():
            month = self._open_month(layout, this_month, at)
            if month is not None:
                opened.append(month)
        return opened

    def _open_month(self, layout: _Layout, this_month: date, at: int) -> MonthPartition | None:
        """Close the current month at the last key handed out and open ``this_month``."""
        current = self._tx.one(
            "SELECT month, low FROM partitions WHERE family = ? AND closed_at IS NULL",
            (layout.family,),
        )
        if current is not None and date.fromisoformat(current[0]) >= this_month:
            return None
        end = self._last_key(layout) + 1
        if current is not None:
            self._tx.update(
                "UPDATE partitions SET high = ?, closed_at = ? WHERE family = ? AND month = ?",
                (end, at, layout.family, current[0]),
            )
        self._tx.update(
            "INSERT INTO partitions (family, month, low, high, opened_at, closed_at)"
            " VALUES (?, ?, ?, NULL, ?, NULL)",
            (layout.family, this_month.isoformat(), end, at),
        )
        return MonthPartition(layout.family, this_month, end, None, codec.from_micros(at), None)

    def _last_key(self, layout: _Layout) -> int:
        """The last key AUTOINCREMENT handed out (kept even if its row was deleted)."""
        row = self._tx.one("SELECT seq FROM sqlite_sequence WHERE name = ?", (layout.main,))
        return 0 if row is None else int(row[0])

    def drop(self, family: str, month: date) -> int:
        low, high, closed_at = self._bounds(family, month)
        if closed_at is None or high is None:
            raise StoreError(f"{family} {month:%Y-%m} is current: new rows still go there")
        bounds = {"low": low, "high": high}
        if family == Family.RAW:
            self._named("DELETE FROM raw_parts WHERE raw_id >= :low AND raw_id < :high", bounds)
            rows = self._deleted("DELETE FROM raw_messages WHERE id >= :low AND id < :high", bounds)
        else:
            self._named(_DELETE_EVENT_KEYS, bounds)
            rows = self._deleted(
                "DELETE FROM events WHERE position >= :low AND position < :high", bounds
            )
        self._tx.update(
            "DELETE FROM partitions WHERE family = ? AND month = ?", (family, month.isoformat())
        )
        return rows

    # ------------------------------------------------------------------------- helpers

    def _bounds(self, family: str, month: date) -> tuple[int, int | None, int | None]:
        _layout(family)
        row = self._tx.one(
            "SELECT low, high, closed_at FROM partitions WHERE family = ? AND month = ?",
            (family, month.isoformat()),
        )
        if row is None:
            raise KeyError(f"no {family} month {month:%Y-%m}")
        return int(row[0]), row[1], row[2]

    def _named(self, query: str, params: Mapping[str, int]) -> tuple[Any, ...]:
        row: tuple[Any, ...] | None = self._tx.conn.execute(query, params).fetchone()
        return () if row is None else row

    def _deleted(self, query: str, params: Mapping[str, int]) -> int:
        return int(self._tx.conn.execute(query, params).rowcount)
