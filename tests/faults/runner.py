"""A worker process booking into the fault ERP: what the kill -9 scenarios kill.

    python -m tests.faults.runner --config revbridge.yaml --erp-db erp.db \\
        [--fault after_commit|before_commit|mid_batch:N[@CALL]] [--latency SECONDS] \\
        [--owner NAME] [--start-when FILE] [--pace SECONDS]

It builds the application from the config with ``FaultERP`` as every output (through
``bootstrap.build(..., sink_factory=...)``) and works the queue until nothing is ready or
leased any more, waiting for leases left behind by killed workers to expire. The kill
point can also come from ``$REVBRIDGE_FAULT``. At the end it prints one JSON line of
counts. Run it from the repository root (``tests`` is a package).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.store.base import JobStatus
from tests.faults.erp import FAULT_ENV, FaultERP, FaultPlan, KillPoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.runner")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--erp-db", required=True, type=Path)
    parser.add_argument("--fault", default=os.environ.get(FAULT_ENV) or None)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--deadline", type=float, default=120.0, help="Give up after this.")
    parser.add_argument("--owner", default=None)
    parser.add_argument(
        "--start-when", type=Path, default=None, help="Start working once this file exists."
    )
    parser.add_argument(
        "--pace",
        type=float,
        default=0.0,
        help="Seconds to pause after each job (lets "
        "racing workers at the write lock: SQLite's busy handler favours the holder).",
    )
    args = parser.parse_args(argv)

    plan = FaultPlan(kill=KillPoint.parse(args.fault) if args.fault else None, latency=args.latency)
    sinks: list[FaultERP] = []

    def sink(_name: str) -> FaultERP:
        erp = FaultERP(args.erp_db, plan, allow_kill=True)
        sinks.append(erp)
        return erp

    app = bootstrap.build(load_config(args.config, bootstrap.SPECS), sink_factory=sink)
    started = time.monotonic()
    try:
        worker = app.worker()
        if args.owner:
            worker.owner = args.owner
        print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
        while args.start_when is not None and not args.start_when.exists():
            time.sleep(0.005)  # the racing scenario lines its workers up
        while True:
            if args.pace:
                while worker.run_once():
                    time.sleep(args.pace)
            else:
                worker.run_until_idle(max_wait_seconds=5.0)
            with app.store.unit_of_work() as uow:
                unfinished = uow.jobs.count(JobStatus.READY) + uow.jobs.count(JobStatus.LEASED)
            if not unfinished:
                break
            if time.monotonic() - started > args.deadline:
                print(json.dumps({"event": "deadline", "unfinished": unfinished}), flush=True)
                return 2
            time.sleep(0.1)  # leased by a live or dead worker, or not yet due: look again
        outcomes: dict[str, int] = {}
        for erp in sinks:
            for name, count in erp.outcomes.items():
                outcomes[name] = outcomes.get(name, 0) + count
        stats = worker.stats
        print(
            json.dumps(
                {
                    "event": "idle",
                    "processed": stats.processed,
                    "retried": stats.retried,
                    "parked": stats.parked,
                    "by_kind": stats.by_kind,
                    "erp": outcomes,
                }
            ),
            flush=True,
        )
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
