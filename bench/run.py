"""The performance book (so far): one table, each figure beside its peer or limit.

python bench/run.py            # the figures of the issue (10,000 claims, 1 GB stream, demo)
python bench/run.py --quick    # a short smoke of every row (CI)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_rate_limit import rate_limit_rows
from bench_x12_parse import best_of, naive_split, parse_and_check, pyx12_reader
from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.synthetic import synthetic_835
from revbridge.normalise.x12_835 import Normalised, UnitInput, normalise_835


def parse_check_normalise(path: Path) -> int:
    """Scan, parse, balance-check and normalise to canonical events (no store)."""
    data = path.read_bytes()
    claims = 0
    with path.open("rb") as stream:
        for tx in scan(stream).transactions:
            unit = UnitInput(
                data[tx.start : tx.end],
                tx.delimiters.encode(),
                tx.first_segment,
                1,
                1,
                "bench",
                tx.content_hash,
            )
            result = normalise_835(unit, datetime.now(UTC))
            assert isinstance(result, Normalised)
            claims += int(result.events[0].data["claim_count"])
    return claims


def parse_rows(claims: int, runs: int) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.835"
        path.write_bytes(synthetic_835(seed=5, claims=claims, claims_per_transaction=500))
        timings = {
            "naive str.split tokenizer (raw limit)": best_of(runs, naive_split, path),
            "pyx12 X12Reader (peer)": best_of(runs, pyx12_reader, path),
            "revbridge scan + parse + balance": best_of(runs, parse_and_check, path),
            "revbridge scan + parse + balance + normalise": best_of(
                runs, parse_check_normalise, path
            ),
        }
    naive = claims / timings["naive str.split tokenizer (raw limit)"][0]
    pyx12 = claims / timings["pyx12 X12Reader (peer)"][0]
    rows = []
    for name, (seconds, _) in timings.items():
        rate = claims / seconds
        rows.append(
            (
                f"835 parse, {claims:,} claims: {name}",
                f"{rate:,.0f} claims/s",
                f"{rate / naive:.0%} of naive, {rate / pyx12:.1f}x pyx12",
            )
        )
    return rows


def stream_rows(megabytes: float) -> list[tuple[str, str, str]]:
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("bench_stream.py")),
            "--megabytes",
            str(megabytes),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [(f"stream {megabytes:g} MB: {line}", "", "") for line in done.stdout.splitlines()]


def demo_row() -> tuple[str, str, str]:
    revbridge = Path(sys.executable).with_name("revbridge")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [str(revbridge), "demo", "--workdir", folder], capture_output=True, check=True
        )
        seconds = time.perf_counter() - started
    return (
        "revbridge demo, start to printed summary (real Tryton)",
        f"{seconds:.1f} s",
        "goal < 120 s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Small sizes: a smoke of each row.")
    args = parser.parse_args()
    claims, runs, megabytes = (2_000, 1, 5.0) if args.quick else (10_000, 3, 1024.0)
    rows = [*parse_rows(claims, runs), *stream_rows(megabytes), *rate_limit_rows(args.quick)]
    if not args.quick:
        rows.append(demo_row())
    width = max(len(r[0]) for r in rows)
    for name, figure, beside in rows:
        print(f"{name:<{width}}  {figure:>18}  {beside}")


if __name__ == "__main__":
    main()
