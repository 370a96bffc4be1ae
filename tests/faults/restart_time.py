"""Restart to ready after kill -9: how long a new ``revbridge serve`` takes to work again.

    python -m tests.faults.restart_time [--rounds 5] [--files 40] [--lease-seconds 60]

Each round: a ``revbridge serve`` (GL target) is given a drop folder full of 835 files;
once it has booked some of them, and before it has finished, it is killed with SIGKILL.
A new ``revbridge serve`` is started at once and a fresh file is dropped in the inbox.
Measured from the start of the new process:

- ``banner``: it printed "revbridge serving" (store opened, migrated, durability checked);
- ``ready``: the fresh file was acknowledged (moved to ``inbox/accepted/``): the first
  moment the restarted service provably does new work;
- ``posted``: the fresh file's journals are booked (post jobs are keyed by target, so a
  post job the dead process had leased holds them back until its lease expires);
- ``caught_up``: nothing is left ready or leased: everything the dead process held has
  been taken over. Jobs it had leased wait for their lease to expire (``lease_seconds``),
  so this figure is bounded below by the lease, not by the restart.

After each round the fault checker compares the drop folder (what the senders were
told), the store and the GL files (the ERP's book). Figures are printed, not asserted.
Run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.faults.checker import ERPHistory, Report, SenderHistory, expected_journal_keys
from tests.faults.corpus import write_corpus
from tests.faults.harness import REVBRIDGE, Deployment, make_deployment, wait_for


@dataclass(frozen=True, slots=True)
class Measurement:
    banner: float | None
    ready: float | None
    posted: float | None
    caught_up: float | None
    killed_with_work_left: bool
    held: list[str]  # kinds of the jobs the killed process had leased
    report: Report


class _Banner:
    """Reads a process's stdout in a thread; notes when the serving banner appeared."""

    def __init__(self, process: subprocess.Popen[str], started: float) -> None:
        self.at: float | None = None
        self._started = started
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                if self.at is None and "serving" in line:
                    self.at = time.monotonic() - self._started

    def join(self) -> None:
        self._thread.join(timeout=30)


def serve(deployment: Deployment, log: Path, *, banner: bool = False) -> subprocess.Popen[str]:
    with log.open("ab") as errors:
        return subprocess.Popen(
            [REVBRIDGE, "serve", "--config", str(deployment.config_path)],
            stdout=subprocess.PIPE if banner else subprocess.DEVNULL,
            stderr=errors,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _query(store: Path, sql: str, params: list[str] | None = None) -> list[tuple[object, ...]]:
    """Rows of a read-only query (no lock taken); empty if the store cannot be read."""
    try:
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        return list(conn.execute(sql, params or []).fetchall())
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def unfinished(store: Path) -> int:
    """Jobs ready or leased (-1 if unreadable)."""
    rows = _query(store, "SELECT COUNT(*) FROM jobs WHERE status IN ('ready', 'leased')")
    return int(str(rows[0][0])) if rows else -1


def leased_kinds(store: Path) -> list[str]:
    return sorted(str(r[0]) for r in _query(store, "SELECT kind FROM jobs WHERE status = 'leased'"))


def posted(store: Path, keys: set[str]) -> bool:
    """All these journals are recorded as posted."""
    marks = ", ".join("?" * len(keys))
    rows = _query(
        store,
        f"SELECT COUNT(*) FROM journals WHERE status = 'posted' AND key IN ({marks})",
        sorted(keys),
    )
    return bool(rows) and int(str(rows[0][0])) == len(keys)


def drop(path: Path, inbox: Path) -> Path:
    """Deliver into the drop folder the way senders should: write elsewhere, rename in."""
    target = inbox / path.name
    os.replace(path, target)
    return target


def one_round(folder: Path, *, files: int, lease_seconds: float, seed: int) -> Measurement:
    deployment = make_deployment(
        folder / "deploy", lease_seconds=lease_seconds, poll_seconds=0.05, post_batch_size=2
    )
    staging = folder / "staging"
    messages = write_corpus(staging, seed=seed, files=files)
    marker = write_corpus(staging / "marker", seed=seed + 1, files=1, resend_every=0)[0]
    marker_keys = expected_journal_keys(marker, deployment.master, deployment.rules)
    gl = folder / "deploy" / "gl-out"
    first = serve(deployment, folder / "serve-1.log")
    try:
        for path in messages:
            drop(path, deployment.inbox)
        wait_for(lambda: any(gl.glob("gl-*.csv")) or first.poll() is not None, 120, 0.005)
        if first.poll() is not None:
            tail = (folder / "serve-1.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the first serve exited by itself ({first.returncode}): {tail}")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    left = unfinished(deployment.store_path)
    held = leased_kinds(deployment.store_path)

    started = time.monotonic()
    second = serve(deployment, folder / "serve-2.log", banner=True)
    banner = _Banner(second, started)
    try:
        accepted = deployment.inbox / "accepted" / marker.name
        drop(marker, deployment.inbox)
        ready = _elapsed(started, wait_for(accepted.exists, 120, 0.002))
        booked = _elapsed(
            started,
            wait_for(lambda: posted(deployment.store_path, marker_keys), 120 + lease_seconds),
        )
        caught_up = _elapsed(
            started,
            wait_for(
                lambda: (
                    not list(deployment.inbox.glob("*.835"))
                    and unfinished(deployment.store_path) == 0
                ),
                120 + lease_seconds,
                0.01,
            ),
        )
    finally:
        second.send_signal(signal.SIGINT)
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait(timeout=30)
        banner.join()
    report = _check(deployment, gl)
    return Measurement(banner.at, ready, booked, caught_up, left > 0, held, report)


def _elapsed(started: float, happened: bool) -> float | None:
    return time.monotonic() - started if happened else None


def _check(deployment: Deployment, gl: Path) -> Report:
    """The drop folder says what each sender was told: moved to accepted/ (accepted),
    to rejected/ (rejected), still in the inbox (nothing)."""
    senders = SenderHistory()
    for told, where in (("accepted", "accepted"), ("rejected", "rejected"), (None, ".")):
        for path in sorted((deployment.inbox / where).glob("*.835")):
            senders.add("drop-folder", path, told)
    return deployment.check(senders, erp=ERPHistory.from_gl_folder(gl))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.restart_time")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--lease-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    results: list[Measurement] = []
    for number in range(args.rounds):
        folder = Path(tempfile.mkdtemp(prefix="revbridge-restart-"))
        try:
            result = one_round(
                folder, files=args.files, lease_seconds=args.lease_seconds, seed=70 + number
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results.append(result)
        print(
            f"round {number + 1}: banner {_fmt(result.banner)}, ready {_fmt(result.ready)}, "
            f"new work posted {_fmt(result.posted)}, caught up {_fmt(result.caught_up)} "
            f"(killed with work left: {result.killed_with_work_left}, holding leases on "
            f"{result.held or 'nothing'}); lost {len(result.report.lost)}, doubled "
            f"{len(result.report.doubled)}, problems {len(result.report.problems)}",
            flush=True,
        )
    ready = [r.ready for r in results if r.ready is not None]
    if ready:
        print(
            f"restart to ready after kill -9: median {statistics.median(ready):.2f} s, "
            f"max {max(ready):.2f} s over {len(ready)} rounds "
            f"(lease_seconds {args.lease_seconds:g})"
        )
    return 0 if all(r.report.ok for r in results) else 1


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
