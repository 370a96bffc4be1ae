"""Contract: units of work running at the same time, in threads sharing one store.

SQLite has one writer at a time, so there these tests mostly wait; PostgreSQL runs the
transactions side by side, which is where numbering and commit order can disagree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

from revbridge.domain.events import Event, utcnow
from revbridge.store.base import JobStatus, Store

MakeEvent = Callable[..., Event]
WAIT = 10.0


def _start(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
            raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class Poller:
    """A subscriber paging through the event log with a cursor, as a real one does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: list[int] = []
        self.polls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        after = 0
        while not self.stop.is_set():
            with self.store.unit_of_work() as uow:
                page = uow.events.read_from(after)
            for stored in page:
                self.seen.append(stored.position)
                after = stored.position
            self.polls += 1
            time.sleep(0.005)

    def wait_for_polls(self, count: int) -> None:
        target = self.polls + count
        deadline = time.monotonic() + 0.5
        while self.polls < target and time.monotonic() < deadline:
            time.sleep(0.005)


def test_read_from_never_skips_an_event_committed_late(store: Store, make_event: MakeEvent) -> None:
    """Transaction A numbers its event first; B numbers one later and commits first.

    A reader that saw B's event and moved its cursor past it would never see A's."""
    errors: list[BaseException] = []
    a_appended, a_may_commit, b_committed = threading.Event(), threading.Event(), threading.Event()
    positions: dict[str, list[int]] = {}
    commits: list[str] = []

    def writer_a() -> None:
        with store.unit_of_work() as uow:
            positions["a"] = uow.events.append([make_event(correlation_id="A")])
            a_appended.set()
            a_may_commit.wait(WAIT)
        commits.append("a")

    def writer_b() -> None:
        with store.unit_of_work() as uow:
            positions["b"] = uow.events.append([make_event(correlation_id="B")])
        commits.append("b")
        b_committed.set()

    poller = Poller(store)
    reader = _start(poller.run, errors)
    first = _start(writer_a, errors)
    assert a_appended.wait(WAIT)
    second = _start(writer_b, errors)
    # Where writers run side by side (PostgreSQL), B is committed now and the reader polls
    # while A is still open; with one writer at a time (SQLite), B waits for A instead.
    b_committed.wait(0.5)
    poller.wait_for_polls(5)
    a_may_commit.set()
    for thread in (first, second):
        thread.join(WAIT)
    deadline = time.monotonic() + WAIT
    while len(poller.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    poller.stop.set()
    reader.join(WAIT)
    assert errors == []
    assert positions["a"][0] < positions["b"][0]
    assert poller.seen == positions["a"] + positions["b"]
    assert sorted(commits) == ["a", "b"]


def test_concurrent_claims_hand_out_each_job_once_and_keep_key_order(store: Store) -> None:
    keys = ["A", "B", "C"]
    with store.unit_of_work() as uow:
        ids = [uow.jobs.enqueue("k", keys[n % 3], {"n": n}) for n in range(15)]
    now = utcnow() + timedelta(seconds=1)
    guard = threading.Lock()
    claimed: dict[str, list[int]] = {key: [] for key in keys}
    busy: set[str] = set()
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 0.3:
            with store.unit_of_work() as uow:
                job = uow.jobs.claim(name, now, 60.0)
            if job is None:
                time.sleep(0.002)
                continue
            idle_since = time.monotonic()
            with guard:
                assert job.key not in busy, f"two jobs of key {job.key} leased at once"
                busy.add(job.key)
                claimed[job.key].append(job.id)
            time.sleep(0.002)  # the work; no other job of this key may be claimed meanwhile
            with guard:
                busy.discard(job.key)
            with store.unit_of_work() as uow:
                uow.jobs.complete(job.id, job.fence)

    threads = [_start(lambda n=n: worker(f"w{n}"), errors) for n in range(4)]
    for thread in threads:
        thread.join(WAIT * 3)
    assert errors == []
    assert sorted(job_id for key in keys for job_id in claimed[key]) == ids
    for key in keys:
        assert claimed[key] == sorted(claimed[key])
    with store.unit_of_work() as uow:
        assert uow.jobs.count(JobStatus.DONE) == len(ids)
