"""Fixtures of the multi-process worker tests: this run's PostgreSQL database (``tests.pg``)
and a scratch folder (tmpfs when there is one, as in the fault suite)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import scratch
from tests.pg import pg_clean_dsn, pg_database, pg_emptier, postgres_admin

__all__ = ["pg_clean_dsn", "pg_database", "pg_emptier", "postgres_admin", "work"]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    folder = scratch("revbridge-workers-")
    if folder is None:
        yield tmp_path
        return
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
