"""The end-to-end suite runs on both store backends: every test that takes ``deployment``
or ``app`` runs once on SQLite (the sample deployment as it is) and once on PostgreSQL (the
same deployment with ``store: {type: postgres, dsn: ...}`` pointing at this run's own
database, emptied before each test). ``REVBRIDGE_SKIP_POSTGRES=1`` skips the PostgreSQL
half on a machine without a server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.sample import write_sample
from tests.pg import (
    BACKENDS,
    pg_clean_dsn,
    pg_database,
    pg_emptier,
    postgres_admin,
    use_postgres,
)

__all__ = ["app", "deployment", "pg_clean_dsn", "pg_database", "pg_emptier", "postgres_admin"]


@pytest.fixture(params=BACKENDS)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A sample deployment booking to GL CSV files, on each backend; the config path."""
    config = write_sample(tmp_path / "deploy", target="gl")
    if request.param == "postgres":
        use_postgres(config, request.getfixturevalue("pg_clean_dsn"))
    return config


@pytest.fixture
def app(deployment: Path) -> Iterator[bootstrap.App]:
    application = bootstrap.build(load_config(deployment, bootstrap.SPECS))
    yield application
    application.close()
