"""End to end on SQLite: 835 file -> ingest -> normalise -> journal -> post (issue 4).

Generates a realistic file (``synthetic_835``, 500 claims per ST, payees all in the
sample master data) into a fresh sample deployment whose journals go to an unlimited
in-memory sink, ingests it, runs one worker until idle, and prints claims/s for each
stage and end to end, beside the raw limits measured in the same run:

- parse only: scan + parse + balance-check the same file, no events, no store;
- SQLite durable insert: rows/s of one batched ``INSERT`` transaction of event-sized rows
  on a WAL + ``synchronous=FULL`` file (the store's floor for writing events).

    python bench/bench_e2e.py                  # 20,000 claims
    python bench/bench_e2e.py --quick          # a smoke (< 15 s)
    python bench/bench_e2e.py --claims 50000 --runs 3

Stage figures are claims / time spent in that stage's job handlers; end to end is claims
/ (ingest + the worker's whole run, job claiming included).

"events" counts stored event rows. Since mapping ``x12_835/2`` a claim's CAS adjustments
travel inside its claim event, so that is about one per claim (plus one per remittance,
PLB, journal prepared and posted), not ≈ 7.7 as under ``x12_835/1``; the rows are larger.
The SQLite insert limit is measured for that many rows of the old event size (420 bytes).
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_x12_parse import parse_and_check
from revbridge import bootstrap
from revbridge.domain.journal import Journal
from revbridge.formats.x12.synthetic import synthetic_835
from revbridge.ingest.x12_files import ingest_file
from revbridge.orchestrate.handlers import JOURNAL, NORMALISE, POST
from revbridge.orchestrate.worker import Handler, JobContext
from revbridge.post.base import JournalSink
from revbridge.sample import write_sample

#: Payees of the sample master data, so every payment books journals.
PAYEE_NPIS = ("1234567893", "1245319599", "1679576722")
STAGES = (NORMALISE, JOURNAL, POST)
GOAL_CLAIMS_PER_SECOND = 5_000


class UnlimitedSink(JournalSink):
    """An ERP that accepts everything at once and remembers it (lookups work)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.documents: dict[str, str] = {}

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        for journal in journals:
            self.documents.setdefault(journal.key, f"DOC-{len(self.documents) + 1}")
        return {j.key: self.documents[j.key] for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        return {k: self.documents[k] for k in keys if k in self.documents}

    def close(self) -> None:
        pass


@dataclass
class Timings:
    """Seconds spent in each job kind's handler, and jobs run."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    jobs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    def timed(self, kind: str, handler: Handler) -> Handler:
        def run(ctx: JobContext) -> None:
            started = time.perf_counter()
            try:
                handler(ctx)
            finally:
                self.seconds[kind] += time.perf_counter() - started
                self.jobs[kind] += 1

        return run


@dataclass(frozen=True)
class E2ERun:
    claims: int
    transactions: int
    events: int
    posted: int
    ingest_s: float
    worker_s: float
    stage_s: Mapping[str, float]

    @property
    def total_s(self) -> float:
        return self.ingest_s + self.worker_s


def e2e_once(data: bytes, claims: int, folder: Path) -> E2ERun:
    """One run into a fresh deployment under ``folder``."""
    config_path = write_sample(folder, store_path=str(folder / "revbridge.db"))
    sinks: dict[str, UnlimitedSink] = {}
    app = bootstrap.build(
        bootstrap.read_config(str(config_path)),
        sink_factory=lambda name: sinks.setdefault(name, UnlimitedSink(name)),
    )
    try:
        path = folder / "inbox" / "bench.835"
        path.write_bytes(data)
        started = time.perf_counter()
        outcome = ingest_file(app.store, path)
        ingested = time.perf_counter()
        worker = app.worker()
        timings = Timings()
        worker.handlers = {k: timings.timed(k, h) for k, h in worker.handlers.items()}
        worker.run_until_idle(max_wait_seconds=0)
        done = time.perf_counter()
        with app.store.unit_of_work() as uow:
            events = uow.events.count()
            parked = uow.jobs.count("parked")
    finally:
        app.close()
    if outcome.status != "accepted" or parked:
        raise RuntimeError(f"bench run went wrong: ingest {outcome.status}, {parked} parked")
    return E2ERun(
        claims=claims,
        transactions=outcome.new,
        events=events,
        posted=sum(len(s.documents) for s in sinks.values()),
        ingest_s=ingested - started,
        worker_s=done - ingested,
        stage_s=dict(timings.seconds),
    )


def parse_only(path: Path) -> float:
    """Seconds to scan + parse + balance-check the file (no events, no store)."""
    started = time.perf_counter()
    parse_and_check(path)
    return time.perf_counter() - started


def sqlite_insert_limit(folder: Path, rows: int, row_bytes: int = 420) -> float:
    """Rows/s of one durable batched INSERT transaction (WAL, synchronous=FULL), rows about
    the size of a stored event, into a table with a primary key and one secondary index."""
    db = folder / "limit.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "CREATE TABLE t (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
            " correlation TEXT NOT NULL, body TEXT NOT NULL)"
        )
        body = "x" * row_bytes
        batch = [(f"{n:032x}", f"c{n // 4000}", body) for n in range(rows)]
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (id, correlation, body) VALUES (?, ?, ?)", batch)
        conn.execute("COMMIT")
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    return rows / seconds


def scratch_dir() -> str | None:
    """Where the files go (the book's ``REVBRIDGE_BENCH_DIR``; the durable figures are about
    the disk under it, so not tmpfs); None: the system temp folder."""
    return os.environ.get("REVBRIDGE_BENCH_DIR") or None


def measure(claims: int, runs: int, per_transaction: int = 500) -> dict[str, Any]:
    """Best of ``runs`` for every figure; each run measures the limits and the pipeline."""
    data = synthetic_835(
        seed=7, claims=claims, claims_per_transaction=per_transaction, payee_npis=PAYEE_NPIS
    )
    best: E2ERun | None = None
    parse_s, insert_rate = float("inf"), 0.0
    for n in range(runs):
        with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
            folder = Path(tmp)
            (folder / "bench.835").write_bytes(data)
            parse_s = min(parse_s, parse_only(folder / "bench.835"))
            run = e2e_once(data, claims, folder / f"deployment{n}")
            insert_rate = max(insert_rate, sqlite_insert_limit(folder, max(run.events, 1000)))
        if best is None or run.total_s < best.total_s:
            best = run
    assert best is not None
    return {"run": best, "parse_s": parse_s, "insert_rows_per_s": insert_rate, "bytes": len(data)}


def e2e_rows(quick: bool) -> list[dict[str, Any]]:
    """The figures as rows of the benchmark book (``bench/book.py``'s ``Row`` fields): each
    stage and the whole beside the parse-only limit of the same run."""
    claims, runs = (4_000, 1) if quick else (20_000, 3)
    m = measure(claims, runs)
    run: E2ERun = m["run"]
    parse_rate = claims / m["parse_s"]
    what = f"835 -> posted journals, {claims:,} claims, SQLite, unlimited ERP"
    note = f"best of {runs}; {run.events / claims:.1f} events per claim; {run.posted} journals"
    parse = {
        "beside": "raw limit: scan + parse + balance, no store",
        "beside_figure": parse_rate,
        "beside_unit": "claims/s",
        "kind": "limit",
    }
    rows: list[dict[str, Any]] = [
        {
            "what": f"{what}: raw limit: scan + parse + balance",
            "figure": parse_rate,
            "unit": "claims/s",
            "note": "no events, no store",
        },
        {
            "what": f"{what}: raw limit: SQLite durable batched insert",
            "figure": m["insert_rows_per_s"],
            "unit": "rows/s",
            "note": "event-sized rows, one transaction",
        },
        {
            "what": f"{what}: ingest (raw bytes + one unit per ST)",
            "figure": claims / run.ingest_s,
            "unit": "claims/s",
        },
    ]
    for stage in STAGES:
        seconds = run.stage_s[stage]
        rate = claims / seconds if seconds else float("inf")
        rows.append({"what": f"{what}: {stage} jobs", "figure": rate, "unit": "claims/s", **parse})
    e2e = claims / run.total_s
    rows.append(
        {
            "what": f"{what}: end to end (ingest + one worker until idle)",
            "figure": e2e,
            "unit": "claims/s",
            **parse,
            "goal": f">= {GOAL_CLAIMS_PER_SECOND:,} claims/s",
            "met": e2e >= GOAL_CLAIMS_PER_SECOND,
            "note": note,
        }
    )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--claims", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4,000 claims, one run (a smoke)")
    args = parser.parse_args(argv)
    claims, runs = (4_000, 1) if args.quick else (args.claims, args.runs)
    m = measure(claims, runs)
    run: E2ERun = m["run"]
    print(
        f"file: {m['bytes'] / 2**20:.1f} MB, {claims:,} claims, {run.transactions} transactions,"
        f" {run.events:,} events ({run.events / claims:.2f}/claim), {run.posted} journals"
        f" posted; best of {runs}"
    )
    parse_rate = claims / m["parse_s"]
    lines: list[tuple[str, float, str]] = [
        ("raw limit: scan + parse + balance", m["parse_s"], f"{parse_rate:>10,.0f} claims/s"),
        (
            "raw limit: SQLite durable insert",
            float("nan"),
            f"{m['insert_rows_per_s']:>10,.0f} rows/s",
        ),
        ("ingest", run.ingest_s, f"{claims / run.ingest_s:>10,.0f} claims/s"),
    ]
    for stage in STAGES:
        seconds = run.stage_s[stage]
        lines.append((f"{stage} jobs", seconds, f"{claims / seconds:>10,.0f} claims/s"))
    worker_other = run.worker_s - sum(run.stage_s.values())
    lines.append(("worker: claiming jobs, idle checks", worker_other, ""))
    lines.append(("END TO END", run.total_s, f"{claims / run.total_s:>10,.0f} claims/s"))
    for name, seconds, rate in lines:
        took = "" if math.isnan(seconds) else f"{seconds:.2f} s"
        print(f"{name:<38}{took:>10}  {rate}")
    goal = claims / run.total_s >= GOAL_CLAIMS_PER_SECOND
    print(f"goal >= {GOAL_CLAIMS_PER_SECOND:,} claims/s end to end: {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
