"""Worker processes, end to end: 835 -> normalise -> journals -> an unlimited ERP, with 1, 2
and 4 ``revbridge worker`` processes on PostgreSQL and on SQLite, in the same run.

Each configuration gets a fresh store (a new PostgreSQL database, or a new SQLite file)
holding the same ingested backlog; N worker processes (the ``revbridge worker`` loop:
``revbridge.cli.worker.work`` with ``--until-idle``) are started, lined up on a go file,
and work the backlog into an ERP that books instantly (each process appends the keys it
booked to its own file; nothing is ever refused or slow). Figures:

- claims/s: claims in the backlog / (last job finished - go), and the speed-up against one
  worker on the same backend in the same run;
- claims (jobs taken) per second by the store, and the share of wall time the workers spent
  inside handlers (the rest is claiming, idle waits for a key held by another, commits);
- a check of the result: every journal posted, no key booked twice across the books.

    python bench/bench_workers.py               # 2,000 claims (400 payments), best of 3
    python bench/bench_workers.py --quick       # 200 claims, 1 and 2 workers, one run
    python bench/bench_workers.py --claims 8000 --runs 5 --workers 1 2 --backends postgres

The machine is shared: the load average before each run is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

from revbridge import bootstrap
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.formats.x12.synthetic import synthetic_835
from revbridge.ingest.x12_files import ingest_file
from revbridge.orchestrate.worker import Handler, JobContext
from revbridge.post.base import JournalSink
from revbridge.sample import write_sample

PAYEE_NPIS = ("1234567893", "1245319599", "1679576722")  # in the sample master data
CLAIMS_PER_PAYMENT = 5
BACKENDS = ("postgres", "sqlite")
WORKERS = (1, 2, 4)
GOAL_SPEED_UP = 1.6  # PostgreSQL, 2 workers against 1 (issue 4)
CLAIMS, RUNS = 2_000, 3
QUICK_CLAIMS, QUICK_WORKERS = 200, (1, 2)  # the CI smoke: a few seconds per configuration


# ------------------------------------------------------------------------------ child


class BookSink(JournalSink):
    """An unlimited ERP: books at once, appending each key to this process's own file
    (no fsync: the bench measures revbridge, not this book)."""

    name = "book"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.documents: dict[str, str] = {}
        self._out = path.open("a", encoding="utf-8")

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        fresh = [j.key for j in journals if j.key not in self.documents]
        for key in fresh:
            self.documents[key] = f"{self.path.stem}-{len(self.documents) + 1}"
        self._out.write("".join(f"{key}\n" for key in fresh))
        self._out.flush()
        return {j.key: self.documents[j.key] for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        return {k: self.documents[k] for k in keys if k in self.documents}

    def close(self) -> None:
        self._out.close()


class Clocked:
    """Seconds in handlers per kind, and when the last one ended (wall clock)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.jobs: Counter[str] = Counter()
        self.last_end = 0.0
        self._lock = threading.Lock()

    def wrap(self, kind: str, handler: Handler) -> Handler:
        def run(ctx: JobContext) -> None:
            started = time.perf_counter()
            try:
                handler(ctx)
            finally:
                with self._lock:
                    self.seconds[kind] += time.perf_counter() - started
                    self.jobs[kind] += 1
                    self.last_end = time.time()

        return run


def child(config: Path, book: Path, go: Path) -> None:
    """One worker process: wait for ``go``, work until idle, print one JSON line."""
    from revbridge.cli.worker import WorkOptions, work

    clocked = Clocked()
    original = bootstrap.handlers

    def timed_handlers(services: bootstrap.Services) -> dict[str, Handler]:
        return {k: clocked.wrap(k, h) for k, h in original(services).items()}

    bootstrap.handlers = timed_handlers
    app = bootstrap.build(
        bootstrap.read_config(str(config)), sink_factory=lambda _n: BookSink(book)
    )
    try:
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.002)
        started, cpu = time.time(), time.process_time()
        stats = work(
            app, WorkOptions(until_idle=True), echo=lambda line: print(line, file=sys.stderr)
        )
        ended, cpu = time.time(), time.process_time() - cpu
    finally:
        app.close()
    summary = {
        "pid": os.getpid(),
        "started": started,
        "ended": ended,
        "last_end": clocked.last_end,
        "jobs": dict(clocked.jobs),
        "handler_seconds": dict(clocked.seconds),
        "processed": stats.processed,
        "cpu": cpu,
    }
    print(json.dumps(summary), flush=True)


# ----------------------------------------------------------------------------- parent


def postgres_admin_dsn() -> str:
    return (
        os.environ.get("REVBRIDGE_BENCH_POSTGRES_DSN")
        or os.environ.get("REVBRIDGE_TEST_POSTGRES_DSN")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@dataclass
class Deployment:
    config: Path
    drop: Callable[[], None]


def deployment(backend: str, folder: Path, number: int) -> Deployment:
    """A sample deployment on a fresh store; ``drop`` removes a PostgreSQL database."""
    config = write_sample(folder, store_path=str(folder / "revbridge.db"))
    text = config.read_text(encoding="utf-8")
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "postgres":
        name = f"revbridge_bench_{os.getpid()}_{number}"
        admin = postgres_admin_dsn()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

        dsn = conninfo.make_conninfo(admin, dbname=name)
        start = text.index("store:\n")
        end = text.index("\n\n", start)
        text = f'{text[:start]}store:\n  type: postgres\n  dsn: "{dsn}"\n  pool_size: 2{text[end:]}'
    text += "\nworker:\n  lease_seconds: 60\n  poll_seconds: 0.1\n  post_batch_size: 50\n"
    config.write_text(text, encoding="utf-8")
    return Deployment(config, drop)


def ingest(config: Path, data: bytes, folder: Path) -> int:
    """Store the backlog; returns the payments (transactions) it holds."""
    path = folder / "backlog.835"
    path.write_bytes(data)
    app = bootstrap.build(
        bootstrap.read_config(str(config)), sink_factory=lambda n: BookSink(folder / "unused")
    )
    try:
        outcome = ingest_file(app.store, path)
    finally:
        app.close()
    if outcome.status != "accepted":
        raise RuntimeError(f"bench backlog: {outcome.status}")
    return outcome.new


def run_workers(config: Path, workers: int, folder: Path) -> list[dict[str, Any]]:
    """Start the workers, line them up on the go file, let them run; their summaries."""
    go = folder / "go"
    command = [sys.executable, __file__, "--child", "--config", str(config), "--go", str(go)]
    processes = [
        subprocess.Popen(
            [*command, "--book", str(folder / f"book-{n}.txt")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(
                    f"worker did not start: {line}{process.stderr.read() if process.stderr else ''}"
                )
        go_at = time.time()
        go.touch()
        answers = [p.communicate(timeout=1800) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    summaries = []
    for process, (out, err) in zip(processes, answers, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"worker exited {process.returncode}: {err[-2000:]}")
        summary = json.loads(out.strip().splitlines()[-1])
        summary["go"] = go_at
        summaries.append(summary)
    return summaries


def verify(config: Path, folder: Path) -> dict[str, int]:
    """Journals in the store, how many are posted, and keys booked twice across books."""
    booked: Counter[str] = Counter()
    for book in folder.glob("book-*.txt"):
        booked.update(book.read_text(encoding="utf-8").split())
    store = bootstrap.open_store(bootstrap.read_config(str(config)))
    try:
        with store.unit_of_work() as uow:
            journals = uow.journals.all()
            jobs = uow.jobs.count()
            unfinished = uow.jobs.count("ready") + uow.jobs.count("leased")
            parked = uow.jobs.count("parked")
    finally:
        store.close()
    posted = sum(1 for r in journals if r.status == JournalStatus.POSTED)
    return {
        "journals": len(journals),
        "posted": posted,
        "booked": len(booked),
        "doubled": sum(count - 1 for count in booked.values()),
        "jobs": jobs,
        "unfinished": unfinished,
        "parked": parked,
    }


@dataclass(frozen=True)
class Result:
    backend: str
    workers: int
    claims: int
    payments: int
    seconds: float
    jobs: int
    in_handlers: float  # share of the workers' wall time spent inside handlers
    post_seconds: float  # in post handlers, all workers together (one target: in series)
    cpu_seconds: float  # CPU the workers used from go to idle (not the database server's)
    load: float  # 1-minute load average before the run
    check: Mapping[str, int]
    round: int = 0
    speed_up: float = float("nan")  # against 1 worker on the same backend, same round

    @property
    def claims_per_second(self) -> float:
        return self.claims / self.seconds

    @property
    def ok(self) -> bool:
        c = self.check
        return c["posted"] == c["journals"] == c["booked"] and not (
            c["doubled"] or c["unfinished"] or c["parked"]
        )


def measure(backend: str, workers: int, data: bytes, claims: int, number: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="revbridge-bench-workers-") as tmp:
        folder = Path(tmp)
        setup = deployment(backend, folder, number)
        try:
            payments = ingest(setup.config, data, folder)
            load = os.getloadavg()[0]
            summaries = run_workers(setup.config, workers, folder)
            check = verify(setup.config, folder)
        finally:
            setup.drop()
    go = summaries[0]["go"]
    seconds = max(s["last_end"] for s in summaries) - go
    busy = sum(sum(s["handler_seconds"].values()) for s in summaries)
    return Result(
        backend,
        workers,
        claims,
        payments,
        seconds,
        sum(s["processed"] for s in summaries),
        busy / (seconds * workers),
        sum(s["handler_seconds"].get("post", 0.0) for s in summaries),
        sum(s["cpu"] for s in summaries),
        load,
        check,
    )


@dataclass(frozen=True)
class Summary:
    """One backend and worker count over the rounds: the fastest run, and the median of
    the speed-ups against one worker measured in the same round (the machine's load drifts
    between rounds; within a round the configurations run back to back)."""

    best: Result
    speed_ups: tuple[float, ...]
    failed: Result | None

    @property
    def speed_up(self) -> float:
        return statistics.median(self.speed_ups) if self.speed_ups else float("nan")


def measure_all(
    claims: int,
    backends: Sequence[str],
    counts: Sequence[int],
    runs: int = 1,
    print_line: Callable[[str], None] | None = None,
) -> list[Summary]:
    """Every backend and worker count, ``runs`` rounds; each round runs them all in turn."""
    data = synthetic_835(
        seed=17,
        claims=claims,
        claims_per_transaction=CLAIMS_PER_PAYMENT,
        payee_npis=PAYEE_NPIS,
    )
    results: list[Result] = []
    for round_ in range(1, runs + 1):
        for backend in backends:
            one: Result | None = None
            for workers in counts:
                result = measure(backend, workers, data, claims, len(results))
                one = result if workers == 1 else one
                ratio = one.seconds / result.seconds if one is not None else float("nan")
                result = replace(result, round=round_, speed_up=ratio)
                results.append(result)
                if print_line is not None:
                    print_line(f"round {round_}: {describe(result)}")
    return summarise(results)


def summarise(results: Sequence[Result]) -> list[Summary]:
    summaries: list[Summary] = []
    for key in dict.fromkeys((r.backend, r.workers) for r in results):
        runs = [r for r in results if (r.backend, r.workers) == key]
        ratios = tuple(r.speed_up for r in runs if math.isfinite(r.speed_up))
        failed = next((r for r in runs if not r.ok), None)
        summaries.append(Summary(min(runs, key=lambda r: r.seconds), ratios, failed))
    return summaries


def describe(result: Result, speed_up: float | None = None) -> str:
    c = result.check
    ratio = result.speed_up if speed_up is None else speed_up
    return (
        f"{result.backend:<8} {result.workers} worker{'s' if result.workers > 1 else ' '}"
        f"  {result.seconds:7.2f} s  {result.claims_per_second:8,.0f} claims/s"
        f"  {result.jobs / result.seconds:7,.0f} jobs/s  {ratio:5.2f}x vs 1"
        f"  in handlers {result.in_handlers:4.0%}  posting {result.post_seconds:5.2f} s"
        f"  worker CPU {result.cpu_seconds / result.claims * 1000:4.1f} ms/claim"
        f"  load {result.load:4.1f}  journals {c['posted']}/{c['journals']} posted,"
        f" doubled {c['doubled']}, parked {c['parked']}"
        f"{'' if result.ok else f'  CHECK FAILED: {dict(c)}'}"
    )


def worker_rows(quick: bool) -> list[dict[str, Any]]:
    """Rows for the benchmark book (``bench/book.py``): claims/s per backend and worker
    count; beside one worker on the same backend: the median speed-up of the rounds."""
    claims, runs = (QUICK_CLAIMS, 1) if quick else (CLAIMS, RUNS)
    try:
        summaries = measure_all(claims, BACKENDS, QUICK_WORKERS if quick else WORKERS, runs)
    except psycopg.OperationalError as exc:
        return [{"what": "worker processes", "figure": None, "note": f"PostgreSQL: {exc}"}]
    rows: list[dict[str, Any]] = []
    for summary in summaries:
        result = summary.best
        one = next(s.best for s in summaries if s.best.backend == result.backend)
        check = "ok" if summary.failed is None else f"CHECK FAILED: {dict(summary.failed.check)}"
        row: dict[str, Any] = {
            "what": f"835 -> journals, {result.backend}, {result.workers} worker process"
            f"{'es' if result.workers > 1 else ''} ({claims:,} claims)",
            "figure": result.claims_per_second,
            "unit": "claims/s",
            "note": (
                f"best of {runs}; {result.jobs / result.seconds:,.0f} jobs/s; in handlers "
                f"{result.in_handlers:.0%}; posting {result.post_seconds:.1f} s; worker CPU "
                f"{result.cpu_seconds / result.claims * 1000:.1f} ms/claim; load "
                f"{result.load:.1f}; {check}"
            ),
        }
        if result.workers > 1:
            row |= {
                "beside": "1 worker (speed-up: median of the rounds)",
                "beside_figure": one.claims_per_second,
                "kind": "peer",
                "ratio": summary.speed_up,
            }
        if result.backend == "postgres" and result.workers == 2:
            row |= {
                "goal": f">= {GOAL_SPEED_UP}x 1 worker",
                "met": summary.speed_up >= GOAL_SPEED_UP,
            }
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_CLAIMS} claims, 1 and 2 workers, one run"
    )
    parser.add_argument("--claims", type=int, default=CLAIMS)
    parser.add_argument("--runs", type=int, default=RUNS, help="best of this many (interleaved)")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--book", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.config, args.book, args.go)
        return
    claims, runs = (QUICK_CLAIMS, 1) if args.quick else (args.claims, args.runs)
    counts = QUICK_WORKERS if args.quick else args.workers
    print(
        f"{claims:,} claims ({claims // CLAIMS_PER_PAYMENT} payments), best of {runs},"
        f" {os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    summaries = measure_all(claims, args.backends, sorted(set(counts)), runs, print)
    print("best run of each, with the median speed-up of the rounds:")
    for summary in summaries:
        print(describe(summary.best, summary.speed_up))
    two = [s for s in summaries if (s.best.backend, s.best.workers) == ("postgres", 2)]
    if two:
        verdict = "met" if two[0].speed_up >= GOAL_SPEED_UP else "NOT met"
        print(
            f"goal: PostgreSQL 2 workers >= {GOAL_SPEED_UP}x 1 worker: {two[0].speed_up:.2f}x"
            f" (rounds: {', '.join(f'{x:.2f}' for x in two[0].speed_ups)}), {verdict}"
        )
    if any(s.failed is not None for s in summaries):
        sys.exit(1)


if __name__ == "__main__":
    main()
