"""Out-of-order and duplicated deliveries, generated (hypothesis, stateful).

Hypothesis makes payments, reversals of earlier payments (their own TRNs), files that
bundle payments (the same payment in two files is a resend under new control numbers),
delivers any file any number of times in any order, schedules ERP faults for the next
calls (timeouts that did or did not commit, 5xx, 429, outage, a business refusal), moves
the clock and runs the worker a few jobs at a time. After every step the checker's safety
properties hold (nothing booked twice, everything balanced, store and ERP agree, SQLite
intact); at the end of each run, after working until quiet, nothing is lost either.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from revbridge.formats.x12.model835 import Remittance835
from revbridge.ingest.x12_files import ingest_file
from tests.faults.checker import SenderHistory
from tests.faults.corpus import remittances, render, reversal_payment
from tests.faults.erp import SCRIPTED, FaultPlan
from tests.faults.harness import (
    LONG,
    FakeClock,
    make_deployment,
    record,
    run_until_quiet,
    scale,
    scratch,
)


class Deliveries(RuleBasedStateMachine):
    payments = Bundle("payments")
    files = Bundle("files")

    def __init__(self) -> None:
        super().__init__()
        self.folder = scratch("revbridge-stateful-") or Path(
            tempfile.mkdtemp(prefix="revbridge-stateful-")
        )
        self.deployment = make_deployment(self.folder / "deploy", post_batch_size=3)
        self.clock = FakeClock()
        self.plan = FaultPlan(seed=0)
        self.app, self.erp = self.deployment.app(self.clock, self.plan)
        self.worker = self.app.worker()
        self.worker.rng = random.Random(0)
        self.senders = SenderHistory()
        self.counter = 0

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    @initialize(target=files, seed=st.integers(1, 50), claims=st.integers(1, 4))
    def first_delivery(self, seed: int, claims: int) -> Path:
        path = self._file([self.new_payment(seed, claims)])
        self.deliver(path)
        return path

    @rule(target=payments, seed=st.integers(1, 50), claims=st.integers(1, 4))
    def new_payment(self, seed: int, claims: int) -> Remittance835:
        # the same seed twice is the same payment again (a resend of its content)
        return remittances(seed * 10 + claims, 1, claims)[0]

    @rule(target=payments, original=payments)
    def reversal(self, original: Remittance835) -> Remittance835:
        return reversal_payment(original, f"REV{self._next():05d}")

    @rule(target=files, items=st.lists(payments, min_size=1, max_size=3))
    def make_file(self, items: list[Remittance835]) -> Path:
        return self._file(items)

    def _file(self, items: list[Remittance835]) -> Path:
        number = self._next()
        path = self.folder / f"era-{number:04d}.835"
        path.write_bytes(render(items, 500_000 + number))
        return path

    @rule(target=files, items=st.lists(payments, min_size=1, max_size=3))
    def make_file_and_deliver(self, items: list[Remittance835]) -> Path:
        path = self._file(items)
        self.deliver(path)
        return path

    @rule(path=files)
    def deliver(self, path: Path) -> None:
        self.senders.add("hypothesis", path, ingest_file(self.app.store, path).status)

    @rule(jobs=st.integers(1, 6))
    def work(self, jobs: int) -> None:
        for _ in range(jobs):
            if not self.worker.run_once():
                break

    @rule(fault=st.sampled_from(SCRIPTED))
    def erp_fault(self, fault: str) -> None:
        self.plan.script.append(fault)

    @rule(seconds=st.sampled_from([0.5, 5.0, 60.0, 3600.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    @invariant()
    def safe(self) -> None:
        self.deployment.check(self.senders, final=False).assert_ok()

    def teardown(self) -> None:
        try:
            self.plan.script.clear()
            run_until_quiet(self.app, self.clock)
            self.app.close()
            report = self.deployment.check(self.senders)
            if report.deliveries >= 5:
                record("stateful deliveries", report)
            report.assert_ok()
        finally:
            self.app.close()
            shutil.rmtree(self.folder, ignore_errors=True)


Deliveries.TestCase.settings = settings(
    max_examples=scale(12, 300),
    stateful_step_count=scale(20, 60),
    deadline=None,
    database=None,
    derandomize=not LONG,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDeliveries = Deliveries.TestCase
