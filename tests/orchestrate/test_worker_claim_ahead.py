"""The worker claims its next job in the transaction that completes the one in hand: one
durable commit per job instead of two, with the lease guarantees unchanged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from revbridge import bootstrap
from revbridge.cli.worker import WorkLoop
from revbridge.orchestrate.clock import SystemClock
from revbridge.orchestrate.worker import JobContext, Worker
from revbridge.store.base import Job, JobStatus, UnitOfWork


class Boom(Exception):
    pass


def _enqueue(app: bootstrap.App, count: int) -> list[int]:
    with app.store.unit_of_work() as uow:
        return [uow.jobs.enqueue("x", f"k{n}", {}) for n in range(count)]


def _counting(app: bootstrap.App, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the store's units of work from now on."""
    opened: list[int] = []
    original = app.store.unit_of_work

    @contextmanager
    def counted() -> Iterator[UnitOfWork]:
        opened.append(1)
        with original() as uow:
            yield uow

    def unit_of_work() -> AbstractContextManager[UnitOfWork]:
        return counted()

    monkeypatch.setattr(app.store, "unit_of_work", unit_of_work)
    return opened


def test_completing_a_job_leases_the_next_in_the_same_transaction(
    app: bootstrap.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _enqueue(app, 2)
    worker = Worker(app.store, {}, SystemClock())
    ran: list[Job] = []
    seen_in_completion: list[Job] = []

    def handler(ctx: JobContext) -> None:
        ran.append(ctx.job)
        with ctx.store.unit_of_work() as uow:
            ctx.complete(uow)
            if ctx.job.id == first:
                seen_in_completion.append(uow.jobs.get(second))

    worker.handlers = {"x": handler}
    opened = _counting(app, monkeypatch)
    stats = worker.run_until_idle(max_wait_seconds=0)
    assert [job.id for job in ran] == [first, second]
    [leased] = seen_in_completion
    assert (leased.status, leased.lease_owner, leased.fence) == (
        JobStatus.LEASED,
        worker.owner,
        ran[1].fence,
    )
    # a claim, two completions (the first claiming the second), a claim finding nothing
    # and a look for work falling due; claiming each job on its own took one more
    assert (len(opened), stats.processed) == (5, 2)


def test_a_job_claimed_in_a_rolled_back_completion_is_claimed_again(
    app: bootstrap.App,
) -> None:
    first, second = _enqueue(app, 2)
    ran: list[Job] = []

    def handler(ctx: JobContext) -> None:
        ran.append(ctx.job)
        with ctx.store.unit_of_work() as uow:
            ctx.complete(uow)
            if ctx.job.id == first:
                raise Boom("after the completion, before the commit")

    stats = Worker(app.store, {"x": handler}, SystemClock()).run_until_idle(max_wait_seconds=0)
    with app.store.unit_of_work() as uow:
        states = {job.id: (job.status, job.fence, job.attempts) for job in uow.jobs.all()}
    # the rolled-back claim took no fence: the second job's only lease is fence 1
    assert [(job.id, job.fence) for job in ran] == [(first, 1), (second, 1)]
    assert states == {first: (JobStatus.PARKED, 1, 1), second: (JobStatus.DONE, 1, 1)}
    assert (stats.processed, stats.parked) == (1, 1)


def test_a_stopped_loop_puts_back_the_job_it_claimed_ahead(app: bootstrap.App) -> None:
    first, second = _enqueue(app, 2)
    stop = threading.Event()

    def handler(ctx: JobContext) -> None:
        with ctx.store.unit_of_work() as uow:
            ctx.complete(uow)
        stop.set()  # asked to stop while the first job ran

    stats = WorkLoop(Worker(app.store, {"x": handler}, SystemClock()), stop).run()
    with app.store.unit_of_work() as uow:
        released = uow.jobs.get(second)
        assert uow.jobs.get(first).status == JobStatus.DONE
    assert stats.processed == 1
    assert (released.status, released.lease_owner, released.attempts) == (JobStatus.READY, None, 0)
