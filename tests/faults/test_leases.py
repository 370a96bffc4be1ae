"""Leases: a worker paused past its lease, and several workers racing for the same jobs.

The paused worker is made deterministic without threads: worker A's ERP calls a hook in
the middle of A's post call, and the hook moves the shared fake clock past A's lease and
lets worker B (its own store connection, its own ERP connection) run. When the hook
returns, A carries on as a process waking from a long GC pause or a frozen VM would.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from revbridge.domain.journal import Journal
from revbridge.orchestrate.handlers import ERP_INDETERMINATE
from revbridge.store.base import JobStatus
from tests.conftest import WORKED_EXAMPLE
from tests.faults.checker import SenderHistory
from tests.faults.corpus import write_corpus
from tests.faults.erp import call_log
from tests.faults.harness import (
    ROOT,
    Deployment,
    FakeClock,
    ingest_all,
    make_deployment,
    processes,
    record,
    run_until_quiet,
    runner_command,
    scale,
)

LEASE = 30.0


def paused_worker(
    work: Path, caplog: pytest.LogCaptureFixture, *, pause_at: str, idempotent: bool
) -> tuple[Deployment, SenderHistory, dict[str, int]]:
    """A claims the post job and calls the ERP; at ``pause_at`` it stalls past its lease,
    B takes the job over and finishes it; then A wakes and tries to commit."""
    deployment = make_deployment(work / "deploy", lease_seconds=LEASE)
    paths = [WORKED_EXAMPLE, *write_corpus(work / "msgs", seed=41, files=2, resend_every=0)]
    clock = FakeClock()
    app_b, erp_b = deployment.app(clock, idempotent=idempotent)
    worker_b = app_b.worker()
    paused = {"times": 0}

    def pause(phase: str, _journals: Sequence[Journal]) -> None:
        if phase != pause_at or paused["times"]:
            return
        paused["times"] += 1
        clock.jump(LEASE + 1)  # A sleeps past its lease ...
        while worker_b.run_once():  # ... while B takes its job over and finishes
            pass

    app_a, erp_a = deployment.app(clock, idempotent=idempotent, hook=pause)
    senders = SenderHistory()
    try:
        ingest_all(app_a, paths, senders)
        worker_a = app_a.worker()
        worker_a.owner, worker_b.owner = "A", "B"
        with caplog.at_level(logging.WARNING, logger="revbridge.orchestrate.worker"):
            while worker_a.run_once() and not paused["times"]:
                pass
        assert paused["times"] == 1
        assert worker_b.stats.by_kind.get("post", 0) >= 1, "B took the post job over"
        assert "lease lost" in caplog.text, "A's late commit was refused (LeaseLost)"
        run_until_quiet(app_a, clock)
    finally:
        app_a.close()
        app_b.close()
    outcomes = Counter(erp_a.outcomes) + Counter(erp_b.outcomes)
    return deployment, senders, dict(outcomes)


def test_a_worker_paused_after_the_erp_committed_wakes_to_lease_lost(
    work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A's call committed but its answer is late: B looks the keys up before sending
    anything (found, recorded as posted), and A's own record is refused."""
    deployment, senders, outcomes = paused_worker(
        work, caplog, pause_at="after_commit", idempotent=False
    )
    report = record("paused past lease, after commit", deployment.check(senders)).assert_ok()
    assert report.posted == report.expected_journals > 0
    lookups = [c for c in call_log(deployment.erp_db) if c.op == "lookup"]
    assert lookups and lookups[0].outcome != "found 0", "B found A's documents by key"
    assert outcomes.get("absorbed_second_document", 0) == 0


def test_a_worker_paused_before_the_erp_committed_does_not_book_twice(
    work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same pause against a target that books a second document per key: B finds the
    keys absent while A's call may still commit, so it sends nothing and opens an
    ``erp_indeterminate`` item per key. A's late commit is the only document; retrying the
    items looks the keys up again and records A's documents as posted."""
    deployment, senders, _outcomes = paused_worker(
        work, caplog, pause_at="before_commit", idempotent=False
    )
    before = record("paused past lease, before commit", deployment.check(senders))
    assert before.doubled == []
    assert before.open_exceptions.get(ERP_INDETERMINATE, 0) > 0, "B left A's keys to a person"

    posts = len([c for c in call_log(deployment.erp_db) if c.op == "post"])
    clock = FakeClock()
    app, _erp = deployment.app(clock)
    try:
        queue = app.work_queue()
        items = queue.items("open", reason=ERP_INDETERMINATE)
        assert items
        for item in items:
            queue.retry(item.item.id, "clerk")
        run_until_quiet(app, clock)
    finally:
        app.close()
    report = record("paused past lease, before commit, retried", deployment.check(senders))
    assert report.doubled == []
    report.assert_ok()
    assert report.posted == report.expected_journals > 0
    after = len([c for c in call_log(deployment.erp_db) if c.op == "post"])
    assert after == posts, "the retry sent nothing: A's documents were found by key"


def test_a_worker_paused_before_the_erp_committed_with_an_idempotent_erp(
    work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same pause against a target that refuses a second document for a key (Tryton
    with revbridge_erp): nothing doubles, A's late call is absorbed."""
    deployment, senders, outcomes = paused_worker(
        work, caplog, pause_at="before_commit", idempotent=True
    )
    report = record(
        "paused past lease, before commit, idempotent ERP", deployment.check(senders)
    ).assert_ok()
    assert report.posted == report.expected_journals > 0
    assert outcomes.get("absorbed_second_document", 0) > 0


def test_several_workers_racing_for_the_same_jobs(work: Path) -> None:
    """Four worker processes on one store and one ERP: every job is run once (one attempt,
    nobody's lease expires), the ERP is sent each key once, and every journal is posted."""
    deployment = make_deployment(work / "deploy", lease_seconds=60.0, post_batch_size=2)
    paths = [*write_corpus(work / "msgs", seed=42, files=scale(12, 80)), WORKED_EXAMPLE]
    app, _erp = deployment.app()
    senders = SenderHistory()
    try:
        ingest_all(app, paths, senders)
    finally:
        app.close()
    go = work / "go"
    with processes() as started:
        for number in range(4):
            started.append(
                subprocess.Popen(
                    runner_command(
                        deployment,
                        *("--owner", f"racer-{number}", "--latency", "0.01"),
                        *("--start-when", str(go), "--pace", "0.01"),
                    ),
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for process in started:  # all four built and waiting: then they race
            assert process.stdout is not None and "ready" in process.stdout.readline()
        go.touch()
        answers = [p.communicate(timeout=120) for p in started]
        assert [p.returncode for p in started] == [0, 0, 0, 0], [e for _o, e in answers]
    shares = [json.loads(out.splitlines()[-1]).get("processed") for out, _err in answers]

    report = record("4 workers racing", deployment.check(senders)).assert_ok()
    assert report.posted == report.expected_journals > 0
    app, _erp = deployment.app()
    try:
        with app.store.unit_of_work() as uow:
            jobs = uow.jobs.all(limit=10**6)
    finally:
        app.close()
    assert all(j.status == JobStatus.DONE for j in jobs)
    assert [j.id for j in jobs if j.attempts != 1] == [], "a job was run more than once"
    sent = Counter(k for c in call_log(deployment.erp_db) if c.op == "post" for k in c.keys)
    assert set(sent.values()) == {1}, "the ERP was sent a key more than once"
    print(f"\njobs {len(jobs)}, run by the four workers: {shares}")
