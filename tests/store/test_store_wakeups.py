"""Contract: wake-ups (``Store.wait_for_work``) and the earliest lease expiry.

A waiter is woken once a transaction that enqueued, put back or requeued a job commits,
from this store (another thread) or another store on the same database (another process
has its own); never by an open or rolled-back transaction. The assertions are on wake or
no wake; how soon a wake-up came is printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from revbridge.domain.events import utcnow
from revbridge.errors import StoreError
from revbridge.store.base import JobStatus, Store, UnitOfWork
from revbridge.store.postgres import PostgresStore
from revbridge.store.sqlite import SQLiteStore

WAIT = 10.0  # generous: a wake-up that does not come fails only after this long
QUIET = 0.3  # how long "nothing happens" is watched


@pytest.fixture
def other(store: Store, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A second store on the same database: its own connections, as another process has."""
    if isinstance(store, SQLiteStore):
        second: Store = SQLiteStore(store.path)
    else:
        second = PostgresStore(request.getfixturevalue("postgres_database"), pool_size=2)
    try:
        yield second
    finally:
        second.close()


def _enqueue(store: Store, key: str = "ACC-1") -> int:
    with store.unit_of_work() as uow:
        return uow.jobs.enqueue("normalise", key, {"n": 1})


def _ready(store: Store) -> int:
    with store.unit_of_work() as uow:
        return uow.jobs.count(JobStatus.READY)


def _later(action: Callable[[], None], delay: float = 0.2) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _timed_wait(store: Store, label: str) -> bool:
    started = time.monotonic()
    woke = store.wait_for_work(WAIT)
    print(f"\n[{label}] woke={woke} after {time.monotonic() - started:.3f} s")
    return woke


def test_the_first_wait_returns_at_once_then_a_quiet_queue_times_out(store: Store) -> None:
    assert store.wait_for_work(WAIT) is True  # starts listening: work may have come before
    assert store.wait_for_work(QUIET) is False
    assert store.wait_for_work(0) is False


@pytest.mark.parametrize("writer", ["this store, another thread", "another store"])
def test_an_enqueue_wakes_a_waiter_once_committed(store: Store, other: Store, writer: str) -> None:
    source = store if writer.startswith("this") else other
    store.wait_for_work(0)
    thread = _later(lambda: _enqueue(source))
    assert _timed_wait(store, writer)
    assert _ready(store) == 1  # woken by the commit, not before it
    thread.join(WAIT)
    assert store.wait_for_work(QUIET) is False  # the wake-up was used up


def test_an_open_transaction_wakes_nobody_until_it_commits(store: Store, other: Store) -> None:
    enqueued, commit = threading.Event(), threading.Event()

    def writer() -> None:
        with other.unit_of_work() as uow:
            uow.jobs.enqueue("normalise", "ACC-1", {"n": 1})
            enqueued.set()
            commit.wait(WAIT)

    store.wait_for_work(0)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert enqueued.wait(WAIT)
    assert store.wait_for_work(QUIET) is False
    commit.set()
    assert _timed_wait(store, "at commit")
    thread.join(WAIT)
    assert _ready(store) == 1


def test_a_rolled_back_enqueue_wakes_nobody(store: Store, other: Store) -> None:
    store.wait_for_work(0)
    with pytest.raises(RuntimeError), other.unit_of_work() as uow:
        uow.jobs.enqueue("normalise", "ACC-1", {"n": 1})
        raise RuntimeError("roll back")
    assert store.wait_for_work(QUIET) is False
    assert _ready(store) == 0


def _put_back(uow: UnitOfWork, job_id: int, fence: int, action: str) -> None:
    later = utcnow() + timedelta(seconds=30)
    if action == "retry":
        uow.jobs.retry(job_id, fence, "503", later)
    elif action == "defer":
        uow.jobs.defer(job_id, fence, "429", later)
    else:
        uow.jobs.requeue(job_id, utcnow())


@pytest.mark.parametrize("action", ["retry", "defer", "requeue"])
def test_a_job_put_back_wakes_a_waiter(store: Store, other: Store, action: str) -> None:
    job_id = _enqueue(other)
    with other.unit_of_work() as uow:
        job = uow.jobs.claim("w1", utcnow(), 30.0)
        assert job is not None
        if action == "requeue":
            uow.jobs.park(job.id, job.fence, "bad")
    store.wait_for_work(0)
    assert store.wait_for_work(0) is False
    with other.unit_of_work() as uow:
        _put_back(uow, job_id, job.fence, action)
    assert _timed_wait(store, action)


def test_every_waiting_thread_is_woken(store: Store, other: Store) -> None:
    woke: list[bool] = []
    armed = threading.Barrier(3)

    def waiter() -> None:
        store.wait_for_work(0)
        armed.wait(WAIT)
        woke.append(store.wait_for_work(WAIT))

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    armed.wait(WAIT)
    _enqueue(other)
    for thread in threads:
        thread.join(WAIT * 2)
    assert woke == [True, True]


def test_waiting_on_a_closed_store_is_refused(store: Store) -> None:
    store.wait_for_work(0)
    store.close()
    with pytest.raises(StoreError):
        store.wait_for_work(0)


def test_next_lease_expiry(store: Store) -> None:
    first, second = _enqueue(store, "ACC-1"), _enqueue(store, "ACC-2")
    now = utcnow()
    with store.unit_of_work() as uow:
        assert uow.jobs.next_lease_expiry() is None
        long = uow.jobs.claim("w1", now, 60.0)
        short = uow.jobs.claim("w2", now, 5.0)
    assert long is not None and short is not None
    assert {long.id, short.id} == {first, second}
    with store.unit_of_work() as uow:
        assert uow.jobs.next_lease_expiry() == short.lease_expires_at == now + timedelta(seconds=5)
        uow.jobs.complete(short.id, short.fence)
        assert uow.jobs.next_lease_expiry() == long.lease_expires_at
        uow.jobs.park(long.id, long.fence, "bad")
        assert uow.jobs.next_lease_expiry() is None
