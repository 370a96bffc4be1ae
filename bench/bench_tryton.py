"""835 -> journals into a real Tryton 8.2 server, beside Tryton's own rates in the same run.

Starts ``trytond`` on SQLite in a scratch folder as the demo and the Tryton tests do
(``revbridge.post.tryton_server``: create the database, activate ``account`` +
``revbridge_erp``, set up companies and chart from the sample master data), then:

1. a generated 835 runs through revbridge into an unlimited in-memory ERP (the peer: what
   the same file costs without Tryton) and the journals it books are kept;
2. raw limit: a loop of a trivial authenticated RPC call (``res.user.get_preferences``);
3. raw limit: those very journals (keys renamed) posted straight through ``TrytonSink``,
   50 moves per call: what Tryton's ``revbridge_create_post`` costs without revbridge;
4. the figure: a fresh sample deployment with ``target: erp`` ingests the same 835 and one
   worker runs until idle: ingest -> normalise -> journal -> post into Tryton.

2 and 3 run half before and half after 4, so limit and figure share the same stretch of a
shared machine.

The full run adds ``revbridge demo`` (start to printed summary, creating its own Tryton
database). The server is stopped by pid and every file removed at the end.

    python bench/bench_tryton.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from book import Row, scratch_dir
from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.formats.x12.synthetic import synthetic_835
from revbridge.ingest.x12_files import ingest_file
from revbridge.post.base import JournalSink
from revbridge.post.erp_tryton import TrytonSink
from revbridge.post.tryton_rpc import TrytonRPC
from revbridge.post.tryton_server import TrytonServer, is_available
from revbridge.sample import write_sample

TITLE = "real Tryton"
DATABASE = "bench"
USER = "admin"
DAY = date(2026, 3, 2)
PAYERS = ("ACME01", "BLUE01", "MCARE", "MCAID")  # all in the sample master data
PAYEES = ("1234567893", "1245319599", "1679576722")  # both entities, three facilities
CALL_BATCH = 50  # moves per revbridge_create_post call (the erp_tryton default)
DEMO_GOAL_SECONDS = 120.0
RAW_TIMEOUT_SECONDS = 600.0  # a 50-move call can take longer than the sink's default 30 s
RETRY_WAIT_SECONDS = 300.0  # a post that timed out is retried (after a lookup), not lost


@dataclass(frozen=True)
class Sizes:
    claims: int
    claims_per_payment: int
    call_seconds: float


def sizes(quick: bool) -> Sizes:
    return Sizes(100, 10, 2.0) if quick else Sizes(200, 10, 5.0)


def password() -> str:
    """The sample config reads ``${REVBRIDGE_ERP_PASSWORD:-admin}``: the server agrees."""
    return os.environ.get("REVBRIDGE_ERP_PASSWORD") or "admin"


class KeepingSink(JournalSink):
    """An unlimited ERP in memory that keeps every journal it books."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.journals: dict[str, Journal] = {}

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        for journal in journals:
            self.journals.setdefault(journal.key, journal)
        return {j.key: f"MEM-{j.key}" for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        return {k: f"MEM-{k}" for k in keys if k in self.journals}

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class FlowRun:
    seconds: float  # ingest + worker until idle
    journals: int
    posted: int
    transactions: int
    put_back: int  # jobs retried or deferred (a post call timed out, the guard held one)


def flow(config: Path, data: bytes, sink: Callable[[str], JournalSink] | None = None) -> FlowRun:
    """Ingest ``data`` into the deployment of ``config``; one worker runs until idle."""
    app = bootstrap.build(load_config(config, bootstrap.SPECS), sink_factory=sink)
    try:
        path = config.parent / "inbox" / "bench.835"
        path.write_bytes(data)
        started = time.perf_counter()
        outcome = ingest_file(app.store, path)
        stats = app.worker().run_until_idle(max_wait_seconds=RETRY_WAIT_SECONDS)
        seconds = time.perf_counter() - started
        with app.store.unit_of_work() as uow:
            records = uow.journals.all()
            parked = uow.jobs.count("parked")
    finally:
        app.close()
    posted = sum(1 for r in records if r.status == JournalStatus.POSTED)
    if outcome.status != "accepted" or parked or posted != len(records):
        raise RuntimeError(
            f"bench flow went wrong: ingest {outcome.status}, {parked} jobs parked,"
            f" {posted}/{len(records)} journals posted"
        )
    return FlowRun(seconds, len(records), posted, outcome.new, stats.retried + stats.deferred)


def call_rate(rpc: TrytonRPC, seconds: float) -> float:
    """Trivial authenticated calls per second, one session, one after another."""
    rpc.model("res.user", "get_preferences", True, {})  # logs in
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        rpc.model("res.user", "get_preferences", True, {})
        count += 1
    return count / elapsed


class Direct:
    """The same journals (keys renamed) straight through TrytonSink, 50 moves a call.

    The first journal of each entity goes first, untimed: it resolves companies, accounts
    and periods, which the sink then keeps (as it does inside revbridge). The rest is
    posted in two halves, one before and one after revbridge's own run, so the limit and
    the figure see the same stretch of a shared machine.
    """

    def __init__(self, rpc: TrytonRPC, journals: Iterable[Journal]) -> None:
        renamed = [replace(j, key=f"direct:{j.key}") for j in journals]
        self.sink = TrytonSink(rpc, batch_size=CALL_BATCH)
        first = {j.entity: j for j in reversed(renamed)}
        self.sink.post(list(first.values()))
        rest = [j for j in renamed if j not in first.values()]
        self.halves = (rest[: len(rest) // 2], rest[len(rest) // 2 :])
        self.journals = self.lines = self.calls = 0
        self.seconds = 0.0

    def post(self, half: int) -> None:
        journals = self.halves[half]
        started = time.perf_counter()
        for start in range(0, len(journals), CALL_BATCH):
            self.sink.post(journals[start : start + CALL_BATCH])
            self.calls += 1
        self.seconds += time.perf_counter() - started
        self.journals += len(journals)
        self.lines += sum(len(j.lines) for j in journals)


def demo_seconds() -> float:
    """``revbridge demo`` in a fresh folder, start to printed summary."""
    revbridge = Path(sys.executable).with_name("revbridge")
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as folder:
        started = time.perf_counter()
        subprocess.run(
            [str(revbridge), "demo", "--workdir", folder],
            capture_output=True,
            check=True,
            timeout=600,
        )
        return time.perf_counter() - started


def tryton_rows(quick: bool, *, force: bool = False) -> list[Row]:
    """The section's rows. ``quick`` skips Tryton (the database alone takes ~25 s) unless
    ``force`` (``book.py --only tryton --quick``: a small smoke of this section)."""
    if quick and not force:
        return [
            Row(TITLE, "835 -> journals into real Tryton", None,
                note="skipped in --quick (creating the Tryton database alone takes ≈ 25 s);"
                " `book.py --only tryton --quick` runs a small one"),
        ]  # fmt: skip
    if not is_available():
        return [
            Row(TITLE, "835 -> journals into real Tryton", None,
                note="Tryton not installed: pip install -e '.[erp]' -e erp/tryton"),
        ]  # fmt: skip
    size = sizes(quick)
    data = synthetic_835(
        seed=17,
        claims=size.claims,
        claims_per_transaction=size.claims_per_payment,
        payer_ids=PAYERS,
        payee_npis=PAYEES,
        day=DAY,
    )
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        folder = Path(tmp)
        kept = KeepingSink("gl")
        memory = write_sample(
            folder / "memory", store_path=str(folder / "memory" / "revbridge.db"), target="gl"
        )
        peer = flow(memory, data, lambda _name: kept)
        server = TrytonServer(folder / "erp")
        started = time.perf_counter()
        server.create_database(DATABASE, password())
        create_s = time.perf_counter() - started
        server.start([DATABASE])
        try:
            config = write_sample(
                folder / "deploy",
                store_path=str(folder / "deploy" / "revbridge.db"),
                target="erp",
                erp_url=server.base_url,
                erp_database=DATABASE,
            )
            bootstrap.setup_erp_from_config(load_config(config, bootstrap.SPECS), "erp", DAY.year)
            rpc = TrytonRPC(
                server.base_url, DATABASE, USER, password(), timeout=RAW_TIMEOUT_SECONDS
            )
            try:
                calls = call_rate(rpc, size.call_seconds / 2)
                direct = Direct(rpc, kept.journals.values())
                direct.post(0)
                erp = flow(config, data)
                direct.post(1)
                calls = (calls + call_rate(rpc, size.call_seconds / 2)) / 2
            finally:
                rpc.close()
        finally:
            server.stop()
    if erp.journals != len(kept.journals):
        raise RuntimeError(f"Tryton booked {erp.journals}, memory {len(kept.journals)} journals")
    lines = sum(len(j.lines) for j in kept.journals.values()) / len(kept.journals)
    erp_rate = erp.journals / erp.seconds
    direct_rate = direct.journals / direct.seconds
    what = f"{size.claims:,} claims, {erp.transactions} payments, {erp.journals} journals"
    rows = [
        Row(TITLE, "trytond-admin: create the database, activate account + revbridge_erp",
            create_s, "s", note="once per deployment; why --quick skips this section"),
        Row(TITLE, "raw limit: trivial RPC call (res.user.get_preferences), one session",
            calls, "calls/s", note="JSON-RPC over HTTP, one transaction each"),
        Row(TITLE, f"raw limit: the same journals straight through TrytonSink, "
            f"{CALL_BATCH} moves per call", direct_rate, "journals/s",
            note=f"{direct.calls} calls, {direct.lines / direct.seconds:,.0f} move lines/s; "
            f"one call ≈ {direct.seconds / direct.calls * calls:,.0f} trivial calls"),
        Row(TITLE, f"revbridge 835 -> posted Tryton moves ({what}): journals", erp_rate,
            "journals/s", "TrytonSink straight", direct_rate, kind="limit",
            note=f"ingest -> worker idle; {lines:.0f} lines per journal; guard 10 calls/s; "
            f"jobs put back: {erp.put_back}"),
        Row(TITLE, f"revbridge 835 -> posted Tryton moves ({what}): claims",
            size.claims / erp.seconds, "claims/s", "same 835, unlimited in-memory ERP",
            size.claims / peer.seconds, kind="limit"),
    ]  # fmt: skip
    if not quick:
        seconds = demo_seconds()
        rows.append(
            Row(TITLE, "`revbridge demo`: fresh folder, creates the Tryton database, "
                "its remittance day, start to printed summary", seconds, "s",
                goal=f"< {DEMO_GOAL_SECONDS:.0f} s", met=seconds < DEMO_GOAL_SECONDS),
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke of this section")
    args = parser.parse_args()
    import book

    raise SystemExit(book.main(["--only", "tryton"] + ["--quick"] * args.quick))


if __name__ == "__main__":
    main()
