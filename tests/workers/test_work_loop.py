"""The wake-up loop of ``revbridge worker`` and ``serve`` (``WorkLoop``), in process, on
the sample deployment (SQLite)."""

from __future__ import annotations

import threading
import time

from revbridge import bootstrap
from revbridge.cli.worker import Tick, WorkLoop
from revbridge.domain.events import utcnow
from revbridge.ingest.x12_files import ingest_file
from revbridge.store.base import JobStatus
from tests.conftest import WORKED_EXAMPLE

WAIT = 30.0


def test_until_idle_on_an_empty_queue_returns(app: bootstrap.App) -> None:
    stats = WorkLoop(app.worker(), threading.Event(), until_idle=True).run()
    assert stats.processed == 0


def test_a_dead_workers_job_is_taken_over_when_its_lease_expires(app: bootstrap.App) -> None:
    ingest_file(app.store, WORKED_EXAMPLE)
    with app.store.unit_of_work() as uow:
        dead = uow.jobs.claim("dead-worker", utcnow(), 0.5)
    assert dead is not None
    loop = WorkLoop(app.worker(), threading.Event(), max_wait_seconds=WAIT, until_idle=True)
    started = time.monotonic()
    stats = loop.run()
    print(f"\nbacklog done {time.monotonic() - started:.3f} s after a 0.5 s lease was taken")
    with app.store.unit_of_work() as uow:
        taken = uow.jobs.get(dead.id)
        jobs = uow.jobs.all()
    assert (taken.status, taken.fence) == (JobStatus.DONE, dead.fence + 1)
    assert {j.status for j in jobs} == {JobStatus.DONE}
    assert stats.processed == len(jobs)


def test_stop_ends_an_idle_wait(app: bootstrap.App) -> None:
    stop = threading.Event()
    ticks: list[float] = []
    loop = WorkLoop(
        app.worker(), stop, max_wait_seconds=WAIT, tick=Tick(lambda: ticks.append(1.0), WAIT)
    )
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    time.sleep(0.2)
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert ticks == [1.0]  # the tick runs at once, then every WAIT seconds


def test_new_work_wakes_a_waiting_loop(app: bootstrap.App) -> None:
    stop = threading.Event()
    loop = WorkLoop(app.worker(), stop, max_wait_seconds=WAIT)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        ingest_file(app.store, WORKED_EXAMPLE)
        deadline = time.monotonic() + WAIT
        while loop.worker.stats.by_kind.get("post", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(WAIT)
    assert loop.wakes >= 1
    assert loop.worker.stats.by_kind.get("post", 0) >= 1, "worked long before the 30 s poll"
