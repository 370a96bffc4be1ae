"""The worker: lease a job, run its handler, and settle it (done, retry later, or parked).

A handler completes its own job inside the transaction that holds its effects (via
``JobContext.complete``), so a crash between the effects and the completion cannot happen.
Failures are settled here by class (``revbridge.errors``): delivery problems retry with
exponential backoff and full jitter (honouring ``Retry-After``); business refusals and
exhausted retries park the job and open an exception item for a person.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from revbridge.errors import BusinessError, DeliveryError, LeaseLost, ThrottledError
from revbridge.orchestrate.clock import Clock
from revbridge.store.base import Job, NewException, Store, UnitOfWork

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class JobContext:
    job: Job
    store: Store
    clock: Clock

    def complete(self, uow: UnitOfWork) -> None:
        """Mark the job done in the caller's transaction (raises ``LeaseLost`` if stale)."""
        uow.jobs.complete(self.job.id, self.job.fence)


Handler = Callable[[JobContext], None]


@dataclass
class RunStats:
    processed: int = 0
    retried: int = 0
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
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.rng = rng or random.Random()
        self.stats = RunStats()

    def run_once(self) -> bool:
        """Run one due job; False when none is due."""
        with self.store.unit_of_work() as uow:
            job = uow.jobs.claim(
                self.owner, self.clock.now(), self.lease_seconds, list(self.handlers)
            )
        if job is None:
            return False
        self._run(job)
        return True

    def run_until_idle(
        self, max_wait_seconds: float = 30.0, progress: Callable[[RunStats], None] | None = None
    ) -> RunStats:
        """Run until no job is due, waiting for retries that fall due within ``max_wait``."""
        while True:
            if self.run_once():
                if progress is not None:
                    progress(self.stats)
                continue
            wait = self._seconds_to_next_due()
            if wait is None or wait <= 0 or wait > max_wait_seconds:
                return self.stats  # <= 0: what is due is not ours to run (other kinds, leased)
            self.clock.sleep(wait)

    def _seconds_to_next_due(self) -> float | None:
        with self.store.unit_of_work() as uow:
            due = uow.jobs.next_run_after()
        return None if due is None else (due - self.clock.now()).total_seconds()

    def _run(self, job: Job) -> None:
        try:
            self._settle(job)
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; its result was discarded", job.id)

    def _settle(self, job: Job) -> None:
        try:
            self.handlers[job.kind](JobContext(job, self.store, self.clock))
        except LeaseLost:
            raise
        except BusinessError as exc:
            self._park(job, "business_rejection", str(exc))
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
                self.clock.now() + timedelta(seconds=delay),
            )
        self.stats.retried += 1

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
