"""A big 835 file streams through ingest and normalise in bounded memory.

Generates a file of ``--megabytes`` (default 1024) with many ST transactions, then, in a
child process (so its peak RSS is its own), ingests it into a fresh SQLite store and runs
the normalise jobs. Prints size, time, MB/s and claims/s, peak RSS, beside the raw limit
of the same machine (reading + hashing the file).

    python bench/bench_stream.py --megabytes 1024
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from revbridge.formats.x12.synthetic import synthetic_835_stream
from revbridge.ingest.x12_files import ingest_file
from revbridge.orchestrate.clock import SystemClock
from revbridge.orchestrate.handlers import NORMALISE, normalise
from revbridge.orchestrate.worker import Worker
from revbridge.store.sqlite import SQLiteStore


def child(path: Path, db: Path) -> dict[str, float]:
    store = SQLiteStore(db)
    store.migrate()
    started = time.perf_counter()
    outcome = ingest_file(store, path)
    ingested = time.perf_counter()
    Worker(store, {NORMALISE: normalise}, SystemClock()).run_until_idle(max_wait_seconds=0)
    done = time.perf_counter()
    with store.unit_of_work() as uow:
        events = uow.events.count()
    store.close()
    return {
        "transactions": outcome.new,
        "events": events,
        "ingest_s": ingested - started,
        "normalise_s": done - ingested,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def raw_limit(path: Path) -> float:
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=1024)
    parser.add_argument("--child", nargs=2, metavar=("FILE", "DB"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.835"
        with path.open("wb") as out:
            claims = synthetic_835_stream(out, seed=11, target_bytes=int(args.megabytes * 2**20))
        size_mb = path.stat().st_size / 2**20
        limit = raw_limit(path)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(path), str(Path(folder) / "bench.db")],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout)
    total = r["ingest_s"] + r["normalise_s"]
    print(
        f"file: {size_mb:,.0f} MB, {claims:,} claims, {r['transactions']:,} transactions, "
        f"{r['events']:,} events"
    )
    print(f"{'step':<34}{'seconds':>10}{'MB/s':>10}{'claims/s':>12}")
    print(f"{'raw limit: read + sha256':<34}{limit:>10.1f}{size_mb / limit:>10.0f}{'':>12}")
    print(
        f"{'ingest (store bytes + units)':<34}{r['ingest_s']:>10.1f}"
        f"{size_mb / r['ingest_s']:>10.0f}{'':>12}"
    )
    print(
        f"{'normalise (parse+balance+events)':<34}{r['normalise_s']:>10.1f}"
        f"{size_mb / r['normalise_s']:>10.0f}{claims / r['normalise_s']:>12,.0f}"
    )
    print(
        f"{'ingest + normalise':<34}{total:>10.1f}{size_mb / total:>10.0f}{claims / total:>12,.0f}"
    )
    print(f"peak RSS of ingest + normalise: {r['peak_rss_mb']:.0f} MB (goal <= 200 MB)")


if __name__ == "__main__":
    main()
