"""Fixtures for the store contract suite.

``store`` is parametrized over backends. The contract tests use the ``Store`` interface
only, so a new backend joins by adding a factory to ``BACKENDS``; it must pass unchanged.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from revbridge.domain.events import Event, SourceRef, uuid7
from revbridge.domain.journal import Journal, JournalLine
from revbridge.store.base import NewUnit, RawMessage, Store, UnitOfWork
from revbridge.store.sqlite import SQLiteStore

StoreFactory = Callable[[Path], Iterator[Store]]


def _sqlite_store(tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "revbridge.db"
    store = SQLiteStore.open(path)
    try:
        yield store
    finally:
        store.close()
    assert integrity_check(path) == "ok"


BACKENDS: dict[str, StoreFactory] = {"sqlite": _sqlite_store}


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
    yield from BACKENDS[request.param](tmp_path)


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
