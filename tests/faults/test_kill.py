"""kill -9: of a worker at named points around the ERP call and at random moments, and
of a sender in the middle of storing a big file.

The worker processes are ``python -m tests.faults.runner`` (the application built with the
fault ERP, whose book is its own SQLite file, so what the ERP committed survives the
kill). Leases are short so that the next worker takes over what the dead one held.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.checker import ERPHistory, SenderHistory, integrity_check
from tests.faults.corpus import write_big_file, write_corpus
from tests.faults.erp import FAULT_ENV, call_log
from tests.faults.harness import (
    ROOT,
    Deployment,
    ingest_all,
    ingest_command,
    make_deployment,
    processes,
    record,
    run_runner,
    runner_command,
    scale,
    wait_for,
)

LEASE = 0.5


def delivered(deployment: Deployment, work: Path, *, seed: int, files: int) -> SenderHistory:
    """A corpus ingested in process (every file twice), nothing worked yet."""
    paths = write_corpus(work / "msgs", seed=seed, files=files)
    app, _erp = deployment.app()
    senders = SenderHistory()
    try:
        ingest_all(app, paths + paths, senders)
    finally:
        app.close()
    return senders


def posted_in_store(deployment: Deployment) -> set[str]:
    app, _erp = deployment.app()
    try:
        with app.store.unit_of_work() as uow:
            return {r.journal.key for r in uow.journals.all() if r.erp_document_id}
    finally:
        app.close()


@pytest.mark.parametrize(
    ("point", "booked_before_restart"),
    [("before_commit", 0), ("after_commit", 4), ("mid_batch:2", 2)],
)
def test_kill_9_at_a_fault_point_around_the_erp_call(
    work: Path, point: str, booked_before_restart: int
) -> None:
    deployment = make_deployment(work / "deploy", lease_seconds=LEASE, post_batch_size=4)
    senders = delivered(deployment, work, seed=21, files=6)

    # mid_batch comes from the environment, the others from the command line: both work
    if point.startswith("mid_batch"):
        first = run_runner(deployment, env={FAULT_ENV: point})
    else:
        first = run_runner(deployment, "--fault", point)
    assert first.killed, first.stderr

    booked = {d.key for d in ERPHistory.from_fault_erp(deployment.erp_db).documents}
    assert len(booked) == booked_before_restart
    assert not booked & posted_in_store(deployment), "the ERP committed; the store never heard"
    assert integrity_check(deployment.store_path) == "ok"

    second = run_runner(deployment, env={FAULT_ENV: ""})
    assert second.returncode == 0, second.stderr
    report = record(f"kill -9 {point}", deployment.check(senders)).assert_ok()
    assert report.posted == report.expected_journals > booked_before_restart
    lookups = [c for c in call_log(deployment.erp_db) if c.op == "lookup"]
    assert lookups and lookups[0].outcome == f"found {booked_before_restart}"


def test_kill_9_at_random_moments(work: Path) -> None:
    deployment = make_deployment(work / "deploy", lease_seconds=LEASE, post_batch_size=2)
    senders = delivered(deployment, work, seed=22, files=scale(8, 40))
    rng = random.Random(22)
    kills = 0
    with processes() as started:
        for _ in range(scale(4, 25)):
            process = subprocess.Popen(
                runner_command(deployment, "--latency", "0.02"),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append(process)
            time.sleep(rng.uniform(0.3, 1.0))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait(timeout=30)
            assert integrity_check(deployment.store_path) == "ok"
    final = run_runner(deployment)
    assert final.returncode == 0, final.stderr
    report = record(f"kill -9 at random moments ({kills} kills)", deployment.check(senders))
    report.assert_ok()
    assert report.posted == report.expected_journals > 0


def _rchar(pid: int) -> int:
    """Bytes the process has read so far (``/proc/<pid>/io``), 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


@pytest.mark.parametrize("phase", ["storing", "committing"])
def test_kill_9_during_ingest_of_a_big_file(work: Path, phase: str) -> None:
    """The sender is killed while the file's bytes go into the store (read 3x: hash, scan,
    store) or while the transaction commits (the WAL grows). Either way it was told
    nothing; the store is intact; delivering again is accepted (or a duplicate, if the
    commit made it) and everything in the file ends posted or as an open item."""
    deployment = make_deployment(work / "deploy", lease_seconds=LEASE)
    big = work / "big.835"
    size = write_big_file(big, megabytes=scale(6, 200), seed=23)
    deployment.app()[0].close()  # create the store before the sender starts
    wal = Path(f"{deployment.store_path}-wal")
    senders = SenderHistory()
    with processes() as started:
        sender = subprocess.Popen(
            [*ingest_command(deployment), str(big)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(sender)
        if phase == "storing":
            hit = wait_for(lambda: _rchar(sender.pid) >= 2 * size + size // 2, 60, 0.002)
        else:
            hit = wait_for(lambda: wal.exists() and wal.stat().st_size > size // 2, 60, 0.002)
        alive = sender.poll() is None
        sender.send_signal(signal.SIGKILL)
        out, _err = sender.communicate(timeout=30)
        senders.add_cli("sender", [big], out if not alive else "")
    print(f"\nkill during {phase}: trigger seen {hit}, sender still running {alive}")
    assert integrity_check(deployment.store_path) == "ok"

    again = subprocess.run(
        [*ingest_command(deployment), str(big)],
        capture_output=True,
        text=True,
        check=True,
    )
    senders.add_cli("sender", [big], again.stdout)
    assert senders.deliveries[-1].told in ("accepted", "duplicate")
    assert run_runner(deployment).returncode == 0
    report = record(f"kill -9 during ingest ({phase})", deployment.check(senders)).assert_ok()
    assert report.posted == report.expected_journals > 0
    assert report.covered.get("rejected_transaction") == 1  # the 837 in the middle


def test_kill_9_of_a_sender_in_the_middle_of_many_files(work: Path) -> None:
    deployment = make_deployment(work / "deploy", lease_seconds=LEASE)
    paths = write_corpus(work / "msgs", seed=24, files=scale(30, 200), resend_every=0)
    deployment.app()[0].close()
    senders = SenderHistory()
    command = ingest_command(deployment)
    with processes() as started:
        sender = subprocess.Popen(
            command + [str(p) for p in paths], stdout=subprocess.PIPE, text=True
        )
        started.append(sender)
        wait_for(lambda: _raw_count(deployment) >= len(paths) // 3, 60, 0.005)
        killed_mid_way = sender.poll() is None
        sender.send_signal(signal.SIGKILL)
        out, _ = sender.communicate(timeout=30)
        senders.add_cli("killed", paths, out)
    told_before = senders.told()
    again = subprocess.run(
        command + [str(p) for p in paths], capture_output=True, text=True, check=True
    )
    senders.add_cli("again", paths, again.stdout)
    assert run_runner(deployment).returncode == 0
    report = record("kill -9 of a sender mid-batch", deployment.check(senders)).assert_ok()
    if killed_mid_way:  # (it could, on a fast machine, have finished first)
        assert told_before == {"nothing": len(paths)}
    assert report.told["duplicate"] > 0, "what the killed sender stored is a duplicate now"
    assert report.posted == report.expected_journals > 0


def _raw_count(deployment: Deployment) -> int:
    try:
        conn = sqlite3.connect(f"file:{deployment.store_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT COUNT(*) FROM raw_messages").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()
