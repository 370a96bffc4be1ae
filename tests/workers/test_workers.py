"""Several ``revbridge worker`` processes on one store (PostgreSQL, and one SQLite file):
they share a backlog with per-key order kept, a killed one's jobs are taken over by
another worker under a newer fence, and the three-history checker finds nothing lost and
nothing doubled.

Figures (how the work was shared, how long after the kill a takeover came, beside the
lease left) are printed (``pytest -s``), never asserted: tests assert behaviour only.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.store.base import JobStatus
from tests.conftest import WORKED_EXAMPLE
from tests.faults.checker import ERPHistory, SenderHistory
from tests.faults.corpus import write_corpus
from tests.faults.erp import call_log
from tests.faults.harness import REVBRIDGE, Deployment, processes, record, scale, wait_for
from tests.pg import BACKENDS
from tests.workers.support import (
    banner_owner,
    causal_problems,
    check_deployment,
    deployment_on,
    ingest,
    ingest_here,
    jobs,
    open_store,
    order_problems,
    read_runs,
    start,
    worker_command,
)

LEASE = 2.0


def _store_causal_problems(deployment: object) -> list[str]:
    store = open_store(deployment)  # type: ignore[arg-type]
    try:
        return causal_problems(store)
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_processes_share_a_backlog(
    backend: str, work: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deployment_on(backend, work / "deploy", request, lease_seconds=60.0)
    paths = write_corpus(work / "msgs", seed=61, files=scale(8, 60))
    senders = SenderHistory()
    ingest(deployment, [*paths, *paths[:2]], senders)  # two files delivered twice
    go = work / "go"
    logs = [work / f"worker-{n}.jsonl" for n in range(3)]
    with processes() as started:
        for n, log in enumerate(logs):
            extra = ("--concurrency", "2") if n == 0 else ()
            start(
                worker_command(
                    deployment, log, "--until-idle", *extra, proc_args=("--start-when", str(go))
                ),
                started,
            )
        go.touch()
        answers = [p.communicate(timeout=180) for p in started]
    assert [p.returncode for p in started] == [0, 0, 0], [err for _out, err in answers]
    assert all("idle: processed" in out for out, _err in answers), answers

    gl = ERPHistory.from_gl_folder(deployment.folder / "gl-out")
    report = check_deployment(deployment, senders, gl, monkeypatch)
    record(f"3 worker processes, {backend}", report).assert_ok()
    assert report.posted == report.expected_journals > 0
    runs = read_runs(logs)
    assert order_problems(runs) == []
    assert _store_causal_problems(deployment) == []
    finished = jobs(deployment)
    assert [(j.id, j.kind, j.last_error) for j in finished if j.status != JobStatus.DONE] == []
    assert [j.id for j in finished if j.attempts != 1] == [], "a job was run more than once"
    assert sorted(r.job for r in runs) == sorted(j.id for j in finished)
    shares = Counter(r.owner for r in runs)
    print(f"\njobs {len(finished)} on {backend}, started by each worker: {dict(shares)}")


@pytest.mark.parametrize(
    ("backend", "point"), [("postgres", "before_commit"), ("sqlite", "after_commit")]
)
def test_a_killed_worker_hands_its_jobs_over_within_one_lease(
    backend: str,
    point: str,
    work: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that posts (``--kinds post``) stalls inside its first ERP call, before or
    after the ERP committed, and is killed there (SIGKILL), holding the post job's lease,
    just as two general workers start on a fresh backlog. They work it, and take the dead
    worker's job over when its lease expires: they wait for that moment, not for a poll."""
    deployment = deployment_on(
        backend, work / "deploy", request, lease_seconds=LEASE, post_batch_size=3
    )
    senders = SenderHistory()
    first = write_corpus(work / "first", seed=62, files=3, resend_every=0)
    ingest_here(deployment, first, senders)
    journals_only(deployment)  # post jobs are waiting: the posting worker takes one first
    ingest_here(deployment, write_corpus(work / "fresh", seed=63, files=scale(4, 30)), senders)
    marker, go = work / "hanging", work / "go"
    logs = [work / "poster.jsonl", work / "worker-1.jsonl", work / "worker-2.jsonl"]
    erp = ("--erp-db", str(deployment.erp_db))
    with processes() as started:
        others = [
            start(
                worker_command(
                    deployment,
                    log,
                    "--until-idle",
                    proc_args=(*erp, "--latency", "0.01", "--start-when", str(go)),
                ),
                started,
            )
            for log in logs[1:]
        ]
        hang = ("--hang", point, "--marker", str(marker))
        poster = start(
            worker_command(deployment, logs[0], "--kinds", "post", proc_args=(*erp, *hang)),
            started,
        )
        owner = banner_owner(poster)
        assert all(waiting(p) for p in others)
        assert wait_for(marker.exists, 60), "the posting worker never called the ERP"
        held = [j for j in jobs(deployment) if j.status == JobStatus.LEASED]
        go.touch()
        killed_at = time.time()
        poster.kill()
        poster.wait(timeout=30)
        answers = [p.communicate(timeout=180) for p in others]
    assert [p.returncode for p in others] == [0, 0], [err for _out, err in answers]
    assert [(j.kind, j.lease_owner) for j in held] == [("post", owner)]

    runs = read_runs(logs)
    [job] = held
    assert job.lease_expires_at is not None
    taker = next(r for r in runs if r.job == job.id and r.fence > job.fence)
    assert taker.owner != owner
    taken_after = taker.t - killed_at
    lease_left = job.lease_expires_at.timestamp() - killed_at
    print(
        f"\n[{backend}, killed {point}] job {job.id} taken over by {taker.owner} "
        f"{taken_after:.3f} s after the kill (its lease had {lease_left:.3f} s left; "
        f"lease {LEASE:g} s); jobs started per worker: {dict(Counter(r.owner for r in runs))}"
    )
    report = check_deployment(
        deployment, senders, ERPHistory.from_fault_erp(deployment.erp_db), monkeypatch
    )
    record(f"worker killed {point}, {backend}", report).assert_ok()
    assert report.posted == report.expected_journals > 0
    assert order_problems(runs) == []
    assert {j.status for j in jobs(deployment)} == {JobStatus.DONE}
    lookups = [c for c in call_log(deployment.erp_db) if c.op == "lookup"]
    assert lookups, "the taker looked the in-flight keys up before sending anything"
    if point == "after_commit":
        assert lookups[0].outcome != "found 0", "the dead worker's documents were found"


def journals_only(deployment: Deployment) -> None:
    """Normalise and journal what is queued, in this process: post jobs are left ready."""
    app = bootstrap.build(deployment.config)
    try:
        worker = app.worker()
        worker.handlers = {k: h for k, h in worker.handlers.items() if k != "post"}
        worker.run_until_idle(max_wait_seconds=0)
    finally:
        app.close()


def waiting(process: subprocess.Popen[str]) -> bool:
    assert process.stdout is not None
    return process.stdout.readline().startswith("waiting for")


# ------------------------------------------------------------------------ the command


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_while_idle_stops_at_once_with_exit_0(
    backend: str, work: Path, request: pytest.FixtureRequest
) -> None:
    deployment = deployment_on(backend, work / "deploy", request, lease_seconds=LEASE)
    with processes() as started:
        worker = start([REVBRIDGE, "worker", "--config", str(deployment.config_path)], started)
        owner = banner_owner(worker)
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        print(f"\n[{backend}] stopped {time.monotonic() - sent:.3f} s after SIGTERM")
    assert worker.returncode == 0, err
    assert f"revbridge worker {owner} stopped: processed 0 jobs" in out
    assert "Traceback" not in err


def test_sigterm_mid_job_finishes_the_job_first(work: Path, request: pytest.FixtureRequest) -> None:
    """SIGTERM arrives while the worker is inside an ERP call: the call completes, the
    result is recorded and the lease given up, then the worker exits 0."""
    deployment = deployment_on("postgres", work / "deploy", request, lease_seconds=60.0)
    senders = SenderHistory()
    ingest_here(deployment, [WORKED_EXAMPLE], senders)
    marker = work / "in-call"
    proc_args = ("--erp-db", str(deployment.erp_db), "--hang", "before_commit")
    with processes() as started:
        worker = start(
            worker_command(
                deployment,
                work / "worker.jsonl",
                proc_args=(*proc_args, "--pause", "0.5", "--marker", str(marker)),
            ),
            started,
        )
        assert wait_for(marker.exists, 60)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "stopped: processed" in out
    finished = jobs(deployment)
    assert [j for j in finished if j.status == JobStatus.LEASED] == []
    post = [j for j in finished if j.kind == "post" and j.status == JobStatus.DONE]
    assert post, "the post job in hand was completed"
    assert [c.outcome for c in call_log(deployment.erp_db) if c.op == "post"][:1] == ["ok"]


def test_an_unknown_kind_is_refused(work: Path, request: pytest.FixtureRequest) -> None:
    deployment = deployment_on("sqlite", work / "deploy", request, lease_seconds=LEASE)
    done = subprocess.run(
        [REVBRIDGE, "worker", "--config", str(deployment.config_path), "--kinds", "post,bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown job kind bogus" in done.stderr
