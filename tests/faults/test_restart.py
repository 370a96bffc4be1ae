"""kill -9 of ``revbridge serve`` mid-work, then a new one: measured, not asserted.

The figure (restart to ready) is printed; the house rule is that tests never pass or fail
on wall-clock time. What is asserted is that the restarted service works again at all and
that the checker holds: the drop folder, the store and the GL files agree, nothing lost,
nothing booked twice. ``python -m tests.faults.restart_time`` runs more rounds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from revbridge.orchestrate.handlers import handlers
from revbridge.orchestrate.owners import owner_of
from revbridge.orchestrate.worker import Worker
from tests.faults.checker import ERPHistory, SenderHistory, expected_journal_keys
from tests.faults.corpus import write_corpus
from tests.faults.harness import FakeClock, ingest_all, make_deployment, record, scale
from tests.faults.restart_time import one_round


def test_restart_after_kill_9_of_serve(work: Path) -> None:
    result = one_round(work, files=scale(12, 60), lease_seconds=2.0, seed=81)
    print(
        f"\nrestart to ready after kill -9 of serve: banner {result.banner}, ready "
        f"{result.ready}, new work posted {result.posted}, caught up {result.caught_up} "
        f"(s from the new process's start; killed with work left: "
        f"{result.killed_with_work_left}, holding leases on {result.held})"
    )
    record("restart after kill -9 of serve", result.report).assert_ok()
    assert result.ready is not None, "the restarted service never acknowledged a new file"
    assert result.posted is not None, "the restarted service never posted the new file"
    assert result.caught_up is not None, "the restarted service never caught up"


def test_a_restarted_worker_posts_without_waiting_for_a_dead_workers_lease(work: Path) -> None:
    """A worker of this host killed while it held the target's post lease (60 s): the
    restarted worker sees that the lease's owner is gone and takes the job over at once,
    rather than when the lease expires (which the fake clock never reaches here)."""
    deployment = make_deployment(work / "deploy")  # lease_seconds: 60, the default
    first, second = write_corpus(work / "msgs", seed=82, files=2, resend_every=0)
    clock = FakeClock()
    app, _erp = deployment.app(clock)
    senders = SenderHistory()
    try:
        ingest_all(app, [first], senders)
        table = {k: v for k, v in handlers(app.services).items() if k != "post"}
        Worker(app.store, table, clock).run_until_idle(max_wait_seconds=0)
        with app.store.unit_of_work() as uow:  # by a process of this host, then killed
            assert uow.jobs.claim(killed_process(), clock.now(), 60.0, ["post"]) is not None
    finally:
        app.close()

    clock.sleep(2.0)  # a new process, started at once
    app, _erp = deployment.app(clock)
    try:
        ingest_all(app, [second], senders)
        app.worker().run_until_idle(max_wait_seconds=0)
    finally:
        app.close()
    wanted = expected_journal_keys(second, deployment.master, deployment.rules)
    booked = {d.key for d in ERPHistory.from_fault_erp(deployment.erp_db).documents}
    assert wanted and wanted <= booked, "the new file's journals wait for the dead lease"


def killed_process() -> str:
    """The owner id of a process of this host that was then killed (kill -9, reaped)."""
    process = subprocess.Popen(["sleep", "60"])
    try:
        return owner_of(process.pid)
    finally:
        process.kill()
        process.wait()
