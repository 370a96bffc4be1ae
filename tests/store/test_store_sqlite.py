"""SQLite-only: durability settings, migrations, several connections and processes, big raws."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import sqlite3
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from revbridge.domain.events import Event
from revbridge.errors import ConfigurationError, StoreError
from revbridge.store.base import Store
from revbridge.store.sqlite import (
    SCHEMA_VERSION,
    SQLiteStore,
    load_migrations,
    split_statements,
)

MakeEvent = Callable[..., Event]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "revbridge.db"


@pytest.fixture
def sqlite_store(db: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore.open(db) as store:
        yield store
    assert _integrity(db) == [("ok",)]


def _integrity(path: Path) -> list[tuple[str]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("PRAGMA integrity_check").fetchall())
    finally:
        conn.close()


def _pragma(store: SQLiteStore, name: str) -> object:
    conn = store._connection()
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


# ------------------------------------------------------------------------- durability


def test_durability_pragmas(sqlite_store: SQLiteStore) -> None:
    assert _pragma(sqlite_store, "journal_mode") == "wal"
    assert _pragma(sqlite_store, "synchronous") == 2
    assert _pragma(sqlite_store, "foreign_keys") == 1
    assert _pragma(sqlite_store, "busy_timeout") == 30000
    sqlite_store.check_durability()


def test_a_new_file_gets_8_kib_pages_and_an_older_file_keeps_its_own(
    db: Path, tmp_path: Path, make_event: MakeEvent
) -> None:
    with SQLiteStore.open(db) as store:
        assert _pragma(store, "page_size") == 8192
    older = tmp_path / "older.db"
    conn = sqlite3.connect(older)  # made as before: SQLite's default 4 KiB pages, WAL
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.close()
    with SQLiteStore.open(older) as store:
        assert _pragma(store, "page_size") == 4096
        with store.unit_of_work() as uow:
            uow.events.append([make_event(keys={"claim": "CLM-OLD"}, data={"big": "x" * 9000})])
    with SQLiteStore.open(older) as store, store.unit_of_work() as uow:
        assert _pragma(store, "page_size") == 4096
        [stored] = uow.events.by_key("CLM-OLD")
        assert stored.event.data == {"big": "x" * 9000}
    assert _integrity(older) == [("ok",)]


def test_synchronous_normal_is_refused(db: Path) -> None:
    refused = pytest.raises(ConfigurationError, match="synchronous is NORMAL")
    with SQLiteStore(db, synchronous="NORMAL") as store, refused as caught:
        store.check_durability()
    assert caught.value.location == str(db)


def test_rollback_journal_is_refused(db: Path) -> None:
    refused = pytest.raises(ConfigurationError, match="journal_mode is DELETE")
    with SQLiteStore(db, journal_mode="DELETE") as store, refused:
        store.check_durability()


def test_in_memory_database_is_refused() -> None:
    with SQLiteStore(":memory:") as store, pytest.raises(ConfigurationError, match="journal_mode"):
        store.check_durability()


def test_unknown_settings_are_refused(db: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore(db, synchronous="FULL; DROP TABLE jobs")
    with pytest.raises(ConfigurationError):
        SQLiteStore(db, journal_mode="wal2")


def test_busy_timeout_is_configurable(db: Path) -> None:
    with SQLiteStore(db, busy_timeout_ms=1234) as store:
        assert _pragma(store, "busy_timeout") == 1234


# ------------------------------------------------------------------------- migrations


def test_migrate_is_idempotent(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert store.schema_version() == 0
        assert store.migrate() == SCHEMA_VERSION
        assert store.migrate() == SCHEMA_VERSION
        conn = store._connection()
        rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert rows == [(m.version, m.name) for m in load_migrations()]
    with SQLiteStore.open(db) as store:
        assert store.schema_version() == SCHEMA_VERSION


def test_schema_version_is_the_last_migration() -> None:
    migrations = load_migrations()
    assert migrations[-1].version == SCHEMA_VERSION
    assert [m.version for m in migrations] == list(range(1, SCHEMA_VERSION + 1))


def test_newer_database_is_refused(db: Path) -> None:
    with SQLiteStore.open(db) as store:
        with store.unit_of_work():
            store._connection().execute(
                "INSERT INTO schema_migrations VALUES (?, 'from_the_future', 0)",
                (SCHEMA_VERSION + 1,),
            )
        with pytest.raises(ConfigurationError, match="newer"):
            store.migrate()


def test_split_statements() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        UPDATE a SET x = 'c;d';
    END;
    ;
    -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(StoreError):
        split_statements("CREATE TABLE b (x); CREATE TABLE c (y)")


# ------------------------------------------------------------------ writers and readers


def test_two_stores_on_one_file(db: Path, make_event: MakeEvent) -> None:
    with SQLiteStore.open(db) as first, SQLiteStore.open(db) as second:
        with first.unit_of_work() as uow:
            a = uow.events.append([make_event()])
        with second.unit_of_work() as uow:
            b = uow.events.append([make_event()])
            assert uow.events.count() == 2
        with first.unit_of_work() as uow:
            assert [e.position for e in uow.events.read_from(0)] == a + b
    assert _integrity(db) == [("ok",)]


def test_threads_share_one_store(sqlite_store: SQLiteStore, make_event: MakeEvent) -> None:
    positions: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                with sqlite_store.unit_of_work() as uow:
                    positions.extend(uow.events.append([make_event(), make_event()]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            raise

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(positions) == list(range(1, 201))


def test_threads_with_their_own_stores(db: Path, make_event: MakeEvent) -> None:
    SQLiteStore.open(db).close()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with SQLiteStore(db) as store:
                for _ in range(20):
                    with store.unit_of_work() as uow:
                        uow.events.append([make_event()])
                        uow.jobs.enqueue("a", "k", {})
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            raise

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with SQLiteStore.open(db) as store, store.unit_of_work() as uow:
        assert (uow.events.count(), uow.jobs.count()) == (60, 60)


def _append_in_process(path: str, count: int) -> None:
    from revbridge.domain.events import SourceRef, utcnow, uuid7

    with SQLiteStore.open(path) as store:
        for _ in range(count):
            now = utcnow()
            event = Event(
                uuid7(), "t", 1, now, now, None, None, {"k": "v"}, "c", None, SourceRef("c", 0, 0)
            )
            with store.unit_of_work() as uow:
                uow.events.append([event])
                uow.jobs.enqueue("a", "k", {})


def test_several_processes_on_one_file(db: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_in_process, args=(str(db), 50)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    with SQLiteStore.open(db) as store, store.unit_of_work() as uow:
        assert (uow.events.count(), uow.jobs.count()) == (150, 150)
        positions = [e.position for e in uow.events.read_from(0, limit=1000)]
    assert positions == list(range(1, 151))
    assert _integrity(db) == [("ok",)]


def test_units_of_work_do_not_nest(sqlite_store: SQLiteStore) -> None:
    with sqlite_store.unit_of_work(), pytest.raises(StoreError), sqlite_store.unit_of_work():
        pass


def test_closed_store_refuses_work(db: Path) -> None:
    store = SQLiteStore.open(db)
    store.close()
    store.close()
    with pytest.raises(StoreError), store.unit_of_work():
        pass


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


def _pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    stream = Pattern(size)
    while chunk := stream.read(1 << 16):
        digest.update(chunk)
    return digest.hexdigest()


def test_big_raw_is_streamed_in_parts(db: Path) -> None:
    size = 6 * (1 << 20) + 12345
    sha256 = _pattern_sha256(size)
    with SQLiteStore(db, raw_part_size=(1 << 20) + 7) as store:
        store.migrate()
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
                middle = uow.raw.read(raw.id, (1 << 20) - 5, (1 << 20) + 20)
            _, peak_out = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        conn = store._connection()
        parts = conn.execute("SELECT COUNT(*) FROM raw_parts WHERE raw_id = ?", (raw.id,))
        assert parts.fetchone()[0] == 7
    assert digest.hexdigest() == sha256
    assert len(middle) == 25
    assert peak_in < 3 << 20, f"streaming in held {peak_in} bytes"
    assert peak_out < 1 << 20, f"streaming out held {peak_out} bytes"
    assert _integrity(db) == [("ok",)]


def test_contract_store_is_sqlite_here(store: Store) -> None:
    """The contract fixture hands out working stores (a smoke test of the fixture itself)."""
    with store.unit_of_work() as uow:
        assert uow.events.count() == 0
