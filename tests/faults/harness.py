"""What the fault scenarios share: a deployment, clocks, subprocesses, the long switch."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

from revbridge import bootstrap
from revbridge.config import Config, load_config
from revbridge.domain.master import MasterData
from revbridge.ingest.x12_files import ingest_file
from revbridge.ledger.master_data import load_master_data
from revbridge.ledger.posting_rules import PostingRules, load_posting_rules
from revbridge.orchestrate.clock import Clock
from revbridge.sample import write_sample
from revbridge.store.base import Job, JobStatus
from tests import clock
from tests.faults.checker import ERPHistory, Report, SenderHistory, check
from tests.faults.erp import FaultERP, FaultPlan, Hook

ROOT = Path(__file__).parents[2]
LONG = os.environ.get("REVBRIDGE_FAULTS_LONG") == "1"
"""``REVBRIDGE_FAULTS_LONG=1`` (``make faults-long``): bigger counts, more iterations."""
REVBRIDGE = str(Path(sys.executable).with_name("revbridge"))


SHM = Path("/dev/shm")


def scale(short: int, long: int) -> int:
    return long if LONG else short


def scratch(prefix: str = "revbridge-faults-") -> Path | None:
    """A new folder on tmpfs for the short run (None in the long run, or without tmpfs):
    a kill -9 loses nothing there either (the page cache outlives the process), and fsync
    latency stays out of the CI budget. The long run uses the real disk."""
    if LONG or not (SHM.is_dir() and os.access(SHM, os.W_OK)):
        return None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SHM))


class FakeClock(clock.FakeClock):
    """Starts an hour ahead of real time (see tests/clock.py): runs here are long enough
    that a one-second lead would be overtaken. Scenarios about skew
    (``test_clock_jumps.py``) move the clock back on purpose."""

    def __init__(self, at: datetime | None = None) -> None:
        super().__init__(at or datetime.now(UTC) + timedelta(hours=1))


@dataclass
class Deployment:
    folder: Path
    config_path: Path
    erp_db: Path

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path, bootstrap.SPECS)

    @property
    def store_path(self) -> Path:
        return Path(self.config.store.options["path"])

    @property
    def inbox(self) -> Path:
        return self.folder / "inbox"

    @cached_property
    def master(self) -> MasterData:
        return load_master_data(Path(self.config.ledger["master_data"]))

    @cached_property
    def rules(self) -> PostingRules:
        return load_posting_rules(Path(self.config.ledger["posting_rules"]))

    def app(
        self,
        clock: Clock | None = None,
        plan: FaultPlan | None = None,
        *,
        idempotent: bool = False,
        hook: Hook | None = None,
    ) -> tuple[bootstrap.App, FaultERP]:
        erp = FaultERP(self.erp_db, plan, clock=clock, idempotent=idempotent, hook=hook)
        return bootstrap.build(self.config, clock, lambda _name: erp), erp

    def check(
        self, senders: SenderHistory, *, final: bool = True, erp: ERPHistory | None = None
    ) -> Report:
        return check(
            senders,
            self.store_path,
            erp if erp is not None else ERPHistory.from_fault_erp(self.erp_db),
            self.master,
            self.rules,
            final=final,
        )

    def unfinished(self) -> int:
        app = bootstrap.build(self.config)
        try:
            with app.store.unit_of_work() as uow:
                return uow.jobs.count(JobStatus.READY) + uow.jobs.count(JobStatus.LEASED)
        finally:
            app.close()


def make_deployment(
    folder: Path,
    *,
    lease_seconds: float = 60.0,
    max_attempts: int = 8,
    poll_seconds: float = 0.05,
    post_batch_size: int = 50,
    store_path: Path | None = None,
) -> Deployment:
    """The sample deployment (GL target, replaced by the fault ERP in process) with the
    worker settings a scenario needs."""
    options = {"target": "gl"}
    if store_path is not None:
        options["store_path"] = str(store_path)
    config = write_sample(folder, **options)
    with config.open("a", encoding="utf-8") as out:
        out.write(
            "\nworker:\n"
            f"  lease_seconds: {lease_seconds}\n"
            f"  max_attempts: {max_attempts}\n"
            f"  poll_seconds: {poll_seconds}\n"
            f"  post_batch_size: {post_batch_size}\n"
        )
    return Deployment(folder, config, folder / "erp.db")


def ingest_all(app: bootstrap.App, paths: Sequence[Path], senders: SenderHistory) -> None:
    for path in paths:
        senders.add("in-process", path, ingest_file(app.store, path).status)


def run_until_quiet(
    app: bootstrap.App, clock: FakeClock, *, limit: int = 20_000, seed: int = 0
) -> int:
    """Work (advancing the fake clock over backoffs and leases) until nothing can run any
    more: no job leased, and every ready job held back by a parked job of its key.
    Returns the jobs run."""
    worker = app.worker()
    worker.rng = random.Random(seed)
    runs = 0
    while runs < limit:
        if worker.run_once():
            runs += 1
            continue
        if not runnable_jobs(app):
            return runs
        wait = _seconds_to_next(app, clock)
        clock.jump(max(0.001, wait if wait is not None else app.config.worker["lease_seconds"]))
    raise AssertionError(f"still busy after {limit} jobs")


def runnable_jobs(app: bootstrap.App) -> list[Job]:
    """Jobs that will run once due: leased ones, and ready ones no parked job holds back."""
    with app.store.unit_of_work() as uow:
        ready = uow.jobs.all(JobStatus.READY, 10**6)
        leased = uow.jobs.all(JobStatus.LEASED, 10**6)
        parked = uow.jobs.all(JobStatus.PARKED, 10**6)
    held = {(p.key, p.id) for p in parked}
    free = [j for j in ready if not any(k == j.key and i < j.id for k, i in held)]
    return free + leased


def _seconds_to_next(app: bootstrap.App, clock: FakeClock) -> float | None:
    jobs = runnable_jobs(app)
    times = [j.run_after for j in jobs if j.status == JobStatus.READY]
    times += [j.lease_expires_at for j in jobs if j.lease_expires_at is not None]
    future = [t for t in times if t > clock.now()]
    return (min(future) - clock.now()).total_seconds() if future else None


# ---------------------------------------------------------------------------- processes


def ingest_command(deployment: Deployment) -> list[str]:
    """A sender: ``revbridge ingest --format json`` (append the paths)."""
    return [REVBRIDGE, "ingest", "--config", str(deployment.config_path), "--format", "json"]


def runner_command(deployment: Deployment, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.faults.runner",
        "--config",
        str(deployment.config_path),
        "--erp-db",
        str(deployment.erp_db),
        *extra,
    ]


def run_runner(
    deployment: Deployment,
    *extra: str,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Run a worker process to the end (or to its fault point); returns how it ended.
    ``env`` is added to this process's environment for it."""
    done = subprocess.run(
        runner_command(deployment, *extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return RunResult(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True, slots=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def last(self) -> dict[str, object]:
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Started processes are killed (SIGKILL, by pid) and reaped on the way out."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
        for process in started:
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(predicate: Callable[[], bool], seconds: float = 30.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def record(scenario: str, report: Report) -> Report:
    """Print the checker's counts (``pytest -s`` shows them) and, with
    ``$REVBRIDGE_FAULTS_REPORT`` set, append them to that file as a JSON line."""
    print(f"\n[{scenario}] {report.summary()}")
    target = os.environ.get("REVBRIDGE_FAULTS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"scenario": scenario, "summary": report.summary()}) + "\n")
    return report
