"""What the multi-process worker tests share: deployments on either backend, worker
processes, the three-history checker on any store, and the per-key order check."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.domain.events import EventType
from revbridge.ingest.x12_files import ingest_file
from revbridge.store.base import Job, Store
from tests.faults.checker import ERPHistory, Report, SenderHistory, StoreHistory, check
from tests.faults.harness import REVBRIDGE, ROOT, Deployment, make_deployment
from tests.pg import use_postgres


def deployment_on(
    backend: str,
    folder: Path,
    request: pytest.FixtureRequest,
    *,
    lease_seconds: float,
    poll_seconds: float = 0.5,
    post_batch_size: int = 5,
) -> Deployment:
    """The fault suite's sample deployment, its store on ``backend`` (PostgreSQL: this
    run's database of the workers suite, emptied for the test)."""
    deployment = make_deployment(
        folder,
        lease_seconds=lease_seconds,
        poll_seconds=poll_seconds,
        post_batch_size=post_batch_size,
    )
    if backend == "postgres":
        use_postgres(deployment.config_path, request.getfixturevalue("pg_clean_dsn"))
    return deployment


def open_store(deployment: Deployment) -> Store:
    return bootstrap.open_store(deployment.config)


def ingest(deployment: Deployment, paths: Sequence[Path], senders: SenderHistory) -> None:
    """Deliver with ``revbridge ingest --format json``; what it answers is what senders
    were told."""
    done = subprocess.run(
        [REVBRIDGE, "ingest", "--config", str(deployment.config_path), "--format", "json"]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    senders.add_cli("revbridge ingest", paths, done.stdout)


def ingest_here(deployment: Deployment, paths: Sequence[Path], senders: SenderHistory) -> None:
    """Deliver in this process (``ingest_file``, as ``revbridge ingest`` does): quicker."""
    app = bootstrap.build(deployment.config)
    try:
        for path in paths:
            senders.add("in-process", path, ingest_file(app.store, path).status)
    finally:
        app.close()


def worker_command(
    deployment: Deployment, log: Path, *worker_args: str, proc_args: Sequence[str] = ()
) -> list[str]:
    """``revbridge worker`` through ``tests.workers.proc`` (job log, optional fault ERP)."""
    return [
        sys.executable,
        "-m",
        "tests.workers.proc",
        "--log",
        str(log),
        *proc_args,
        "--",
        "worker",
        "--config",
        str(deployment.config_path),
        *worker_args,
    ]


def start(command: Sequence[str], started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        list(command), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started.append(process)
    return process


def banner_owner(process: subprocess.Popen[str]) -> str:
    """The lease owner id from ``revbridge worker``'s start banner (its first line)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("revbridge worker "), line
    return line.split()[2]


# ------------------------------------------------------------------------------ checks


def check_deployment(
    deployment: Deployment,
    senders: SenderHistory,
    erp: ERPHistory,
    monkeypatch: pytest.MonkeyPatch,
) -> Report:
    """The fault suite's three-history checker, on a SQLite or a PostgreSQL store. It reads
    the store from a SQLite path; for PostgreSQL it is handed the store itself (no
    ``integrity_check`` there: the server keeps its own)."""
    if deployment.config.store.type == "sqlite":
        return deployment.check(senders, erp=erp)
    store = open_store(deployment)

    def read(cls: type[StoreHistory], _path: Path, shas: Iterable[str]) -> StoreHistory:
        return cls._read(store, set(shas), "ok")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(StoreHistory, "read", classmethod(read))
            return check(
                senders, Path("postgres"), erp, deployment.master, deployment.rules, final=True
            )
    finally:
        store.close()


@dataclass(frozen=True, slots=True)
class Run:
    """A handler starting a job, as logged by ``tests.workers.proc``."""

    job: int
    kind: str
    key: str
    fence: int
    owner: str
    pid: int
    t: float


def read_runs(logs: Iterable[Path]) -> list[Run]:
    runs: list[Run] = []
    for log in logs:
        if log.exists():
            for line in log.read_text(encoding="utf-8").splitlines():
                runs.append(Run(**json.loads(line)))
    return sorted(runs, key=lambda r: r.t)


def order_problems(runs: Sequence[Run]) -> list[str]:
    """Per key, handlers must start jobs in id order (a job run again after its worker
    died keeps its place: same id, higher fence)."""
    problems: list[str] = []
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(run.key, []).append(run)
    for key, started in by_key.items():
        for before, after in itertools.pairwise(started):
            if after.job < before.job or (after.job == before.job and after.fence <= before.fence):
                problems.append(
                    f"{key}: job {after.job} (fence {after.fence}, pid {after.pid}) started after"
                    f" job {before.job} (fence {before.fence}, pid {before.pid})"
                )
    return problems


def causal_problems(store: Store) -> list[str]:
    """Every journal was prepared after its payment was received (events in position order)."""
    received: set[str] = set()
    problems: list[str] = []
    with store.unit_of_work() as uow:
        after = 0
        while batch := uow.events.read_from(after, 5000):
            for stored in batch:
                event = stored.event
                payment = event.keys.get("payment")
                if event.type == EventType.REMITTANCE_RECEIVED and payment:
                    received.add(payment)
                elif event.type == EventType.JOURNAL_PREPARED and payment not in received:
                    problems.append(f"{event.keys.get('journal')}: prepared before {payment}")
            after = batch[-1].position
    return problems


def jobs(deployment: Deployment) -> list[Job]:
    store = open_store(deployment)
    try:
        with store.unit_of_work() as uow:
            return uow.jobs.all(limit=10**6)
    finally:
        store.close()
