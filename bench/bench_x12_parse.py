"""Benchmark: X12 835 parsing throughput (claims per second).

Compares, on the same synthetic file (>= 10,000 claims):
  (a) naive     -- decode, split on "~", split each segment on "*" (the raw limit)
  (b) revbridge -- envelope scan + parse_835 + check_835 per transaction
  (c) pyx12     -- pyx12.x12file.X12Reader iterating every segment
  (d) revbridge + normalise -- (b) and then the canonical events (normalise/x12_835.py)

The implementations run interleaved (naive, ours, ..., naive, ours, ...) for --runs rounds, so
a burst of load from other processes hits every one of them alike.  Reported: the best time
of each, and the median over the rounds of each one's speed relative to the naive split in
the same round (the stable figure on a shared machine).

Usage: python bench/bench_x12_parse.py [--claims N] [--runs N] [--skip-pyx12]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from revbridge.formats.x12.balance import check_835
from revbridge.formats.x12.envelope import TransactionSlice, scan
from revbridge.formats.x12.parse835 import parse_835_bytes
from revbridge.formats.x12.synthetic import synthetic_835


def parse_and_check(path: str | Path) -> int:
    """Scan, parse and balance-check every 835 in ``path``; returns claims processed."""
    claims = 0
    with open(path, "rb") as f:
        report = scan(f)
        for tx in report.transactions:
            if tx.issues:
                continue
            f.seek(tx.start)
            data = f.read(tx.end - tx.start)
            remittance = parse_835_bytes(data, tx.delimiters, tx.first_segment)
            errors = [i for i in check_835(remittance) if i.severity == "error"]
            if errors:
                raise RuntimeError(errors[0].message)
            claims += len(remittance.claims)
    return claims


def parse_check_normalise(path: Path) -> int:
    """Scan, parse, balance-check and normalise to canonical events (no store); claims."""
    data = path.read_bytes()
    with path.open("rb") as stream:
        return sum(normalise_claims(data, tx) for tx in scan(stream).transactions)


def normalise_claims(data: bytes, tx: TransactionSlice) -> int:
    """Normalise one transaction and count its claims. Its events are released on return,
    before the next transaction is normalised, as at the end of a normalise job (a loop
    variable holding them would keep two transactions' events alive at a time)."""
    from revbridge.normalise.x12_835 import Normalised, UnitInput, normalise_835

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
    if not isinstance(result, Normalised):
        raise RuntimeError(f"normalise rejected a bench transaction: {result}")
    return int(result.events[0].data["claim_count"])


def naive_split(path: str | Path) -> int:
    """The raw limit: no envelope, no validation, no model."""
    claims = 0
    text = Path(path).read_bytes().decode("latin-1")
    for segment in text.split("~"):
        elements = segment.strip().split("*")
        if elements[0] == "CLP":
            claims += 1
    return claims


def pyx12_reader(path: str | Path) -> int:
    """pyx12's segment reader over the same file (segments only, no map validation)."""
    import pyx12.x12file

    claims = 0
    with open(path, encoding="latin-1") as f:
        for seg in pyx12.x12file.X12Reader(f):
            if seg.get_seg_id() == "CLP":
                claims += 1
    return claims


def best_of(runs: int, fn: Callable[[Path], int], path: Path) -> tuple[float, int]:
    best = float("inf")
    claims = 0
    for _ in range(runs):
        start = time.perf_counter()
        claims = fn(path)
        best = min(best, time.perf_counter() - start)
    return best, claims


def interleaved(
    rounds: int, candidates: list[tuple[str, Callable[[Path], int]]], path: Path
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds of every round per implementation, run in turn; and the claims each counted."""
    seconds: dict[str, list[float]] = {name: [] for name, _ in candidates}
    claims: dict[str, int] = {}
    for _ in range(rounds):
        for name, fn in candidates:
            start = time.perf_counter()
            claims[name] = fn(path)
            seconds[name].append(time.perf_counter() - start)
    return seconds, claims


def median_ratio(reference: list[float], subject: list[float]) -> float:
    """Median over the rounds of the subject's speed relative to the reference's that round."""
    return statistics.median(r / s for r, s in zip(reference, subject, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-pyx12", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.835"
        path.write_bytes(synthetic_835(seed=42, claims=args.claims))
        size = path.stat().st_size
        print(f"file: {args.claims} claims, {size / 1e6:.1f} MB, {args.runs} interleaved rounds")
        candidates: list[tuple[str, Callable[[Path], int]]] = [
            ("naive split", naive_split),
            ("revbridge scan+parse+check", parse_and_check),
            ("parse+check+normalise", parse_check_normalise),
        ]
        if not args.skip_pyx12:
            candidates.append(("pyx12 X12Reader", pyx12_reader))
        seconds, counted = interleaved(args.runs, candidates, path)
        print(f"{'implementation':<28} {'seconds':>8} {'claims/s':>10} {'MB/s':>7}")
        for name, _ in candidates:
            if counted[name] != args.claims:
                raise RuntimeError(f"{name} counted {counted[name]} claims, not {args.claims}")
            best = min(seconds[name])
            print(f"{name:<28} {best:>8.3f} {args.claims / best:>10,.0f} {size / best / 1e6:>7.1f}")
        naive = seconds["naive split"]
        ours = seconds["revbridge scan+parse+check"]
        print(
            f"revbridge / naive: {min(naive) / min(ours):.0%} (best of each), "
            f"median of rounds {median_ratio(naive, ours):.0%} (goal >= 40%)"
        )
        normalise = seconds["parse+check+normalise"]
        print(
            f"with normalise / naive: {min(naive) / min(normalise):.0%} (best of each), "
            f"median of rounds {median_ratio(naive, normalise):.0%} (goal >= 40%)"
        )
        if "pyx12 X12Reader" in seconds:
            pyx12 = seconds["pyx12 X12Reader"]
            print(
                f"revbridge / pyx12: {min(pyx12) / min(ours):.1f}x (best of each), "
                f"median of rounds {median_ratio(pyx12, ours):.1f}x (goal >= 3x)"
            )
            print(
                f"with normalise / pyx12: {min(pyx12) / min(normalise):.1f}x (best of each), "
                f"median of rounds {median_ratio(pyx12, normalise):.1f}x"
            )


if __name__ == "__main__":
    main()
