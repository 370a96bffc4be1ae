"""The store interface. Stage code depends on this module only, never on a backend.

One unit of work is one database transaction: everything a step does (its effects, the
events it emits, the jobs it enqueues, the exceptions it opens, the audit of its state
changes, the completion of its own job) is committed together or not at all.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

from revbridge.domain.events import Event
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.domain.values import slot_constructor

# re-exported (mypy: "as"): stages decode event data with it
from revbridge.store.stored_data import data_as as data_as  # noqa: PLC0414

# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RawMessage:
    """Bytes exactly as received (a whole file, an MLLP frame, an HTTP body)."""

    id: int
    channel: str
    name: str
    content_type: str
    sha256: str
    size: int
    received_at: datetime


class UnitStatus:
    PENDING = "pending"
    NORMALISED = "normalised"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class NewUnit:
    """A unit of business input inside a raw message (an X12 ST..SE, an HL7 message)."""

    raw_id: int
    kind: str
    natural_key: str
    content_hash: str
    byte_start: int
    byte_end: int
    first_segment: int
    envelope: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unit:
    id: int
    raw_id: int
    kind: str
    natural_key: str
    content_hash: str
    byte_start: int
    byte_end: int
    first_segment: int
    envelope: Mapping[str, str]
    status: str
    reason: str | None
    created_at: datetime


class JobStatus:
    READY = "ready"
    LEASED = "leased"
    DONE = "done"
    PARKED = "parked"


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    status: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    fence: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event: Event


new_stored_event = slot_constructor(StoredEvent)
"""``StoredEvent(position, event)`` for backends reading many events."""


@dataclass(frozen=True, slots=True)
class JournalRecord:
    journal: Journal
    status: JournalStatus
    target: str
    unit_id: int | None
    erp_document_id: str | None
    created_at: datetime
    posted_at: datetime | None
    last_error: str | None


class OutboxStatus:
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    target: str
    journal_key: str
    status: str
    attempts: int
    run_after: datetime
    document_id: str | None
    last_error: str | None
    sender: str | None  # the lease owner whose call is under way (see ``mark_in_flight``)


class ExceptionStatus:
    OPEN = "open"
    RESOLVED = "resolved"


class Resolution:
    """How a person closed an exception item (``ExceptionItem.resolution``)."""

    RESOLVED = "resolved"
    RETRIED = "retried"
    RESUBMITTED = "resubmitted"
    WRITTEN_OFF = "written_off"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class NewException:
    """An item for a person. ``dedupe_key`` makes opening it idempotent."""

    reason: str
    detail: str
    dedupe_key: str
    subject: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExceptionItem:
    id: int
    reason: str
    detail: str
    status: str
    subject: Mapping[str, Any]
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    assignee: str | None = None
    resolution: str | None = None


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    exception_id: int
    at: datetime
    actor: str
    text: str


class ApprovalStatus:
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Approval:
    """A request that needs a second person (large write-off, bulk replay)."""

    id: int
    kind: str
    subject: Mapping[str, Any]
    requested_by: str
    requested_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    detail: Mapping[str, Any]


class Family:
    """What retention keeps by month (DESIGN.md §6), each numbered by a key that only grows:
    raw messages with their bytes (by raw message id), events with their key index (by
    position)."""

    RAW = "raw"
    EVENTS = "events"
    ALL = (RAW, EVENTS)


@dataclass(frozen=True, slots=True)
class MonthPartition:
    """One month of a family: its keys ``[low, high)`` (``high`` is None while SQLite's
    current month is open-ended), when new rows started and stopped going there, and what
    it holds now.

    A month whose ``closed_at`` is None is *current* (new rows go there, or, on PostgreSQL,
    it is prepared ahead) and is never dropped. ``first_at`` / ``last_at`` are the times
    (``received_at`` / ``recorded_at``) of its lowest and highest keys ``first_key`` /
    ``last_key``."""

    family: str
    month: date
    low: int
    high: int | None
    opened_at: datetime | None
    closed_at: datetime | None
    rows: int = 0
    first_key: int | None = None
    last_key: int | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def current(self) -> bool:
        return self.closed_at is None

    @property
    def newest(self) -> datetime | None:
        """The latest of ``closed_at`` and ``last_at``: no row arrived after it (rows stop
        arriving when the month closes; a legacy or spilled-over row may be later)."""
        known = [at for at in (self.closed_at, self.last_at) if at is not None]
        return max(known) if known else None


@dataclass(frozen=True, slots=True)
class OpenWork:
    """Unfinished work that still needs a month's rows, so the month must not be dropped."""

    pending_units: int = 0
    unfinished_jobs: int = 0
    unposted_journals: int = 0
    open_exceptions: int = 0

    def reasons(self) -> list[str]:
        """What holds the month, for people: ``["2 pending units", "1 journal not posted"]``."""
        counts = (
            (self.pending_units, "pending unit", "pending units"),
            (self.unfinished_jobs, "unfinished job", "unfinished jobs"),
            (self.unposted_journals, "journal not posted", "journals not posted"),
            (self.open_exceptions, "open exception item", "open exception items"),
        )
        return [f"{n} {one if n == 1 else many}" for n, one, many in counts if n]


def month_of(at: datetime) -> date:
    """The first day of ``at``'s month in UTC (``at`` must be timezone-aware)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()}: months are taken in UTC")
    utc = at.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def add_months(month: date, count: int) -> date:
    """The first day of the month ``count`` months after ``month``'s (before, if negative)."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


# ----------------------------------------------------------------------- repositories


class RawRepository(abc.ABC):
    @abc.abstractmethod
    def add(
        self,
        *,
        channel: str,
        name: str,
        content_type: str,
        sha256: str,
        size: int,
        stream: BinaryIO,
    ) -> RawMessage:
        """Store ``size`` bytes read from ``stream`` exactly (streamed, never all in memory)."""

    @abc.abstractmethod
    def find_by_sha256(self, sha256: str) -> RawMessage | None: ...

    @abc.abstractmethod
    def get(self, raw_id: int) -> RawMessage: ...

    @abc.abstractmethod
    def read(self, raw_id: int, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of a raw message."""

    @abc.abstractmethod
    def iter_chunks(
        self, raw_id: int, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """The same bytes as ``read``, in chunks, for big messages."""

    @abc.abstractmethod
    def received(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[RawMessage]:
        """Messages received in ``[since, until)`` (a missing bound is open) with
        ``id > after_id``, in id order, at most ``limit``: how a replay pages through a
        time range or through everything."""


class UnitRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, unit: NewUnit, status: str = UnitStatus.PENDING) -> Unit: ...

    @abc.abstractmethod
    def get(self, unit_id: int) -> Unit: ...

    @abc.abstractmethod
    def find(self, natural_key: str, content_hash: str) -> Unit | None:
        """The first unit with this natural key and these exact bytes (a duplicate)."""

    @abc.abstractmethod
    def natural_key_seen(self, natural_key: str, content_hash: str) -> Unit | None:
        """An earlier unit with this natural key but *different* bytes (control number reused)."""

    @abc.abstractmethod
    def by_raw(self, raw_id: int) -> list[Unit]: ...

    @abc.abstractmethod
    def set_status(self, unit_id: int, status: str, reason: str | None = None) -> None: ...


class EventLog(abc.ABC):
    @abc.abstractmethod
    def append(self, events: Sequence[Event]) -> list[int]:
        """Append in order; returns the positions (strictly increasing)."""

    @abc.abstractmethod
    def by_correlation(self, correlation_id: str) -> list[StoredEvent]: ...

    @abc.abstractmethod
    def by_key(self, value: str) -> list[StoredEvent]:
        """Events with ``value`` among their business keys (any key name)."""

    @abc.abstractmethod
    def read_from(self, after_position: int, limit: int = 1000) -> list[StoredEvent]: ...

    @abc.abstractmethod
    def count(self) -> int: ...


class JobQueue(abc.ABC):
    @abc.abstractmethod
    def enqueue(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        run_after: datetime | None = None,
    ) -> int: ...

    @abc.abstractmethod
    def enqueue_once(self, kind: str, key: str, payload: Mapping[str, Any]) -> int:
        """Enqueue, unless a job of ``kind`` and ``key`` is ready and not yet claimed; then
        return that job's id instead. That job will see this transaction's effects (no claim
        of ``key`` can take it before this transaction ends), so it does this work too: for
        jobs of one kind and key that are interchangeable (a target's post job takes every
        due outbox item), so a burst of enqueues leaves one job, not one per enqueue."""

    @abc.abstractmethod
    def claim(
        self, owner: str, now: datetime, lease_seconds: float, kinds: Sequence[str] | None = None
    ) -> Job | None:
        """Lease the oldest runnable job (ready and due, or leased with an expired lease).

        Order per key: a job is not runnable while an earlier job (lower id) with the same
        ``key`` is ready, leased or parked, so one key's work applies in order and a parked
        job holds back its own key only. Claiming raises the job's fencing token and counts
        an attempt; completing it needs that token.
        """

    @abc.abstractmethod
    def extend(self, job_id: int, fence: int, now: datetime, lease_seconds: float) -> None:
        """Hold the lease ``lease_seconds`` from ``now``. Raises ``LeaseLost`` if the fence
        is stale (another worker claimed the job since). Taken right before a call to a
        target, in the transaction that records the call, so a holder that paused past its
        lease learns it before sending rather than after."""

    @abc.abstractmethod
    def lease_owners(self, now: datetime) -> list[str]:
        """The distinct owners of leases that have not expired at ``now``."""

    @abc.abstractmethod
    def expire_leases(self, owners: Sequence[str], now: datetime) -> int:
        """End now the unexpired leases of ``owners`` (known dead: their jobs become
        claimable at once; the claim raises the fence, so an owner that was not dead after
        all cannot complete them); returns how many leases ended."""

    @abc.abstractmethod
    def complete(self, job_id: int, fence: int) -> None:
        """Mark done. Raises ``LeaseLost`` if the fence is stale."""

    @abc.abstractmethod
    def retry(self, job_id: int, fence: int, error: str, run_after: datetime) -> None:
        """Back to ready at ``run_after``. Raises ``LeaseLost`` if the fence is stale."""

    @abc.abstractmethod
    def park(self, job_id: int, fence: int, error: str) -> None:
        """Stop retrying; a person must act. Raises ``LeaseLost`` if the fence is stale."""

    @abc.abstractmethod
    def defer(self, job_id: int, fence: int, reason: str, run_after: datetime) -> None:
        """Back to ready at ``run_after`` without counting the attempt (the target asked us
        to wait: throttled, circuit open). Raises ``LeaseLost`` if the fence is stale."""

    @abc.abstractmethod
    def requeue(self, job_id: int, run_after: datetime) -> None:
        """A person's retry: a parked job becomes ready with its attempts reset. Raises
        ``StoreError`` unless the job is parked."""

    @abc.abstractmethod
    def all(self, status: str | None = None, limit: int = 1000) -> list[Job]:
        """Jobs by id, optionally of one status."""

    @abc.abstractmethod
    def get(self, job_id: int) -> Job: ...

    @abc.abstractmethod
    def count(self, status: str | None = None) -> int: ...

    @abc.abstractmethod
    def next_run_after(self) -> datetime | None:
        """When the earliest not-yet-due ready job becomes due (None if nothing waits)."""

    @abc.abstractmethod
    def next_lease_expiry(self) -> datetime | None:
        """When the earliest lease held now expires (None if no job is leased). Nobody is
        woken when a lease expires: a waiting worker wakes itself then, to take over the
        jobs of a worker that died."""


class JournalRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, journal: Journal, *, target: str, unit_id: int | None) -> bool:
        """Insert a prepared journal; ``False`` if the key exists (nothing changes)."""

    @abc.abstractmethod
    def get(self, key: str) -> JournalRecord | None: ...

    @abc.abstractmethod
    def all(self, status: JournalStatus | None = None) -> list[JournalRecord]: ...

    @abc.abstractmethod
    def mark_posted(self, key: str, document_id: str, at: datetime) -> None: ...

    @abc.abstractmethod
    def mark_failed(self, key: str, error: str) -> None: ...

    @abc.abstractmethod
    def keys_by_source(self, value: str) -> list[str]:
        """Keys of journals with a line whose source references contain ``value``; the
        positional ones (``codec.POSITIONAL_REFS``: raw id, unit id, segment) are not
        looked in: a number such as ``17`` names no business object alone."""


class Outbox(abc.ABC):
    @abc.abstractmethod
    def add(self, target: str, journal_key: str) -> int: ...

    @abc.abstractmethod
    def due(self, target: str, now: datetime, limit: int) -> list[OutboxItem]:
        """Pending or in-flight items whose ``run_after`` has come, oldest first."""

    @abc.abstractmethod
    def mark_in_flight(
        self, item_ids: Sequence[int], sender: str, *, dead: Collection[str] = ()
    ) -> None:
        """Record an attempt is about to be made (attempts += 1) *before* calling the target,
        by ``sender`` (a lease owner). The item names its sender until that call's outcome
        is known: ``mark_done`` and ``mark_failed`` clear it, ``mark_retry`` by the sender
        itself too. An item that already names a sender keeps it (a worker taking over from
        a lost lease: the first call's outcome is still unknown), unless that sender is in
        ``dead`` (its call can no longer commit): then ``sender`` replaces it, so a later
        takeover waits on this call rather than on the dead one."""

    @abc.abstractmethod
    def mark_done(self, item_id: int, document_id: str) -> None: ...

    @abc.abstractmethod
    def mark_retry(self, item_id: int, error: str, run_after: datetime, sender: str) -> None:
        """Keep the status (in-flight stays in-flight: its outcome is unknown). ``sender``'s
        call has returned: the item stops naming it (another sender's stays named)."""

    @abc.abstractmethod
    def mark_failed(self, item_id: int, error: str) -> None: ...

    @abc.abstractmethod
    def reset(
        self, target: str, journal_key: str, run_after: datetime, *, unsure: bool = False
    ) -> int:
        """A person's retry: the failed item for ``(target, journal_key)`` becomes pending,
        due at ``run_after`` (attempts and last error kept as history); returns its id.
        ``unsure``: its outcome in the target is unknown, so it comes back in flight (with
        no sender) and is looked up before anything is sent. Raises ``StoreError`` unless
        such a failed item exists."""

    @abc.abstractmethod
    def count(self, status: str | None = None) -> int: ...


class ExceptionRepository(abc.ABC):
    @abc.abstractmethod
    def open(self, item: NewException) -> tuple[int, bool]:
        """Open (or find, by ``dedupe_key``) an item; returns (id, newly_opened).

        An item with the same ``dedupe_key`` that a person resolved is opened again (the
        problem came back), keeping its notes and history; that counts as newly opened.
        """

    @abc.abstractmethod
    def get(self, item_id: int) -> ExceptionItem: ...

    @abc.abstractmethod
    def all(
        self,
        status: str | None = None,
        *,
        reason: str | None = None,
        assignee: str | None = None,
    ) -> list[ExceptionItem]: ...

    @abc.abstractmethod
    def resolve(
        self, item_id: int, actor: str, at: datetime, resolution: str = Resolution.RESOLVED
    ) -> None:
        """Close an open item. Raises ``StoreError`` if it is not open."""

    @abc.abstractmethod
    def read_from(self, after_id: int, limit: int = 1000) -> list[ExceptionItem]:
        """Items with ``id > after_id`` in id order (incremental export)."""

    @abc.abstractmethod
    def assign(self, item_id: int, assignee: str | None) -> None: ...

    @abc.abstractmethod
    def add_note(self, item_id: int, actor: str, at: datetime, text: str) -> int: ...

    @abc.abstractmethod
    def notes(self, item_id: int) -> list[Note]: ...


class ApprovalRepository(abc.ABC):
    @abc.abstractmethod
    def request(
        self, kind: str, subject: Mapping[str, Any], actor: str, at: datetime
    ) -> Approval: ...

    @abc.abstractmethod
    def get(self, approval_id: int) -> Approval: ...

    @abc.abstractmethod
    def all(self, status: str | None = None) -> list[Approval]: ...

    @abc.abstractmethod
    def decide(self, approval_id: int, actor: str, at: datetime, *, approve: bool) -> None:
        """Record the decision on a pending request. Raises ``StoreError`` if not pending.

        Who may decide (never the requester) is the caller's rule, not the store's."""


class AuditLog(abc.ABC):
    @abc.abstractmethod
    def record(
        self,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def for_subject(self, subject_type: str, subject_id: str) -> list[AuditEntry]: ...

    @abc.abstractmethod
    def read_from(self, after_id: int, limit: int = 1000) -> list[AuditEntry]:
        """Entries with ``id > after_id`` in id order (incremental export)."""


class RetentionRepository(abc.ABC):
    """The months of raw messages and events, dropped whole once retention lets them go.

    PostgreSQL keeps each month in partitions of its own and drops them (DETACH, DROP);
    SQLite records each month's key range and deletes it in bulk, in one transaction. Either
    way a month is removed as a whole, never row by row as data ages."""

    @abc.abstractmethod
    def months(self, family: str) -> list[MonthPartition]:
        """The family's months in key order, with row counts and first/last rows."""

    @abc.abstractmethod
    def advance(self, now: datetime) -> list[MonthPartition]:
        """Make ``now``'s month the one new rows go to and close the earlier ones; on
        PostgreSQL also create its partitions and the next month's, ahead of time. Returns
        the months it created (empty when up to date). Use a unit of work of its own: on
        PostgreSQL it holds the id sequences (new rows wait) until commit."""

    @abc.abstractmethod
    def open_work(self, family: str, month: date) -> OpenWork:
        """Unfinished work that still needs the month's rows: pending units of its raw
        messages, jobs not done for them (or, for events, for its correlations), journals
        not posted that come from them, open exception items naming them."""

    @abc.abstractmethod
    def drop(self, family: str, month: date) -> int:
        """Remove the month as a whole; returns how many rows (raw messages, events) it
        held. Raises ``StoreError`` if the month is current, ``KeyError`` if unknown. It does
        not look at open work: the caller checks ``open_work`` in the same unit of work."""


# ------------------------------------------------------------------- unit of work, store


class UnitOfWork(abc.ABC):
    """One transaction. Leaving the ``with`` block commits; an exception rolls back."""

    raw: RawRepository
    units: UnitRepository
    events: EventLog
    jobs: JobQueue
    journals: JournalRepository
    outbox: Outbox
    exceptions: ExceptionRepository
    approvals: ApprovalRepository
    audit: AuditLog
    retention: RetentionRepository
    _after_commit: list[Callable[[], None]] | None = None

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this transaction has committed, never if it rolls back: for
        what may only start once a write is durable (a worker running the job it claimed
        in the transaction that completed the one before)."""
        if self._after_commit is None:
            self._after_commit = []
        self._after_commit.append(action)

    def committed(self) -> None:
        """Called by the store right after the commit: runs the ``after_commit`` actions."""
        for action in self._after_commit or ():
            action()


class Store(abc.ABC):
    @abc.abstractmethod
    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]: ...

    @abc.abstractmethod
    def migrate(self) -> int:
        """Apply pending schema migrations; returns the schema version now in force."""

    @abc.abstractmethod
    def check_durability(self) -> None:
        """Raise ``ConfigurationError`` unless the settings guarantee durable commits."""

    @abc.abstractmethod
    def wait_for_work(self, timeout_seconds: float) -> bool:
        """Wait until work may have arrived, at most ``timeout_seconds``; ``True`` if it may.

        Work arrives when anyone, in this process or another, enqueues a job, puts one back
        (``retry``, ``defer``) or requeues one, and only once that transaction commits (a
        rolled-back enqueue wakes nobody). A wake-up means "look again": it may be spurious,
        and a due time (``run_after``) coming or a lease expiring wakes nobody (wait until
        ``next_run_after`` / ``next_lease_expiry`` at most). Each thread has its own
        wake-ups: its first call starts listening and returns ``True`` at once (work may
        have arrived before it listened); later calls return ``True`` at once if a wake-up
        came since the previous call returned. Call it outside any unit of work.
        """

    @abc.abstractmethod
    def close(self) -> None: ...
