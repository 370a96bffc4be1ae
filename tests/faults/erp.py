"""A fault-injecting ERP whose book is its own SQLite file.

The book lives apart from the revbridge store, so "the ERP committed, then the worker died
before recording it" is real: a document committed here survives ``kill -9`` of the
process that posted it, and the next worker finds it only by looking its key up.

By default the book accepts a second document for a key it already holds (many ERPs
have no idempotency key), so any double posting by revbridge is visible in the book. With
``idempotent=True`` it behaves like Tryton with the ``revbridge_erp`` module: a second
document for a key is absorbed and the first one's id is returned.

Faults, all optional (``FaultPlan``):

- ``kill``: a named point at which the process SIGKILLs itself (``before_commit``,
  ``after_commit``, ``mid_batch:N`` = N journals of the batch committed, then death).
  Refused unless ``allow_kill`` (never in the pytest process itself).
- ``timeout_rate`` / ``timeout_commit_rate``: calls that time out (``IndeterminateError``),
  of which a share did commit before the answer was lost.
- ``transient_rate`` and ``storms`` (ranges of call numbers): 5xx (``TransientError``);
  ``lookup_failure_rate``: look-ups that time out.
- ``reject_keys`` / ``reject_kinds``: business refusals (``BusinessError``) of a batch that
  holds such a journal; nothing of that batch is booked.
- ``rate_limit``: more requests than this per second of the injected clock get a 429
  (``ThrottledError`` with ``retry_after``), or NetSuite's ``400
  SSS_REQUEST_LIMIT_EXCEEDED`` (throttling without a Retry-After) with ``netsuite_400``.
- ``outage``: a window of the injected clock in which every call fails (``OutageError``).
- ``script``: faults for the next post calls, in order (used by the stateful test).
- ``latency``: real seconds each post call takes (widens race windows between processes).
- ``hook``: called at ``before_commit`` / ``after_commit`` of each post call, in process:
  how the tests make another worker run *during* an ERP call.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from revbridge.domain.journal import Journal
from revbridge.domain.money import money_str
from revbridge.errors import (
    BusinessError,
    DeliveryError,
    IndeterminateError,
    OutageError,
    ThrottledError,
    TransientError,
)
from revbridge.orchestrate.clock import Clock, SystemClock
from revbridge.post.base import JournalSink

FAULT_ENV = "REVBRIDGE_FAULT"
"""Kill point for runner processes when ``--fault`` is not given (``after_commit@2``)."""

TARGET = "fault_erp"
KILL_POINTS = ("before_commit", "after_commit", "mid_batch")
SCRIPTED = ("timeout_committed", "timeout_lost", "503", "429", "outage", "reject")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    entity TEXT NOT NULL,
    date TEXT NOT NULL,
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    description TEXT NOT NULL,
    pid INTEGER NOT NULL,
    call_no INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_key ON documents (key);
CREATE TABLE IF NOT EXISTS lines (
    document_id INTEGER NOT NULL REFERENCES documents (id),
    line_no INTEGER NOT NULL,
    account TEXT NOT NULL,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (document_id, line_no)
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    call_no INTEGER NOT NULL,
    op TEXT NOT NULL,
    keys TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class KillPoint:
    """Where a runner process kills itself: ``point`` on its ``call``-th post call."""

    point: str
    call: int = 1
    after: int = 1  # mid_batch: how many journals of the batch are committed first

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        """``after_commit``, ``after_commit@2``, ``mid_batch:3``, ``mid_batch:3@2``."""
        spec, _, call = text.partition("@")
        point, _, after = spec.partition(":")
        if point not in KILL_POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(KILL_POINTS)}")
        return cls(point, int(call or 1), int(after or 1))

    def __str__(self) -> str:
        middle = f":{self.after}" if self.point == "mid_batch" else ""
        return f"{self.point}{middle}@{self.call}"


@dataclass
class FaultPlan:
    kill: KillPoint | None = None
    timeout_rate: float = 0.0
    timeout_commit_rate: float = 0.5
    transient_rate: float = 0.0
    lookup_failure_rate: float = 0.0
    storms: Sequence[tuple[int, int]] = ()
    reject_keys: frozenset[str] = frozenset()
    reject_kinds: frozenset[str] = frozenset()
    rate_limit: float | None = None
    retry_after: float | None = 1.0
    netsuite_400: bool = False
    outage: tuple[datetime, datetime] | None = None
    script: list[str] = field(default_factory=list)
    latency: float = 0.0
    seed: int = 0


Hook = Callable[[str, Sequence[Journal]], None]


class FaultERP(JournalSink):
    """A ``JournalSink`` booking into its own SQLite file, with scripted faults."""

    name = TARGET

    def __init__(
        self,
        path: Path,
        plan: FaultPlan | None = None,
        *,
        clock: Clock | None = None,
        idempotent: bool = False,
        allow_kill: bool = False,
        hook: Hook | None = None,
    ) -> None:
        self.path = path
        self.plan = plan or FaultPlan()
        if self.plan.kill is not None and not allow_kill:
            raise ValueError("kill points are for runner processes only (allow_kill=True)")
        self.clock = clock or SystemClock()
        self.idempotent = idempotent
        self.hook = hook
        self.rng = random.Random(self.plan.seed)
        self.lookup_rng = random.Random(self.plan.seed + 1)
        self.calls = 0
        self.timeouts = 0
        self.requests: deque[datetime] = deque()
        self.outcomes: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = connect(path)

    # ------------------------------------------------------------------ JournalSink

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        self.calls += 1
        call = self.calls
        keys = [j.key for j in journals]
        if self.plan.latency:
            time.sleep(self.plan.latency)
        kill = self.plan.kill if self.plan.kill and self.plan.kill.call == call else None
        if kill is not None and kill.point == "before_commit":
            self._die(call, keys, "killed_before_commit")
        scripted = self.plan.script.pop(0) if self.plan.script else None
        self._refuse(call, keys, journals, scripted)
        timeout = scripted in ("timeout_committed", "timeout_lost") or (
            self.rng.random() < self.plan.timeout_rate
        )
        if scripted:
            committed = scripted == "timeout_committed"
        else:
            committed = timeout and self._commits_this_time()
        if timeout and not committed:
            self._log(call, "post", keys, "timeout_lost")
            raise IndeterminateError(f"read timed out (call {call})", target=TARGET)
        if self.hook is not None:
            self.hook("before_commit", journals)
        if kill is not None and kill.point == "mid_batch":
            self._commit(call, journals[: kill.after])
            self._die(call, keys, f"killed_mid_batch_after_{kill.after}")
        result = self._commit(call, journals)
        if kill is not None and kill.point == "after_commit":
            self._die(call, keys, "killed_after_commit")
        if self.hook is not None:
            self.hook("after_commit", journals)
        if timeout:
            self._log(call, "post", keys, "timeout_committed")
            raise IndeterminateError(f"read timed out after commit (call {call})", target=TARGET)
        self._log(call, "post", keys, "ok")
        return result

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        if self._down():
            self._log(0, "lookup", list(keys), "outage")
            raise OutageError("connection refused (ERP down)", target=TARGET)
        self._throttle(0, list(keys), "lookup")
        if self.lookup_rng.random() < self.plan.lookup_failure_rate:
            self._log(0, "lookup", list(keys), "lookup_timeout")
            raise IndeterminateError("lookup: read timed out", target=TARGET)
        found: dict[str, str] = {}
        wanted = list(dict.fromkeys(keys))
        with self._tx() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    "SELECT key, MIN(id) FROM documents"
                    f" WHERE key IN ({', '.join('?' * len(chunk))}) GROUP BY key",
                    chunk,
                ).fetchall()
                found.update({key: doc_id(number) for key, number in rows})
        self._log(0, "lookup", list(keys), f"found {len(found)}")
        return found

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ----------------------------------------------------------------------- faults

    def _refuse(
        self, call: int, keys: list[str], journals: Sequence[Journal], scripted: str | None
    ) -> None:
        """Raise the fault this call gets before anything is booked, if any."""
        if scripted == "outage" or self._down():
            self._log(call, "post", keys, "outage")
            raise OutageError("connection refused (ERP down)", target=TARGET)
        if scripted == "429":
            self._log(call, "post", keys, "429")
            raise http_error(429, {"Retry-After": "1"}, b"Too Many Requests")
        self._throttle(call, keys, "post")
        in_storm = any(low <= call < high for low, high in self.plan.storms)
        if scripted == "503" or in_storm or self.rng.random() < self.plan.transient_rate:
            self._log(call, "post", keys, "503")
            raise http_error(503, {}, b"Service Unavailable")
        refused = [
            j
            for j in journals
            if j.key in self.plan.reject_keys
            or j.kind in self.plan.reject_kinds
            or (scripted == "reject" and j is journals[0])
        ]
        if refused:
            self._log(call, "post", keys, "rejected")
            raise BusinessError(
                f"journal {refused[0].key}: the posting period is closed",
                target=TARGET,
                code=refused[0].key,
            )

    def _commits_this_time(self) -> bool:
        """Of the timed-out calls, exactly ``timeout_commit_rate`` commit (evenly spread:
        at 0.5 every second one), so "half of them did commit" holds in every run."""
        rate, before = self.plan.timeout_commit_rate, self.timeouts
        self.timeouts += 1
        return int(self.timeouts * rate) > int(before * rate)

    def _down(self) -> bool:
        outage = self.plan.outage
        return outage is not None and outage[0] <= self.clock.now() < outage[1]

    def _throttle(self, call: int, keys: list[str], op: str) -> None:
        if self.plan.rate_limit is None:
            return
        now = self.clock.now()
        while self.requests and (now - self.requests[0]).total_seconds() >= 1.0:
            self.requests.popleft()
        if len(self.requests) >= self.plan.rate_limit:
            if self.plan.netsuite_400:
                self._log(call, op, keys, "400_SSS_REQUEST_LIMIT_EXCEEDED")
                raise http_error(400, {}, NETSUITE_LIMIT_BODY)
            self._log(call, op, keys, "429")
            after = self.plan.retry_after
            raise http_error(429, {} if after is None else {"Retry-After": f"{after:g}"}, b"")
        self.requests.append(now)

    def _die(self, call: int, keys: list[str], outcome: str) -> None:
        self._log(call, "post", keys, outcome)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # pragma: no cover - never reached

    # ------------------------------------------------------------------------- book

    def _commit(self, call: int, journals: Sequence[Journal]) -> dict[str, str]:
        result: dict[str, str] = {}
        with self._tx() as conn:
            for journal in journals:
                if self.idempotent:
                    row = conn.execute(
                        "SELECT MIN(id) FROM documents WHERE key = ?", (journal.key,)
                    ).fetchone()
                    if row is not None and row[0] is not None:
                        result[journal.key] = doc_id(row[0])
                        self._count("absorbed_second_document")
                        continue
                result[journal.key] = doc_id(_insert(conn, journal, call))
        return result

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            raise TransientError("ERP connection closed", target=TARGET)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _log(self, call: int, op: str, keys: list[str], outcome: str) -> None:
        self._count(op if outcome.startswith("found") else outcome)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO calls (pid, call_no, op, keys, outcome, at) VALUES (?, ?, ?, ?, ?, ?)",
                (os.getpid(), call, op, json.dumps(keys), outcome, self.clock.now().isoformat()),
            )

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _insert(conn: sqlite3.Connection, journal: Journal, call: int) -> int:
    cursor = conn.execute(
        "INSERT INTO documents (key, entity, date, kind, currency, description, pid, call_no)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            journal.key,
            journal.entity,
            journal.date.isoformat(),
            journal.kind,
            journal.currency,
            journal.description,
            os.getpid(),
            call,
        ),
    )
    number = cursor.lastrowid
    if number is None:  # pragma: no cover - sqlite always sets it on INSERT
        raise RuntimeError("insert returned no row id")
    conn.executemany(
        "INSERT INTO lines (document_id, line_no, account, debit, credit, dimensions, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                number,
                line_no,
                line.account,
                money_str(line.debit),
                money_str(line.credit),
                json.dumps(dict(line.dimensions), sort_keys=True),
                json.dumps(dict(line.source), sort_keys=True),
            )
            for line_no, line in enumerate(journal.lines, start=1)
        ],
    )
    return number


NETSUITE_LIMIT_BODY = (
    b'{"type":"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",'
    b'"title":"Bad Request","status":400,"o:errorDetails":[{"detail":"Request limit '
    b'exceeded","o:errorCode":"SSS_REQUEST_LIMIT_EXCEEDED"}]}'
)


def http_error(status: int, headers: Mapping[str, str], body: bytes) -> DeliveryError:
    """The error an HTTP adapter raises for this answer: the project's classifier when it
    is there (``revbridge.post.http_errors``), else the class DESIGN.md §8 names."""
    classify = _classifier()
    error = classify(TARGET, status, headers, body, what="post") if classify else None
    if error is not None:
        return error
    after = headers.get("Retry-After")
    message = f"HTTP {status}: {body[:80].decode('utf-8', 'replace')}"
    if status == 429 or b"SSS_REQUEST_LIMIT_EXCEEDED" in body:
        seconds = float(after) if after is not None else None
        return ThrottledError(message, target=TARGET, retry_after=seconds, code=f"http_{status}")
    return TransientError(message, target=TARGET, code=f"http_{status}")


def _classifier() -> Callable[..., DeliveryError | None] | None:
    try:
        from revbridge.post import http_errors
    except ImportError:  # the classifier is newer than this suite's first version
        return None
    return http_errors.classify_response


def doc_id(number: int) -> str:
    return f"DOC-{number}"


def connect(path: Path) -> sqlite3.Connection:
    """The book, durable: WAL + synchronous=FULL, like the store."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("BEGIN IMMEDIATE")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("COMMIT")
    return conn


@dataclass(frozen=True, slots=True)
class Call:
    pid: int
    number: int  # the post call's number in its process (0 for a lookup)
    op: str  # post | lookup
    keys: list[str]
    outcome: str
    at: datetime  # by the ERP's clock


def call_log(path: Path) -> list[Call]:
    """Every call the book saw, in order."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT pid, call_no, op, keys, outcome, at FROM calls ORDER BY id")
        return [
            Call(pid, n, op, json.loads(keys), outcome, datetime.fromisoformat(at))
            for pid, n, op, keys, outcome, at in rows
        ]
    finally:
        conn.close()
