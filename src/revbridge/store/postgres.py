"""The shared store: PostgreSQL, for several ``revbridge worker`` processes on several hosts.

One ``PostgresStore`` keeps a small pool of connections; a unit of work takes one, runs one
transaction on it (READ COMMITTED; commit on a clean exit, rollback on an exception) and
gives it back. Everything PostgreSQL-specific lives here and in ``migrations/postgres``; the
JSON/amount encoding is ``codec``'s, shared with SQLite, and the contract suite pins the
behaviour of both (including the details listed at the top of ``sqlite.py``).

Choices, and why:

- **Instants** are ``timestamptz``: exact at microseconds for every Python datetime, readable
  in psql, a natural bound for partitions and retention. The session time zone is UTC, naive
  datetimes are refused (``ValueError``) before anything is sent, and values come back as
  ``datetime`` in ``UTC``.
- **Integrity failures** (a second live unit, a repeated event id, an unknown referenced
  id) raise ``StoreError`` and, as on SQLite, leave the unit of work usable: the statements
  that can hit one run inside a savepoint.
- **Cursor horizon.** Ids come from sequences, which hand out numbers when a transaction
  inserts, not when it commits. So position 7 can commit while position 6 is still in
  flight, and a reader paging with ``read_from(after)`` that saw 7 would move its cursor past
  6 and never see it. Here a writer, before it takes its first id from a paged sequence
  (events, raw messages, exception items, audit entries), takes a shared transaction-level
  advisory lock whose key encodes the next value of the sequence: a lower bound of every id
  the transaction will get, visible to everyone in ``pg_locks`` until the transaction ends. A
  reader first reads the last id handed out (L), then the lowest bound held by other
  transactions in flight (M), then returns rows with ``after < id <= min(L, M - 1)``. Any row
  it returns was numbered before it read L; any lower id was numbered earlier still, by a
  transaction that had already taken its lock, so that transaction is either finished
  (visible) or in ``pg_locks`` (and bounds M below that id). Writers never wait for each
  other (shared locks do not conflict); a reader only stops short of a transaction that is
  still running. The contract test ``test_store_concurrency`` commits the later-numbered of two
  transactions first and checks that a polling reader misses nothing.
- **Claims** use ``SELECT ... FOR UPDATE SKIP LOCKED`` over the due jobs in ``(run_after,
  id)`` order, with the per-key rule as ``NOT EXISTS`` (an earlier job of the key that is
  ready, leased or parked). Ids, again, are not commit order: two transactions enqueueing for
  one key could commit the higher id first, and that job would run before (or beside) the
  lower one. So ``enqueue`` holds a shared advisory lock on the key until it commits, and
  ``claim``, having picked a candidate, takes that key's lock exclusively (try-lock: never
  waits; on failure the candidate is passed over) and checks the rule again in a fresh
  statement. With the exclusive lock held no enqueue of the key is in flight, so every lower
  id of the key is visible to that check; later enqueues get higher ids.
- **Wake-ups** (``wait_for_work``): ``enqueue``, ``retry``, ``defer`` and ``requeue`` send
  ``NOTIFY revbridge_work`` in their own transaction, so the server delivers the wake-up at
  commit and never for a rollback (and sends one per transaction, however many jobs it
  enqueued). A waiting thread ``LISTEN``s on a connection of its own, outside the pool,
  and blocks on its socket: no query runs while a worker is idle.
- **Raw bytes** are ``bytea`` parts of at most ``raw_part_size`` bytes (1 MiB by default:
  a bound parameter is sent whole, so the part size bounds the memory a write needs). Reads
  use ``substring`` on the parts they overlap and binary results (no hex decoding).
- **Durability** (``check_durability``, and again on every new connection): ``fsync`` must be
  on and ``synchronous_commit`` one of ``on``, ``remote_apply`` or ``remote_write``. ``off``
  acknowledges commits before they are on disk; ``local`` does not wait for synchronous
  standbys, so a routine failover can lose acknowledged commits. ``remote_write`` is accepted:
  the primary still flushes its WAL before acknowledging, and the standby has the WAL in its
  operating system; losing a commit then needs the primary's disk and the standby's
  operating system to fail together.
- **Partitions** (retention, DESIGN.md §6): raw messages and events live in monthly range
  partitions of their id / position (``migrations/postgres/0003_partitions.sql``); the
  repository that advances and drops months is ``postgres_retention.py``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, BinaryIO, NoReturn

import psycopg
from psycopg import conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.string import TextLoader

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
from revbridge.store.postgres_retention import PostgresRetention

SPEC = ComponentSpec(
    "store",
    "postgres",
    "The shared store for several workers: PostgreSQL 15 or later, with fsync and"
    " synchronous_commit on (refuses less).",
    (
        Field(
            "dsn",
            "secret",
            "libpq connection string or URI. It may carry the password: take it from the"
            " environment (${VAR}), or leave it to PGPASSWORD / ~/.pgpass.",
            example="postgresql://revbridge@db.internal:5432/revbridge",
        ),
        Field(
            "pool_size",
            "integer",
            "Connections kept per process: how many units of work can run at once.",
            8,
        ),
        Field("connect_timeout_seconds", "integer", "How long to wait for a connection.", 10),
    ),
)

SCHEMA_VERSION = 5
"""The schema version this code expects (the highest migration shipped with it)."""

STREAM_CHUNK = 1 << 20
"""Bytes read from the stream at a time when a raw message is written."""

DEFAULT_RAW_PART_SIZE = 1 << 20
"""Raw messages are stored as parts of at most this many bytes."""

POOL_WAIT_SECONDS = 30.0
"""How long a unit of work waits for a free connection before giving up."""

READ_PIECE = 1 << 20
"""``iter_chunks`` fetches at least this many bytes per query (fewer round trips)."""

ACCEPTED_SYNCHRONOUS_COMMIT = frozenset({"on", "remote_apply", "remote_write"})

_UNFINISHED = (JobStatus.READY, JobStatus.LEASED, JobStatus.PARKED)

# Advisory lock keys. Two-int keys (shown with objsubid = 2 in pg_locks) for the migration
# lock and the per-key job locks; one-bigint keys (objsubid = 1) for cursor horizons.
_LOCK_CLASS_MIGRATIONS = 0x52420001
_LOCK_CLASS_JOB_KEYS = 0x52420002

WORK_CHANNEL = "revbridge_work"
"""The ``LISTEN``/``NOTIFY`` channel of wake-ups (one per database: NOTIFY stays in it)."""
_CURSOR_SHIFT = 56
_CURSOR_MASK = (1 << _CURSOR_SHIFT) - 1

Row = tuple[Any, ...]
Connection = psycopg.Connection[TupleRow]


# -------------------------------------------------------------------------- durability


def durability_problems(settings: Mapping[str, str]) -> list[str]:
    """What is wrong with these server settings (``SHOW fsync``, ``SHOW synchronous_commit``)."""
    problems: list[str] = []
    fsync = settings.get("fsync", "").lower()
    if fsync != "on":
        problems.append(
            f"PostgreSQL fsync is {fsync or 'unknown'}: a crash can lose or corrupt committed"
            " data. Set fsync = on in postgresql.conf and restart the server."
        )
    synchronous = settings.get("synchronous_commit", "").lower()
    if synchronous not in ACCEPTED_SYNCHRONOUS_COMMIT:
        problems.append(
            f"PostgreSQL synchronous_commit is {synchronous or 'unknown'} for revbridge's"
            " sessions: commits would be acknowledged before they are durable"
            f"{' on synchronous standbys' if synchronous == 'local' else ''}. Use on,"
            " remote_apply or remote_write: set synchronous_commit = on in postgresql.conf,"
            " remove per-role or per-database overrides (ALTER ROLE name RESET"
            " synchronous_commit; ALTER DATABASE name RESET synchronous_commit) and any"
            " -c synchronous_commit option in the DSN, then reconnect."
        )
    return problems


def require_durable(settings: Mapping[str, str], location: str) -> None:
    """Raise ``ConfigurationError`` naming each setting that makes commits non-durable."""
    problems = durability_problems(settings)
    if problems:
        raise ConfigurationError(" ".join(problems), location=location)


def _server_settings(conn: Connection) -> dict[str, str]:
    row = conn.execute(
        "SELECT current_setting('fsync'), current_setting('synchronous_commit')"
    ).fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM returns one row
        raise StoreError("could not read the server settings")
    return {"fsync": str(row[0]), "synchronous_commit": str(row[1])}


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without its password (for messages)."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid PostgreSQL DSN: {exc}") from exc
    shown = {key: parts[key] for key in ("host", "port", "dbname", "user") if parts.get(key)}
    return "postgresql:" + " ".join(f"{key}={value}" for key, value in shown.items())


# ------------------------------------------------------------------------------ values


def _utc(value: datetime) -> datetime:
    """An aware datetime in UTC; naive datetimes are refused (like ``codec.to_micros``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs aware UTC times")
    return value.astimezone(UTC)


def _optional_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _key_lock(key: str) -> int:
    """A job key as a signed 32-bit advisory lock id (collisions only serialise more)."""
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Cursor:
    """A sequence that readers page through by id (see "cursor horizon" above)."""

    code: int
    sequence: str


_EVENTS = _Cursor(1, "events_position_seq")
_RAW = _Cursor(2, "raw_messages_id_seq")
_EXCEPTIONS = _Cursor(3, "exceptions_id_seq")
_AUDIT = _Cursor(4, "audit_log_id_seq")

_IN_FLIGHT_LOW = (
    "SELECT min(((classid::bigint << 32) | objid::bigint) & %s) FROM pg_locks"
    " WHERE locktype = 'advisory' AND objsubid = 1"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid::bigint >> 24 = %s AND pid IS DISTINCT FROM pg_backend_pid()"
)


# ------------------------------------------------------------------------ transaction


class _Tx:
    """The connection of one unit of work; refuses use once the unit of work has ended."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.active = True
        self._cursors: set[int] = set()
        self._keys: set[int] = set()
        self._woke = False

    @property
    def conn(self) -> Connection:
        if not self.active:
            raise StoreError("the unit of work has ended; open a new one")
        return self._connection

    def one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Row | None:
        return self._execute(sql, params).fetchone()

    def all(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *, binary: bool = False
    ) -> list[Row]:
        return self._execute(sql, params, binary=binary).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT/UPDATE and return the number of rows it changed."""
        return self._execute(sql, params).rowcount

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(sql, rows)
        except psycopg.IntegrityError as exc:
            raise StoreError(f"refused by the store: {exc}") from exc

    def _execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any], *, binary: bool = False
    ) -> psycopg.Cursor[TupleRow]:
        try:
            return self.conn.execute(sql, params, binary=binary)
        except psycopg.IntegrityError as exc:
            raise StoreError(f"refused by the store: {exc}") from exc

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """A savepoint: an integrity failure inside becomes ``StoreError`` and is undone,
        leaving the transaction usable (as a failed statement does on SQLite)."""
        try:
            with self.conn.transaction():
                yield
        except psycopg.IntegrityError as exc:
            raise StoreError(f"refused by the store: {exc}") from exc

    def exists(self, table: str, column: str, value: object) -> bool:
        return self.one(f"SELECT 1 FROM {table} WHERE {column} = %s", (value,)) is not None

    def must_change(self, changed: int, table: str, column: str, value: object) -> None:
        """Raise KeyError when an update touched nothing because the row does not exist."""
        if changed == 0 and not self.exists(table, column, value):
            raise KeyError(f"{table}: no row with {column} = {value!r}")

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self.one(sql, params)
        return 0 if row is None else int(row[0])

    # ---------------------------------------------------------------- ordering locks

    def hold_cursor(self, cursor: _Cursor) -> None:
        """Before this transaction's first id from ``cursor``: publish a lower bound of it.

        Never call this inside ``guarded``: a rolled-back savepoint releases the lock.
        """
        if cursor.code in self._cursors:
            return
        self.one(
            "SELECT pg_advisory_xact_lock_shared((%s::bigint << 56)"
            " | CASE WHEN is_called THEN last_value + 1 ELSE last_value END)"
            f" FROM {cursor.sequence}",
            (cursor.code,),
        )
        self._cursors.add(cursor.code)

    def horizon(self, cursor: _Cursor) -> int:
        """The highest id a reader may return now without skipping one committed later."""
        row = self.one(
            "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END"
            f" FROM {cursor.sequence}"
        )
        last = 0 if row is None else int(row[0])
        row = self.one(_IN_FLIGHT_LOW, (_CURSOR_MASK, cursor.code))
        if row is None or row[0] is None:
            return last
        return min(last, int(row[0]) - 1)

    def wake_workers(self) -> None:
        """Wake the waiting workers once this transaction commits (once per transaction).

        Never call this inside ``guarded``: a rolled-back savepoint drops the NOTIFY."""
        if not self._woke:
            self.conn.execute(f"NOTIFY {WORK_CHANNEL}")
            self._woke = True

    def hold_job_key(self, key: str) -> None:
        """Before enqueueing for ``key``: say so until commit (shared, never waits long)."""
        lock_id = _key_lock(key)
        if lock_id in self._keys:
            return
        self.one(
            "SELECT pg_advisory_xact_lock_shared(%s::integer, %s::integer)",
            (_LOCK_CLASS_JOB_KEYS, lock_id),
        )
        self._keys.add(lock_id)

    def settle_job_key(self, key: str) -> bool:
        """Take ``key`` exclusively if no enqueue for it is in flight (never waits)."""
        row = self.one(
            "SELECT pg_try_advisory_xact_lock(%s::integer, %s::integer)",
            (_LOCK_CLASS_JOB_KEYS, _key_lock(key)),
        )
        return row is not None and bool(row[0])


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
        received_at=row[6],
    )


# The slice of every part that overlaps [start, stop), in order (offsets within a part
# fit an integer, which is what substring takes).
_READ_SLICES = (
    "SELECT substring(content FROM (greatest(%(start)s - byte_offset, 0) + 1)::integer"
    " FOR (least(%(stop)s - byte_offset, size) - greatest(%(start)s - byte_offset, 0))::integer)"
    " FROM raw_parts WHERE raw_id = %(raw_id)s"
    " AND byte_offset < %(stop)s AND byte_offset + size > %(start)s ORDER BY part_no"
)


@dataclass(frozen=True, slots=True)
class _Part:
    number: int
    offset: int
    size: int


class PostgresRawRepository(RawRepository):
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
        self._tx.hold_cursor(_RAW)
        row = self._tx.one(
            "INSERT INTO raw_messages (channel, name, content_type, sha256, size, received_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_RAW_COLUMNS}",
            (channel, name, content_type, sha256, size, utcnow()),
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns the row
            raise StoreError("insert returned no row")
        raw = _raw_from_row(row)
        digest = hashlib.sha256()
        for part_no, offset in enumerate(range(0, size, self._part_size)):
            content = _read_exactly(stream, min(self._part_size, size - offset), offset, digest)
            self._tx.run(
                "INSERT INTO raw_parts (raw_id, part_no, byte_offset, size, content)"
                " VALUES (%s, %s, %s, %s, %b)",
                (raw.id, part_no, offset, len(content), content),
            )
        if digest.hexdigest() != sha256:
            raise ValueError(f"sha256 of the streamed bytes is {digest.hexdigest()}, not {sha256}")
        return raw

    def find_by_sha256(self, sha256: str) -> RawMessage | None:
        row = self._tx.one(
            f"SELECT {_RAW_COLUMNS} FROM raw_messages WHERE sha256 = %s ORDER BY id LIMIT 1",
            (sha256,),
        )
        return None if row is None else _raw_from_row(row)

    def get(self, raw_id: int) -> RawMessage:
        row = self._tx.one(f"SELECT {_RAW_COLUMNS} FROM raw_messages WHERE id = %s", (raw_id,))
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
        where = ["id > %s", "id <= %s"]
        params: list[object] = [after_id, self._tx.horizon(_RAW)]
        if since is not None:
            where.append("received_at >= %s")
            params.append(_utc(since))
        if until is not None:
            where.append("received_at < %s")
            params.append(_utc(until))
        rows = self._tx.all(
            f"SELECT {_RAW_COLUMNS} FROM raw_messages WHERE {' AND '.join(where)}"
            " ORDER BY id LIMIT %s",
            (*params, max(limit, 0)),
        )
        return [_raw_from_row(row) for row in rows]

    def read(self, raw_id: int, start: int = 0, end: int | None = None) -> bytes:
        stop = self._checked_stop(raw_id, start, end)
        rows = self._tx.all(
            _READ_SLICES, {"raw_id": raw_id, "start": start, "stop": stop}, binary=True
        )
        return b"".join(row[0] for row in rows)

    def iter_chunks(
        self, raw_id: int, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Chunks of exactly ``chunk_size`` bytes (the last one may be shorter)."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        buffer = bytearray()
        for piece in self._pieces(raw_id, start, end, max(chunk_size, READ_PIECE)):
            if not buffer and len(piece) == chunk_size:
                yield piece
                continue
            buffer += piece
            while len(buffer) >= chunk_size:
                yield bytes(buffer[:chunk_size])
                del buffer[:chunk_size]
        if buffer:
            yield bytes(buffer)

    def _checked_stop(self, raw_id: int, start: int, end: int | None) -> int:
        size = self.get(raw_id).size
        stop = size if end is None else end
        if not 0 <= start <= stop <= size:
            raise ValueError(f"byte range [{start}, {end}) outside raw message of {size} bytes")
        return stop

    def _pieces(self, raw_id: int, start: int, end: int | None, max_read: int) -> Iterator[bytes]:
        """The bytes ``[start, end)`` as pieces of at most ``max_read`` bytes, one query each."""
        stop = self._checked_stop(raw_id, start, end)
        for part in self._parts(raw_id, start, stop):
            low = max(start - part.offset, 0)
            high = min(stop - part.offset, part.size)
            for position in range(low, high, max_read):
                yield self._read_part(raw_id, part, position, min(max_read, high - position))

    def _parts(self, raw_id: int, start: int, stop: int) -> list[_Part]:
        rows = self._tx.all(
            "SELECT part_no, byte_offset, size FROM raw_parts"
            " WHERE raw_id = %s AND byte_offset < %s AND byte_offset + size > %s"
            " ORDER BY part_no",
            (raw_id, stop, start),
        )
        return [_Part(number=row[0], offset=row[1], size=row[2]) for row in rows]

    def _read_part(self, raw_id: int, part: _Part, position: int, length: int) -> bytes:
        rows = self._tx.all(
            "SELECT substring(content FROM %s::integer FOR %s::integer) FROM raw_parts"
            " WHERE raw_id = %s AND part_no = %s",
            (position + 1, length, raw_id, part.number),
            binary=True,
        )
        return bytes(rows[0][0])


def _read_exactly(stream: BinaryIO, length: int, offset: int, digest: Any) -> bytearray:
    """``length`` bytes from ``stream`` (which may return fewer than asked), hashed on the way."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    filled = 0
    while filled < length:
        chunk = stream.read(min(STREAM_CHUNK, length - filled))
        if not chunk:
            raise ValueError(f"stream ended after {offset + filled} bytes")
        view[filled : filled + len(chunk)] = chunk
        digest.update(chunk)
        filled += len(chunk)
    view.release()
    return buffer


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
        created_at=row[11],
    )


class PostgresUnitRepository(UnitRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def add(self, unit: NewUnit, status: str = UnitStatus.PENDING) -> Unit:
        params = (
            unit.raw_id,
            unit.kind,
            unit.natural_key,
            unit.content_hash,
            unit.byte_start,
            unit.byte_end,
            unit.first_segment,
            codec.to_json(unit.envelope),
            status,
            utcnow(),
        )
        with self._tx.guarded():
            row = self._tx.one(
                "INSERT INTO units (raw_id, kind, natural_key, content_hash, byte_start,"
                " byte_end, first_segment, envelope, status, reason, created_at)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s) RETURNING {_UNIT_COLUMNS}",
                params,
            )
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns the row
            raise StoreError("insert returned no row")
        return _unit_from_row(row)

    def get(self, unit_id: int) -> Unit:
        row = self._tx.one(f"SELECT {_UNIT_COLUMNS} FROM units WHERE id = %s", (unit_id,))
        if row is None:
            raise KeyError(f"no unit {unit_id}")
        return _unit_from_row(row)

    def find(self, natural_key: str, content_hash: str) -> Unit | None:
        return self._first("natural_key = %s AND content_hash = %s", (natural_key, content_hash))

    def natural_key_seen(self, natural_key: str, content_hash: str) -> Unit | None:
        return self._first("natural_key = %s AND content_hash <> %s", (natural_key, content_hash))

    def _first(self, where: str, params: Sequence[Any]) -> Unit | None:
        row = self._tx.one(
            f"SELECT {_UNIT_COLUMNS} FROM units WHERE {where} ORDER BY id LIMIT 1", params
        )
        return None if row is None else _unit_from_row(row)

    def by_raw(self, raw_id: int) -> list[Unit]:
        rows = self._tx.all(
            f"SELECT {_UNIT_COLUMNS} FROM units WHERE raw_id = %s ORDER BY id", (raw_id,)
        )
        return [_unit_from_row(row) for row in rows]

    def set_status(self, unit_id: int, status: str, reason: str | None = None) -> None:
        with self._tx.guarded():
            changed = self._tx.run(
                "UPDATE units SET status = %s, reason = %s WHERE id = %s",
                (status, reason, unit_id),
            )
        self._tx.must_change(changed, "units", "id", unit_id)


# ------------------------------------------------------------------------------ events

_EVENT_COLUMNS = (
    "position, id, type, schema_version, occurred_at, recorded_at, entity, facility, keys,"
    " correlation_id, causation_id, source, data"
)
_INSERT_EVENT = (
    f"INSERT INTO events ({_EVENT_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class PostgresEventLog(EventLog):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def append(self, events: Sequence[Event]) -> list[int]:
        if not events:
            return []
        rows = codec.event_rows(events, _utc)
        self._tx.hold_cursor(_EVENTS)
        with self._tx.guarded():
            positions = self._allocate(len(rows))
            self._tx.many(
                _INSERT_EVENT,
                [(position, *row) for position, row in zip(positions, rows, strict=True)],
            )
            self._tx.many(
                "INSERT INTO event_keys (value, position) VALUES (%s, %s)",
                [
                    (value, position)
                    for event, position in zip(events, positions, strict=True)
                    for value in dict.fromkeys(event.keys.values())
                ],
            )
        return positions

    def _allocate(self, count: int) -> list[int]:
        rows = self._tx.all(
            "SELECT nextval('events_position_seq') FROM generate_series(1, %s)", (count,)
        )
        return sorted(int(row[0]) for row in rows)

    def by_correlation(self, correlation_id: str) -> list[StoredEvent]:
        return self._select("WHERE correlation_id = %s ORDER BY position", (correlation_id,))

    def by_key(self, value: str) -> list[StoredEvent]:
        return self._select(
            "WHERE position IN (SELECT position FROM event_keys WHERE value = %s)"
            " ORDER BY position",
            (value,),
        )

    def read_from(self, after_position: int, limit: int = 1000) -> list[StoredEvent]:
        return self._select(
            "WHERE position > %s AND position <= %s ORDER BY position LIMIT %s",
            (after_position, self._tx.horizon(_EVENTS), max(limit, 0)),
        )

    def count(self) -> int:
        return self._tx.count("SELECT count(*) FROM events")

    def _select(self, clause: str, params: Sequence[Any]) -> list[StoredEvent]:
        rows = self._tx.all(f"SELECT {_EVENT_COLUMNS} FROM events {clause}", params)
        reading = codec.Reading()
        return reading.events(rows, micros=False)


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
        run_after=row[6],
        lease_owner=row[7],
        lease_expires_at=row[8],
        fence=row[9],
        last_error=row[10],
    )


# The oldest runnable job: ready and due, or leased with an expired lease, whose key has no
# earlier unfinished job; rows other claimers hold are skipped, the one found is locked.
# OFFSET 0 keeps the per-key test a subquery run per candidate, an index probe of
# jobs_key_id (key, id). Without it the planner may turn NOT EXISTS into an anti-join, and
# with the statistics of a young table (a burst of jobs before autovacuum analyzed it) it
# chose a nested loop that read every unfinished job for every candidate: O(backlog²) per
# claim, 20 ms at 200 jobs, the bulk of a worker's time (bench/bench_workers.py).
_CLAIM_CANDIDATE = """
SELECT j.id, j.key FROM jobs AS j
WHERE ((j.status = 'ready' AND j.run_after <= %(now)s)
       OR (j.status = 'leased' AND j.lease_expires_at <= %(now)s))
  {filters}
  AND NOT EXISTS (
      SELECT 1 FROM jobs AS e
      WHERE e.key = j.key AND e.id < j.id AND e.status IN ('ready', 'leased', 'parked')
      OFFSET 0)
ORDER BY j.run_after, j.id
LIMIT 1
FOR UPDATE OF j SKIP LOCKED
"""

_EARLIER_UNFINISHED = (
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE key = %s AND id < %s"
    " AND status IN ('ready', 'leased', 'parked'))"
)

_LEASE = (
    "UPDATE jobs SET status = %s, lease_owner = %s, lease_expires_at = %s,"
    f" fence = fence + 1, attempts = attempts + 1 WHERE id = %s RETURNING {_JOB_COLUMNS}"
)


class PostgresJobQueue(JobQueue):
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
        created_at = utcnow()
        due = created_at if run_after is None else _utc(run_after)
        document = codec.to_json(payload)
        self._tx.hold_job_key(key)
        row = self._tx.one(
            "INSERT INTO jobs (kind, key, payload, status, attempts, run_after, fence,"
            " created_at) VALUES (%s, %s, %s, %s, 0, %s, 0, %s) RETURNING id",
            (kind, key, document, JobStatus.READY, due, created_at),
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns the row
            raise StoreError("insert returned no row")
        self._tx.wake_workers()
        return int(row[0])

    def enqueue_once(self, kind: str, key: str, payload: Mapping[str, Any]) -> int:
        # The shared key lock first: from now until this transaction ends no claim of
        # ``key`` can settle (settle_job_key fails), and one that settled before has
        # committed by the time the lock is granted, so "ready" below stays unclaimed.
        self._tx.hold_job_key(key)
        row = self._tx.one(
            "SELECT id FROM jobs WHERE key = %s AND kind = %s AND status = %s ORDER BY id LIMIT 1",
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
        at = _utc(now)
        passed: list[int] = []
        while (candidate := self._candidate(at, kinds, passed)) is not None:
            job_id, key = candidate
            if self._tx.settle_job_key(key) and not self._earlier_unfinished(key, job_id):
                return self._lease(job_id, owner, at + timedelta(seconds=lease_seconds))
            passed.append(job_id)
        return None

    def _candidate(
        self, now: datetime, kinds: Sequence[str] | None, passed: Sequence[int]
    ) -> tuple[int, str] | None:
        filters: list[str] = []
        params: dict[str, Any] = {"now": now}
        if kinds is not None:
            filters.append("AND j.kind = ANY(%(kinds)s)")
            params["kinds"] = list(kinds)
        if passed:
            filters.append("AND j.id <> ALL(%(passed)s::bigint[])")
            params["passed"] = list(passed)
        row = self._tx.one(_CLAIM_CANDIDATE.format(filters=" ".join(filters)), params)
        return None if row is None else (int(row[0]), str(row[1]))

    def _earlier_unfinished(self, key: str, job_id: int) -> bool:
        """Checked again after ``settle_job_key``: a fresh snapshot sees every lower id."""
        row = self._tx.one(_EARLIER_UNFINISHED, (key, job_id))
        return row is None or bool(row[0])

    def _lease(self, job_id: int, owner: str, expires: datetime) -> Job:
        row = self._tx.one(_LEASE, (JobStatus.LEASED, owner, expires, job_id))
        if row is None:  # pragma: no cover - the row is locked by this transaction
            raise StoreError(f"job {job_id} vanished while being claimed")
        return _job_from_row(row)

    def extend(self, job_id: int, fence: int, now: datetime, lease_seconds: float) -> None:
        changed = self._tx.run(
            "UPDATE jobs SET lease_expires_at = %s WHERE id = %s AND fence = %s AND status = %s",
            (_utc(now) + timedelta(seconds=lease_seconds), job_id, fence, JobStatus.LEASED),
        )
        if changed == 0:
            self._lost(job_id, fence)

    def lease_owners(self, now: datetime) -> list[str]:
        rows = self._tx.all(
            "SELECT DISTINCT lease_owner FROM jobs WHERE status = %s AND lease_expires_at > %s"
            " ORDER BY lease_owner",
            (JobStatus.LEASED, _utc(now)),
        )
        return [str(row[0]) for row in rows]

    def expire_leases(self, owners: Sequence[str], now: datetime) -> int:
        if not owners:
            return 0
        ended = self._tx.run(
            "UPDATE jobs SET lease_expires_at = %s WHERE status = %s AND lease_expires_at > %s"
            " AND lease_owner = ANY(%s)",
            (_utc(now), JobStatus.LEASED, _utc(now), list(owners)),
        )
        if ended:  # their jobs are work again
            self._tx.wake_workers()
        return ended

    def complete(self, job_id: int, fence: int) -> None:
        self._finish(job_id, fence, JobStatus.DONE, None, None)

    def retry(self, job_id: int, fence: int, error: str, run_after: datetime) -> None:
        self._finish(job_id, fence, JobStatus.READY, error, _utc(run_after))

    def park(self, job_id: int, fence: int, error: str) -> None:
        self._finish(job_id, fence, JobStatus.PARKED, error, None)

    def defer(self, job_id: int, fence: int, reason: str, run_after: datetime) -> None:
        self._finish(job_id, fence, JobStatus.READY, reason, _utc(run_after), refund=1)

    def requeue(self, job_id: int, run_after: datetime) -> None:
        changed = self._tx.run(
            "UPDATE jobs SET status = %s, attempts = 0, run_after = %s, fence = fence + 1"
            " WHERE id = %s AND status = %s",
            (JobStatus.READY, _utc(run_after), job_id, JobStatus.PARKED),
        )
        if changed == 0:
            raise StoreError(f"job {job_id} is {self.get(job_id).status}, not parked")
        self._tx.wake_workers()

    def all(self, status: str | None = None, limit: int = 1000) -> list[Job]:
        where, params = ("", [limit]) if status is None else ("WHERE status = %s", [status, limit])
        rows = self._tx.all(f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY id LIMIT %s", params)
        return [_job_from_row(row) for row in rows]

    def _finish(
        self,
        job_id: int,
        fence: int,
        status: str,
        error: str | None,
        run_after: datetime | None,
        refund: int = 0,
    ) -> None:
        """Leave the lease (status, error, maybe a new due time) if ``fence`` still holds it;
        ``refund`` takes back attempts (a deferral is not an attempt)."""
        changed = self._tx.run(
            "UPDATE jobs SET status = %s, last_error = COALESCE(%s, last_error),"
            " run_after = COALESCE(%s, run_after), lease_owner = NULL, lease_expires_at = NULL,"
            " attempts = attempts - %s WHERE id = %s AND fence = %s AND status = %s",
            (status, error, run_after, refund, job_id, fence, JobStatus.LEASED),
        )
        if changed == 0:
            self._lost(job_id, fence)
        if status == JobStatus.READY:  # put back (retry, defer): it is work again
            self._tx.wake_workers()

    def _lost(self, job_id: int, fence: int) -> NoReturn:
        current = self.get(job_id)
        raise LeaseLost(
            f"job {job_id}: fence {fence} no longer holds the lease"
            f" (status {current.status}, fence {current.fence})"
        )

    def get(self, job_id: int) -> Job:
        row = self._tx.one(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        if row is None:
            raise KeyError(f"no job {job_id}")
        return _job_from_row(row)

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._tx.count("SELECT count(*) FROM jobs")
        return self._tx.count("SELECT count(*) FROM jobs WHERE status = %s", (status,))

    def next_run_after(self) -> datetime | None:
        row = self._tx.one("SELECT min(run_after) FROM jobs WHERE status = %s", (JobStatus.READY,))
        return None if row is None else _optional_utc(row[0])

    def next_lease_expiry(self) -> datetime | None:
        row = self._tx.one(
            "SELECT min(lease_expires_at) FROM jobs WHERE status = %s", (JobStatus.LEASED,)
        )
        return None if row is None else _optional_utc(row[0])


# ---------------------------------------------------------------------------- journals

_JOURNAL_COLUMNS = (
    "key, entity, date, description, kind, currency, rule_version, status, target, unit_id,"
    " erp_document_id, created_at, posted_at, last_error, lines"
)


def _journal_record(row: Row, reading: codec.Reading) -> JournalRecord:
    journal_date: date = row[2]
    journal = Journal(
        key=row[0],
        entity=row[1],
        date=journal_date,
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
        created_at=row[11],
        posted_at=row[12],
        last_error=row[13],
    )


class PostgresJournalRepository(JournalRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def add(self, journal: Journal, *, target: str, unit_id: int | None) -> bool:
        lines = codec.encode_lines(journal.lines)
        with self._tx.guarded():
            added = self._tx.run(
                f"INSERT INTO journals ({_JOURNAL_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, NULL, NULL, %s)"
                " ON CONFLICT (key) DO NOTHING",
                (
                    journal.key,
                    journal.entity,
                    journal.date,
                    journal.description,
                    journal.kind,
                    journal.currency,
                    journal.rule_version,
                    JournalStatus.PREPARED.value,
                    target,
                    unit_id,
                    utcnow(),
                    lines.text,
                ),
            )
            if added:
                self._tx.many(
                    "INSERT INTO journal_line_refs (value, journal_key) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(value, journal.key) for value in lines.refs],
                )
        return bool(added)

    def get(self, key: str) -> JournalRecord | None:
        records = self._select("WHERE key = %s", (key,))
        return records[0] if records else None

    def all(self, status: JournalStatus | None = None) -> list[JournalRecord]:
        if status is None:
            return self._select("", ())
        return self._select("WHERE status = %s", (JournalStatus(status).value,))

    def _select(self, where: str, params: Sequence[Any]) -> list[JournalRecord]:
        rows = self._tx.all(
            f"SELECT {_JOURNAL_COLUMNS} FROM journals {where} ORDER BY created_at, key", params
        )
        reading = codec.Reading()
        return [_journal_record(row, reading) for row in rows]

    def mark_posted(self, key: str, document_id: str, at: datetime) -> None:
        changed = self._tx.run(
            "UPDATE journals SET status = %s, erp_document_id = %s, posted_at = %s WHERE key = %s",
            (JournalStatus.POSTED.value, document_id, _utc(at), key),
        )
        self._tx.must_change(changed, "journals", "key", key)

    def mark_failed(self, key: str, error: str) -> None:
        changed = self._tx.run(
            "UPDATE journals SET status = %s, last_error = %s WHERE key = %s",
            (JournalStatus.FAILED.value, error, key),
        )
        self._tx.must_change(changed, "journals", "key", key)

    def keys_by_source(self, value: str) -> list[str]:
        rows = self._tx.all(
            "SELECT j.key FROM journal_line_refs r JOIN journals j ON j.key = r.journal_key"
            " WHERE r.value = %s ORDER BY j.created_at, j.key",
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
        run_after=row[5],
        document_id=row[6],
        last_error=row[7],
        sender=row[8],
    )


class PostgresOutbox(Outbox):
    """``due`` order is the oldest due time first: ``run_after``, then ``id``."""

    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def add(self, target: str, journal_key: str) -> int:
        now = utcnow()
        row = self._tx.one(
            "INSERT INTO outbox (target, journal_key, status, attempts, run_after, created_at)"
            " VALUES (%s, %s, %s, 0, %s, %s) RETURNING id",
            (target, journal_key, OutboxStatus.PENDING, now, now),
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns the row
            raise StoreError("insert returned no row")
        return int(row[0])

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxItem]:
        rows = self._tx.all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE target = %s AND status IN (%s, %s)"
            " AND run_after <= %s ORDER BY run_after, id LIMIT %s",
            (
                target,
                OutboxStatus.PENDING,
                OutboxStatus.IN_FLIGHT,
                _utc(now),
                max(limit, 0),
            ),
        )
        return [_outbox_from_row(row) for row in rows]

    def mark_in_flight(
        self, item_ids: Sequence[int], sender: str, *, dead: Collection[str] = ()
    ) -> None:
        wanted = list(dict.fromkeys(item_ids))  # one statement for the batch
        rows = self._tx.all(
            "UPDATE outbox SET status = %s, attempts = attempts + 1,"
            " sender = CASE WHEN sender IS NULL OR sender = ANY(%s) THEN %s ELSE sender END"
            " WHERE id = ANY(%s) RETURNING id",
            (OutboxStatus.IN_FLIGHT, sorted(dead), sender, wanted),
        )
        missing = set(wanted) - {int(row[0]) for row in rows}
        if missing:
            raise KeyError(f"outbox: no row with id = {min(missing)!r}")

    def mark_done(self, item_id: int, document_id: str) -> None:
        self._set(
            item_id,
            "status = %s, document_id = %s, sender = NULL",
            (OutboxStatus.DONE, document_id),
        )

    def mark_retry(self, item_id: int, error: str, run_after: datetime, sender: str) -> None:
        self._set(
            item_id,
            "last_error = %s, run_after = %s, sender = NULLIF(sender, %s)",
            (error, _utc(run_after), sender),
        )

    def mark_failed(self, item_id: int, error: str) -> None:
        self._set(
            item_id, "status = %s, last_error = %s, sender = NULL", (OutboxStatus.FAILED, error)
        )

    def reset(
        self, target: str, journal_key: str, run_after: datetime, *, unsure: bool = False
    ) -> int:
        status = OutboxStatus.IN_FLIGHT if unsure else OutboxStatus.PENDING
        row = self._tx.one(
            "UPDATE outbox SET status = %s, run_after = %s WHERE id = ("
            " SELECT id FROM outbox WHERE target = %s AND journal_key = %s AND status = %s"
            " ORDER BY id LIMIT 1) RETURNING id",
            (status, _utc(run_after), target, journal_key, OutboxStatus.FAILED),
        )
        if row is None:
            raise StoreError(f"no failed outbox item for journal {journal_key} to {target}")
        return int(row[0])

    def _set(self, item_id: int, assignments: str, params: Sequence[Any]) -> None:
        changed = self._tx.run(f"UPDATE outbox SET {assignments} WHERE id = %s", (*params, item_id))
        self._tx.must_change(changed, "outbox", "id", item_id)

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._tx.count("SELECT count(*) FROM outbox")
        return self._tx.count("SELECT count(*) FROM outbox WHERE status = %s", (status,))


# -------------------------------------------------------------------------- exceptions

_EXCEPTION_COLUMNS = (
    "id, reason, detail, status, subject, opened_at, resolved_at, resolved_by, assignee, resolution"
)

# Insert, or open again an item a person resolved (the problem came back); a row comes back
# only when the item is newly opened either way. An open item is left as it is.
_OPEN_EXCEPTION = """
INSERT INTO exceptions AS x (reason, detail, dedupe_key, status, subject, opened_at)
VALUES (%(reason)s, %(detail)s, %(dedupe_key)s, %(open)s, %(subject)s, %(now)s)
ON CONFLICT (dedupe_key) DO UPDATE
    SET status = %(open)s, detail = EXCLUDED.detail, subject = EXCLUDED.subject,
        resolved_at = NULL, resolved_by = NULL, resolution = NULL
    WHERE x.status <> %(open)s
RETURNING x.id
"""


def _exception_from_row(row: Row) -> ExceptionItem:
    return ExceptionItem(
        id=row[0],
        reason=row[1],
        detail=row[2],
        status=row[3],
        subject=stored_data.json_object(row[4]),
        opened_at=row[5],
        resolved_at=row[6],
        resolved_by=row[7],
        assignee=row[8],
        resolution=row[9],
    )


class PostgresExceptionRepository(ExceptionRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def open(self, item: NewException) -> tuple[int, bool]:
        subject = codec.to_json(item.subject)
        self._tx.hold_cursor(_EXCEPTIONS)
        row = self._tx.one(
            _OPEN_EXCEPTION,
            {
                "reason": item.reason,
                "detail": item.detail,
                "dedupe_key": item.dedupe_key,
                "open": ExceptionStatus.OPEN,
                "subject": subject,
                "now": utcnow(),
            },
        )
        if row is not None:
            return int(row[0]), True
        found = self._tx.one("SELECT id FROM exceptions WHERE dedupe_key = %s", (item.dedupe_key,))
        if found is None:  # pragma: no cover - the conflicting row exists
            raise StoreError(f"exception item {item.dedupe_key!r} vanished")
        return int(found[0]), False

    def get(self, item_id: int) -> ExceptionItem:
        row = self._tx.one(f"SELECT {_EXCEPTION_COLUMNS} FROM exceptions WHERE id = %s", (item_id,))
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
        where = " AND ".join(f"{column} = %s" for column in chosen)
        rows = self._tx.all(
            f"SELECT {_EXCEPTION_COLUMNS} FROM exceptions"
            f" {'WHERE ' + where if where else ''} ORDER BY id",
            list(chosen.values()),
        )
        return [_exception_from_row(row) for row in rows]

    def resolve(
        self, item_id: int, actor: str, at: datetime, resolution: str = Resolution.RESOLVED
    ) -> None:
        changed = self._tx.run(
            "UPDATE exceptions SET status = %s, resolved_at = %s, resolved_by = %s,"
            " resolution = %s WHERE id = %s AND status = %s",
            (ExceptionStatus.RESOLVED, _utc(at), actor, resolution, item_id, ExceptionStatus.OPEN),
        )
        if changed == 0:
            raise StoreError(f"exception item {item_id} is {self.get(item_id).status}, not open")

    def read_from(self, after_id: int, limit: int = 1000) -> list[ExceptionItem]:
        rows = self._tx.all(
            f"SELECT {_EXCEPTION_COLUMNS} FROM exceptions WHERE id > %s AND id <= %s"
            " ORDER BY id LIMIT %s",
            (after_id, self._tx.horizon(_EXCEPTIONS), max(limit, 0)),
        )
        return [_exception_from_row(row) for row in rows]

    def assign(self, item_id: int, assignee: str | None) -> None:
        changed = self._tx.run(
            "UPDATE exceptions SET assignee = %s WHERE id = %s", (assignee, item_id)
        )
        self._tx.must_change(changed, "exceptions", "id", item_id)

    def add_note(self, item_id: int, actor: str, at: datetime, text: str) -> int:
        self.get(item_id)
        row = self._tx.one(
            "INSERT INTO exception_notes (exception_id, at, actor, text)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (item_id, _utc(at), actor, text),
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns the row
            raise StoreError("insert returned no row")
        return int(row[0])

    def notes(self, item_id: int) -> list[Note]:
        rows = self._tx.all(
            "SELECT id, exception_id, at, actor, text FROM exception_notes"
            " WHERE exception_id = %s ORDER BY id",
            (item_id,),
        )
        return [Note(row[0], row[1], row[2], row[3], row[4]) for row in rows]


# --------------------------------------------------------------------------- approvals

_APPROVAL_COLUMNS = "id, kind, subject, requested_by, requested_at, status, decided_by, decided_at"


def _approval_from_row(row: Row) -> Approval:
    return Approval(
        id=row[0],
        kind=row[1],
        subject=stored_data.json_object(row[2]),
        requested_by=row[3],
        requested_at=row[4],
        status=row[5],
        decided_by=row[6],
        decided_at=row[7],
    )


class PostgresApprovalRepository(ApprovalRepository):
    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def request(self, kind: str, subject: Mapping[str, Any], actor: str, at: datetime) -> Approval:
        row = self._tx.one(
            "INSERT INTO approvals (kind, subject, requested_by, requested_at, status)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_APPROVAL_COLUMNS}",
            (kind, codec.to_json(subject), actor, _utc(at), ApprovalStatus.PENDING),
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns the row
            raise StoreError("insert returned no row")
        return _approval_from_row(row)

    def get(self, approval_id: int) -> Approval:
        row = self._tx.one(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = %s", (approval_id,)
        )
        if row is None:
            raise KeyError(f"no approval {approval_id}")
        return _approval_from_row(row)

    def all(self, status: str | None = None) -> list[Approval]:
        where, params = ("", ()) if status is None else ("WHERE status = %s", (status,))
        rows = self._tx.all(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals {where} ORDER BY id", params
        )
        return [_approval_from_row(row) for row in rows]

    def decide(self, approval_id: int, actor: str, at: datetime, *, approve: bool) -> None:
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REFUSED
        changed = self._tx.run(
            "UPDATE approvals SET status = %s, decided_by = %s, decided_at = %s"
            " WHERE id = %s AND status = %s",
            (status, actor, _utc(at), approval_id, ApprovalStatus.PENDING),
        )
        if changed == 0:
            raise StoreError(
                f"approval {approval_id} is {self.get(approval_id).status}, not pending"
            )


# ------------------------------------------------------------------------------- audit

_AUDIT_COLUMNS = "id, at, actor, action, subject_type, subject_id, detail"


def _audit_from_row(row: Row) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=row[1],
        actor=row[2],
        action=row[3],
        subject_type=row[4],
        subject_id=row[5],
        detail=stored_data.json_object(row[6]),
    )


class PostgresAuditLog(AuditLog):
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
        document = codec.to_json(detail or {})
        self._tx.hold_cursor(_AUDIT)
        self._tx.run(
            "INSERT INTO audit_log (at, actor, action, subject_type, subject_id, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (utcnow(), actor, action, subject_type, subject_id, document),
        )

    def for_subject(self, subject_type: str, subject_id: str) -> list[AuditEntry]:
        rows = self._tx.all(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log"
            " WHERE subject_type = %s AND subject_id = %s ORDER BY id",
            (subject_type, subject_id),
        )
        return [_audit_from_row(row) for row in rows]

    def read_from(self, after_id: int, limit: int = 1000) -> list[AuditEntry]:
        rows = self._tx.all(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE id > %s AND id <= %s"
            " ORDER BY id LIMIT %s",
            (after_id, self._tx.horizon(_AUDIT), max(limit, 0)),
        )
        return [_audit_from_row(row) for row in rows]


# ------------------------------------------------------------------------ unit of work


class PostgresUnitOfWork(UnitOfWork):
    def __init__(self, tx: _Tx, raw_part_size: int) -> None:
        self.raw = PostgresRawRepository(tx, raw_part_size)
        self.units = PostgresUnitRepository(tx)
        self.events = PostgresEventLog(tx)
        self.jobs = PostgresJobQueue(tx)
        self.journals = PostgresJournalRepository(tx)
        self.outbox = PostgresOutbox(tx)
        self.exceptions = PostgresExceptionRepository(tx)
        self.approvals = PostgresApprovalRepository(tx)
        self.audit = PostgresAuditLog(tx)
        self.retention = PostgresRetention(tx)


# ------------------------------------------------------------------------- migrations


def load_migrations() -> list[Migration]:
    """The postgres migrations shipped in the package, in version order."""
    return history.load_migrations("postgres")


_CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
)


def _apply(conn: Connection, migration: Migration) -> None:
    """Apply one migration in its own transaction, unless it is already recorded.

    A transaction-level advisory lock makes processes that start together take turns."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s::integer, 0)", (_LOCK_CLASS_MIGRATIONS,))
        conn.execute(_CREATE_MIGRATIONS_TABLE)
        done = conn.execute(
            "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
        ).fetchone()
        if done is None:
            conn.execute(migration.sql)  # several statements: no parameters, simple protocol
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, utcnow()),
            )


def _schema_version(conn: Connection) -> int:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute("SELECT COALESCE(max(version), 0) FROM schema_migrations").fetchone()
    return 0 if row is None else int(row[0])


# ---------------------------------------------------------------------------- pooling


class _Pool:
    """At most ``size`` connections, made on demand and reused (last in, first out)."""

    def __init__(self, connect: Callable[[], Connection], size: int, wait_seconds: float) -> None:
        self._connect = connect
        self._size = size
        self._wait_seconds = wait_seconds
        self._idle: list[Connection] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.closed = False

    def acquire(self, location: str) -> Connection:
        if self.closed:
            raise StoreError(f"store {location} is closed")
        if not self._slots.acquire(timeout=self._wait_seconds):
            raise StoreError(
                f"all {self._size} connections to {location} stayed busy for"
                f" {self._wait_seconds:g} s"
            )
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            return conn if conn is not None else self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Connection) -> None:
        """Keep a connection that is healthy and idle; close anything else."""
        reusable = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            keep = reusable and not self.closed
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()
        self._slots.release()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# ------------------------------------------------------------------------------- store


def _notified(listener: Connection, timeout: float) -> bool:
    """Whether a wake-up arrives within ``timeout`` seconds; drains the ones that came."""
    woke = any(True for _ in listener.notifies(timeout=timeout, stop_after=1))
    if woke:
        for _ in listener.notifies(timeout=0):
            pass
    return woke


class PostgresStore(Store):
    """The shared store. Creating one does no I/O; connections are made when first needed,
    and every new connection is checked for durable settings before it is used."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 8,
        connect_timeout_seconds: int = 10,
        raw_part_size: int = DEFAULT_RAW_PART_SIZE,
    ) -> None:
        if pool_size <= 0:
            raise ConfigurationError(f"pool_size must be positive, not {pool_size}")
        if raw_part_size <= 0:
            raise ValueError(f"raw_part_size must be positive, not {raw_part_size}")
        self.location = describe_dsn(dsn)
        self._dsn = dsn
        self._connect_timeout = max(int(connect_timeout_seconds), 1)
        self._raw_part_size = raw_part_size
        self._local = threading.local()
        self._pool = _Pool(self._connect, pool_size, wait_seconds=POOL_WAIT_SECONDS)
        self._listeners: list[Connection] = []  # one per waiting thread (wait_for_work)
        self._listeners_lock = threading.Lock()

    @classmethod
    def open(
        cls, dsn: str, *, pool_size: int = 8, connect_timeout_seconds: int = 10
    ) -> PostgresStore:
        """Open, refuse non-durable settings, and bring the schema up to date."""
        store = cls(dsn, pool_size=pool_size, connect_timeout_seconds=connect_timeout_seconds)
        try:
            store.check_durability()
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connect(self) -> Connection:
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="revbridge",
            )
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to {self.location}: {exc}") from exc
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.adapters.register_loader("json", TextLoader)  # the codec decodes JSON
            require_durable(_server_settings(conn), self.location)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if getattr(self._local, "busy", False):
            raise StoreError("units of work do not nest")
        conn = self._pool.acquire(self.location)
        self._local.busy = True
        try:
            yield conn
        finally:
            self._local.busy = False
            self._pool.release(conn)

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        with self._connection() as conn:
            tx = _Tx(conn)
            uow = PostgresUnitOfWork(tx, self._raw_part_size)
            try:
                with conn.transaction():
                    yield uow
                    tx.active = False
            finally:
                tx.active = False
        uow.committed()

    def migrate(self) -> int:
        with self._connection() as conn:
            for migration in load_migrations():
                _apply(conn, migration)
            version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"database schema version {version} is newer than this revbridge"
                f" ({SCHEMA_VERSION}); upgrade revbridge",
                location=self.location,
            )
        return version

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""
        with self._connection() as conn:
            return _schema_version(conn)

    def check_durability(self) -> None:
        with self._connection() as conn:
            settings = _server_settings(conn)
        require_durable(settings, self.location)

    def wait_for_work(self, timeout_seconds: float) -> bool:
        listener: Connection | None = getattr(self._local, "listener", None)
        if listener is None or listener.closed:
            self._local.listener = self._listen()
            return True
        try:
            return _notified(listener, max(timeout_seconds, 0.0))
        except psycopg.OperationalError:
            listener.close()  # the server went away: the next call listens again
            return True

    def _listen(self) -> Connection:
        """A connection of this thread's own (not the pool's) that listens for wake-ups."""
        if self._pool.closed:
            raise StoreError(f"store {self.location} is closed")
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="revbridge-listen",
            )
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to {self.location}: {exc}") from exc
        conn.execute(f"LISTEN {WORK_CHANNEL}")
        with self._listeners_lock:
            self._listeners = [c for c in self._listeners if not c.closed]
            self._listeners.append(conn)
        return conn

    def close(self) -> None:
        self._pool.close()
        with self._listeners_lock:
            listeners, self._listeners = self._listeners, []
        for conn in listeners:
            conn.close()
