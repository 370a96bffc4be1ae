"""Disk full: the store lives on a small tmpfs, which is then filled.

A delivery that does not fit must fail loudly (the sender is not told "accepted"), the
worker must not turn the shortage into lost work, the database must stay intact, and once
space is freed the same delivery is accepted and everything is posted.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from revbridge.ingest.x12_files import ingest_file
from tests.faults.checker import SenderHistory, integrity_check
from tests.faults.corpus import write_big_file, write_corpus
from tests.faults.harness import (
    FakeClock,
    ingest_all,
    ingest_command,
    make_deployment,
    record,
    run_until_quiet,
)

DISK = "8m"


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                written += os.write(fd, chunk if written % 65536 == 0 else chunk[:1])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path: Path) -> object:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_fails_loudly_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    deployment = make_deployment(tmp_path / "deploy", store_path=small_disk / "revbridge.db")
    early = write_corpus(tmp_path / "msgs", seed=61, files=6, resend_every=0)
    big = tmp_path / "big.835"
    write_big_file(big, megabytes=1.5, seed=61)
    clock = FakeClock()
    app, _erp = deployment.app(clock)
    senders = SenderHistory()
    outcomes: Counter[str] = Counter()
    try:
        ingest_all(app, early[:3], senders)
        run_until_quiet(app, clock)
        ingest_all(app, early[3:], senders)  # stored, not yet worked when the disk fills

        # no slack left in the WAL either: every transaction from now on needs new space
        conn = sqlite3.connect(deployment.store_path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
        filler = small_disk / "filler"
        fill(filler)

        # a sender delivering while the disk is full is told nothing, and hears why
        refused = subprocess.run(
            [*ingest_command(deployment), str(big)], capture_output=True, text=True, check=False
        )
        senders.add_cli("cli", [big], refused.stdout)
        assert refused.returncode != 0
        assert "full" in refused.stderr.lower(), refused.stderr[-500:]
        try:
            told = ingest_file(app.store, big).status
        except sqlite3.OperationalError as exc:  # in process: the error reaches the caller
            assert "full" in str(exc).lower()
            told = None
        senders.add("in-process", big, told)
        assert senders.deliveries[-1].told is None, "accepted although nothing could be stored"

        # the worker on a full disk: whatever it does, nothing may be lost
        worker = app.worker()
        for _ in range(30):
            try:
                outcomes["ran" if worker.run_once() else "idle"] += 1
            except sqlite3.OperationalError as exc:
                outcomes[f"error: {exc}"] += 1
        assert integrity_check(deployment.store_path) == "ok"
        record("disk full, while full", deployment.check(senders, final=False)).assert_ok()

        filler.unlink()  # space is back: deliver again, work until quiet
        senders.add("in-process", big, ingest_file(app.store, big).status)
        assert senders.deliveries[-1].told == "accepted"
        run_until_quiet(app, clock)
    finally:
        app.close()
    print(f"\nworker on a full disk: {dict(outcomes)}")
    report = record("disk full, after space freed", deployment.check(senders)).assert_ok()
    assert report.posted == report.expected_journals > 0
    assert "processing_error" not in report.open_exceptions, "a full disk parked work"
