"""Retention on PostgreSQL: raw messages and events in monthly partitions, dropped whole.

The scheme is described (and justified) at the top of ``migrations/postgres/0003_partitions.sql``:
``raw_messages``/``raw_parts`` and ``events``/``event_keys`` are partitioned by range of their
growing key (raw message id, event position), one block of ``BLOCK`` keys per month, created
ahead of time; ``partitions`` records each month's block and when rows started and stopped
going there. ``advance`` creates the blocks and moves each id sequence into the new month's
block when the month turns (``ALTER SEQUENCE ... RESTART``: transactional, so a rolled-back
unit of work moves nothing); ``drop`` detaches and drops a month's partitions in one
transaction with the deletion of its event ids from ``event_ids`` and its bookkeeping row.

Every statement that changes a partitioned table's structure takes a lock that makes readers
and writers of the table wait, and waits itself for those running; ``LOCK_TIMEOUT`` bounds
that wait (the job fails with ``StoreError`` and tries again on its next run) so that a long
report query never makes ingestion queue behind the retention job.

Queries and partition pruning (``EXPLAIN`` in ``tests/store/test_store_retention.py``):
``raw.get``/``read``, ``events.read_from``, ``raw.received`` and everything here that names a
key range touch only the partitions of that range; ``raw.find_by_sha256``,
``events.by_correlation`` and ``events.by_key`` (whose key index is partitioned with the
events) probe one index per month kept, which stays cheap (one index descent each) for the
84 or so months a deployment keeps. ``months`` counts each month's rows, a scan of every
partition (or of its primary key): the job does that once per run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from revbridge.domain.journal import JournalStatus
from revbridge.errors import StoreError
from revbridge.store.base import (
    Family,
    JobStatus,
    MonthPartition,
    OpenWork,
    RetentionRepository,
    add_months,
    month_of,
)

if TYPE_CHECKING:
    from revbridge.store.postgres import _Tx

BLOCK = 1_000_000_000
"""Keys per month's partition (a month with more spills into the next block)."""

LOCK_TIMEOUT = "10s"
"""How long a partition change waits for the sessions using the table."""

_LOCK_CLASS_RETENTION = 0x52420003  # advisory lock: one retention change at a time

_UNFINISHED_JOBS = [JobStatus.READY, JobStatus.LEASED, JobStatus.PARKED]
_UNPOSTED_JOURNALS = [status.value for status in JournalStatus if status != JournalStatus.POSTED]


@dataclass(frozen=True, slots=True)
class _Layout:
    """The tables of a family: the main table last (children are dropped first)."""

    family: str
    sequence: str
    main: str
    key: str
    time: str
    tables: tuple[tuple[str, str], ...]  # (partitioned table, its key column)


_LAYOUTS = {
    Family.RAW: _Layout(
        Family.RAW,
        "raw_messages_id_seq",
        "raw_messages",
        "id",
        "received_at",
        (("raw_parts", "raw_id"), ("raw_messages", "id")),
    ),
    Family.EVENTS: _Layout(
        Family.EVENTS,
        "events_position_seq",
        "events",
        "position",
        "recorded_at",
        (("event_keys", "position"), ("events", "position")),
    ),
}


def partition_name(table: str, month: date) -> str:
    """The partition of ``table`` for ``month``: ``raw_messages_y2026m01``."""
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def _layout(family: str) -> _Layout:
    try:
        return _LAYOUTS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r} (known: {list(_LAYOUTS)})") from None


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs aware UTC times")
    return value.astimezone(UTC)


# The months of a family with what they hold. Each lateral count is pruned to its month's
# partition (the range names its bounds); first and last rows are found by primary key.
_MONTHS = """
SELECT p.month, p.low, p.high, p.opened_at, p.closed_at,
       s.rows, s.first_key, s.last_key, f.{time}, l.{time}
FROM partitions AS p
CROSS JOIN LATERAL (
    SELECT count(*) AS rows, min(m.{key}) AS first_key, max(m.{key}) AS last_key
    FROM {main} AS m WHERE m.{key} >= p.low AND m.{key} < p.high
) AS s
LEFT JOIN {main} AS f ON f.{key} = s.first_key
LEFT JOIN {main} AS l ON l.{key} = s.last_key
WHERE p.family = %(family)s
ORDER BY p.low
"""

# Open work that needs a month of raw messages: through the units cut from them.
_RAW_OPEN_WORK = """
WITH month_units AS (
    SELECT id, status FROM units WHERE raw_id >= %(low)s AND raw_id < %(high)s
), open_items AS (
    SELECT CASE WHEN subject->>'raw_id' ~ '^[0-9]{1,18}$'
                THEN (subject->>'raw_id')::bigint END AS raw_id,
           subject->>'unit_id' AS unit_id
    FROM exceptions WHERE status = 'open'
)
SELECT
    (SELECT count(*) FROM month_units WHERE status = 'pending'),
    (SELECT count(*) FROM jobs
     WHERE status = ANY(%(unfinished)s)
       AND payload->>'unit_id' IN (SELECT id::text FROM month_units)),
    (SELECT count(*) FROM journals
     WHERE status = ANY(%(unposted)s) AND unit_id IN (SELECT id FROM month_units)),
    (SELECT count(*) FROM open_items
     WHERE (raw_id >= %(low)s AND raw_id < %(high)s)
        OR unit_id IN (SELECT id::text FROM month_units))
"""

# Open work that needs a month of events: jobs of its correlations (journal jobs read their
# events), journals whose journal.prepared event it holds (posting reads it), exception
# items naming a unit its events came from.
_EVENTS_OPEN_WORK = """
WITH month_events AS (
    SELECT correlation_id, source->>'unit_id' AS unit_id
    FROM events WHERE position >= %(low)s AND position < %(high)s
)
SELECT
    0,
    (SELECT count(*) FROM jobs
     WHERE status = ANY(%(unfinished)s)
       AND (payload->>'correlation_id' IN (SELECT correlation_id FROM month_events)
            OR payload->>'unit_id' IN (SELECT unit_id FROM month_events))),
    (SELECT count(*) FROM journals AS j
     WHERE j.status = ANY(%(unposted)s)
       AND EXISTS (SELECT 1 FROM event_keys AS k
                   WHERE k.value = j.key AND k.position >= %(low)s AND k.position < %(high)s)),
    (SELECT count(*) FROM exceptions
     WHERE status = 'open' AND subject->>'unit_id' IN (SELECT unit_id FROM month_events))
"""


class PostgresRetention(RetentionRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    # ------------------------------------------------------------------------- reading

    def months(self, family: str) -> list[MonthPartition]:
        layout = _layout(family)
        query = _MONTHS.format(time=layout.time, key=layout.key, main=layout.main)
        rows = self._tx.all(query, {"family": family})
        return [_month_from_row(family, row) for row in rows]

    def open_work(self, family: str, month: date) -> OpenWork:
        low, high, _ = self._bounds(family, month)
        query = _RAW_OPEN_WORK if family == Family.RAW else _EVENTS_OPEN_WORK
        params = {
            "low": low,
            "high": high,
            "unfinished": _UNFINISHED_JOBS,
            "unposted": _UNPOSTED_JOURNALS,
        }
        row = self._tx.one(query, params)
        if row is None:  # pragma: no cover - a SELECT without FROM returns one row
            raise StoreError("open work query returned no row")
        return OpenWork(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    # ------------------------------------------------------------------------ changing

    def advance(self, now: datetime) -> list[MonthPartition]:
        at = _utc(now)
        this_month = month_of(at)
        created: list[MonthPartition] = []
        with _waiting_briefly():
            self._serialise()
            for layout in _LAYOUTS.values():
                created += self._create_ahead(layout, this_month)
                self._move_into(layout, this_month, at)
        return created

    def drop(self, family: str, month: date) -> int:
        layout = _layout(family)
        with _waiting_briefly():
            self._serialise()
            low, high, closed_at = self._bounds(family, month, lock=True)
            if closed_at is None:
                raise StoreError(f"{family} {month:%Y-%m} is current: new rows still go there")
            if self._next_key(layout) < high:
                raise StoreError(f"{family} {month:%Y-%m}: the id sequence has not moved past it")
            rows = self._tx.count(
                f"SELECT count(*) FROM {layout.main}"
                f" WHERE {layout.key} >= %s AND {layout.key} < %s",
                (low, high),
            )
            for table, _key in layout.tables:
                self._drop_partition(table, partition_name(table, month))
        if family == Family.EVENTS:
            self._tx.run(
                "DELETE FROM event_ids WHERE position >= %s AND position < %s", (low, high)
            )
        self._tx.run("DELETE FROM partitions WHERE family = %s AND month = %s", (family, month))
        return rows

    # ------------------------------------------------------------------------- helpers

    def _serialise(self) -> None:
        """One retention change at a time; structure changes wait at most ``LOCK_TIMEOUT``."""
        self._execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        self._tx.one("SELECT pg_advisory_xact_lock(%s::integer, 0)", (_LOCK_CLASS_RETENTION,))

    def _bounds(
        self, family: str, month: date, *, lock: bool = False
    ) -> tuple[int, int, datetime | None]:
        _layout(family)
        row = self._tx.one(
            "SELECT low, high, closed_at FROM partitions WHERE family = %s AND month = %s"
            + (" FOR UPDATE" if lock else ""),
            (family, month),
        )
        if row is None:
            raise KeyError(f"no {family} month {month:%Y-%m}")
        return int(row[0]), int(row[1]), row[2]

    def _next_key(self, layout: _Layout) -> int:
        row = self._tx.one(
            "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
            f" FROM {layout.sequence}"
        )
        return 1 if row is None else int(row[0])

    def _create_ahead(self, layout: _Layout, this_month: date) -> list[MonthPartition]:
        """Partitions for this month and the next, after the last block (never below it)."""
        rows = self._tx.all(
            "SELECT month, high FROM partitions WHERE family = %s ORDER BY low", (layout.family,)
        )
        if not rows:
            raise StoreError(f"no {layout.family} partitions are recorded (table partitions)")
        newest: date = rows[-1][0]
        end = int(rows[-1][1])
        created: list[MonthPartition] = []
        for month in (this_month, add_months(this_month, 1)):
            if month <= newest:
                continue
            self._create(layout, month, end, end + BLOCK)
            created.append(MonthPartition(layout.family, month, end, end + BLOCK, None, None))
            newest, end = month, end + BLOCK
        return created

    def _create(self, layout: _Layout, month: date, low: int, high: int) -> None:
        for table, _key in layout.tables:
            self._execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name(table, month)),
                    sql.Identifier(table),
                    sql.Literal(low),
                    sql.Literal(high),
                )
            )
        self._tx.run(
            "INSERT INTO partitions (family, month, low, high) VALUES (%s, %s, %s, %s)",
            (layout.family, month, low, high),
        )

    def _move_into(self, layout: _Layout, this_month: date, at: datetime) -> None:
        """New keys from this month's block on; the months below it are closed."""
        row = self._tx.one(
            "SELECT low FROM partitions WHERE family = %s AND month = %s",
            (layout.family, this_month),
        )
        if row is None:  # the clock is behind the newest month: nothing to move
            return
        low = int(row[0])
        if self._next_key(layout) < low:
            self._execute(
                sql.SQL("ALTER SEQUENCE {} RESTART WITH {}").format(
                    sql.Identifier(layout.sequence), sql.Literal(low)
                )
            )
        self._tx.run(
            "UPDATE partitions SET opened_at = %s"
            " WHERE family = %s AND month = %s AND opened_at IS NULL",
            (at, layout.family, this_month),
        )
        self._tx.run(
            "UPDATE partitions SET closed_at = %s"
            " WHERE family = %s AND high <= %s AND closed_at IS NULL",
            (at, layout.family, low),
        )

    def _drop_partition(self, table: str, partition: str) -> None:
        names = {"table": sql.Identifier(table), "partition": sql.Identifier(partition)}
        self._execute(sql.SQL("ALTER TABLE {table} DETACH PARTITION {partition}").format(**names))
        self._execute(sql.SQL("DROP TABLE {partition}").format(**names))

    def _execute(self, statement: sql.Composed) -> None:
        """A statement with names in it (no rows back)."""
        self._tx.conn.execute(statement)


@contextmanager
def _waiting_briefly() -> Iterator[None]:
    """A lock not granted within ``LOCK_TIMEOUT`` becomes ``StoreError`` (try again later)."""
    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        raise StoreError(
            f"retention could not lock a partitioned table within {LOCK_TIMEOUT} (long"
            " queries or transactions are using it); nothing changed, try again later"
        ) from exc


def _month_from_row(family: str, row: tuple[Any, ...]) -> MonthPartition:
    return MonthPartition(
        family=family,
        month=row[0],
        low=int(row[1]),
        high=int(row[2]),
        opened_at=row[3],
        closed_at=row[4],
        rows=int(row[5]),
        first_key=row[6],
        last_key=row[7],
        first_at=row[8],
        last_at=row[9],
    )
