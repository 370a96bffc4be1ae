"""Jobs run with the cyclic collector's thresholds raised, and they are put back after."""

from __future__ import annotations

import gc
import threading

import pytest

from revbridge import bootstrap
from revbridge.orchestrate.clock import SystemClock
from revbridge.orchestrate.worker import (
    JOB_GC_THRESHOLDS,
    JobContext,
    Worker,
    collecting_less,
)


def test_a_job_runs_with_the_raised_thresholds(app: bootstrap.App) -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    def handler(ctx: JobContext) -> None:
        seen.append(gc.get_threshold())
        with ctx.store.unit_of_work() as uow:
            ctx.complete(uow)

    with app.store.unit_of_work() as uow:
        uow.jobs.enqueue("x", "k", {})
    Worker(app.store, {"x": handler}, SystemClock()).run_until_idle(max_wait_seconds=0)
    assert seen == [JOB_GC_THRESHOLDS]
    assert gc.get_threshold() == before


def test_thresholds_come_back_after_a_failure_and_when_blocks_overlap() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), collecting_less():
        raise RuntimeError("job failed")
    assert gc.get_threshold() == before
    inside, leave = threading.Event(), threading.Event()

    def other_job() -> None:
        with collecting_less():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other_job)
    thread.start()
    inside.wait(10)
    with collecting_less():
        assert gc.get_threshold() == JOB_GC_THRESHOLDS
    assert gc.get_threshold() == JOB_GC_THRESHOLDS  # the other job still runs
    leave.set()
    thread.join(10)
    assert gc.get_threshold() == before
