"""PostgreSQL for the suites outside tests/store (flow, workers): fixtures to import into a
conftest. They reuse the store suite's helpers (``tests/store/conftest.py``: server DSN,
``REVBRIDGE_SKIP_POSTGRES``, creating, emptying and dropping databases), with a database
of their own per test run, migrated once, emptied before each test and dropped at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from revbridge.store.postgres import PostgresStore
from tests.store.conftest import (
    create_database,
    database_dsn,
    drop_database,
    emptier,
    postgres_admin,
)

__all__ = ["pg_clean_dsn", "pg_database", "pg_emptier", "postgres_admin", "use_postgres"]

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_database(postgres_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """This run's migrated database for the suite that imports it; dropped at the end."""
    name = create_database(postgres_admin, "revbridge_e2e")
    try:
        dsn = database_dsn(name)
        PostgresStore.open(dsn, pool_size=1).close()
        yield dsn
    finally:
        drop_database(postgres_admin, name)


@pytest.fixture(scope="session")
def pg_emptier(pg_database: str) -> Iterator[Callable[[], None]]:
    yield from emptier(pg_database)


@pytest.fixture
def pg_clean_dsn(pg_database: str, pg_emptier: Callable[[], None]) -> str:
    """The run's database with every table empty and every id sequence back at 1."""
    pg_emptier()
    return pg_database


def use_postgres(config: Path, dsn: str) -> Path:
    """Point a sample config (``store: type: sqlite``) at PostgreSQL instead."""
    text = config.read_text(encoding="utf-8")
    start = text.index("store:\n")
    end = text.index("\n\n", start)
    store = f'store:\n  type: postgres\n  dsn: "{dsn}"\n  pool_size: 4'
    config.write_text(text[:start] + store + text[end:], encoding="utf-8")
    return config
