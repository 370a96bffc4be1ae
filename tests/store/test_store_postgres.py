"""PostgreSQL-only: durability guard, migrations, ordering locks, pooling, big raws, config.

The contract suite runs against PostgreSQL through the ``store`` fixture; this module covers
what only PostgreSQL has. Every test uses the run's own database or a scratch database.
"""

from __future__ import annotations

import hashlib
import io
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest
from psycopg import conninfo

from revbridge import bootstrap
from revbridge.config import ComponentConfig, Config
from revbridge.domain.events import Event, utcnow
from revbridge.domain.journal import Journal, JournalLine
from revbridge.errors import ConfigurationError, StoreError
from revbridge.registry import Secret
from revbridge.store import postgres, sqlite
from revbridge.store.base import NewException
from revbridge.store.postgres import (
    SCHEMA_VERSION,
    PostgresStore,
    describe_dsn,
    durability_problems,
    load_migrations,
    require_durable,
)

MakeEvent = Callable[..., Event]
WAIT = 10.0


@pytest.fixture
def pg(postgres_clean_dsn: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_clean_dsn, pool_size=4) as store:
        yield store


def _with_options(dsn: str, options: str) -> str:
    return conninfo.make_conninfo(dsn, options=options)


def _sql(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


# ------------------------------------------------------------------------- durability


def test_the_test_server_is_durable(pg: PostgresStore) -> None:
    pg.check_durability()


def test_synchronous_commit_off_for_the_database_is_refused(
    scratch_database: Callable[[], str],
) -> None:
    dsn = scratch_database()
    name = conninfo.conninfo_to_dict(dsn)["dbname"]
    _sql(dsn, f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    with PostgresStore(dsn) as store:
        with pytest.raises(ConfigurationError, match="synchronous_commit is off") as caught:
            store.check_durability()
        assert "ALTER DATABASE name RESET synchronous_commit" in str(caught.value)
        assert caught.value.location == describe_dsn(dsn)
        with pytest.raises(ConfigurationError), store.unit_of_work():
            pass  # every new connection is checked, not only the first
    with pytest.raises(ConfigurationError):
        PostgresStore.open(dsn)


@pytest.mark.parametrize("value", ["off", "local"])
def test_weak_synchronous_commit_in_the_dsn_is_refused(postgres_clean_dsn: str, value: str) -> None:
    dsn = _with_options(postgres_clean_dsn, f"-c synchronous_commit={value}")
    with PostgresStore(dsn) as store, pytest.raises(ConfigurationError, match=value):
        store.check_durability()


@pytest.mark.parametrize("value", ["on", "remote_apply", "remote_write"])
def test_durable_synchronous_commit_is_accepted(postgres_clean_dsn: str, value: str) -> None:
    dsn = _with_options(postgres_clean_dsn, f"-c synchronous_commit={value}")
    with PostgresStore(dsn) as store:
        store.check_durability()
        with store.unit_of_work() as uow:
            assert uow.jobs.count() == 0


def test_fsync_off_is_refused() -> None:
    """fsync cannot change without a server restart, so the SHOW result is injected here;
    ``check_durability`` hands the live values to the same ``require_durable``."""
    assert durability_problems({"fsync": "on", "synchronous_commit": "on"}) == []
    with pytest.raises(ConfigurationError, match="fsync is off") as caught:
        require_durable({"fsync": "off", "synchronous_commit": "on"}, "postgresql:host=db")
    assert "restart the server" in str(caught.value)
    assert caught.value.location == "postgresql:host=db"
    both = durability_problems({"fsync": "off", "synchronous_commit": "off"})
    assert [problem.split(" is ")[0] for problem in both] == [
        "PostgreSQL fsync",
        "PostgreSQL synchronous_commit",
    ]
    assert len(durability_problems({})) == 2


def test_the_dsn_is_described_without_its_password() -> None:
    described = describe_dsn("postgresql://ana:s3cret@db.internal:6432/revbridge")
    assert described == "postgresql:host=db.internal port=6432 dbname=revbridge user=ana"
    with pytest.raises(ConfigurationError):
        describe_dsn("not a dsn at all")


def test_an_unreachable_server_is_a_store_error() -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    refused = pytest.raises(StoreError, match="cannot connect")
    with PostgresStore(unreachable, connect_timeout_seconds=1) as store, refused:
        store.check_durability()


# ------------------------------------------------------------------------- migrations


def test_migrate_is_idempotent(scratch_database: Callable[[], str]) -> None:
    dsn = scratch_database()
    with PostgresStore(dsn) as store:
        assert store.schema_version() == 0
        assert store.migrate() == SCHEMA_VERSION
        assert store.migrate() == SCHEMA_VERSION
    rows = _sql(dsn, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(m.version, m.name) for m in load_migrations()]


def test_the_version_history_matches_sqlite() -> None:
    ours = [(m.version, m.name) for m in load_migrations()]
    theirs = [(m.version, m.name) for m in sqlite.load_migrations()]
    assert ours == theirs
    assert SCHEMA_VERSION == sqlite.SCHEMA_VERSION == ours[-1][0]


def test_the_schema_has_the_same_tables_and_columns_as_sqlite(
    postgres_database: str, tmp_path: Path
) -> None:
    with sqlite.SQLiteStore.open(tmp_path / "x.db") as lite:
        conn = lite._connection()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        expected = {
            table: {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            for table in tables
            if not table.startswith("sqlite_")
        }
    rows = _sql(
        postgres_database,
        "SELECT c.table_name, c.column_name FROM information_schema.columns AS c"
        " JOIN pg_class AS t ON t.oid = (quote_ident(c.table_name))::regclass"
        " WHERE c.table_schema = current_schema() AND NOT t.relispartition",
    )
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    # Monthly partitions are PostgreSQL's own (tables of their parents), and so is event_ids
    # (events.id unique across partitions; SQLite's events table is not partitioned).
    assert found.keys() - expected.keys() == {"event_ids"}
    raw_parts_id = {"id"}  # SQLite's rowid for blob I/O; PostgreSQL keys parts by (raw_id, part_no)
    for table, columns in expected.items():
        assert found[table] == columns - (raw_parts_id if table == "raw_parts" else set()), table


def test_processes_starting_together_migrate_once(scratch_database: Callable[[], str]) -> None:
    dsn = scratch_database()
    versions: list[int] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            with PostgresStore(dsn) as store:
                versions.append(store.migrate())
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            raise

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert errors == []
    assert versions == [SCHEMA_VERSION] * 4


def test_a_newer_database_is_refused(scratch_database: Callable[[], str]) -> None:
    dsn = scratch_database()
    PostgresStore.open(dsn).close()
    _sql(
        dsn,
        f"INSERT INTO schema_migrations VALUES ({SCHEMA_VERSION + 1}, 'from_the_future', now())",
    )
    with PostgresStore(dsn) as store, pytest.raises(ConfigurationError, match="newer"):
        store.migrate()


# --------------------------------------------------------------------- ordering locks


def _hold_open(
    store: PostgresStore, work: Callable[[Any], object]
) -> tuple[threading.Thread, threading.Event, list[object]]:
    """Run ``work`` in a unit of work on another thread and keep it open until released."""
    started, release = threading.Event(), threading.Event()
    result: list[object] = []

    def run() -> None:
        with store.unit_of_work() as uow:
            result.append(work(uow))
            started.set()
            release.wait(WAIT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(WAIT)
    return thread, release, result


def test_a_job_waits_for_an_earlier_job_of_its_key_committed_late(pg: PostgresStore) -> None:
    """Ids are handed out at insert, not at commit: the lower id may commit last."""
    thread, release, result = _hold_open(pg, lambda uow: uow.jobs.enqueue("k", "ACC-1", {}))
    with pg.unit_of_work() as uow:
        later = uow.jobs.enqueue("k", "ACC-1", {})
        other = uow.jobs.enqueue("k", "ACC-2", {})
    (earlier,) = result
    assert isinstance(earlier, int) and earlier < later
    now = utcnow() + timedelta(seconds=1)
    with pg.unit_of_work() as uow:
        job = uow.jobs.claim("w", now, 30.0)
        assert job is not None and job.id == other  # ACC-1 is held back, ACC-2 is not
        assert uow.jobs.claim("w", now, 30.0) is None
    release.set()
    thread.join(WAIT)
    with pg.unit_of_work() as uow:
        job = uow.jobs.claim("w", now, 30.0)
        assert job is not None and job.id == earlier
        assert uow.jobs.claim("w", now, 30.0) is None


@pytest.mark.parametrize("cursor", ["audit", "exceptions", "raw"])
def test_paged_readers_stop_short_of_rows_still_in_flight(pg: PostgresStore, cursor: str) -> None:
    def add(uow: Any, n: int) -> None:
        if cursor == "audit":
            uow.audit.record("a", f"act.{n}", "t", str(n))
        elif cursor == "exceptions":
            uow.exceptions.open(NewException("r", "d", f"k{n}"))
        else:
            data = f"raw {n}".encode()
            uow.raw.add(
                channel="c",
                name=str(n),
                content_type="t",
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                stream=io.BytesIO(data),
            )

    def page(uow: Any) -> list[int]:
        if cursor == "audit":
            return [entry.id for entry in uow.audit.read_from(0)]
        if cursor == "exceptions":
            return [item.id for item in uow.exceptions.read_from(0)]
        return [raw.id for raw in uow.raw.received()]

    with pg.unit_of_work() as uow:
        add(uow, 0)
    thread, release, _ = _hold_open(pg, lambda uow: add(uow, 1))
    with pg.unit_of_work() as uow:
        add(uow, 2)
    with pg.unit_of_work() as uow:
        assert page(uow) == [1]  # 3 is committed, but 2 may still commit before it
    release.set()
    thread.join(WAIT)
    with pg.unit_of_work() as uow:
        assert page(uow) == [1, 2, 3]


def test_a_unit_of_work_reads_its_own_events(pg: PostgresStore, make_event: MakeEvent) -> None:
    with pg.unit_of_work() as uow:
        positions = uow.events.append([make_event(), make_event()])
        assert [stored.position for stored in uow.events.read_from(0)] == positions


# ------------------------------------------------------------- values kept exactly


def test_json_text_and_amount_text_are_kept_as_written(
    pg: PostgresStore, make_event: MakeEvent
) -> None:
    data = {"zeta": "1", "alpha": {"b": "\x00", "a": [3, 2]}, "mid": None}
    journal = Journal(
        "J-E",
        "ACME",
        date(2025, 1, 1),
        "exponent",
        (
            JournalLine("1200", Decimal("1E+2"), Decimal("0.00")),
            JournalLine("1100", Decimal("0"), Decimal("100.00")),
        ),
        "r1",
    )
    with pg.unit_of_work() as uow:
        uow.events.append([make_event(data=data)])
        uow.journals.add(journal, target="t", unit_id=None)
    with pg.unit_of_work() as uow:
        back = uow.events.read_from(0)[0].event.data
        record = uow.journals.get("J-E")
    assert list(back) == ["zeta", "alpha", "mid"]
    assert back == data
    assert record is not None
    assert [str(line.debit) for line in record.journal.lines] == ["1E+2", "0"]


# ---------------------------------------------------------- connections and threads


def test_threads_share_one_store(pg: PostgresStore, make_event: MakeEvent) -> None:
    positions: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                with pg.unit_of_work() as uow:
                    positions.extend(uow.events.append([make_event(), make_event()]))
                    uow.jobs.enqueue("a", "same-key", {})
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            raise

    threads = [threading.Thread(target=work) for _ in range(6)]  # more threads than connections
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert errors == []
    assert sorted(positions) == list(range(1, 301))
    with pg.unit_of_work() as uow:
        assert (uow.events.count(), uow.jobs.count()) == (300, 150)
        assert [stored.position for stored in uow.events.read_from(0)] == list(range(1, 301))


def test_units_of_work_do_not_nest(pg: PostgresStore) -> None:
    with pg.unit_of_work(), pytest.raises(StoreError), pg.unit_of_work():
        pass


def test_closed_store_refuses_work(postgres_clean_dsn: str) -> None:
    store = PostgresStore(postgres_clean_dsn)
    store.close()
    store.close()
    with pytest.raises(StoreError), store.unit_of_work():
        pass


def test_a_broken_connection_is_not_reused(pg: PostgresStore) -> None:
    with pytest.raises(psycopg.OperationalError), pg.unit_of_work() as uow:
        uow.jobs.count()
        uow.jobs._tx.conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    with pg.unit_of_work() as uow:
        assert uow.jobs.count() == 0


# ------------------------------------------------------------------------ big raw bytes


class Pattern(io.RawIOBase):
    """``size`` deterministic bytes, produced on demand (never all in memory)."""

    BLOCK = bytes(range(256)) * 64 + b"\x00\xff\x01"

    def __init__(self, size: int) -> None:
        self._left = size
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        start = self._at % len(self.BLOCK)
        count = min(len(buffer), self._left, len(self.BLOCK) - start)
        buffer[:count] = self.BLOCK[start : start + count]
        self._left -= count
        self._at += count
        return count


def test_big_raw_is_streamed_in_parts(postgres_clean_dsn: str) -> None:
    size = 6 * (1 << 20) + 12345
    digest = hashlib.sha256()
    source = Pattern(size)
    while chunk := source.read(1 << 16):
        digest.update(chunk)
    sha256 = digest.hexdigest()
    part = (1 << 20) + 7
    with PostgresStore(postgres_clean_dsn, raw_part_size=part) as store:
        tracemalloc.start()
        try:
            with store.unit_of_work() as uow:
                raw = uow.raw.add(
                    channel="c",
                    name="big.835",
                    content_type="application/edi-x12",
                    sha256=sha256,
                    size=size,
                    stream=Pattern(size),  # type: ignore[arg-type]
                )
            _, peak_in = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            digest = hashlib.sha256()
            expected = io.BufferedReader(Pattern(size))
            with store.unit_of_work() as uow:
                for chunk in uow.raw.iter_chunks(raw.id, chunk_size=64 << 10):
                    assert chunk == expected.read(len(chunk))
                    digest.update(chunk)
                middle = uow.raw.read(raw.id, part - 5, part + 20)
            _, peak_out = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    parts = _sql(postgres_clean_dsn, f"SELECT count(*) FROM raw_parts WHERE raw_id = {raw.id}")
    assert parts == [(7,)]
    assert digest.hexdigest() == sha256
    assert middle == io.BufferedReader(Pattern(size)).read(part + 20)[part - 5 :]
    assert peak_in < 4 * part, f"streaming in held {peak_in} bytes"
    assert peak_out < 4 * part, f"streaming out held {peak_out} bytes"


# ------------------------------------------------------------------------------ config


def test_bootstrap_opens_a_postgres_store(postgres_clean_dsn: str) -> None:
    options = {
        "dsn": Secret(postgres_clean_dsn),
        "pool_size": 2,
        "connect_timeout_seconds": 5,
    }
    # open_store reads only the store section
    config = cast(
        Config, SimpleNamespace(store=ComponentConfig("store", "postgres", "pg", options))
    )
    store = bootstrap.open_store(config)
    try:
        assert isinstance(store, PostgresStore)
        with store.unit_of_work() as uow:
            assert uow.events.count() == 0
    finally:
        store.close()
    assert postgres.SPEC in bootstrap.COMPONENT_SPECS
    values, problems = postgres.SPEC.validate({"dsn": "postgresql://x@y/z"})
    assert problems == []
    assert repr(values["dsn"]) == "Secret('***')"
    assert (values["pool_size"], values["connect_timeout_seconds"]) == (8, 10)
