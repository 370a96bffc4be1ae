"""Contract: months of raw messages and events, dropped whole (DESIGN.md §6), and the job.

Both backends run every test, each on a store of its own (a new SQLite file, a scratch
PostgreSQL database): retention changes the partitions of the database it runs on. Months
are real calendar months: the store's first month is the month the tests run in (THIS);
later months are reached by passing later instants to ``advance`` and to the job's clock.
PostgreSQL-only checks (partitions are detached and dropped, not deleted; pruning) follow.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from psycopg import conninfo, sql

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.domain.events import Event, SourceRef
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.errors import ConfigurationError, StoreError
from revbridge.ingest.x12_files import ingest_file
from revbridge.observe.trace import trace
from revbridge.orchestrate.retention import (
    AUDIT_ACTION,
    Action,
    RetentionJob,
    RetentionPolicy,
    RetentionSchedule,
)
from revbridge.post.parquet_export import ParquetExport
from revbridge.sample import write_sample
from revbridge.store import codec, postgres, sqlite
from revbridge.store.base import (
    Family,
    MonthPartition,
    NewException,
    NewUnit,
    OpenWork,
    RawMessage,
    Store,
    UnitOfWork,
    UnitStatus,
    add_months,
    month_of,
)
from revbridge.store.postgres import PostgresStore
from revbridge.store.sqlite import SQLiteStore

AddRaw = Callable[..., RawMessage]
MakeUnit = Callable[..., NewUnit]
MakeEvent = Callable[..., Event]

THIS = month_of(datetime.now(UTC))
NEXT = add_months(THIS, 1)
LATER = add_months(THIS, 2)


def start(month: date) -> datetime:
    return datetime.combine(month, time(), tzinfo=UTC)


@dataclasses.dataclass
class FixedClock:
    at: datetime

    def now(self) -> datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def retention_database(postgres_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """One database for this module; each test gets a schema of its own in it (creating
    and dropping a schema costs a tenth of a database)."""
    name = f"revbridge_retention_{os.getpid()}_{secrets.token_hex(4)}"
    postgres_admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(postgres_admin.info.dsn, dbname=name)
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        postgres_admin.execute(drop.format(sql.Identifier(name)))


@pytest.fixture
def pg_dsn(retention_database: str) -> Iterator[str]:
    """A DSN whose tables live in an empty schema of the test's own."""
    name = f"test_{secrets.token_hex(6)}"  # lower case, letters and digits: no quoting
    with psycopg.connect(retention_database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield conninfo.make_conninfo(retention_database, options=f"-c search_path={name}")
    with psycopg.connect(retention_database, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def open_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if backend == "sqlite":
        return SQLiteStore.open(tmp_path / "retention.db")
    return PostgresStore.open(request.getfixturevalue("pg_dsn"), pool_size=2)


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store of the test's own (retention changes the database's partitions)."""
    store = open_store(request.param, request, tmp_path)
    yield store
    store.close()
    if request.param == "sqlite":
        assert sqlite_problems(tmp_path / "retention.db") == []


def sqlite_problems(path: Path) -> list[Any]:
    """What SQLite's integrity and foreign key checks find (nothing, after a bulk delete)."""
    conn = sqlite3.connect(path)
    try:
        checked = conn.execute("PRAGMA integrity_check").fetchall()
        return [row for row in checked if row != ("ok",)] + conn.execute(
            "PRAGMA foreign_key_check"
        ).fetchall()
    finally:
        conn.close()


def months(store: Store, family: str) -> list[MonthPartition]:
    with store.unit_of_work() as uow:
        return uow.retention.months(family)


def month(store: Store, family: str, which: date) -> MonthPartition:
    return next(m for m in months(store, family) if m.month == which)


def advance(store: Store, at: datetime) -> list[MonthPartition]:
    with store.unit_of_work() as uow:
        return uow.retention.advance(at)


def holds(part: MonthPartition, key: int) -> bool:
    return part.low <= key and (part.high is None or key < part.high)


def event_from(make_event: MakeEvent, unit_id: int, raw_id: int, **options: Any) -> Event:
    source = SourceRef(channel="x12-files", raw_id=raw_id, unit_id=unit_id, segment=3)
    return dataclasses.replace(make_event(**options), source=source)


# ---------------------------------------------------------------------------- months


def test_a_new_store_starts_with_the_current_month(fresh: Store, add_raw: AddRaw) -> None:
    with fresh.unit_of_work() as uow:
        raw = add_raw(uow, b"ISA*first")
    for family in Family.ALL:
        [current] = months(fresh, family)
        assert (current.family, current.month, current.low) == (family, THIS, 1)
        assert current.current and current.opened_at is not None
    raw_month = months(fresh, Family.RAW)[0]
    assert (raw_month.rows, raw_month.first_key, raw_month.last_key) == (1, raw.id, raw.id)
    assert raw_month.first_at == raw_month.last_at == raw.received_at


def test_advance_closes_the_month_and_new_rows_go_to_the_next(
    fresh: Store, add_raw: AddRaw, make_event: MakeEvent
) -> None:
    with fresh.unit_of_work() as uow:
        first = add_raw(uow, b"one")
        [old_position] = uow.events.append([make_event()])
    created = advance(fresh, start(NEXT))
    assert {(m.family, m.month) for m in created} >= {(f, NEXT) for f in Family.ALL}
    assert advance(fresh, start(NEXT) + timedelta(hours=1)) == []  # up to date
    with fresh.unit_of_work() as uow:
        second = add_raw(uow, b"two")
        [new_position] = uow.events.append([make_event()])
    for family, old, new in ((Family.RAW, first.id, second.id), (Family.EVENTS, 0, 0)):
        closed, current = month(fresh, family, THIS), month(fresh, family, NEXT)
        assert closed.closed_at == start(NEXT) and not closed.current
        assert current.current and current.opened_at == start(NEXT)
        if family == Family.RAW:
            assert holds(closed, old) and holds(current, new) and not holds(closed, new)
    events_then, events_now = month(fresh, Family.EVENTS, THIS), month(fresh, Family.EVENTS, NEXT)
    assert holds(events_then, old_position) and holds(events_now, new_position)
    assert (events_then.rows, events_now.rows) == (1, 1)
    assert new_position > old_position and second.id > first.id


def test_advance_in_a_unit_of_work_that_rolls_back_changes_nothing(
    fresh: Store, add_raw: AddRaw
) -> None:
    before = months(fresh, Family.RAW)
    with pytest.raises(RuntimeError), fresh.unit_of_work() as uow:
        uow.retention.advance(start(NEXT))
        raise RuntimeError("changed my mind")
    assert months(fresh, Family.RAW) == before
    with fresh.unit_of_work() as uow:
        raw = add_raw(uow, b"still this month")
    assert holds(month(fresh, Family.RAW, THIS), raw.id)


def test_a_clock_behind_the_newest_month_changes_nothing(fresh: Store) -> None:
    advance(fresh, start(NEXT))
    before = {family: months(fresh, family) for family in Family.ALL}
    assert advance(fresh, start(THIS) + timedelta(days=3)) == []
    assert {family: months(fresh, family) for family in Family.ALL} == before


# ---------------------------------------------------------------------------- drop


def test_drop_removes_a_closed_month_whole_and_the_rest_still_works(
    fresh: Store, add_raw: AddRaw, new_unit: MakeUnit, make_event: MakeEvent
) -> None:
    with fresh.unit_of_work() as uow:
        old_raw = add_raw(uow, b"ISA*old", name="old.835")
        old_unit = uow.units.add(new_unit(old_raw.id, "K-OLD", b"old"), UnitStatus.NORMALISED)
        uow.events.append(
            [
                event_from(make_event, old_unit.id, old_raw.id, keys={"claim": "CLM-1"}),
                event_from(
                    make_event, old_unit.id, old_raw.id, keys={"claim": "CLM-1", "acct": "A-1"}
                ),
            ]
        )
    advance(fresh, start(NEXT))
    with fresh.unit_of_work() as uow:
        new_raw = add_raw(uow, b"ISA*new", name="new.835")
        new_unit_ = uow.units.add(new_unit(new_raw.id, "K-NEW", b"new"), UnitStatus.NORMALISED)
        kept = event_from(
            make_event, new_unit_.id, new_raw.id, correlation_id="c-2", keys={"acct": "A-1"}
        )
        [kept_position] = uow.events.append([kept])
    with fresh.unit_of_work() as uow:
        assert uow.retention.open_work(Family.RAW, THIS) == OpenWork()
        assert uow.retention.drop(Family.RAW, THIS) == 1
        assert uow.retention.drop(Family.EVENTS, THIS) == 2
    with fresh.unit_of_work() as uow:
        with pytest.raises(KeyError):
            uow.raw.get(old_raw.id)
        assert uow.raw.find_by_sha256(old_raw.sha256) is None
        assert uow.raw.read(new_raw.id) == b"ISA*new"
        assert [r.id for r in uow.raw.received()] == [new_raw.id]
        assert uow.units.get(old_unit.id).raw_id == old_raw.id  # units outlive the bytes
        assert [(s.position, s.event) for s in uow.events.read_from(0)] == [(kept_position, kept)]
        assert [s.event for s in uow.events.by_key("A-1")] == [kept]
        assert uow.events.by_key("CLM-1") == []
        assert uow.events.by_correlation("corr-1") == []
        assert uow.events.count() == 1
    assert months(fresh, Family.RAW)[0].month == NEXT
    with pytest.raises(StoreError), fresh.unit_of_work() as uow:  # still refused
        uow.units.add(new_unit(old_raw.id, "K-LATE", b"late"))
    with pytest.raises(StoreError), fresh.unit_of_work() as uow:  # ids stay unique
        uow.events.append([dataclasses.replace(make_event(), id=kept.id)])


def test_drop_refuses_the_current_month_and_unknown_ones(fresh: Store) -> None:
    with pytest.raises(StoreError, match="current"), fresh.unit_of_work() as uow:
        uow.retention.drop(Family.RAW, THIS)
    with pytest.raises(KeyError), fresh.unit_of_work() as uow:
        uow.retention.drop(Family.EVENTS, add_months(THIS, -5))
    assert [m.month for m in months(fresh, Family.RAW)] == [THIS]


def test_open_work_names_what_still_needs_a_month(
    fresh: Store, add_raw: AddRaw, new_unit: MakeUnit, make_event: MakeEvent, make_journal: Any
) -> None:
    with fresh.unit_of_work() as uow:
        raw = add_raw(uow, b"ISA*work")
        unit = uow.units.add(new_unit(raw.id, "K-1", b"work"))
        uow.jobs.enqueue("normalise", f"unit:{unit.id}", {"unit_id": unit.id})
        uow.jobs.enqueue("journal", "P-1", {"correlation_id": "corr-1", "unit_id": unit.id})
        uow.journals.add(make_journal("J-1"), target="gl", unit_id=unit.id)
        uow.events.append(
            [
                event_from(make_event, unit.id, raw.id),
                event_from(
                    make_event, unit.id, raw.id, correlation_id="c-j", keys={"journal": "J-1"}
                ),
            ]
        )
        item, _ = uow.exceptions.open(NewException("r", "d", "x-1", {"raw_id": str(raw.id)}))
    advance(fresh, start(NEXT))
    with fresh.unit_of_work() as uow:
        assert uow.retention.open_work(Family.RAW, THIS) == OpenWork(1, 2, 1, 1)
        assert uow.retention.open_work(Family.EVENTS, THIS) == OpenWork(0, 2, 1, 0)
        assert uow.retention.open_work(Family.RAW, THIS).reasons() == [
            "1 pending unit",
            "2 unfinished jobs",
            "1 journal not posted",
            "1 open exception item",
        ]
        uow.units.set_status(unit.id, UnitStatus.NORMALISED)
        while (job := uow.jobs.claim("w", start(NEXT), 30)) is not None:
            uow.jobs.complete(job.id, job.fence)
        uow.journals.mark_posted("J-1", "DOC-1", start(NEXT))
        uow.exceptions.resolve(item, "ana", start(NEXT))
    with fresh.unit_of_work() as uow:
        assert uow.retention.open_work(Family.RAW, THIS) == OpenWork()
        assert uow.retention.open_work(Family.EVENTS, THIS) == OpenWork()
        assert uow.retention.open_work(Family.RAW, NEXT) == OpenWork()


# ----------------------------------------------------------------------------- the job


def short_policy(**options: Any) -> RetentionPolicy:
    return RetentionPolicy(
        keep_raw_months=1, keep_event_months=1, allow_below_minimum=True, **options
    )


def three_months(store: Store, add_raw: AddRaw, make_event: MakeEvent) -> list[RawMessage]:
    """One raw message and one event in each of THIS, NEXT and LATER, months turned on time."""
    raws = []
    for number, when in enumerate((THIS, NEXT, LATER)):
        if when != THIS:
            advance(store, start(when))
        with store.unit_of_work() as uow:
            raws.append(add_raw(uow, f"ISA*{number}".encode()))
            uow.events.append([make_event(correlation_id=f"c-{number}")])
    return raws


def actions(decisions: list[Any]) -> dict[tuple[str, date], str]:
    return {(d.month.family, d.month.month): d.action for d in decisions}


def test_the_job_drops_the_months_past_retention_and_audits_each_drop(
    fresh: Store, add_raw: AddRaw, make_event: MakeEvent
) -> None:
    raws = three_months(fresh, add_raw, make_event)
    clock = FixedClock(start(LATER) + timedelta(days=40))  # the month after LATER
    report = RetentionJob(fresh, clock, short_policy()).run()
    done = actions(report.decisions)
    for family in Family.ALL:  # keep 1 month: THIS goes; NEXT closed at LATER's start stays
        assert done[(family, THIS)] == Action.DROPPED
        assert done[(family, NEXT)] == Action.KEEP
        assert done[(family, LATER)] == Action.KEEP
    reasons = {(d.month.family, d.month.month): d.reason for d in report.decisions}
    assert reasons[(Family.RAW, NEXT)].startswith("within 1 months: holds rows up to")
    assert "current" in reasons[(Family.RAW, add_months(LATER, 1))]
    with fresh.unit_of_work() as uow:
        [entry] = uow.audit.for_subject("partition", f"raw:{THIS:%Y-%m}")
        assert [r.id for r in uow.raw.received()] == [r.id for r in raws[1:]]
    assert (entry.actor, entry.action) == ("revbridge", AUDIT_ACTION)
    assert entry.detail["rows"] == 1 and entry.detail["keep_months"] == 1
    again = RetentionJob(fresh, clock, short_policy()).run()
    assert Action.DROPPED not in actions(again.decisions).values()


def test_a_dry_run_says_what_would_go_and_changes_nothing(
    fresh: Store, add_raw: AddRaw, make_event: MakeEvent
) -> None:
    three_months(fresh, add_raw, make_event)
    before = {family: months(fresh, family) for family in Family.ALL}
    clock = FixedClock(start(add_months(LATER, 1)) + timedelta(days=2))
    report = RetentionJob(fresh, clock, short_policy()).run(dry_run=True)
    assert actions(report.decisions)[(Family.RAW, THIS)] == Action.DROP
    assert report.created == []
    assert {family: months(fresh, family) for family in Family.ALL} == before
    payload = report.as_dict()
    assert payload["dry_run"] is True and payload["keep_months"] == {"raw": 1, "events": 1}
    assert {m["action"] for m in payload["months"]} <= {Action.DROP, Action.KEEP}


def test_open_work_keeps_a_month_past_retention(
    fresh: Store, add_raw: AddRaw, new_unit: MakeUnit
) -> None:
    with fresh.unit_of_work() as uow:
        raw = add_raw(uow, b"ISA*pending")
        unit = uow.units.add(new_unit(raw.id))
    advance(fresh, start(NEXT))
    clock = FixedClock(start(add_months(LATER, 1)))
    report = RetentionJob(fresh, clock, short_policy()).run()
    [kept] = [d for d in report.decisions if d.month.family == Family.RAW and d.month.month == THIS]
    assert (kept.action, kept.reason) == (Action.KEEP, "open work: 1 pending unit")
    with fresh.unit_of_work() as uow:
        uow.units.set_status(unit.id, UnitStatus.REJECTED, "bad")
    report = RetentionJob(fresh, clock, short_policy()).run()
    assert actions(report.decisions)[(Family.RAW, THIS)] == Action.DROPPED


def test_events_wait_for_the_archive(
    fresh: Store, add_raw: AddRaw, make_event: MakeEvent, tmp_path: Path
) -> None:
    three_months(fresh, add_raw, make_event)
    export = ParquetExport(tmp_path / "analytics")
    clock = FixedClock(start(add_months(LATER, 1)) + timedelta(days=1))
    job = RetentionJob(fresh, clock, short_policy(archive="analytics"), export)
    report = job.run()
    done = actions(report.decisions)
    assert done[(Family.RAW, THIS)] == Action.DROPPED  # raw bytes are not exported
    [waiting] = [d for d in report.decisions if (d.month.family, d.month.month) == ("events", THIS)]
    assert waiting.action == Action.KEEP and waiting.reason.startswith("not archived yet")
    export.run(fresh)
    assert actions(job.run().decisions)[(Family.EVENTS, THIS)] == Action.DROPPED
    with fresh.unit_of_work() as uow:
        [entry] = uow.audit.for_subject("partition", f"events:{THIS:%Y-%m}")
    assert entry.detail["archive"] == "analytics"
    assert entry.detail["archived_through"] >= month(fresh, Family.EVENTS, NEXT).low


def test_without_a_policy_months_advance_but_nothing_goes(
    fresh: Store, add_raw: AddRaw, make_event: MakeEvent
) -> None:
    three_months(fresh, add_raw, make_event)
    report = RetentionJob(fresh, FixedClock(start(add_months(LATER, 30))), None).run()
    assert {d.action for d in report.decisions} == {Action.KEEP}
    assert month(fresh, Family.RAW, add_months(LATER, 30)).current
    assert len(months(fresh, Family.RAW)) >= 4


def test_the_schedule_advances_hourly_and_runs_the_job_daily(fresh: Store) -> None:
    clock = FixedClock(start(NEXT) - timedelta(minutes=30))
    schedule = RetentionSchedule(RetentionJob(fresh, clock, short_policy()))
    assert schedule.tick() is not None  # the first tick runs the whole job
    assert schedule.tick() is None
    clock.at = start(NEXT) + timedelta(minutes=5)  # the month turned, the hour has not passed
    schedule.tick()
    assert month(fresh, Family.RAW, THIS).current
    clock.at = start(NEXT) + timedelta(minutes=31)
    assert schedule.tick() is None  # the hourly advance, not the daily job
    assert not month(fresh, Family.RAW, THIS).current
    clock.at = start(NEXT) + timedelta(days=1)
    assert schedule.tick() is not None


def test_the_policy_refuses_keep_months_below_the_audit_floor() -> None:
    with pytest.raises(ConfigurationError, match="below minimum_months"):
        RetentionPolicy(keep_raw_months=12)
    with pytest.raises(ConfigurationError, match="at least 1"):
        RetentionPolicy(keep_event_months=0, allow_below_minimum=True)
    assert RetentionPolicy(keep_raw_months=12, allow_below_minimum=True).keep_raw_months == 12
    assert RetentionPolicy(keep_raw_months=12, minimum_months=12).keep_months("raw") == 12
    with pytest.raises(ConfigurationError, match="archive"):
        RetentionJob(cast(Store, None), FixedClock(start(THIS)), RetentionPolicy(archive="x"))


# -------------------------------------------------------------------- schema migration


def version_2_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A store whose database stops at schema version 2 (before partitions)."""
    if backend == "sqlite":
        lite = SQLiteStore(tmp_path / "v2.db")
        for migration in sqlite.load_migrations()[:2]:
            sqlite._apply(lite._connection(), migration)
        return lite
    pg = PostgresStore(request.getfixturevalue("pg_dsn"), pool_size=2)
    with pg._connection() as conn:
        for migration in postgres.load_migrations()[:2]:
            postgres._apply(conn, migration)
    return pg


def fill(uow: UnitOfWork, add_raw: AddRaw, new_unit: MakeUnit, make_event: MakeEvent) -> None:
    """Three raw messages with a unit and an event each."""
    for number in range(3):
        raw = add_raw(uow, f"ISA*{number}*".encode() * 1000, name=f"f{number}.835")
        unit = uow.units.add(new_unit(raw.id, f"K-{number}", raw.sha256.encode()))
        uow.events.append([event_from(make_event, unit.id, raw.id, keys={"claim": f"C-{number}"})])


def add_version_2_journal(store: Store, journal: Journal, unit_id: int) -> None:
    """A journal as schema versions 1 to 4 stored it: its row, and a row per line in
    journal_lines (which migration 5 folds into the journal's row)."""
    head = "INSERT INTO journals (key, entity, date, description, kind, currency, rule_version,"
    head += " status, target, unit_id, created_at) VALUES"
    line_head = "INSERT INTO journal_lines (journal_key, line_no, account, debit, credit,"
    line_head += " description, dimensions, source) VALUES"
    row = [journal.key, journal.entity, journal.date.isoformat(), journal.description]
    row += [journal.kind, journal.currency, journal.rule_version, "prepared", "gl", unit_id]
    lines = [
        (
            *(journal.key, number, line.account, str(line.debit), str(line.credit)),
            *(line.description, codec.to_json(line.dimensions), codec.to_json(line.source)),
        )
        for number, line in enumerate(journal.lines, start=1)
    ]
    if isinstance(store, SQLiteStore):
        lite = store._connection()
        lite.execute(f"{head} ({', '.join('?' * 11)})", (*row, 1))
        lite.executemany(f"{line_head} ({', '.join('?' * 8)})", lines)
        return
    assert isinstance(store, PostgresStore)
    with store._connection() as conn, conn.transaction():
        conn.execute(f"{head} ({', '.join(['%s'] * 11)})", (*row, datetime.now(UTC)))
        conn.cursor().executemany(f"{line_head} ({', '.join(['%s'] * 8)})", lines)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_version_2_database_keeps_its_rows_in_its_first_month(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    add_raw: AddRaw,
    new_unit: MakeUnit,
    make_event: MakeEvent,
    make_journal: Any,
) -> None:
    store = version_2_store(backend, request, tmp_path)
    try:
        with store.unit_of_work() as uow:
            fill(uow, add_raw, new_unit, make_event)
            raws = uow.raw.received()
            units = [u for r in raws for u in uow.units.by_raw(r.id)]
            events = uow.events.read_from(0)
        written = [make_journal(f"J-{n}", amount=f"{n}.50") for n in range(3)]
        for journal, unit in zip(written, units, strict=True):
            add_version_2_journal(store, journal, unit.id)
        assert store.migrate() == sqlite.SCHEMA_VERSION
        with store.unit_of_work() as uow:
            assert uow.raw.received() == raws
            assert [uow.raw.read(r.id) for r in raws] == [
                f"ISA*{n}*".encode() * 1000 for n in range(3)
            ]
            assert [u for r in raws for u in uow.units.by_raw(r.id)] == units
            assert uow.events.read_from(0) == events
            assert [s.event for s in uow.events.by_key("C-1")] == [events[1].event]
            journals = uow.journals.all()
            assert [r.journal for r in journals] == written  # lines moved in order, exactly
            assert [r.unit_id for r in journals] == [u.id for u in units]
            next_unit = uow.units.add(new_unit(raws[0].id, "K-NEXT", b"next"))
            later = add_raw(uow, b"after the migration")
            [position] = uow.events.append([event_from(make_event, units[0].id, later.id)])
        assert (later.id, position) == (raws[-1].id + 1, events[-1].position + 1)
        assert next_unit.id == units[-1].id + 1  # the units' ids go on too
        if backend == "sqlite":  # units were rebuilt under journals' foreign key
            assert sqlite_problems(tmp_path / "v2.db") == []
        [first] = months(store, Family.RAW)
        assert (first.month, first.low, first.rows, first.current) == (THIS, 1, 4, True)
        assert months(store, Family.EVENTS)[0].rows == 4
        with pytest.raises(StoreError), store.unit_of_work() as uow:
            uow.events.append([dataclasses.replace(make_event(), id=events[0].event.id)])
        with pytest.raises(StoreError), store.unit_of_work() as uow:
            uow.units.add(new_unit(999_999))
    finally:
        store.close()


# ----------------------------------------------------------------- PostgreSQL only


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[tuple[PostgresStore, str]]:
    with PostgresStore.open(pg_dsn, pool_size=2) as store:
        yield store, pg_dsn


def _sql(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def _partitions_of(dsn: str, table: str) -> list[str]:
    rows = _sql(
        dsn,
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        f" WHERE i.inhparent = '{table}'::regclass ORDER BY c.relname",
    )
    return [row[0] for row in rows]


def _suffix(which: date) -> str:
    return f"y{which.year:04d}m{which.month:02d}"


_REFUSE_DELETE = """
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'retention must not DELETE from %', TG_TABLE_NAME; END $$;
"""


def test_postgres_drops_a_month_as_partitions_never_deleting_rows(
    pg: tuple[PostgresStore, str], add_raw: AddRaw, make_event: MakeEvent
) -> None:
    store, dsn = pg
    raws = three_months(store, add_raw, make_event)
    tables = ("raw_messages", "raw_parts", "events", "event_keys")
    old = [f"{table}_{_suffix(THIS)}" for table in tables]
    # Row triggers fire in the partition whatever table a DELETE names (the parent too).
    statements = [_REFUSE_DELETE] + [
        f"CREATE TRIGGER no_delete BEFORE DELETE ON {name}"
        " FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
        for name in old
    ]
    _sql(dsn, ";".join(statements))
    with pytest.raises(psycopg.errors.RaiseException, match="must not DELETE"):
        _sql(dsn, f"DELETE FROM raw_messages WHERE id = {raws[0].id}")
    report = RetentionJob(
        store, FixedClock(start(LATER) + timedelta(days=40)), short_policy()
    ).run()
    assert actions(report.decisions)[(Family.RAW, THIS)] == Action.DROPPED
    assert actions(report.decisions)[(Family.EVENTS, THIS)] == Action.DROPPED
    gone = _sql(
        dsn,
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        " AND relname IN ('" + "', '".join(old) + "')",
    )
    assert gone == []
    after = add_months(LATER, 1)
    for table in tables:
        expected = [f"{table}_{_suffix(m)}" for m in (NEXT, LATER, after, add_months(after, 1))]
        assert _partitions_of(dsn, table) == expected
    low_left = month(store, Family.EVENTS, NEXT).low
    assert _sql(dsn, f"SELECT count(*) FROM event_ids WHERE position < {low_left}") == [(0,)]
    with store.unit_of_work() as uow:  # new rows go to the current month's partition
        newest = add_raw(uow, b"ISA*after the drop")
        [position] = uow.events.append([make_event(correlation_id="c-new")])
        assert [r.id for r in uow.raw.received()] == [r.id for r in raws[1:]] + [newest.id]
        assert uow.raw.read(raws[1].id) == b"ISA*1"
        assert [s.position for s in uow.events.by_correlation("c-new")] == [position]
    where = _sql(dsn, f"SELECT tableoid::regclass::text FROM raw_messages WHERE id = {newest.id}")
    assert where == [(f"raw_messages_{_suffix(after)}",)]
    where = _sql(dsn, f"SELECT tableoid::regclass::text FROM events WHERE position = {position}")
    assert where == [(f"events_{_suffix(after)}",)]


def _plan(dsn: str, query: str, key: int | None = None) -> str:
    """EXPLAIN of ``query``; with ``key``, of its generic plan run with ``$1 = key``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if key is None:
            rows = conn.execute(f"EXPLAIN (COSTS OFF) {query}").fetchall()
        else:
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn.execute(f"PREPARE probe(bigint) AS {query}")
            explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE probe({})"
            rows = conn.execute(explain.format(int(key))).fetchall()
    return "\n".join(row[0] for row in rows)


def test_postgres_queries_by_key_prune_to_the_month_they_name(
    pg: tuple[PostgresStore, str], add_raw: AddRaw, make_event: MakeEvent
) -> None:
    store, dsn = pg
    raws = three_months(store, add_raw, make_event)
    wanted = raws[1].id  # in NEXT's partition
    by_id = _plan(dsn, f"SELECT * FROM raw_messages WHERE id = {wanted}")
    assert f"raw_messages_{_suffix(NEXT)}" in by_id
    assert f"raw_messages_{_suffix(THIS)}" not in by_id
    assert f"raw_messages_{_suffix(LATER)}" not in by_id
    low = month(store, Family.EVENTS, LATER).low
    read_from = _plan(
        dsn,
        f"SELECT * FROM events WHERE position > {low} AND position <= {low + 10}"
        " ORDER BY position LIMIT 10",
    )
    assert f"events_{_suffix(LATER)}" in read_from
    assert f"events_{_suffix(THIS)}" not in read_from and f"events_{_suffix(NEXT)}" not in read_from
    # a prepared statement's generic plan (psycopg prepares repeated queries) prunes as it runs
    generic = _plan(dsn, "SELECT * FROM raw_parts WHERE raw_id = $1", key=wanted)
    assert "Subplans Removed: 3" in generic


# ------------------------------------------------------------- the flow, then a drop

WORKED_EXAMPLE = (
    Path(__file__).parents[1] / "fixtures" / "x12" / "835_worked_example_reversal_denial_plb.txt"
)


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[bootstrap.App]:
    """The sample deployment (GL files), on each backend."""
    config = write_sample(tmp_path / "deploy", target="gl")
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        text = config.read_text(encoding="utf-8")
        store = f'store:\n  type: postgres\n  dsn: "{dsn}"\n  pool_size: 2\n'
        config.write_text(text.replace("store:\n  type: sqlite\n  path: revbridge.db\n", store))
    application = bootstrap.build(load_config(config, bootstrap.SPECS))
    yield application
    application.close()


def ingest_and_work(app: bootstrap.App, path: Path) -> int:
    """The new raw message's id, once everything it caused is done."""
    outcome = ingest_file(app.store, path)
    assert outcome.status == "accepted" and outcome.raw_id is not None
    app.worker().run_until_idle(max_wait_seconds=0)
    return outcome.raw_id


def test_the_flow_goes_on_and_trace_stays_correct_after_a_drop(
    app: bootstrap.App, tmp_path: Path
) -> None:
    first_raw = ingest_and_work(app, WORKED_EXAMPLE)  # this month: payment EFT20250106A
    advance(app.store, start(NEXT))
    second = tmp_path / "second.835"  # next month: another payment, new control numbers
    data = WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004712")
    second.write_bytes(data.replace(b"EFT20250106A", b"EFT20250107B"))
    second_raw = ingest_and_work(app, second)
    clock = FixedClock(start(LATER) + timedelta(days=40))

    def run(keep_events: int) -> dict[tuple[str, date], Any]:
        policy = RetentionPolicy(
            keep_raw_months=1, keep_event_months=keep_events, allow_below_minimum=True
        )
        report = RetentionJob(app.store, clock, policy).run()
        return {(d.month.family, d.month.month): d for d in report.decisions}

    held = run(keep_events=1)[(Family.RAW, THIS)]
    assert held.action == Action.KEEP and "open exception item" in held.reason
    with app.store.unit_of_work() as uow:  # people work the items (the denial)
        for item in uow.exceptions.all("open"):
            uow.exceptions.resolve(item.id, "ana", clock.now())
    assert run(keep_events=2)[(Family.RAW, THIS)].action == Action.DROPPED
    with app.store.unit_of_work() as uow:
        claim = trace(uow, "ICN-A-0900B")
    gone = [s for s in claim.segments if s["file"] == "(dropped by retention)"]
    assert [s["raw_id"] for s in gone] == [first_raw]  # the first file's bytes are gone
    assert any(s["text"].startswith("CLP*ACCT0900*1") for s in claim.segments)  # the second's
    assert len(claim.journals) == 2
    assert run(keep_events=1)[(Family.EVENTS, THIS)].action == Action.DROPPED
    first_key = "835:1999999999:EFT20250106A:RHS:correction"
    with app.store.unit_of_work() as uow:
        claim = trace(uow, "ICN-A-0900B")
        first = trace(uow, first_key)
        unposted = [r for r in uow.journals.all() if r.status != JournalStatus.POSTED]
    assert claim.segments and all(s["file"] == "second.835" for s in claim.segments)
    assert {e["source"]["raw_id"] for e in claim.events} == {second_raw}
    assert sorted(j["key"] for j in claim.journals) == [first_key, first_key.replace("06A", "07B")]
    assert (first.events, first.segments) == ([], [])  # journals stay, with their ERP ids
    assert first.journals[0]["erp_document_id"]
    assert unposted == []
    # The first file again, after its month was dropped: its units remain, so it is known.
    assert ingest_file(app.store, WORKED_EXAMPLE).status == "duplicate"
    app.worker().run_until_idle(max_wait_seconds=0)
    with app.store.unit_of_work() as uow:
        assert len(uow.journals.all()) == 6
