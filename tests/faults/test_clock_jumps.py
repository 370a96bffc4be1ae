"""Clock jumps: two workers whose clocks jump hours backwards and forwards, independently.

A clock behind makes its own leases look long to the other worker, a clock ahead makes
everybody's leases look expired, backoffs land hours away. The two workers interleave
(and, in the middle of A's ERP call, after the ERP committed, B may run: a takeover of a
lease that looks expired to B). Nothing may be lost or booked twice, and no job's work may
be committed twice: of two runs of one job that overlap, at most one completes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from revbridge.domain.journal import Journal
from revbridge.orchestrate.handlers import handlers
from revbridge.orchestrate.worker import Handler, JobContext, Worker
from revbridge.store.base import JobStatus
from tests.conftest import WORKED_EXAMPLE
from tests.faults.checker import SenderHistory
from tests.faults.corpus import write_corpus
from tests.faults.erp import FaultPlan
from tests.faults.harness import (
    FakeClock,
    ingest_all,
    make_deployment,
    record,
    run_until_quiet,
    scale,
)

HOUR = 3600.0


class SkewedClock:
    """A worker's clock: shared time plus this worker's own (jumping) offset."""

    def __init__(self, base: FakeClock) -> None:
        self.base = base
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return self.base.now() + self.offset

    def sleep(self, seconds: float) -> None:
        self.base.sleep(seconds)


@dataclass
class Runs:
    """Every handler run: which job, whether another run of it was under way, the end."""

    active: Counter[int] = field(default_factory=Counter)
    ends: list[tuple[int, bool, str]] = field(default_factory=list)

    def instrument(self, table: Mapping[str, Handler]) -> dict[str, Handler]:
        return {kind: self._wrap(handler) for kind, handler in table.items()}

    def _wrap(self, handler: Handler) -> Handler:
        def run(ctx: JobContext) -> None:
            job = ctx.job.id
            overlapping = self.active[job] > 0
            self.active[job] += 1
            try:
                handler(ctx)
            except BaseException as exc:
                self.ends.append((job, overlapping, type(exc).__name__))
                raise
            finally:
                self.active[job] -= 1
            self.ends.append((job, overlapping, "completed"))

        return run

    def completed(self) -> Counter[int]:
        return Counter(job for job, _o, end in self.ends if end == "completed")

    def overlaps(self) -> list[tuple[int, bool, str]]:
        return [e for e in self.ends if e[1]]


def test_clock_jumps_lose_nothing_and_run_no_job_twice(work: Path) -> None:
    rng = random.Random(51)
    deployment = make_deployment(work / "deploy", lease_seconds=60.0, post_batch_size=1)
    paths = [*write_corpus(work / "msgs", seed=51, files=scale(8, 60)), WORKED_EXAMPLE]
    base = FakeClock()
    clocks = {"A": SkewedClock(base), "B": SkewedClock(base)}
    runs = Runs()
    workers: dict[str, Worker] = {}
    nested = {"count": 0}

    def during_a_call(phase: str, _journals: Sequence[Journal]) -> None:
        """After the ERP committed A's call, B's clock may jump hours ahead, which makes
        A's lease look expired to B, and B runs."""
        if phase == "after_commit" and rng.random() < 0.5:
            nested["count"] += 1
            if rng.random() < 0.7:
                clocks["B"].offset = clocks["A"].offset + timedelta(hours=2)
            workers["B"].run_once()

    plan = FaultPlan(timeout_rate=0.15, transient_rate=0.1, seed=51)
    apps = {}
    for name in ("A", "B"):
        hook: Callable[[str, Sequence[Journal]], None] | None = (
            during_a_call if name == "A" else None
        )
        app, _erp = deployment.app(clocks[name], plan, hook=hook)
        apps[name] = app
        workers[name] = Worker(
            app.store,
            runs.instrument(handlers(app.services)),
            clocks[name],
            lease_seconds=60.0,
            max_attempts=50,
            owner=name,
            rng=random.Random(51),
        )
    senders = SenderHistory()
    jumps = 0
    try:
        ingest_all(apps["A"], paths + paths[:3], senders)
        for step in range(scale(400, 4000)):
            action = rng.random()
            if action < 0.15:
                clock = clocks[rng.choice("AB")]
                clock.offset += timedelta(seconds=rng.choice([-3, -1, 1, 3, 25]) * HOUR)
                clock.offset = max(min(clock.offset, timedelta(hours=30)), timedelta(hours=-6))
                jumps += 1
            elif action < 0.25:
                base.sleep(rng.choice([0.5, 5, 70]))
            else:
                workers["A" if rng.random() < 0.7 else "B"].run_once()
            if step % 50 == 0:
                deployment.check(senders, final=False).assert_ok()
        final = FakeClock(max(c.now() for c in clocks.values()) + timedelta(hours=1))
        apps["A"].clock = final
        run_until_quiet(apps["A"], final)
    finally:
        for app in apps.values():
            app.close()

    report = record(
        f"clock jumps ({jumps} jumps, {nested['count']} runs inside an ERP call, "
        f"{len(runs.overlaps())} overlapping runs)",
        deployment.check(senders),
    ).assert_ok()
    assert report.posted == report.expected_journals > 0
    twice = {job: n for job, n in runs.completed().items() if n > 1}
    assert twice == {}, f"jobs whose work was committed twice: {twice}"
    assert jumps > 0


class Lost(AssertionError):
    """The checker found journals neither posted nor named by an open item."""


def test_a_post_job_run_by_a_clock_behind_the_store_leaves_nothing_behind(work: Path) -> None:
    deployment = make_deployment(work / "deploy")
    paths = [WORKED_EXAMPLE, *write_corpus(work / "msgs", seed=52, files=1, resend_every=0)]
    clock = FakeClock()
    app, _erp = deployment.app(clock)
    senders = SenderHistory()
    try:
        ingest_all(app, paths, senders)
        # normalise and journal everything; no post job runs yet
        table = {k: v for k, v in handlers(app.services).items() if k != "post"}
        Worker(app.store, table, clock).run_until_idle(max_wait_seconds=0)
        with app.store.unit_of_work() as uow:
            posts = [j for j in uow.jobs.all(JobStatus.READY) if j.kind == "post"]
            pending = uow.outbox.due(deployment.config.ledger["target"], clock.now(), 1000)
        assert len(posts) == 1, "one post job is ready for all the new journals"
        later = [i for i in pending if i.run_after > posts[0].run_after]
        assert later, "journals were prepared after the post job was enqueued"

    finally:
        app.close()
    # another worker process, whose clock is a little behind the one that stamped the items
    clock.at = posts[0].run_after
    app, _erp = deployment.app(clock)
    try:
        worker = app.worker()
        assert worker.run_once()
        assert worker.stats.by_kind == {"post": 1}, worker.stats
        clock.jump(3600)  # time goes on; work until there is nothing left to do
        run_until_quiet(app, clock)
    finally:
        app.close()
    report = record("post job behind the store's clock", deployment.check(senders))
    if report.lost:
        raise Lost("\n".join([report.summary(), *report.lost]))
    report.assert_ok()


class Held(AssertionError):
    """Posting was held back although the target never asked for a wait."""


def test_a_clock_stepped_back_does_not_hold_the_target_back(work: Path) -> None:
    deployment = make_deployment(work / "deploy")
    clock = FakeClock()
    app, _erp = deployment.app(clock)  # the target's guard starts here
    senders = SenderHistory()
    try:
        ingest_all(app, [WORKED_EXAMPLE], senders)
        clock.jump(-30 * 60)  # the clock steps back half an hour
        worker = app.worker()
        worker.run_until_idle(max_wait_seconds=60)
        with app.store.unit_of_work() as uow:
            waiting = [j.last_error for j in uow.jobs.all(JobStatus.READY) if j.kind == "post"]
    finally:
        app.close()
    report = deployment.check(senders, final=False).assert_ok()
    if report.erp_documents == 0:
        raise Held(f"nothing posted; the post job waits: {waiting}")
    assert report.erp_documents == 3
