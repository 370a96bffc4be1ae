"""Contract: ``JobQueue.enqueue_once`` (one ready job per kind and key does the work)."""

from __future__ import annotations

import threading

import pytest

from revbridge.domain.events import utcnow
from revbridge.store.base import JobStatus, Store
from revbridge.store.postgres import PostgresStore

LEASE = 30.0
WAIT = 10.0


def _once(store: Store, kind: str = "post", key: str = "erp") -> int:
    with store.unit_of_work() as uow:
        return uow.jobs.enqueue_once(kind, key, {"target": key})


def _count(store: Store) -> int:
    with store.unit_of_work() as uow:
        return uow.jobs.count(JobStatus.READY)


def test_enqueues_when_no_job_of_the_kind_and_key_is_ready(store: Store) -> None:
    first = _once(store)
    with store.unit_of_work() as uow:
        job = uow.jobs.get(first)
    assert (job.kind, job.key, dict(job.payload), job.status) == (
        "post",
        "erp",
        {"target": "erp"},
        JobStatus.READY,
    )


def test_a_ready_job_of_the_kind_and_key_does_the_work(store: Store) -> None:
    first = _once(store)
    assert _once(store) == first
    assert _count(store) == 1
    assert _once(store, kind="post", key="gl") != first
    assert _once(store, kind="journal", key="erp") != first
    assert _count(store) == 3


def test_a_claimed_job_does_not_count(store: Store) -> None:
    first = _once(store)
    with store.unit_of_work() as uow:
        job = uow.jobs.claim("w1", utcnow(), LEASE, ["post"])
    assert job is not None and job.id == first
    second = _once(store)
    assert second != first
    with store.unit_of_work() as uow:
        uow.jobs.complete(job.id, job.fence)
    assert _once(store) == second


def test_no_claim_takes_the_job_before_the_transaction_ends(
    store: Store, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL: a claim running while ``enqueue_once`` is uncommitted passes the job
    over (on SQLite a claim simply waits for the one writer)."""
    if not isinstance(store, PostgresStore):
        pytest.skip("SQLite: one writer at a time, a claim waits for the transaction")
    first = _once(store)
    found, commit = threading.Event(), threading.Event()
    results: list[int] = []

    def coalesce() -> None:
        with store.unit_of_work() as uow:
            results.append(uow.jobs.enqueue_once("post", "erp", {"target": "erp"}))
            found.set()
            commit.wait(WAIT)

    thread = threading.Thread(target=coalesce, daemon=True)
    thread.start()
    assert found.wait(WAIT)
    with store.unit_of_work() as uow:
        assert uow.jobs.claim("w1", utcnow(), LEASE) is None
    commit.set()
    thread.join(WAIT)
    assert results == [first]
    with store.unit_of_work() as uow:
        job = uow.jobs.claim("w1", utcnow(), LEASE)
    assert job is not None and job.id == first
