"""Posting under a target's rate limit, and through a 30-minute outage (issue #3 item 1).

The target allows 20 requests/s (a token bucket, burst 20: what "6,000 requests per
5 minutes" amounts to) and answers 429 with a whole-second ``Retry-After`` beyond it.
The real worker, post handler and per-target guard post prepared journals to it, one
journal per call, from a real SQLite store (on tmpfs when there is one):

- simulated: target and worker share an injected clock, so minutes of traffic and a
  30-minute outage run in seconds and give the same figures on every machine;
- real time: a local HTTP target on 127.0.0.1 and the system clock, for a few seconds.

Figures: achieved requests/s beside the limit, the share of 429 answers after a 2 s
warm-up, requests sent before a received Retry-After expired (must be 0), and for the
outage: exception items it created (goal 0) and the backlog's drain rate once the target
is back (goal >= 80% of the limit).

    python bench/bench_rate_limit.py [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from revbridge.domain.events import Event, EventType, SourceRef, deterministic_id
from revbridge.domain.journal import Journal, JournalLine
from revbridge.ledger.master_data import load_master_data
from revbridge.ledger.posting_rules import load_posting_rules
from revbridge.orchestrate.clock import Clock, SystemClock
from revbridge.orchestrate.handlers import POST, Services, post
from revbridge.orchestrate.target_guard import GuardPolicy, TargetGuard
from revbridge.orchestrate.worker import Worker
from revbridge.post.base import JournalSink
from revbridge.post.http_errors import classify_exchange_failure, classify_response
from revbridge.store.sqlite import SQLiteStore

LIMIT = 20.0
TARGET_BURST = 20.0
WARM_UP_SECONDS = 2.0
TARGET = "erp"
OUR_BURST = 10


# -- the target's side ---------------------------------------------------------------------


@dataclass
class Limiter:
    """The target's rate limit: a token bucket; 429 + whole-second Retry-After beyond it.

    Also the referee: it counts requests that arrive before a Retry-After it sent has
    expired, and logs every answer as (seconds, status); status 0: connection refused.
    """

    rate: float = LIMIT
    burst: float = TARGET_BURST
    down: tuple[float, float] | None = None  # refuse connections in [start, end)
    log: list[tuple[float, int]] = field(default_factory=list)
    violations: int = 0
    _tokens: float | None = None
    _at: float = 0.0
    _not_before: float = -math.inf
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        with self._lock:
            if self.down is not None and self.down[0] <= now < self.down[1]:
                self.log.append((now, 0))
                return 0, {}
            if now < self._not_before:
                self.violations += 1
            status, headers = self._spend(now)
            self.log.append((now, status))
            return status, headers

    def _spend(self, now: float) -> tuple[int, dict[str, str]]:
        tokens = self.burst if self._tokens is None else self._tokens
        self._tokens = min(self.burst, tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 200, {}
        wait = math.ceil((1 - self._tokens) / self.rate)
        self._not_before = now + wait
        return 429, {"Retry-After": str(wait)}


class SimulatedTarget(JournalSink):
    """A target on the injected clock; its answers are classified like HTTP ones."""

    name = TARGET

    def __init__(self, clock: Clock, limiter: Limiter) -> None:
        self.clock, self.limiter = clock, limiter
        self._epoch = clock.now()
        self.booked: dict[str, str] = {}

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        self._call()
        for journal in journals:
            self.booked.setdefault(journal.key, f"doc-{len(self.booked) + 1}")
        return {j.key: self.booked[j.key] for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        self._call()
        return {k: self.booked[k] for k in keys if k in self.booked}

    def close(self) -> None:
        return None

    def _call(self) -> None:
        now = (self.clock.now() - self._epoch).total_seconds()
        status, headers = self.limiter.answer(now)
        if status == 0:
            refused = ConnectionRefusedError(111, "Connection refused")
            raise classify_exchange_failure(TARGET, refused, sent=False)
        error = classify_response(TARGET, status, headers, b"", now=self.clock.now())
        if error is not None:
            raise error


# -- a real HTTP target on localhost ---------------------------------------------------------


class _TargetHandler(BaseHTTPRequestHandler):
    limiter: Limiter
    started: float
    booked: dict[str, str]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, headers = self.limiter.answer(time.monotonic() - self.started)
        answer: dict[str, Any] = {"error": "rate limit exceeded"}
        if status == 200:
            keys = [str(k) for k in body["keys"]]
            if self.path == "/post":
                for key in keys:
                    self.booked.setdefault(key, f"doc-{len(self.booked) + 1}")
            answer = {k: self.booked[k] for k in keys if k in self.booked}
        payload = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def http_target(limiter: Limiter) -> Iterator[tuple[int, dict[str, str]]]:
    """A local HTTP target enforcing ``limiter``; yields its port and booked keys."""
    booked: dict[str, str] = {}
    handler = type(
        "Handler",
        (_TargetHandler,),
        {"limiter": limiter, "started": time.monotonic(), "booked": booked},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], booked
    finally:
        server.shutdown()
        server.server_close()


class HttpSink(JournalSink):
    """Posts journal keys as JSON to the local target; classifies answers like an adapter."""

    name = TARGET

    def __init__(self, port: int) -> None:
        self.port = port

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        return self._call("/post", [j.key for j in journals])

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        return self._call("/lookup", keys)

    def close(self) -> None:
        return None

    def _call(self, path: str, keys: Sequence[str]) -> dict[str, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            try:
                connection.connect()
            except OSError as exc:
                raise classify_exchange_failure(TARGET, exc, sent=False) from exc
            try:
                connection.request("POST", path, body=json.dumps({"keys": list(keys)}))
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise classify_exchange_failure(TARGET, exc, sent=True) from exc
        finally:
            connection.close()
        error = classify_response(TARGET, response.status, dict(response.getheaders()), body)
        if error is not None:
            raise error
        return {str(k): str(v) for k, v in json.loads(body).items()}


# -- our side: prepared journals, the worker, the post handler, the guard -----------------------


class SimulatedClock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC) + timedelta(seconds=1)  # the store stamps jobs in real time

    def now(self) -> datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def _journal(number: int) -> Journal:
    amount = Decimal("100.00") + number
    return Journal(
        key=f"bench:{number:06d}:remittance",
        entity="RHS",
        date=date(2025, 1, 3),
        description=f"bench payment {number}",
        lines=(
            JournalLine("1010", amount, Decimal(0)),
            JournalLine("1200", Decimal(0), amount),
        ),
        rule_version="bench",
    )


def _prepared(journal: Journal) -> Event:
    at = datetime(2025, 1, 3, tzinfo=UTC)
    return Event(
        id=deterministic_id(EventType.JOURNAL_PREPARED, journal.key),
        type=EventType.JOURNAL_PREPARED,
        schema_version=1,
        occurred_at=at,
        recorded_at=at,
        entity=journal.entity,
        facility=None,
        keys={"journal": journal.key},
        correlation_id=journal.key,
        causation_id=None,
        source=SourceRef("bench", 0, 0),
        data={"target": TARGET},
    )


def _store(folder: Path, journals: int) -> SQLiteStore:
    store = SQLiteStore(folder / "bench.db")
    store.migrate()
    with store.unit_of_work() as uow:
        for number in range(journals):
            journal = _journal(number)
            uow.journals.add(journal, target=TARGET, unit_id=None)
            uow.outbox.add(TARGET, journal.key)
            uow.events.append([_prepared(journal)])
        uow.jobs.enqueue(POST, TARGET, {"target": TARGET})
    return store


def _services(sink: JournalSink, guard: TargetGuard) -> Services:
    sample = resources.files("revbridge.sample")
    with (
        resources.as_file(sample / "master-data.yaml") as master,
        resources.as_file(sample / "posting-rules.yaml") as rules,
    ):
        return Services(
            master=load_master_data(Path(master)),
            rules=load_posting_rules(Path(rules)),
            target=TARGET,
            sinks=lambda _name: sink,
            post_batch_size=1,
            guards=lambda _name: guard,
        )


@dataclass(frozen=True, slots=True)
class Result:
    requests: int
    rate: float  # accepted requests per second after the warm-up (sustained)
    throttled_after_warm_up: float  # share of 429 answers after the warm-up
    violations: int
    exceptions: int
    posted: int
    first_success: float  # seconds from the start to the first 200
    refused: int  # calls that found the target down


def _result(limiter: Limiter, store: SQLiteStore, booked: int) -> Result:
    answered = [(t, s) for t, s in limiter.log if s != 0]
    ok = [t for t, s in answered if s == 200]
    warm = ok[0] + WARM_UP_SECONDS if ok else math.inf
    later = [s for t, s in answered if t >= warm]
    sustained = [t for t in ok if t >= warm]
    span = sustained[-1] - warm if sustained else 0.0
    with store.unit_of_work() as uow:
        exceptions = len(uow.exceptions.all())
    return Result(
        requests=len(limiter.log),
        rate=len(sustained) / span if span else 0.0,
        throttled_after_warm_up=later.count(429) / len(later) if later else 0.0,
        violations=limiter.violations,
        exceptions=exceptions,
        posted=booked,
        first_success=ok[0] if ok else math.nan,
        refused=len(limiter.log) - len(answered),
    )


def run_simulated(
    journals: int,
    rate: float,
    *,
    outage_seconds: float = 0.0,
    breaker_open_seconds: float = 30.0,
) -> Result:
    """Post ``journals`` through the guarded worker against the simulated target."""
    clock = SimulatedClock()
    limiter = Limiter(down=(0.0, outage_seconds) if outage_seconds else None)
    target = SimulatedTarget(clock, limiter)
    policy = GuardPolicy(
        rate_per_second=rate,
        burst=OUR_BURST,
        max_in_flight=4,
        breaker_failures=5,
        breaker_open_seconds=breaker_open_seconds,
    )
    with _scratch() as folder:
        store = _store(folder, journals)
        services = _services(target, TargetGuard(TARGET, policy, clock))
        worker = Worker(store, {POST: lambda ctx: post(ctx, services)}, clock, rng=random.Random(1))
        worker.run_until_idle(max_wait_seconds=3600)
        result = _result(limiter, store, len(target.booked))
        store.close()
    return result


def run_real_time(seconds: float, rate: float = LIMIT) -> Result:
    """About ``seconds`` of posting to a local HTTP target on the system clock."""
    limiter = Limiter()
    clock = SystemClock()
    policy = GuardPolicy(rate_per_second=rate, burst=OUR_BURST, max_in_flight=4)
    with _scratch() as folder, http_target(limiter) as (port, booked):
        store = _store(folder, int(OUR_BURST + rate * seconds))
        services = _services(HttpSink(port), TargetGuard(TARGET, policy, clock))
        worker = Worker(store, {POST: lambda ctx: post(ctx, services)}, clock)
        worker.run_until_idle(max_wait_seconds=5.0)
        result = _result(limiter, store, len(booked))
        store.close()
    return result


@contextmanager
def _scratch() -> Iterator[Path]:
    """A scratch folder on tmpfs when there is one: the figures are the guard's, not the
    disk's (the store still runs with synchronous=FULL)."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as folder:
        yield Path(folder)


# -- the table ---------------------------------------------------------------------------------


def rate_limit_rows(quick: bool) -> list[tuple[str, str, str]]:
    """Rows for bench/run.py: (what, figure, beside its limit or goal)."""
    sim_seconds, real_seconds, backlog = (30, 4.0, 800) if quick else (300, 8.0, 6_000)
    at_limit = run_simulated(int(OUR_BURST + LIMIT * sim_seconds), LIMIT)
    above = run_simulated(int(OUR_BURST + LIMIT * sim_seconds), 1.5 * LIMIT)
    outage = run_simulated(backlog, LIMIT, outage_seconds=30 * 60)
    real = run_real_time(real_seconds)
    drain_from = outage.first_success - 30 * 60
    return [
        *_rate_rows(f"simulated {sim_seconds} s, rate set at the limit", at_limit),
        *_rate_rows(f"simulated {sim_seconds} s, rate set 1.5x the limit", above),
        *_rate_rows(f"real time {real_seconds:g} s, local HTTP target", real),
        (
            f"30-min outage (connection refused), backlog {backlog:,}: exception items",
            f"{outage.exceptions}",
            f"goal 0; {outage.posted:,}/{backlog:,} posted once",
        ),
        (
            "30-min outage: backlog drain rate once back",
            f"{outage.rate:.1f} req/s",
            f"{outage.rate / LIMIT:.0%} of limit (goal >= 80%); "
            f"first post {drain_from:.0f} s after recovery; "
            f"{outage.refused} calls refused in 30 min",
        ),
    ]


def _rate_rows(name: str, result: Result) -> list[tuple[str, str, str]]:
    return [
        (
            f"rate limit 20 req/s, {name}: achieved",
            f"{result.rate:.1f} req/s",
            f"{result.rate / LIMIT:.0%} of limit (goal >= 80%)",
        ),
        (
            f"rate limit 20 req/s, {name}: 429s after {WARM_UP_SECONDS:g} s",
            f"{result.throttled_after_warm_up:.2%}",
            f"goal < 1%; sent before Retry-After expired: {result.violations} (goal 0)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Short runs (CI smoke).")
    args = parser.parse_args()
    rows = rate_limit_rows(args.quick)
    width = max(len(r[0]) for r in rows)
    for name, figure, beside in rows:
        print(f"{name:<{width}}  {figure:>14}  {beside}")


if __name__ == "__main__":
    main()
