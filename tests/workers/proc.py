"""``revbridge worker`` for the multi-process tests: the real command, with two things
injected before it runs.

    python -m tests.workers.proc --log runs.jsonl [--erp-db erp.db] [--hang POINT]
        [--pause SECONDS] [--marker FILE] [--latency SECONDS] [--start-when FILE]
        -- worker --config revbridge.yaml [--until-idle] [--kinds ...] [--concurrency N]

- ``--log``: every job a handler starts is appended to this file as a JSON line (job id,
  kind, key, fence, pid, wall-clock time), so a test can check per-key order across
  processes and see when a dead worker's job was taken over.
- ``--erp-db``: the fault ERP (``tests/faults/erp.py``, whose book is its own SQLite
  file) replaces every output. Without it the configured outputs are used (GL files).
- ``--hang before_commit|after_commit``: in this process's first post call, at that point,
  create ``--marker`` and sleep ``--pause`` seconds (an hour by default: until killed).
- ``--latency``: real seconds each post call takes.
- ``--start-when``: say so on stdout, then wait for this file to exist before starting
  (lines workers up).

Everything after ``--`` goes to ``revbridge`` unchanged. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from revbridge import bootstrap
from revbridge.cli import main as revbridge_main
from revbridge.config import Config
from revbridge.domain.journal import Journal
from revbridge.orchestrate.worker import Handler, JobContext
from revbridge.post.base import JournalSink
from tests.faults.erp import FaultERP, FaultPlan


def logged(handlers: Mapping[str, Handler], log: Path) -> dict[str, Handler]:
    """The handlers, each writing a line to ``log`` when it starts a job."""

    def wrap(handler: Handler) -> Handler:
        def run(ctx: JobContext) -> None:
            job = ctx.job
            line = {
                "job": job.id,
                "kind": job.kind,
                "key": job.key,
                "fence": job.fence,
                "owner": job.lease_owner,
                "pid": os.getpid(),
                "t": time.time(),
            }
            with log.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
            handler(ctx)

        return run

    return {kind: wrap(handler) for kind, handler in handlers.items()}


def hanging(point: str, marker: Path, pause: float) -> Callable[[str, Sequence[Journal]], None]:
    """A fault ERP hook that stalls the first post call at ``point``."""
    done: list[bool] = []

    def hook(phase: str, _journals: Sequence[Journal]) -> None:
        if phase == point and not done:
            done.append(True)
            marker.touch()
            time.sleep(pause)

    return hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.workers.proc")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--erp-db", type=Path, default=None)
    parser.add_argument("--hang", choices=("before_commit", "after_commit"), default=None)
    parser.add_argument("--pause", type=float, default=3600.0)
    parser.add_argument("--marker", type=Path, default=None)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--start-when", type=Path, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    original_handlers = bootstrap.handlers
    bootstrap.handlers = lambda services: logged(original_handlers(services), args.log)
    if args.erp_db is not None:
        hook = None
        if args.hang is not None:
            hook = hanging(args.hang, args.marker or args.log.with_suffix(".hang"), args.pause)
        plan = FaultPlan(latency=args.latency)

        def sink(_config: Config, _name: str) -> JournalSink:
            return FaultERP(args.erp_db, plan, hook=hook)

        bootstrap.make_sink = sink
    if args.start_when is not None:
        print(f"waiting for {args.start_when}", flush=True)
        while not args.start_when.exists():
            time.sleep(0.005)
    revbridge_main.main(command, prog_name="revbridge")  # exits with the command's code
    return 0


if __name__ == "__main__":
    sys.exit(main())
