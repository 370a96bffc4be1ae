"""Fixtures for the store contract suite.

``store`` is parametrized over backends. The contract tests use the ``Store`` interface
only, so a new backend joins by adding a factory to ``BACKENDS``; it must pass unchanged.

PostgreSQL: each test run creates its own database (``revbridge_test_<pid>_<random>``) on the
server named by ``REVBRIDGE_TEST_POSTGRES_DSN`` (default: the local server as ``postgres``),
migrates it once and drops it at the end; every test starts from empty tables with every id
sequence back at 1, as on a new SQLite file. An unreachable server makes
the PostgreSQL tests fail, never skip: CI has one. ``REVBRIDGE_SKIP_POSTGRES=1`` skips them
on a machine without PostgreSQL.
"""

from __future__ import annotations

import graphlib
import hashlib
import io
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from revbridge.domain.events import Event, SourceRef, uuid7
from revbridge.domain.journal import Journal, JournalLine
from revbridge.store.base import NewUnit, RawMessage, Store, UnitOfWork
from revbridge.store.postgres import PostgresStore
from revbridge.store.sqlite import SQLiteStore

StoreFactory = Callable[[pytest.FixtureRequest, Path], Iterator[Store]]

POSTGRES_DSN_VARIABLE = "REVBRIDGE_TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SKIP_POSTGRES_VARIABLE = "REVBRIDGE_SKIP_POSTGRES"


def _sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "revbridge.db"
    store = SQLiteStore.open(path)
    try:
        yield store
    finally:
        store.close()
    assert integrity_check(path) == "ok"


def _postgres_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    dsn: str = request.getfixturevalue("postgres_clean_dsn")
    store = PostgresStore(dsn, pool_size=4)
    try:
        yield store
    finally:
        store.close()


BACKENDS: dict[str, StoreFactory] = {"sqlite": _sqlite_store, "postgres": _postgres_store}


def integrity_check(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()
    return "ok" if rows == [("ok",)] and not fk else f"{rows} {fk}"


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from BACKENDS[request.param](request, tmp_path)


# -------------------------------------------------------------------------- PostgreSQL


def postgres_admin_dsn() -> str:
    return os.environ.get(POSTGRES_DSN_VARIABLE) or DEFAULT_POSTGRES_DSN


def database_dsn(name: str) -> str:
    return conninfo.make_conninfo(postgres_admin_dsn(), dbname=name)


def create_database(admin: psycopg.Connection[Any], prefix: str = "revbridge_test") -> str:
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[psycopg.Connection[Any]]:
    """A connection to the server's maintenance database, for CREATE/DROP DATABASE."""
    if os.environ.get(SKIP_POSTGRES_VARIABLE) == "1":
        pytest.skip(f"{SKIP_POSTGRES_VARIABLE}=1: PostgreSQL tests skipped")
    dsn = postgres_admin_dsn()
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {dsn} ({exc}). Start it, point"
            f" {POSTGRES_DSN_VARIABLE} at a server where this user may create databases,"
            f" or set {SKIP_POSTGRES_VARIABLE}=1 to skip the PostgreSQL tests locally.",
            pytrace=False,
        )
    with conn:
        yield conn


@pytest.fixture
def scratch_database(postgres_admin: psycopg.Connection[Any]) -> Iterator[Callable[[], str]]:
    """Makes empty databases for one test (returns their DSNs); drops them afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(create_database(postgres_admin, "revbridge_scratch"))
        return database_dsn(names[-1])

    yield make
    for name in names:
        drop_database(postgres_admin, name)


@pytest.fixture(scope="session")
def postgres_database(postgres_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """This run's migrated database (its DSN); dropped at the end of the run."""
    name = create_database(postgres_admin)
    try:
        dsn = database_dsn(name)
        PostgresStore.open(dsn, pool_size=1).close()
        yield dsn
    finally:
        drop_database(postgres_admin, name)


_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    " AND tablename <> 'schema_migrations'"
)
_REFERENCES = (
    "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
    " WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
)
_SEQUENCES = "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"


def _emptying_script(conn: psycopg.Connection[Any]) -> str:
    """DELETE every table, referencing tables first, and set every sequence back to 1.

    DELETE, not TRUNCATE: on tables this small it is ~50 times faster (TRUNCATE makes new
    files for every table and index, which costs ~0.5 s with fsync on)."""
    referenced_by: dict[str, set[str]] = {row[0]: set() for row in conn.execute(_TABLES)}
    for child, parent in conn.execute(_REFERENCES):
        if child != parent and parent in referenced_by:
            referenced_by[parent].add(child)
    order = graphlib.TopologicalSorter(referenced_by).static_order()
    statements = [sql.SQL("DELETE FROM {}").format(sql.Identifier(table)) for table in order]
    statements += [
        sql.SQL("SELECT setval({}, 1, false)").format(sql.Literal(row[0]))
        for row in conn.execute(_SEQUENCES)
    ]
    return sql.SQL("; ").join(statements).as_string(conn)


def emptier(dsn: str) -> Iterator[Callable[[], None]]:
    """A function that empties the database at ``dsn`` (one connection, kept open)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        script = _emptying_script(conn)

        def empty() -> None:
            with conn.transaction():
                conn.execute(script)

        yield empty


@pytest.fixture(scope="session")
def _postgres_emptier(postgres_database: str) -> Iterator[Callable[[], None]]:
    yield from emptier(postgres_database)


@pytest.fixture
def postgres_clean_dsn(postgres_database: str, _postgres_emptier: Callable[[], None]) -> str:
    """The run's database with every table empty and every id sequence back at 1."""
    _postgres_emptier()
    return postgres_database


# ---------------------------------------------------------------------------- builders

T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


def add_raw(uow: UnitOfWork, data: bytes, *, name: str = "file.835") -> RawMessage:
    return uow.raw.add(
        channel="x12-files",
        name=name,
        content_type="application/edi-x12",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        stream=io.BytesIO(data),
    )


def new_unit(raw_id: int, natural_key: str = "ISA*000000001", body: bytes = b"ST*835") -> NewUnit:
    return NewUnit(
        raw_id=raw_id,
        kind="x12.835",
        natural_key=natural_key,
        content_hash=hashlib.sha256(body).hexdigest(),
        byte_start=0,
        byte_end=len(body),
        first_segment=3,
        envelope={"ISA13": "000000001", "GS06": "1", "ST02": "0001"},
    )


def make_event(
    *,
    correlation_id: str = "corr-1",
    keys: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
    at: datetime = T0,
) -> Event:
    return Event(
        id=uuid7(),
        type="claim.adjudicated",
        schema_version=1,
        occurred_at=at,
        recorded_at=at + timedelta(seconds=1),
        entity="ACME",
        facility="NORTH",
        keys=keys if keys is not None else {"claim_id": "CLM-1", "account": "ACC-1"},
        correlation_id=correlation_id,
        causation_id="cause-1",
        source=SourceRef(channel="x12-files", raw_id=1, unit_id=1, segment=12, path="CLP[1]"),
        data=data if data is not None else {"paid": "123.45", "codes": ["CO", "45"], "lines": 2},
    )


def make_journal(
    key: str = "J-1", *, amount: str = "100.00", source: dict[str, str] | None = None
) -> Journal:
    value = Decimal(amount)
    refs = source if source is not None else {"claim": "CLM-1", "trace": "TRN-9"}
    dims = {"payer": "ACME-INS", "facility": "NORTH"}
    return Journal(
        key=key,
        entity="ACME",
        date=date(2025, 3, 14),
        description="Remittance TRN-9",
        lines=(
            JournalLine("1200", value, Decimal("0.00"), "cash", dims, refs),
            JournalLine("1100", Decimal("0.00"), value, "AR", dims, refs),
        ),
        rule_version="2025.1",
    )


# Builders reach the tests as fixtures (test modules never import conftest).

AddRaw = Callable[..., RawMessage]
MakeUnit = Callable[..., NewUnit]
MakeEvent = Callable[..., Event]
MakeJournal = Callable[..., Journal]


@pytest.fixture(name="add_raw")
def _add_raw() -> AddRaw:
    return add_raw


@pytest.fixture(name="new_unit")
def _new_unit() -> MakeUnit:
    return new_unit


@pytest.fixture(name="make_event")
def _make_event() -> MakeEvent:
    return make_event


@pytest.fixture(name="make_journal")
def _make_journal() -> MakeJournal:
    return make_journal
