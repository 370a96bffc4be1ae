"""The worker: lease a job, run its handler, and settle it (done, retry later, or parked).

A handler completes its own job inside the transaction that holds its effects (via
``JobContext.complete``), so a crash between the effects and the completion cannot happen.
Failures are settled here by class (``revbridge.errors``):

- ``Deferred`` (a handler's own signal: the target's guard says wait), ``ThrottledError``
  and ``OutageError`` put the job back *without counting an attempt*: the target asked
  us to wait or is down, which says nothing about the job, so they never park it. An
  outage of any length therefore opens no exception item; the circuit breaker (see
  ``target_guard``) keeps the calls to a down target to a probe per cool-down.
- ``TransientError`` and ``IndeterminateError`` are counted retries with exponential
  backoff and full jitter: the target answered, or may have, so the job itself may be
  the cause, and after ``max_attempts`` it parks with an exception item.
- ``BusinessError`` parks at once: sending the same content again cannot help.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from revbridge.errors import BusinessError, DeliveryError, LeaseLost, OutageError, ThrottledError
from revbridge.orchestrate import owners
from revbridge.orchestrate.clock import Clock
from revbridge.store.base import Job, NewException, Store, UnitOfWork

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
#: Shortest deferral: a wait rounded down to nothing must still let the clock move on.
MIN_DEFER_SECONDS = 0.001
#: How often a worker looks for leases held by dead processes of its host (and at its start).
REAP_EVERY_SECONDS = 5.0


class Deferred(Exception):
    """Raised by a handler: run this job again in ``seconds``, without counting an attempt.

    Not a ``DeliveryError``: nothing failed. The target's guard said wait (a Retry-After
    not yet expired, the circuit breaker open, the rate limit or the calls in flight used
    up), so the job goes back to the queue untouched.
    """

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(f"deferred {seconds:.3f} s: {reason}")
        self.seconds = seconds
        self.reason = reason


#: Cyclic garbage collector thresholds while a job runs. A job allocates tens of thousands of
#: containers (events, their data, journal lines) that reference counting frees; at the
#: default first threshold (700) the collector runs thousands of times per 835 file for
#: nothing, about 13% of the CPU of ingest-to-posted. Cycles are still collected.
JOB_GC_THRESHOLDS = (50_000, 20, 20)


class _JobCollector:
    """The collector's thresholds are process-wide: the first of concurrent jobs raises
    them, the last one to finish puts back what was there before."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.saved: tuple[int, int, int] = gc.get_threshold()

    def enter(self) -> None:
        with self.lock:
            if self.running == 0:
                self.saved = gc.get_threshold()
                gc.set_threshold(*JOB_GC_THRESHOLDS)
            self.running += 1

    def leave(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0:
                gc.set_threshold(*self.saved)


_JOB_COLLECTOR = _JobCollector()


@contextmanager
def collecting_less() -> Iterator[None]:
    """Run the block with the collector's thresholds at ``JOB_GC_THRESHOLDS``."""
    _JOB_COLLECTOR.enter()
    try:
        yield
    finally:
        _JOB_COLLECTOR.leave()


@dataclass(frozen=True, slots=True)
class JobContext:
    job: Job
    store: Store
    clock: Clock
    owner: str  # the lease owner running the job
    lease_seconds: float
    claim_next: Callable[[UnitOfWork], None] | None = None  # the worker's, see ``complete``

    def complete(self, uow: UnitOfWork) -> None:
        """Mark the job done in the caller's transaction (raises ``LeaseLost`` if stale).

        The worker claims its next job in the same transaction (``claim_next``): one
        durable commit ends this job and leases the next, instead of one each."""
        uow.jobs.complete(self.job.id, self.job.fence)
        if self.claim_next is not None:
            self.claim_next(uow)

    def hold(self, uow: UnitOfWork) -> None:
        """Renew the lease in the caller's transaction (raises ``LeaseLost`` if stale): a
        handler holds it right before an effect outside the store, such as a call."""
        uow.jobs.extend(self.job.id, self.job.fence, self.clock.now(), self.lease_seconds)


Handler = Callable[[JobContext], None]


@dataclass
class RunStats:
    processed: int = 0
    retried: int = 0
    deferred: int = 0
    parked: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        store: Store,
        handlers: Mapping[str, Handler],
        clock: Clock,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 8,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store, self.handlers, self.clock = store, handlers, clock
        self.lease_seconds, self.max_attempts = lease_seconds, max_attempts
        self.owner = owner or owners.this_process()
        self.rng = rng or random.Random()
        self.stats = RunStats()
        self._wakes: list[datetime] = []  # when jobs this worker put back become due
        self._next_reap: datetime | None = None  # None: at the first claim
        self._claimed: Job | None = None  # leased by the commit that completed the last job

    def run_once(self) -> bool:
        """Run one due job; False when none is due.

        The job is the one claimed when the previous job completed, if any (see
        ``JobContext.complete``); otherwise one claimed now, in a transaction of its own."""
        job, self._claimed = self._claimed, None
        if job is None:
            with self.store.unit_of_work() as uow:
                job = self._claim(uow)
        if job is None:
            return False
        with collecting_less():
            self._run(job)
        return True

    def release(self) -> None:
        """Put back, without counting an attempt, the job claimed ahead and not yet run (a
        worker told to stop): it is ready for any worker at once, not when its lease ends."""
        job, self._claimed = self._claimed, None
        if job is None:
            return
        with self.store.unit_of_work() as uow:
            uow.jobs.defer(job.id, job.fence, "released: its worker stopped", self.clock.now())

    def _claim(self, uow: UnitOfWork) -> Job | None:
        now = self.clock.now()
        self._reap(uow, now)
        return uow.jobs.claim(self.owner, now, self.lease_seconds, list(self.handlers))

    def _claim_next(self, uow: UnitOfWork) -> None:
        """Claim the next job in the transaction completing the current one; it is this
        worker's to run once (and only if) that transaction commits."""
        job = self._claim(uow)
        if job is not None:
            uow.after_commit(lambda: setattr(self, "_claimed", job))

    def _reap(self, uow: UnitOfWork, now: datetime) -> None:
        """End the leases of owners known dead (``owners.is_dead``), every so often: their
        jobs are then claimable at once, not when their leases expire."""
        if self._next_reap is not None and now < self._next_reap:
            return
        self._next_reap = now + timedelta(seconds=REAP_EVERY_SECONDS)
        dead = [o for o in uow.jobs.lease_owners(now) if o != self.owner and owners.is_dead(o)]
        if dead and uow.jobs.expire_leases(dead, now):
            log.warning("took back the leases of dead workers: %s", ", ".join(dead))

    def run_until_idle(
        self, max_wait_seconds: float = 30.0, progress: Callable[[RunStats], None] | None = None
    ) -> RunStats:
        """Run until no job is due, waiting for retries that fall due within ``max_wait``."""
        try:
            while True:
                if self.run_once():
                    if progress is not None:
                        progress(self.stats)
                    continue
                wait = self._seconds_to_next_due()
                if wait is None or wait <= 0 or wait > max_wait_seconds:
                    return self.stats  # <= 0: what is due is not ours to run (other kinds, leased)
                self.clock.sleep(wait)
        finally:
            self.release()

    def _seconds_to_next_due(self) -> float | None:
        """Until the next job may be runnable. A job already due can still be held back
        by an earlier job of its key that was put back (per-key order): then the wait is
        until the earliest job this worker put back falls due."""
        with self.store.unit_of_work() as uow:
            due = uow.jobs.next_run_after()
        now = self.clock.now()
        wait = None if due is None else (due - now).total_seconds()
        if wait is not None and wait > 0:
            return wait
        self._wakes = [at for at in self._wakes if at > now]
        return (min(self._wakes) - now).total_seconds() if self._wakes else wait

    def _put_back_until(self, delay: float) -> datetime:
        now = self.clock.now()
        self._wakes = [at for at in self._wakes if at > now]
        self._wakes.append(now + timedelta(seconds=delay))
        return self._wakes[-1]

    def _run(self, job: Job) -> None:
        try:
            self._settle(job)
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; its result was discarded", job.id)

    def _settle(self, job: Job) -> None:
        try:
            self.handlers[job.kind](
                JobContext(
                    job, self.store, self.clock, self.owner, self.lease_seconds, self._claim_next
                )
            )
        except LeaseLost:
            raise
        except Deferred as signal:
            self._defer(job, signal.seconds, signal.reason)
            return
        except BusinessError as exc:
            self._park(job, "business_rejection", str(exc))
            return
        except (ThrottledError, OutageError) as exc:
            self._defer(job, self.backoff(job.attempts, exc), f"{type(exc).__name__}: {exc}")
            return
        except DeliveryError as exc:
            self._retry(job, exc)
            return
        except Exception as exc:  # a poison message parks its own job, never the worker
            log.exception("job %s (%s) failed", job.id, job.kind)
            self._park(job, "processing_error", f"{type(exc).__name__}: {exc}")
            return
        self.stats.processed += 1
        self.stats.by_kind[job.kind] = self.stats.by_kind.get(job.kind, 0) + 1

    def _retry(self, job: Job, exc: DeliveryError) -> None:
        if job.attempts >= self.max_attempts:
            self._park(job, "retries_exhausted", f"{type(exc).__name__}: {exc}")
            return
        delay = self.backoff(job.attempts, exc)
        with self.store.unit_of_work() as uow:
            uow.jobs.retry(
                job.id,
                job.fence,
                f"{type(exc).__name__}: {exc}",
                self._put_back_until(delay),
            )
        self.stats.retried += 1

    def _defer(self, job: Job, seconds: float, reason: str) -> None:
        """Back to the queue after ``seconds``; the attempt is not counted."""
        delay = max(seconds, MIN_DEFER_SECONDS)
        with self.store.unit_of_work() as uow:
            uow.jobs.defer(job.id, job.fence, reason, self._put_back_until(delay))
        self.stats.deferred += 1

    def backoff(self, attempts: int, exc: DeliveryError) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**attempts)); never before Retry-After."""
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
        delay = self.rng.uniform(0, ceiling)
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    def _park(self, job: Job, reason: str, detail: str) -> None:
        with self.store.unit_of_work() as uow:
            uow.jobs.park(job.id, job.fence, detail)
            uow.exceptions.open(
                NewException(
                    reason,
                    f"{job.kind} job {job.id} parked: {detail}",
                    f"job:{job.id}:{reason}",
                    {"job_id": job.id, "job_kind": job.kind, "key": job.key, **job.payload},
                )
            )
            uow.audit.record(self.owner, "job.parked", "job", str(job.id), {"reason": reason})
        self.stats.parked += 1
