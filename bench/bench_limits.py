"""Raw limits of this machine, and the store's own operations beside them.

Raw limits:

- disk: 8 KiB overwrites + ``fdatasync`` in the scratch folder: the floor under a commit;
- SQLite, WAL + ``synchronous=FULL``, in the scratch folder: commits/s of a single-row
  INSERT + COMMIT loop, and rows/s of batched inserts (1,000 event-sized rows a transaction);
- PostgreSQL, ``synchronous_commit`` as the server has it (on, for revbridge): the same
  commit loop from psycopg and from ``pgbench`` (a C client: the peer), and batched inserts.

Store operations, through revbridge's ``Store`` on both backends: a worker's job cycle with
an empty handler (one commit: the completion claims the next job) beside the commit limit,
and event append (real events from normalising a generated 835, one transaction per ST of
100 claims) beside the batched insert limit.

Every loop above takes turns with the others (``interleaved``), so a figure and its limit
see the same moments of a shared machine. Once per run, cached: the ``limits`` and
``store`` sections of the book read the same measurement. PostgreSQL runs in a scratch
database, dropped at the end.

    python bench/bench_limits.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))

from book import Row, postgres_dsn, scratch_dir

if TYPE_CHECKING:  # the raw limits need nothing of revbridge: imported where used
    from revbridge.domain.events import Event
    from revbridge.orchestrate.worker import JobContext
    from revbridge.store.base import Store

BATCH = 1_000
ROW_BYTES = 420  # about a stored event's size (as bench_e2e)
CLAIMS_PER_ST = 100
SQLITE = "SQLite"
POSTGRES = "PostgreSQL"
MAX_JOBS_PER_SECOND = 10_000  # jobs queued for the job-cycle loop: more than it can run
ENQUEUE_BATCH = 100


@dataclass(frozen=True)
class Sizes:
    rounds: int  # turns of every loop
    slice_seconds: float  # per loop and turn (pgbench: at least 1 s)
    fresh_jobs: int  # PostgreSQL job cycle on a table without statistics


def sizes(quick: bool) -> Sizes:
    return Sizes(2, 0.3, 100) if quick else Sizes(5, 1.0, 300)


Loop = Callable[[float], tuple[float, float]]  # slice seconds -> (operations, seconds)


def repeat(operation: Callable[[], object], per_call: int = 1) -> Loop:
    """A loop calling ``operation`` until the slice is over."""

    def loop(slice_seconds: float) -> tuple[float, float]:
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < slice_seconds:
            operation()
            calls += 1
        return calls * per_call, elapsed

    return loop


def interleaved(loops: dict[str, Loop], rounds: int, slice_seconds: float) -> dict[str, float]:
    """Operations/s of each loop, the loops taking turns: on a shared machine whose disk
    speeds up and slows down by the minute, every loop sees the same mix of good and bad
    moments, so the ratios between them hold even when the figures wander."""
    done = dict.fromkeys(loops, 0.0)
    spent = dict.fromkeys(loops, 0.0)
    for _ in range(rounds):
        for name, loop in loops.items():
            operations, seconds = loop(slice_seconds)
            done[name] += operations
            spent[name] += seconds
    return {name: done[name] / spent[name] for name in loops}


# ------------------------------------------------------------------------ raw loops


def disk_flush(stack: ExitStack, folder: Path) -> Loop:
    """8 KiB overwrite + fdatasync, cycling through a preallocated 1 MiB file (no metadata
    to flush: the device's own flush latency, the floor under a durable commit)."""
    block = os.urandom(8192)
    fd = os.open(folder / "flush", os.O_WRONLY | os.O_CREAT, 0o600)
    stack.callback(os.close, fd)
    os.write(fd, block * 128)
    os.fsync(fd)
    offsets = itertools.cycle(range(0, 128 * 8192, 8192))

    def flush() -> None:
        os.pwrite(fd, block, next(offsets))
        os.fdatasync(fd)

    return repeat(flush)


def _sqlite(stack: ExitStack, path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    stack.callback(conn.close)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = FULL")
    return conn


COMMIT_TABLE = "CREATE TABLE bench_commits (id {} PRIMARY KEY, body text NOT NULL)"
COMMIT = "INSERT INTO bench_commits (body) VALUES ('x')"
ROWS_TABLE = (
    "CREATE TABLE bench_rows (position {} PRIMARY KEY, id text NOT NULL UNIQUE,"
    " correlation text NOT NULL, body text NOT NULL)"
)
ROWS_INDEX = "CREATE INDEX bench_rows_correlation ON bench_rows (correlation)"
INSERT = "INSERT INTO bench_rows (id, correlation, body) VALUES ({0}, {0}, {0})"


def event_rows() -> Callable[[], list[tuple[str, str, str]]]:
    """Batches of event-sized rows with ids unique across calls."""
    body = "x" * ROW_BYTES
    numbers = itertools.count()

    def batch() -> list[tuple[str, str, str]]:
        return [(f"{n:032x}", f"c{n // 4000}", body) for n in itertools.islice(numbers, BATCH)]

    return batch


def sqlite_loops(stack: ExitStack, folder: Path) -> dict[str, Loop]:
    """Single-row INSERT + COMMIT; and 1,000-row transactions (WAL, synchronous=FULL)."""
    commits = _sqlite(stack, folder / "commits.db")
    commits.execute(COMMIT_TABLE.format("INTEGER"))
    inserts = _sqlite(stack, folder / "rows.db")
    inserts.execute(ROWS_TABLE.format("INTEGER"))
    inserts.execute(ROWS_INDEX)
    batch = event_rows()

    def commit() -> None:
        commits.execute("BEGIN IMMEDIATE")
        commits.execute(COMMIT)
        commits.execute("COMMIT")

    def insert() -> None:
        rows = batch()
        inserts.execute("BEGIN IMMEDIATE")
        inserts.executemany(INSERT.format("?"), rows)
        inserts.execute("COMMIT")

    return {"sqlite commit": repeat(commit), "sqlite insert": repeat(insert, BATCH)}


def postgres_loops(stack: ExitStack, dsn: str) -> dict[str, Loop]:
    """As for SQLite, from psycopg (autocommit for the commits)."""
    conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
    conn.execute(COMMIT_TABLE.format("bigserial"))
    conn.execute(ROWS_TABLE.format("bigserial"))
    conn.execute(ROWS_INDEX)
    cursor = stack.enter_context(conn.cursor())
    batch = event_rows()

    def commit() -> None:
        cursor.execute(COMMIT)

    def insert() -> None:
        rows = batch()
        with conn.transaction():
            cursor.executemany(INSERT.format("%s"), rows)

    return {"postgres commit": repeat(commit), "postgres insert": repeat(insert, BATCH)}


def pgbench_loop(dsn: str, folder: Path) -> Loop | None:
    """``pgbench`` (a C client, one connection) running the same single-row INSERT for at
    least a second a turn; None when there is no pgbench."""
    binary = shutil.which("pgbench")
    if binary is None:
        return None
    script = folder / "commit.sql"
    script.write_text(f"{COMMIT};\n", encoding="utf-8")

    def loop(slice_seconds: float) -> tuple[float, float]:
        seconds = max(1, round(slice_seconds))
        command = [binary, "-n", "-c", "1", "-M", "prepared", "-T", str(seconds)]
        done = subprocess.run(
            [*command, "-f", str(script), dsn],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
        found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
        if found is None:
            raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
        return float(found.group(1)) * seconds, seconds

    return loop


# ------------------------------------------------------------------------ store loops


@functools.cache
def event_batches() -> tuple[tuple[Event, ...], ...]:
    """Real events: a generated 835 (100 claims per ST) normalised; one batch per ST."""
    from revbridge.formats.x12.envelope import scan
    from revbridge.formats.x12.synthetic import synthetic_835
    from revbridge.normalise.x12_835 import Normalised, UnitInput, normalise_835

    data = synthetic_835(seed=3, claims=10 * CLAIMS_PER_ST, claims_per_transaction=CLAIMS_PER_ST)
    batches = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.835"
        path.write_bytes(data)
        with path.open("rb") as stream:
            transactions = scan(stream).transactions
    for number, tx in enumerate(transactions, 1):
        unit = UnitInput(
            data[tx.start : tx.end],
            tx.delimiters.encode(),
            tx.first_segment,
            1,
            number,
            "bench",
            tx.content_hash,
        )
        result = normalise_835(unit, datetime.now(UTC))
        if not isinstance(result, Normalised):
            raise RuntimeError(f"normalise rejected a bench transaction: {result}")
        batches.append(tuple(result.events))
    return tuple(batches)


def event_append(store: Store) -> Loop:
    """Appends one ST's events per unit of work; the events get new ids (untimed)."""
    from revbridge.domain.events import uuid7

    batches = itertools.cycle(event_batches())

    def loop(slice_seconds: float) -> tuple[float, float]:
        events, spent = 0, 0.0
        while spent < slice_seconds:
            batch = [replace(event, id=uuid7()) for event in next(batches)]
            started = time.perf_counter()
            with store.unit_of_work() as uow:
                uow.events.append(batch)
            spent += time.perf_counter() - started
            events += len(batch)
        return events, spent

    return loop


def _complete(ctx: JobContext) -> None:
    with ctx.store.unit_of_work() as uow:
        ctx.complete(uow)


def job_cycle(store: Store, jobs: int) -> Callable[[], None]:
    """One job by one worker, an empty handler (complete, claiming the next job in the same
    commit), of ``jobs`` queued now."""
    from revbridge.orchestrate.clock import SystemClock
    from revbridge.orchestrate.worker import Worker

    with store.unit_of_work() as uow:
        first = uow.jobs.count()
    for start in range(first, first + jobs, ENQUEUE_BATCH):
        # PostgreSQL holds a lock per job key until commit: batches stay under
        # max_locks_per_transaction
        with store.unit_of_work() as uow:
            for n in range(start, min(start + ENQUEUE_BATCH, first + jobs)):
                uow.jobs.enqueue("bench", f"key-{n}", {"n": n})
    worker = Worker(store, {"bench": _complete}, SystemClock())

    def run() -> None:
        if not worker.run_once():
            raise RuntimeError(f"the {jobs} bench jobs ran out: raise MAX_JOBS_PER_SECOND")

    return run


def sqlite_store(stack: ExitStack, folder: Path, jobs: int) -> dict[str, Loop]:
    from revbridge.store.sqlite import SQLiteStore

    store = SQLiteStore.open(folder / "store.db")
    stack.callback(store.close)
    return {"sqlite jobs": repeat(job_cycle(store, jobs)), "sqlite events": event_append(store)}


def postgres_store(
    stack: ExitStack, dsn: str, jobs: int, fresh_jobs: int
) -> tuple[dict[str, Loop], float]:
    """The store's loops on PostgreSQL, with planner statistics (what autovacuum gives a
    table that has lived a while); and, measured first, jobs/s on the fresh table."""
    from revbridge.store.postgres import PostgresStore

    store = PostgresStore.open(dsn, pool_size=2)
    stack.callback(store.close)
    fresh = job_cycle(store, fresh_jobs)
    started = time.perf_counter()
    for _ in range(fresh_jobs):
        fresh()
    fresh_rate = fresh_jobs / (time.perf_counter() - started)
    jobs_loop = repeat(job_cycle(store, jobs))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return {"postgres jobs": jobs_loop, "postgres events": event_append(store)}, fresh_rate


# ------------------------------------------------------------------------ PostgreSQL


@contextmanager
def scratch_database(prefix: str = "revbridge_book") -> Iterator[str]:
    """A new empty database on the bench server (its DSN); dropped afterwards."""
    admin_dsn = postgres_dsn()
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be measured (None: it can)."""
    try:
        with psycopg.connect(postgres_dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable ({first})"
    return None


# ------------------------------------------------------------------------ the measurement


@dataclass(frozen=True)
class Measured:
    rates: dict[str, float]  # per loop name
    postgres_fresh_jobs: float  # jobs/s on a jobs table without planner statistics
    postgres_missing: str  # why PostgreSQL was not measured ("" when it was)
    postgres_where: str  # its data directory
    events_per_st: float
    sizes: Sizes
    backlog: int  # jobs queued for the job-cycle loops

    def get(self, name: str) -> float | None:
        return self.rates.get(name)


@functools.cache
def measure(quick: bool) -> Measured:
    """Every loop of both sections, taking turns; once per run."""
    size = sizes(quick)
    jobs = int(MAX_JOBS_PER_SECOND * size.rounds * size.slice_seconds)
    missing = postgres_unreachable() or ""
    where, fresh = "", 0.0
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=scratch_dir())))
        loops = {"disk": disk_flush(stack, folder), **sqlite_loops(stack, folder)}
        loops |= sqlite_store(stack, folder, jobs)
        if not missing:
            dsn = stack.enter_context(scratch_database())
            with psycopg.connect(dsn) as conn:
                found = conn.execute("SELECT current_setting('data_directory')").fetchone()
                where = str(found[0]) if found else "?"
            loops |= postgres_loops(stack, dsn)
            if (pgbench := pgbench_loop(dsn, folder)) is not None:
                loops["pgbench"] = pgbench
            store_loops, fresh = postgres_store(stack, dsn, jobs, size.fresh_jobs)
            loops |= store_loops
        rates = interleaved(loops, size.rounds, size.slice_seconds)
    batches = event_batches()
    per_st = sum(len(b) for b in batches) / len(batches)
    return Measured(rates, fresh, missing, where, per_st, size, jobs)


# ------------------------------------------------------------------------ rows


def limit_rows(quick: bool) -> list[Row]:
    title = "raw limits"
    m = measure(quick)
    flushes = m.rates["disk"]
    turns = f"{m.sizes.rounds} turns of {m.sizes.slice_seconds:g} s, interleaved"
    rows = [
        Row(title, "disk: 8 KiB overwrite + fdatasync", flushes, "flushes/s",
            note=f"in {scratch_dir()}; the floor under a durable commit; {turns}"),
        Row(title, "SQLite durable commit: single-row INSERT + COMMIT (WAL, synchronous=FULL)",
            m.rates["sqlite commit"], "commits/s", "disk flushes", flushes, "flushes/s",
            kind="limit"),
        Row(title, f"SQLite durable batched insert: {BATCH:,} event-sized rows "
            f"({ROW_BYTES} B) per transaction", m.rates["sqlite insert"], "rows/s"),
    ]  # fmt: skip
    if m.postgres_missing:
        return [*rows, Row(title, "PostgreSQL commits and inserts", None,
                           note=m.postgres_missing)]  # fmt: skip
    pgbench = m.get("pgbench")
    rows += [
        Row(title, "PostgreSQL durable commit: single-row INSERT, autocommit, psycopg",
            m.rates["postgres commit"], "commits/s", "peer: pgbench, same INSERT", pgbench,
            kind="peer", note="" if pgbench else "no pgbench: the peer is missing"),
        Row(title, "PostgreSQL durable commit: pgbench (C client), 1 connection", pgbench,
            "commits/s", "disk flushes", flushes, "flushes/s", kind="limit",
            note=f"data directory {m.postgres_where}"),
        Row(title, f"PostgreSQL durable batched insert: {BATCH:,} event-sized rows per "
            "transaction", m.rates["postgres insert"], "rows/s", "peer: SQLite batched insert",
            m.rates["sqlite insert"], kind="peer"),
    ]  # fmt: skip
    return rows


def store_rows(quick: bool) -> list[Row]:
    title = "SQLite vs PostgreSQL"
    m = measure(quick)
    rows: list[Row] = []
    for name, prefix in ((SQLITE, "sqlite"), (POSTGRES, "postgres")):
        if name == POSTGRES and m.postgres_missing:
            rows.append(Row(title, f"{name} store operations", None, note=m.postgres_missing))
            continue
        jobs, events = m.rates[f"{prefix} jobs"], m.rates[f"{prefix} events"]
        after = ", with planner statistics" if name == POSTGRES else ""
        rows += [
            Row(title, f"{name}: worker job cycle, empty handler, backlog of "
                f"{m.backlog:,} jobs{after}", jobs, "jobs/s",
                f"{name} commits/s", m.rates[f"{prefix} commit"], kind="limit",
                note=_join("complete + claim the next = 1 commit",
                           _versus(name, jobs, m.rates["sqlite jobs"]))),
            Row(title, f"{name}: event append, one transaction per ST of {CLAIMS_PER_ST} "
                f"claims (≈ {m.events_per_st:,.0f} events)", events, "events/s",
                f"{name} batched insert", m.rates[f"{prefix} insert"], "rows/s",
                kind="limit", note=_join("+ a key index row per event key",
                                         _versus(name, events, m.rates["sqlite events"]))),
        ]  # fmt: skip
        if name == POSTGRES:
            rows.append(
                Row(title, f"{name}: worker job cycle, {m.sizes.fresh_jobs} jobs on a fresh "
                    "table (no planner statistics yet)", m.postgres_fresh_jobs,
                    "jobs/s", "the same with statistics", jobs, kind="limit",
                    note="until ANALYZE the claim query compares every job with every "
                    "earlier one"),
            )  # fmt: skip
    return rows


def _versus(name: str, figure: float, sqlite_figure: float) -> str:
    return "" if name == SQLITE else f"{figure / sqlite_figure:.2g}× SQLite"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short loops (a smoke)")
    args = parser.parse_args()
    import book

    raise SystemExit(book.main(["--only", "store", "--only", "limits"] + ["--quick"] * args.quick))


if __name__ == "__main__":
    main()
