"""The embedded store: one SQLite file, WAL, ``synchronous=FULL``, one writer at a time.

One ``SQLiteStore`` owns one connection, guarded by a re-entrant lock: a unit of work holds
the lock and a ``BEGIN IMMEDIATE`` transaction (the database write lock) from start to
commit, so threads of one process queue on the lock and processes sharing the file queue on
SQLite's lock (``busy_timeout``). Everything SQLite-specific lives here and in
``migrations/sqlite``; the JSON/time/amount encoding is in ``codec`` and shared by backends.

Contract details this backend fixes for every backend (the contract suite checks them):

- looking up or updating an id/key that does not exist raises ``KeyError``;
- a write refused by an integrity rule (unknown referenced id, a second live unit with the
  same natural key and bytes, a repeated event id) raises ``StoreError``;
- raw bytes are checked against the given ``sha256`` while they are streamed in;
- repositories work only inside their unit of work (``StoreError`` afterwards).

Wake-ups (``wait_for_work``): SQLite has no notifications, so a waiting thread polls, every
``WAKE_POLL_SECONDS``, ``PRAGMA data_version`` on a connection of the store's own that
does nothing else: it changes when any other connection, in this process or another,
commits to the file (a rollback changes nothing). That is wider than "a job was enqueued"
(any commit wakes the waiters, who look again and find nothing), but it is cheap: the
pragma reads the WAL index in shared memory, takes no lock and touches no table.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from revbridge.domain.events import Event, utcnow
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.errors import ConfigurationError, LeaseLost, StoreError
from revbridge.registry import ComponentSpec, Field
from revbridge.store import codec, history, stored_data
from revbridge.store.base import (
    Approval,
    ApprovalRepository,
    ApprovalStatus,
    AuditEntry,
    AuditLog,
    EventLog,
    ExceptionItem,
    ExceptionRepository,
    ExceptionStatus,
    Job,
    JobQueue,
    JobStatus,
    JournalRecord,
    JournalRepository,
    NewException,
    NewUnit,
    Note,
    Outbox,
    OutboxItem,
    OutboxStatus,
    RawMessage,
    RawRepository,
    Resolution,
    Store,
    StoredEvent,
    Unit,
    UnitOfWork,
    UnitRepository,
    UnitStatus,
)
from revbridge.store.history import Migration
from revbridge.store.sqlite_retention import SQLiteRetention

SPEC = ComponentSpec(
    "store",
    "sqlite",
    "The embedded store: one SQLite file in WAL mode with synchronous=FULL (refuses less).",
    (Field("path", "path", "The database file (created if missing).", example="revbridge.db"),),
)

SCHEMA_VERSION = 5
"""The schema version this code expects (the highest migration shipped with it)."""

STREAM_CHUNK = 1 << 20
"""Bytes moved per read/write when streaming a raw message in."""

DEFAULT_RAW_PART_SIZE = 64 << 20
"""Raw messages are stored as parts of at most this many bytes (SQLite values max at ~1e9)."""

WAKE_POLL_SECONDS = 0.05
"""How often a thread waiting for work looks whether another connection committed."""

_SYNCHRONOUS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
_JOURNAL_MODES = frozenset({"WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY", "OFF"})
_WAL_SIZE_LIMIT = 64 << 20
_CACHE_KIB = 32 << 10
_PAGE_SIZE = 8 << 10
"""The page size of a new database file. A claim event is ≈ 2 KB, so a 4 KiB page (SQLite's
default) holds one and leaves half unused, and every event write and commit moves twice its
bytes; an 8 KiB page holds three. A file keeps the page size it was created with (SQLite
changes it only by ``VACUUM``, never in WAL mode), so databases made before read and write
as they always did."""

Row = tuple[Any, ...]


# ------------------------------------------------------------------------ transaction


class _Tx:
    """The connection of one unit of work; refuses use once the unit of work has ended."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.active = True

    @property
    def conn(self) -> sqlite3.Connection:
        if not self.active:
            raise StoreError("the unit of work has ended; open a new one")
        return self._connection

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.conn.execute(sql, params).fetchall())

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT and return the new row id; integrity failures become StoreError."""
        try:
            cursor = self.conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"refused by the store: {exc}") from exc
        if cursor.lastrowid is None:  # pragma: no cover - sqlite always sets it on INSERT
            raise StoreError("insert returned no row id")
        return cursor.lastrowid

    def update(self, sql: str, params: Sequence[Any]) -> int:
        """Run an UPDATE/INSERT ... DO NOTHING and return the number of rows changed."""
        try:
            return self.conn.execute(sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"refused by the store: {exc}") from exc

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"refused by the store: {exc}") from exc

    def insert_rows(
        self, head: str, rows: Sequence[Sequence[Any]], per_statement: int, tail: str = ""
    ) -> None:
        """``head`` (``INSERT INTO t (a, b) VALUES``) for many rows, several per statement,
        each statement ending with ``tail`` (e.g. ``ON CONFLICT DO NOTHING``).

        Multi-row statements cost far less per row than ``executemany`` of one-row ones.
        """
        if not rows:
            return
        width = len(rows[0])
        limit = self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        step = max(1, min(per_statement, limit // width))
        group = "(" + ", ".join("?" * width) + ")"
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            sql = f"{head} {', '.join([group] * len(chunk))}{tail}"
            params = list(chain.from_iterable(chunk))
            try:
                self.conn.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"refused by the store: {exc}") from exc

    def exists(self, table: str, column: str, value: object) -> bool:
        return self.one(f"SELECT 1 FROM {table} WHERE {column} = ?", (value,)) is not None

    def must_change(self, changed: int, table: str, column: str, value: object) -> None:
        """Raise KeyError when an update touched nothing because the row does not exist."""
        if changed == 0 and not self.exists(table, column, value):
            raise KeyError(f"{table}: no row with {column} = {value!r}")


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


# ------------------------------------------------------------------------ raw messages

_RAW_COLUMNS = "id, channel, name, content_type, sha256, size, received_at"


def _raw_from_row(row: Row) -> RawMessage:
    return RawMessage(
        id=row[0],
        channel=row[1],
        name=row[2],
        content_type=row[3],
        sha256=row[4],
        size=row[5],
        received_at=codec.from_micros(row[6]),
    )


@dataclass(frozen=True, slots=True)
class _Part:
    rowid: int
    offset: int
    size: int


class SQLiteRawRepository(RawRepository):
    def __init__(self, tx: _Tx, part_size: int) -> None:
        self._tx = tx
        self._part_size = part_size

    def add(
        self,
        *,
        channel: str,
        name: str,
        content_type: str,
        sha256: str,
        size: int,
        stream: BinaryIO,
    ) -> RawMessage:
        if size < 0:
            raise ValueError(f"negative size {size}")
        received_at = codec.to_micros(utcnow())
        raw_id = self._tx.insert(
            "INSERT INTO raw_messages (channel, name, content_type, sha256, size, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (channel, name, content_type, sha256, size, received_at),
        )
        digest = hashlib.sha256()
        for part_no, offset in enumerate(range(0, size, self._part_size)):
            length = min(self._part_size, size - offset)
            self._write_part(
                raw_id, part_no=part_no, offset=offset, length=length, stream=stream, digest=digest
            )
        if digest.hexdigest() != sha256:
            raise ValueError(f"sha256 of the streamed bytes is {digest.hexdigest()}, not {sha256}")
        return self.get(raw_id)

    def _write_part(
        self,
        raw_id: int,
        *,
        part_no: int,
        offset: int,
        length: int,
        stream: BinaryIO,
        digest: Any,
    ) -> None:
        part_id = self._tx.insert(
            "INSERT INTO raw_parts (raw_id, part_no, byte_offset, size, content)"
            " VALUES (?, ?, ?, ?, zeroblob(?))",
            (raw_id, part_no, offset, length, length),
        )
        with self._tx.conn.blobopen("raw_parts", "content", part_id) as blob:
            written = 0
            while written < length:
                chunk = stream.read(min(STREAM_CHUNK, length - written))
                if not chunk:
                    raise ValueError(f"stream ended after {offset + written} bytes")
                blob.write(chunk)
                digest.update(chunk)
                written += len(chunk)

    def find_by_sha256(self, sha256: str) -> RawMessage | None:
        row = self._tx.one(
            f"SELECT {_RAW_COLUMNS} FROM raw_messages WHERE sha256 = ? ORDER BY id LIMIT 1",
            (sha256,),
        )
        return None if row is None else _raw_from_row(row)

    def get(self, raw_id: int) -> RawMessage:
        row = self._tx.one(f"SELECT {_RAW_COLUMNS} FROM raw_messages WHERE id = ?", (raw_id,))
        if row is None:
            raise KeyError(f"no raw message {raw_id}")
        return _raw_from_row(row)

    def received(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[RawMessage]:
        where, params = ["id > ?"], [after_id]
        if since is not None:
            where.append("received_at >= ?")
            params.append(codec.to_micros(since))
        if until is not None:
            where.append("received_at < ?")
            params.append(codec.to_micros(until))
        rows = self._tx.all(
            f"SELECT {_RAW_COLUMNS} FROM raw_messages WHERE {' AND '.join(where)}"
            " ORDER BY id LIMIT ?",
            (*params, max(limit, 0)),
        )
        return [_raw_from_row(row) for row in rows]

    def read(self, raw_id: int, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(self._pieces(raw_id, start, end, max_read=None))

    def iter_chunks(
        self, raw_id: int, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Chunks of exactly ``chunk_size`` bytes (the last one may be shorter)."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        buffer = bytearray()
        for piece in self._pieces(raw_id, start, end, max_read=chunk_size):
            if not buffer and len(piece) == chunk_size:
                yield piece
                continue
            buffer += piece
            while len(buffer) >= chunk_size:
                yield bytes(buffer[:chunk_size])
                del buffer[:chunk_size]
        if buffer:
            yield bytes(buffer)

    def _pieces(
        self, raw_id: int, start: int, end: int | None, max_read: int | None
    ) -> Iterator[bytes]:
        size = self.get(raw_id).size
        stop = size if end is None else end
        if not 0 <= start <= stop <= size:
            raise ValueError(f"byte range [{start}, {end}) outside raw message of {size} bytes")
        for part in self._parts(raw_id, start, stop):
            low = max(start - part.offset, 0)
            high = min(stop - part.offset, part.size)
            step = max(high - low if max_read is None else max_read, 1)
            for position in range(low, high, step):
                yield self._read_part(part, position, min(step, high - position))

    def _parts(self, raw_id: int, start: int, stop: int) -> list[_Part]:
        rows = self._tx.all(
            "SELECT id, byte_offset, size FROM raw_parts"
            " WHERE raw_id = ? AND byte_offset < ? AND byte_offset + size > ?"
            " ORDER BY part_no",
            (raw_id, stop, start),
        )
        return [_Part(rowid=row[0], offset=row[1], size=row[2]) for row in rows]

    def _read_part(self, part: _Part, position: int, length: int) -> bytes:
        with self._tx.conn.blobopen("raw_parts", "content", part.rowid, readonly=True) as blob:
            blob.seek(position)
            return blob.read(length)


# ------------------------------------------------------------------------------- units

_UNIT_COLUMNS = (
    "id, raw_id, kind, natural_key, content_hash, byte_start, byte_end, first_segment,"
    " envelope, status, reason, created_at"
)


def _unit_from_row(row: Row) -> Unit:
    return Unit(
        id=row[0],
        raw_id=row[1],
        kind=row[2],
        natural_key=row[3],
        content_hash=row[4],
        byte_start=row[5],
        byte_end=row[6],
        first_segment=row[7],
        envelope=codec.string_map(row[8]),
        status=row[9],
        reason=row[10],
        created_at=codec.from_micros(row[11]),
    )


class SQLiteUnitRepository(UnitRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def add(self, unit: NewUnit, status: str = UnitStatus.PENDING) -> Unit:
        unit_id = self._tx.insert(
            "INSERT INTO units (raw_id, kind, natural_key, content_hash, byte_start, byte_end,"
            " first_segment, envelope, status, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (
                unit.raw_id,
                unit.kind,
                unit.natural_key,
                unit.content_hash,
                unit.byte_start,
                unit.byte_end,
                unit.first_segment,
                codec.to_json(unit.envelope),
                status,
                codec.to_micros(utcnow()),
            ),
        )
        return self.get(unit_id)

    def get(self, unit_id: int) -> Unit:
        row = self._tx.one(f"SELECT {_UNIT_COLUMNS} FROM units WHERE id = ?", (unit_id,))
        if row is None:
            raise KeyError(f"no unit {unit_id}")
        return _unit_from_row(row)

    def find(self, natural_key: str, content_hash: str) -> Unit | None:
        return self._first("natural_key = ? AND content_hash = ?", (natural_key, content_hash))

    def natural_key_seen(self, natural_key: str, content_hash: str) -> Unit | None:
        return self._first("natural_key = ? AND content_hash <> ?", (natural_key, content_hash))

    def _first(self, where: str, params: Sequence[Any]) -> Unit | None:
        row = self._tx.one(
            f"SELECT {_UNIT_COLUMNS} FROM units WHERE {where} ORDER BY id LIMIT 1", params
        )
        return None if row is None else _unit_from_row(row)

    def by_raw(self, raw_id: int) -> list[Unit]:
        rows = self._tx.all(
            f"SELECT {_UNIT_COLUMNS} FROM units WHERE raw_id = ? ORDER BY id", (raw_id,)
        )
        return [_unit_from_row(row) for row in rows]

    def set_status(self, unit_id: int, status: str, reason: str | None = None) -> None:
        changed = self._tx.update(
            "UPDATE units SET status = ?, reason = ? WHERE id = ?", (status, reason, unit_id)
        )
        self._tx.must_change(changed, "units", "id", unit_id)


# ------------------------------------------------------------------------------ events

_EVENT_COLUMNS = (
    "position, id, type, schema_version, occurred_at, recorded_at, entity, facility, keys,"
    " correlation_id, causation_id, source, data"
)
_INSERT_EVENTS = (
    "INSERT INTO events (id, type, schema_version, occurred_at, recorded_at, entity, facility,"
    " keys, correlation_id, causation_id, source, data) VALUES"
)
# event_keys holds (value, position) where a run of an append's events holding the value
# starts, not a row per event and key (see _run_starts); databases written before hold a
# row per event and key, which by_key reads the same way.
_INSERT_EVENT_KEYS = "INSERT INTO event_keys (value, position) VALUES"
_EVENTS_PER_STATEMENT = 200


class SQLiteEventLog(EventLog):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def append(self, events: Sequence[Event]) -> list[int]:
        if not events:
            return []
        rows = codec.event_rows(events, codec.Writing().micros)
        self._tx.insert_rows(_INSERT_EVENTS, rows, _EVENTS_PER_STATEMENT)
        positions = self._positions(len(rows))
        key_rows = _run_starts(events, positions)
        self._tx.insert_rows(_INSERT_EVENT_KEYS, key_rows, 4 * _EVENTS_PER_STATEMENT)
        return positions

    def _positions(self, count: int) -> list[int]:
        # The unit of work holds the write lock and positions are AUTOINCREMENT, so the rows
        # just inserted got consecutive positions ending at the last inserted rowid.
        row = self._tx.one("SELECT last_insert_rowid()")
        last = int(row[0]) if row is not None else 0
        return list(range(last - count + 1, last + 1))

    def by_correlation(self, correlation_id: str) -> list[StoredEvent]:
        return self._select("WHERE correlation_id = ? ORDER BY position", (correlation_id,))

    def by_key(self, value: str) -> list[StoredEvent]:
        """The events of every run that ``event_keys`` names (see ``_run_starts``)."""
        starts = self._tx.all(
            "SELECT position FROM event_keys WHERE value = ? ORDER BY position", (value,)
        )
        reading = codec.Reading()
        found: list[StoredEvent] = []
        end = 0
        for (start,) in starts:
            if start > end:  # not inside the run just followed
                end = self._run_end(start, value, reading)
                found += self._select(
                    "WHERE position BETWEEN ? AND ? ORDER BY position", (start, end), reading
                )
        return found

    def _run_end(self, start: int, value: str, reading: codec.Reading) -> int:
        """The last position of the run of consecutive events holding ``value`` that begins
        at ``start`` (``start - 1`` if that event is gone)."""
        end, batch = start - 1, 16  # most runs are a claim's few events
        while True:
            rows = self._tx.all(
                "SELECT position, keys FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (end, batch),
            )
            for position, keys in rows:
                if position != end + 1 or value not in reading.string_map(keys).values():
                    return end
                end = position
            if len(rows) < batch:
                return end
            batch = min(batch * 4, 4096)

    def read_from(self, after_position: int, limit: int = 1000) -> list[StoredEvent]:
        return self._select(
            "WHERE position > ? ORDER BY position LIMIT ?", (after_position, max(limit, 0))
        )

    def count(self) -> int:
        return _count(self._tx, "SELECT COUNT(*) FROM events")

    def _select(
        self, clause: str, params: Sequence[Any], reading: codec.Reading | None = None
    ) -> list[StoredEvent]:
        rows = self._tx.all(f"SELECT {_EVENT_COLUMNS} FROM events {clause}", params)
        reading = reading or codec.Reading()
        return reading.events(rows, micros=True)


def _run_starts(events: Sequence[Event], positions: Sequence[int]) -> list[Row]:
    """The ``event_keys`` rows of one append: (value, position) where a run of consecutive
    events holding ``value`` among their keys starts.

    An append's events have consecutive positions, and most of them repeat the keys of the
    one before (every event of a remittance names its payment, a claim's adjustments name
    the claim), so indexing where each run starts, rather than every event, makes a few
    rows per claim instead of a few per event. ``by_key`` follows each run forward while
    the events still hold the value; that finds exactly the events holding it, since one
    that is not where a run starts follows an event of the same append holding it.
    """
    rows: list[Row] = []
    previous: Mapping[str, str] = {}
    for event, position in zip(events, positions, strict=True):
        keys = event.keys
        if keys is not previous:  # a claim's adjustments share its very keys
            before = previous.values()
            rows += [(v, position) for v in dict.fromkeys(keys.values()) if v not in before]
            previous = keys
    return rows


def _count(tx: _Tx, sql: str, params: Sequence[Any] = ()) -> int:
    row = tx.one(sql, params)
    return 0 if row is None else int(row[0])


# -------------------------------------------------------------------------------- jobs

_JOB_COLUMNS = (
    "id, kind, key, payload, status, attempts, run_after, lease_owner, lease_expires_at,"
    " fence, last_error"
)


def _job_from_row(row: Row) -> Job:
    return Job(
        id=row[0],
        kind=row[1],
        key=row[2],
        payload=stored_data.json_object(row[3]),
        status=row[4],
        attempts=row[5],
        run_after=codec.from_micros(row[6]),
        lease_owner=row[7],
        lease_expires_at=codec.optional_datetime(row[8]),
        fence=row[9],
        last_error=row[10],
    )


_UNFINISHED = (JobStatus.READY, JobStatus.LEASED, JobStatus.PARKED)


class SQLiteJobQueue(JobQueue):
    """Claim order is the oldest due time first (``run_after``, then ``id``), per-key order kept."""

    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def enqueue(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        run_after: datetime | None = None,
    ) -> int:
        created_at = codec.to_micros(utcnow())
        due = created_at if run_after is None else codec.to_micros(run_after)
        return self._tx.insert(
            "INSERT INTO jobs (kind, key, payload, status, attempts, run_after, fence,"
            " created_at) VALUES (?, ?, ?, ?, 0, ?, 0, ?)",
            (kind, key, codec.to_json(payload), JobStatus.READY, due, created_at),
        )

    def enqueue_once(self, kind: str, key: str, payload: Mapping[str, Any]) -> int:
        # One writer at a time: no claim runs between this look and the commit.
        row = self._tx.one(
            "SELECT id FROM jobs WHERE key = ? AND kind = ? AND status = ? ORDER BY id LIMIT 1",
            (key, kind, JobStatus.READY),
        )
        return int(row[0]) if row is not None else self.enqueue(kind, key, payload)

    def claim(
        self, owner: str, now: datetime, lease_seconds: float, kinds: Sequence[str] | None = None
    ) -> Job | None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")
        if kinds is not None and not kinds:
            return None
        now_us = codec.to_micros(now)
        ready = self._candidate("status = ? AND run_after <= ?", JobStatus.READY, now_us, kinds)
        expired = self._candidate(
            "status = ? AND lease_expires_at <= ?", JobStatus.LEASED, now_us, kinds
        )
        candidates = [row for row in (ready, expired) if row is not None]
        if not candidates:
            return None
        job_id = min(candidates, key=lambda row: (row[1], row[0]))[0]
        expires = codec.to_micros(now + timedelta(seconds=lease_seconds))
        self._tx.update(
            "UPDATE jobs SET status = ?, lease_owner = ?, lease_expires_at = ?,"
            " fence = fence + 1, attempts = attempts + 1 WHERE id = ?",
            (JobStatus.LEASED, owner, expires, job_id),
        )
        return self.get(job_id)

    def _candidate(
        self, where: str, status: str, now_us: int, kinds: Sequence[str] | None
    ) -> Row | None:
        """The first due job of ``status`` whose key has no unfinished earlier job."""
        params: list[Any] = [status, now_us]
        if kinds is not None:
            where += f" AND kind IN ({_placeholders(len(kinds))})"
            params.extend(kinds)
        params.extend(_UNFINISHED)
        return self._tx.one(
            f"SELECT id, run_after FROM jobs AS j WHERE {where} AND NOT EXISTS ("
            " SELECT 1 FROM jobs AS e WHERE e.key = j.key AND e.id < j.id"
            f" AND e.status IN ({_placeholders(len(_UNFINISHED))}))"
            " ORDER BY run_after, id LIMIT 1",
            params,
        )

    def extend(self, job_id: int, fence: int, now: datetime, lease_seconds: float) -> None:
        expires = codec.to_micros(now + timedelta(seconds=lease_seconds))
        changed = self._tx.update(
            "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND fence = ? AND status = ?",
            (expires, job_id, fence, JobStatus.LEASED),
        )
        if changed == 0:
            self._lost(job_id, fence)

    def lease_owners(self, now: datetime) -> list[str]:
        rows = self._tx.all(
            "SELECT DISTINCT lease_owner FROM jobs WHERE status = ? AND lease_expires_at > ?"
            " ORDER BY lease_owner",
            (JobStatus.LEASED, codec.to_micros(now)),
        )
        return [str(row[0]) for row in rows]

    def expire_leases(self, owners: Sequence[str], now: datetime) -> int:
        if not owners:
            return 0
        return self._tx.update(
            "UPDATE jobs SET lease_expires_at = ? WHERE status = ? AND lease_expires_at > ?"
            f" AND lease_owner IN ({_placeholders(len(owners))})",
            (codec.to_micros(now), JobStatus.LEASED, codec.to_micros(now), *owners),
        )

    def complete(self, job_id: int, fence: int) -> None:
        self._finish(job_id, fence, JobStatus.DONE, None, None)

    def retry(self, job_id: int, fence: int, error: str, run_after: datetime) -> None:
        self._finish(job_id, fence, JobStatus.READY, error, codec.to_micros(run_after))

    def park(self, job_id: int, fence: int, error: str) -> None:
        self._finish(job_id, fence, JobStatus.PARKED, error, None)

    def defer(self, job_id: int, fence: int, reason: str, run_after: datetime) -> None:
        self._finish(job_id, fence, JobStatus.READY, reason, codec.to_micros(run_after))
        self._tx.update("UPDATE jobs SET attempts = attempts - 1 WHERE id = ?", (job_id,))

    def requeue(self, job_id: int, run_after: datetime) -> None:
        changed = self._tx.update(
            "UPDATE jobs SET status = ?, attempts = 0, run_after = ?, fence = fence + 1"
            " WHERE id = ? AND status = ?",
            (JobStatus.READY, codec.to_micros(run_after), job_id, JobStatus.PARKED),
        )
        if changed == 0:
            raise StoreError(f"job {job_id} is {self.get(job_id).status}, not parked")

    def all(self, status: str | None = None, limit: int = 1000) -> list[Job]:
        where, params = ("", [limit]) if status is None else ("WHERE status = ?", [status, limit])
        rows = self._tx.all(f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY id LIMIT ?", params)
        return [_job_from_row(row) for row in rows]

    def _finish(
        self, job_id: int, fence: int, status: str, error: str | None, run_after: int | None
    ) -> None:
        """Leave the lease (status, error, maybe a new due time) if ``fence`` still holds it."""
        changed = self._tx.update(
            "UPDATE jobs SET status = ?, last_error = COALESCE(?, last_error),"
            " run_after = COALESCE(?, run_after), lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = ? AND fence = ? AND status = ?",
            (status, error, run_after, job_id, fence, JobStatus.LEASED),
        )
        if changed == 0:
            self._lost(job_id, fence)

    def _lost(self, job_id: int, fence: int) -> NoReturn:
        current = self.get(job_id)
        raise LeaseLost(
            f"job {job_id}: fence {fence} no longer holds the lease"
            f" (status {current.status}, fence {current.fence})"
        )

    def get(self, job_id: int) -> Job:
        row = self._tx.one(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise KeyError(f"no job {job_id}")
        return _job_from_row(row)

    def count(self, status: str | None = None) -> int:
        if status is None:
            return _count(self._tx, "SELECT COUNT(*) FROM jobs")
        return _count(self._tx, "SELECT COUNT(*) FROM jobs WHERE status = ?", (status,))

    def next_run_after(self) -> datetime | None:
        row = self._tx.one("SELECT MIN(run_after) FROM jobs WHERE status = ?", (JobStatus.READY,))
        return None if row is None else codec.optional_datetime(row[0])

    def next_lease_expiry(self) -> datetime | None:
        row = self._tx.one(
            "SELECT MIN(lease_expires_at) FROM jobs WHERE status = ?", (JobStatus.LEASED,)
        )
        return None if row is None else codec.optional_datetime(row[0])


# ---------------------------------------------------------------------------- journals

_JOURNAL_COLUMNS = (
    "key, entity, date, description, kind, currency, rule_version, status, target, unit_id,"
    " erp_document_id, created_at, posted_at, last_error, lines"
)
_REFS_PER_STATEMENT = 800


def _journal_record(row: Row, reading: codec.Reading) -> JournalRecord:
    journal = Journal(
        key=row[0],
        entity=row[1],
        date=date.fromisoformat(row[2]),
        description=row[3],
        kind=row[4],
        currency=row[5],
        rule_version=row[6],
        lines=reading.lines(row[14]),
    )
    return JournalRecord(
        journal=journal,
        status=JournalStatus(row[7]),
        target=row[8],
        unit_id=row[9],
        erp_document_id=row[10],
        created_at=codec.from_micros(row[11]),
        posted_at=codec.optional_datetime(row[12]),
        last_error=row[13],
    )


class SQLiteJournalRepository(JournalRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def add(self, journal: Journal, *, target: str, unit_id: int | None) -> bool:
        lines = codec.encode_lines(journal.lines)
        added = self._tx.update(
            f"INSERT INTO journals ({_JOURNAL_COLUMNS})"
            f" VALUES ({_placeholders(15)}) ON CONFLICT (key) DO NOTHING",
            (
                journal.key,
                journal.entity,
                journal.date.isoformat(),
                journal.description,
                journal.kind,
                journal.currency,
                journal.rule_version,
                JournalStatus.PREPARED.value,
                target,
                unit_id,
                None,
                codec.to_micros(utcnow()),
                None,
                None,
                lines.text,
            ),
        )
        if not added:
            return False
        self._tx.insert_rows(
            "INSERT INTO journal_line_refs (value, journal_key) VALUES",
            [(value, journal.key) for value in lines.refs],  # in index order: faster
            _REFS_PER_STATEMENT,
            " ON CONFLICT DO NOTHING",
        )
        return True

    def get(self, key: str) -> JournalRecord | None:
        records = self._select("WHERE key = ?", (key,))
        return records[0] if records else None

    def all(self, status: JournalStatus | None = None) -> list[JournalRecord]:
        if status is None:
            return self._select("", ())
        return self._select("WHERE status = ?", (JournalStatus(status).value,))

    def _select(self, where: str, params: Sequence[Any]) -> list[JournalRecord]:
        rows = self._tx.all(
            f"SELECT {_JOURNAL_COLUMNS} FROM journals {where} ORDER BY created_at, key", params
        )
        reading = codec.Reading()
        return [_journal_record(row, reading) for row in rows]

    def mark_posted(self, key: str, document_id: str, at: datetime) -> None:
        changed = self._tx.update(
            "UPDATE journals SET status = ?, erp_document_id = ?, posted_at = ? WHERE key = ?",
            (JournalStatus.POSTED.value, document_id, codec.to_micros(at), key),
        )
        self._tx.must_change(changed, "journals", "key", key)

    def mark_failed(self, key: str, error: str) -> None:
        changed = self._tx.update(
            "UPDATE journals SET status = ?, last_error = ? WHERE key = ?",
            (JournalStatus.FAILED.value, error, key),
        )
        self._tx.must_change(changed, "journals", "key", key)

    def keys_by_source(self, value: str) -> list[str]:
        rows = self._tx.all(
            "SELECT j.key FROM journal_line_refs r JOIN journals j ON j.key = r.journal_key"
            " WHERE r.value = ? ORDER BY j.created_at, j.key",
            (value,),
        )
        return [row[0] for row in rows]


# ------------------------------------------------------------------------------ outbox

_OUTBOX_COLUMNS = (
    "id, target, journal_key, status, attempts, run_after, document_id, last_error, sender"
)


def _outbox_from_row(row: Row) -> OutboxItem:
    return OutboxItem(
        id=row[0],
        target=row[1],
        journal_key=row[2],
        status=row[3],
        attempts=row[4],
        run_after=codec.from_micros(row[5]),
        document_id=row[6],
        last_error=row[7],
        sender=row[8],
    )


class SQLiteOutbox(Outbox):
    """``due`` order is the oldest due time first: ``run_after``, then ``id``."""

    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def add(self, target: str, journal_key: str) -> int:
        now = codec.to_micros(utcnow())
        return self._tx.insert(
            "INSERT INTO outbox (target, journal_key, status, attempts, run_after, created_at)"
            " VALUES (?, ?, ?, 0, ?, ?)",
            (target, journal_key, OutboxStatus.PENDING, now, now),
        )

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxItem]:
        rows = self._tx.all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE target = ? AND status IN (?, ?)"
            " AND run_after <= ? ORDER BY run_after, id LIMIT ?",
            (
                target,
                OutboxStatus.PENDING,
                OutboxStatus.IN_FLIGHT,
                codec.to_micros(now),
                max(limit, 0),
            ),
        )
        return [_outbox_from_row(row) for row in rows]

    def mark_in_flight(
        self, item_ids: Sequence[int], sender: str, *, dead: Collection[str] = ()
    ) -> None:
        gone = json.dumps(sorted(dead))
        for item_id in dict.fromkeys(item_ids):
            changed = self._tx.update(
                "UPDATE outbox SET status = ?, attempts = attempts + 1,"
                " sender = CASE WHEN sender IS NULL"
                " OR sender IN (SELECT value FROM json_each(?)) THEN ? ELSE sender END"
                " WHERE id = ?",
                (OutboxStatus.IN_FLIGHT, gone, sender, item_id),
            )
            self._tx.must_change(changed, "outbox", "id", item_id)

    def mark_done(self, item_id: int, document_id: str) -> None:
        self._set(
            item_id, "status = ?, document_id = ?, sender = NULL", (OutboxStatus.DONE, document_id)
        )

    def mark_retry(self, item_id: int, error: str, run_after: datetime, sender: str) -> None:
        self._set(
            item_id,
            "last_error = ?, run_after = ?, sender = NULLIF(sender, ?)",
            (error, codec.to_micros(run_after), sender),
        )

    def mark_failed(self, item_id: int, error: str) -> None:
        self._set(
            item_id, "status = ?, last_error = ?, sender = NULL", (OutboxStatus.FAILED, error)
        )

    def reset(
        self, target: str, journal_key: str, run_after: datetime, *, unsure: bool = False
    ) -> int:
        row = self._tx.one(
            "SELECT id FROM outbox WHERE target = ? AND journal_key = ? AND status = ?"
            " ORDER BY id LIMIT 1",
            (target, journal_key, OutboxStatus.FAILED),
        )
        if row is None:
            raise StoreError(f"no failed outbox item for journal {journal_key} to {target}")
        status = OutboxStatus.IN_FLIGHT if unsure else OutboxStatus.PENDING
        self._set(row[0], "status = ?, run_after = ?", (status, codec.to_micros(run_after)))
        return int(row[0])

    def _set(self, item_id: int, assignments: str, params: Sequence[Any]) -> None:
        changed = self._tx.update(
            f"UPDATE outbox SET {assignments} WHERE id = ?", (*params, item_id)
        )
        self._tx.must_change(changed, "outbox", "id", item_id)

    def count(self, status: str | None = None) -> int:
        if status is None:
            return _count(self._tx, "SELECT COUNT(*) FROM outbox")
        return _count(self._tx, "SELECT COUNT(*) FROM outbox WHERE status = ?", (status,))


# -------------------------------------------------------------------------- exceptions

_EXCEPTION_COLUMNS = (
    "id, reason, detail, status, subject, opened_at, resolved_at, resolved_by, assignee, resolution"
)


def _exception_from_row(row: Row) -> ExceptionItem:
    return ExceptionItem(
        id=row[0],
        reason=row[1],
        detail=row[2],
        status=row[3],
        subject=stored_data.json_object(row[4]),
        opened_at=codec.from_micros(row[5]),
        resolved_at=codec.optional_datetime(row[6]),
        resolved_by=row[7],
        assignee=row[8],
        resolution=row[9],
    )


class SQLiteExceptionRepository(ExceptionRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def open(self, item: NewException) -> tuple[int, bool]:
        added = self._tx.update(
            "INSERT INTO exceptions (reason, detail, dedupe_key, status, subject, opened_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            (
                item.reason,
                item.detail,
                item.dedupe_key,
                ExceptionStatus.OPEN,
                codec.to_json(item.subject),
                codec.to_micros(utcnow()),
            ),
        )
        row = self._tx.one(
            "SELECT id, status FROM exceptions WHERE dedupe_key = ?", (item.dedupe_key,)
        )
        if row is None:  # pragma: no cover - the row was just inserted or already there
            raise StoreError(f"exception item {item.dedupe_key!r} vanished")
        if added == 0 and row[1] != ExceptionStatus.OPEN:
            self._reopen(int(row[0]), item)
            return int(row[0]), True
        return int(row[0]), added == 1

    def _reopen(self, item_id: int, item: NewException) -> None:
        self._tx.update(
            "UPDATE exceptions SET status = ?, detail = ?, subject = ?, resolved_at = NULL,"
            " resolved_by = NULL, resolution = NULL WHERE id = ?",
            (ExceptionStatus.OPEN, item.detail, codec.to_json(item.subject), item_id),
        )

    def get(self, item_id: int) -> ExceptionItem:
        row = self._tx.one(f"SELECT {_EXCEPTION_COLUMNS} FROM exceptions WHERE id = ?", (item_id,))
        if row is None:
            raise KeyError(f"no exception item {item_id}")
        return _exception_from_row(row)

    def all(
        self,
        status: str | None = None,
        *,
        reason: str | None = None,
        assignee: str | None = None,
    ) -> list[ExceptionItem]:
        filters = {"status": status, "reason": reason, "assignee": assignee}
        chosen = {column: value for column, value in filters.items() if value is not None}
        where = " AND ".join(f"{column} = ?" for column in chosen)
        rows = self._tx.all(
            f"SELECT {_EXCEPTION_COLUMNS} FROM exceptions"
            f" {'WHERE ' + where if where else ''} ORDER BY id",
            list(chosen.values()),
        )
        return [_exception_from_row(row) for row in rows]

    def resolve(
        self, item_id: int, actor: str, at: datetime, resolution: str = Resolution.RESOLVED
    ) -> None:
        changed = self._tx.update(
            "UPDATE exceptions SET status = ?, resolved_at = ?, resolved_by = ?, resolution = ?"
            " WHERE id = ? AND status = ?",
            (
                ExceptionStatus.RESOLVED,
                codec.to_micros(at),
                actor,
                resolution,
                item_id,
                ExceptionStatus.OPEN,
            ),
        )
        if changed == 0:
            raise StoreError(f"exception item {item_id} is {self.get(item_id).status}, not open")

    def read_from(self, after_id: int, limit: int = 1000) -> list[ExceptionItem]:
        rows = self._tx.all(
            f"SELECT {_EXCEPTION_COLUMNS} FROM exceptions WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [_exception_from_row(row) for row in rows]

    def assign(self, item_id: int, assignee: str | None) -> None:
        changed = self._tx.update(
            "UPDATE exceptions SET assignee = ? WHERE id = ?", (assignee, item_id)
        )
        self._tx.must_change(changed, "exceptions", "id", item_id)

    def add_note(self, item_id: int, actor: str, at: datetime, text: str) -> int:
        self.get(item_id)
        return self._tx.insert(
            "INSERT INTO exception_notes (exception_id, at, actor, text) VALUES (?, ?, ?, ?)",
            (item_id, codec.to_micros(at), actor, text),
        )

    def notes(self, item_id: int) -> list[Note]:
        rows = self._tx.all(
            "SELECT id, exception_id, at, actor, text FROM exception_notes"
            " WHERE exception_id = ? ORDER BY id",
            (item_id,),
        )
        return [Note(row[0], row[1], codec.from_micros(row[2]), row[3], row[4]) for row in rows]


# --------------------------------------------------------------------------- approvals

_APPROVAL_COLUMNS = "id, kind, subject, requested_by, requested_at, status, decided_by, decided_at"


def _approval_from_row(row: Row) -> Approval:
    return Approval(
        id=row[0],
        kind=row[1],
        subject=stored_data.json_object(row[2]),
        requested_by=row[3],
        requested_at=codec.from_micros(row[4]),
        status=row[5],
        decided_by=row[6],
        decided_at=codec.optional_datetime(row[7]),
    )


class SQLiteApprovalRepository(ApprovalRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def request(self, kind: str, subject: Mapping[str, Any], actor: str, at: datetime) -> Approval:
        approval_id = self._tx.insert(
            "INSERT INTO approvals (kind, subject, requested_by, requested_at, status)"
            " VALUES (?, ?, ?, ?, ?)",
            (kind, codec.to_json(subject), actor, codec.to_micros(at), ApprovalStatus.PENDING),
        )
        return self.get(approval_id)

    def get(self, approval_id: int) -> Approval:
        row = self._tx.one(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)
        )
        if row is None:
            raise KeyError(f"no approval {approval_id}")
        return _approval_from_row(row)

    def all(self, status: str | None = None) -> list[Approval]:
        where, params = ("", ()) if status is None else ("WHERE status = ?", (status,))
        rows = self._tx.all(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals {where} ORDER BY id", params
        )
        return [_approval_from_row(row) for row in rows]

    def decide(self, approval_id: int, actor: str, at: datetime, *, approve: bool) -> None:
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REFUSED
        changed = self._tx.update(
            "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?"
            " WHERE id = ? AND status = ?",
            (status, actor, codec.to_micros(at), approval_id, ApprovalStatus.PENDING),
        )
        if changed == 0:
            raise StoreError(
                f"approval {approval_id} is {self.get(approval_id).status}, not pending"
            )


# ------------------------------------------------------------------------------- audit

_AUDIT_COLUMNS = "id, at, actor, action, subject_type, subject_id, detail"


class SQLiteAuditLog(AuditLog):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def record(
        self,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        self._tx.insert(
            "INSERT INTO audit_log (at, actor, action, subject_type, subject_id, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                codec.to_micros(utcnow()),
                actor,
                action,
                subject_type,
                subject_id,
                codec.to_json(detail or {}),
            ),
        )

    def for_subject(self, subject_type: str, subject_id: str) -> list[AuditEntry]:
        rows = self._tx.all(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log"
            " WHERE subject_type = ? AND subject_id = ? ORDER BY id",
            (subject_type, subject_id),
        )
        return [_audit_from_row(row) for row in rows]

    def read_from(self, after_id: int, limit: int = 1000) -> list[AuditEntry]:
        rows = self._tx.all(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [_audit_from_row(row) for row in rows]


def _audit_from_row(row: Row) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=codec.from_micros(row[1]),
        actor=row[2],
        action=row[3],
        subject_type=row[4],
        subject_id=row[5],
        detail=stored_data.json_object(row[6]),
    )


# ------------------------------------------------------------------------ unit of work


class SQLiteUnitOfWork(UnitOfWork):
    def __init__(self, tx: _Tx, raw_part_size: int) -> None:
        self.raw = SQLiteRawRepository(tx, raw_part_size)
        self.units = SQLiteUnitRepository(tx)
        self.events = SQLiteEventLog(tx)
        self.jobs = SQLiteJobQueue(tx)
        self.journals = SQLiteJournalRepository(tx)
        self.outbox = SQLiteOutbox(tx)
        self.exceptions = SQLiteExceptionRepository(tx)
        self.approvals = SQLiteApprovalRepository(tx)
        self.audit = SQLiteAuditLog(tx)
        self.retention = SQLiteRetention(tx)


# ------------------------------------------------------------------------- migrations


def load_migrations() -> list[Migration]:
    """The sqlite migrations shipped in the package, in version order."""
    return history.load_migrations("sqlite")


def split_statements(script: str) -> list[str]:
    """The SQL statements of a migration script, each complete (``;``-terminated)."""
    statements: list[str] = []
    buffer = ""
    pieces = script.split(";")
    for piece in pieces[:-1]:
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = buffer + pieces[-1]
    if any(line.strip() and not line.strip().startswith("--") for line in rest.splitlines()):
        raise StoreError(f"migration ends with an incomplete statement: {rest.strip()[:80]!r}")
    return [statement for statement in statements if _has_sql(statement)]


def _has_sql(statement: str) -> bool:
    lines = (line.strip() for line in statement.splitlines())
    return any(line and line != ";" and not line.startswith("--") for line in lines)


_CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
)


# ------------------------------------------------------------------------------- store


class SQLiteStore(Store):
    """The embedded store. ``synchronous`` and ``journal_mode`` exist so tests can prove
    that ``check_durability`` refuses anything weaker than WAL + FULL; leave them alone."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 30000,
        synchronous: str = "FULL",
        journal_mode: str = "WAL",
        raw_part_size: int = DEFAULT_RAW_PART_SIZE,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(f"unknown SQLite synchronous setting {synchronous!r}")
        if journal_mode.upper() not in _JOURNAL_MODES:
            raise ConfigurationError(f"unknown SQLite journal mode {journal_mode!r}")
        if raw_part_size <= 0:
            raise ValueError(f"raw_part_size must be positive, not {raw_part_size}")
        self.path = str(path)
        self._raw_part_size = raw_part_size
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = _connect(
            self.path, int(busy_timeout_ms), synchronous.upper(), journal_mode.upper()
        )
        self._watcher: sqlite3.Connection | None = None  # wait_for_work's own connection
        self._watch_lock = threading.Lock()
        self._waits = threading.local()  # per thread: the data_version it last saw

    @classmethod
    def open(cls, path: str | Path, *, busy_timeout_ms: int = 30000) -> SQLiteStore:
        """Open, refuse non-durable settings, and bring the schema up to date."""
        store = cls(path, busy_timeout_ms=busy_timeout_ms)
        try:
            store.check_durability()
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        with self._lock:
            conn = self._connection()
            if conn.in_transaction:
                raise StoreError("units of work do not nest")
            _begin(conn, self.path)
            tx = _Tx(conn)
            uow = SQLiteUnitOfWork(tx, self._raw_part_size)
            try:
                yield uow
            except BaseException:
                tx.active = False
                _rollback(conn)
                raise
            tx.active = False
            _commit(conn)
        uow.committed()

    def migrate(self) -> int:
        with self._lock:
            conn = self._connection()
            for migration in load_migrations():
                _apply(conn, migration)
            version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"database schema version {version} is newer than this revbridge"
                f" ({SCHEMA_VERSION}); upgrade revbridge",
                location=self.path,
            )
        return version

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""
        with self._lock:
            return _schema_version(self._connection())

    def check_durability(self) -> None:
        with self._lock:
            conn = self._connection()
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper()
            level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        if mode != "WAL":
            raise ConfigurationError(
                f"SQLite journal_mode is {mode}; revbridge requires WAL", location=self.path
            )
        if level < _SYNCHRONOUS["FULL"]:
            name = {value: key for key, value in _SYNCHRONOUS.items()}.get(level, str(level))
            raise ConfigurationError(
                f"SQLite synchronous is {name}; revbridge requires FULL", location=self.path
            )

    def wait_for_work(self, timeout_seconds: float) -> bool:
        seen: int | None = getattr(self._waits, "seen", None)
        version = self._data_version()
        deadline = time.monotonic() + max(timeout_seconds, 0.0)
        while seen is not None and version == seen:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(WAKE_POLL_SECONDS, left))
            version = self._data_version()
        self._waits.seen = version
        return True

    def _data_version(self) -> int:
        with self._watch_lock:
            self._connection()  # refuses a closed store
            if self._watcher is None:
                self._watcher = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
            return int(self._watcher.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._watch_lock:
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None


def _connect(path: str, busy_ms: int, synchronous: str, journal_mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE:d}")  # a new file only: see _PAGE_SIZE
        conn.execute(f"PRAGMA journal_mode = {journal_mode}").fetchall()
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = {-_CACHE_KIB:d}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT:d}").fetchall()
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _begin(conn: sqlite3.Connection, path: str) -> None:
    """Take the database write lock (waiting up to the busy timeout for other writers)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StoreError(f"cannot start a transaction on {path}: {exc}") from exc


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    """Apply one migration in its own transaction, unless it is already recorded."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_MIGRATIONS_TABLE)
        done = conn.execute(
            "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
        ).fetchone()
        if done is None:
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, codec.to_micros(utcnow())),
            )
    except BaseException:
        _rollback(conn)
        raise
    _commit(conn)


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])
