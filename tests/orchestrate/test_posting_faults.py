"""Exactly-once posting when the target misbehaves.

A scripted sink stands in for the ERP only to inject faults (timeout after commit, 429,
business refusal, outage); the same flow runs against real Tryton in tests/tryton.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.errors import (
    BusinessError,
    DeliveryError,
    IndeterminateError,
    OutageError,
    ThrottledError,
    TransientError,
)
from revbridge.ingest.x12_files import ingest_file
from revbridge.orchestrate.worker import Worker
from revbridge.post.base import JournalSink
from tests.clock import FakeClock
from tests.conftest import WORKED_EXAMPLE


@dataclass
class ScriptedERP(JournalSink):
    """Books journals in memory; ``faults`` are raised, in order, by the next post calls."""

    faults: list[DeliveryError | tuple[str, DeliveryError]] = field(default_factory=list)
    booked: dict[str, Journal] = field(default_factory=dict)
    calls: int = 0
    lookups: list[list[str]] = field(default_factory=list)
    name: str = "scripted"

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        self.calls += 1
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, tuple):  # commit first, then lose the answer
                self._book(journals)
                raise fault[1]
            raise fault
        return self._book(journals)

    def _book(self, journals: Sequence[Journal]) -> dict[str, str]:
        for journal in journals:
            if journal.key in self.booked:
                raise BusinessError(
                    f"duplicate {journal.key}", target=self.name, code="duplicate_key"
                )
            self.booked[journal.key] = journal
        return {j.key: f"move-{list(self.booked).index(j.key) + 1}" for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        self.lookups.append(list(keys))
        return {k: f"move-{list(self.booked).index(k) + 1}" for k in keys if k in self.booked}

    def close(self) -> None:
        return None


def flow(deployment: Path, erp: ScriptedERP) -> tuple[bootstrap.App, Worker, FakeClock]:
    clock = FakeClock()
    app = bootstrap.build(load_config(deployment, bootstrap.SPECS), clock, lambda _name: erp)
    worker = app.worker()
    worker.rng = random.Random(1)
    ingest_file(app.store, WORKED_EXAMPLE)
    return app, worker, clock


def statuses(app: bootstrap.App) -> list[JournalStatus]:
    with app.store.unit_of_work() as uow:
        return [r.status for r in uow.journals.all()]


def test_timeout_after_commit_is_looked_up_not_resent(deployment: Path) -> None:
    erp = ScriptedERP(faults=[("commit", IndeterminateError("read timed out", target="erp"))])
    app, worker, _ = flow(deployment, erp)
    worker.run_until_idle(max_wait_seconds=3600)
    assert len(erp.booked) == 3  # each journal once
    assert erp.lookups and sorted(erp.lookups[0]) == sorted(erp.booked)
    assert statuses(app) == [JournalStatus.POSTED] * 3
    app.close()


def test_throttling_waits_for_retry_after(deployment: Path) -> None:
    erp = ScriptedERP(faults=[ThrottledError("429", target="erp", retry_after=30.0)])
    app, worker, clock = flow(deployment, erp)
    worker.run_until_idle(max_wait_seconds=3600)
    assert clock.slept and clock.slept[-1] >= 30.0
    assert len(erp.booked) == 3
    assert statuses(app) == [JournalStatus.POSTED] * 3
    app.close()


def test_outage_retries_with_backoff_then_delivers(deployment: Path) -> None:
    erp = ScriptedERP(faults=[OutageError("refused", target="erp") for _ in range(5)])
    app, worker, clock = flow(deployment, erp)
    worker.run_until_idle(max_wait_seconds=3600)
    assert len(clock.slept) >= 5
    assert len(erp.booked) == 3
    with app.store.unit_of_work() as uow:
        assert not [x for x in uow.exceptions.all() if x.reason != "claim_denied"]
    app.close()


def test_business_refusal_fails_only_that_journal(deployment: Path) -> None:
    class Picky(ScriptedERP):
        def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
            if any(j.kind == "reversal" for j in journals):
                raise BusinessError("period closed", target="erp", code="UserError")
            return super().post(journals)

    erp = Picky()
    app, worker, _ = flow(deployment, erp)
    worker.run_until_idle(max_wait_seconds=0)
    assert sorted(j.kind for j in erp.booked.values()) == ["correction", "remittance"]
    assert sorted(statuses(app)) == [
        JournalStatus.FAILED,
        JournalStatus.POSTED,
        JournalStatus.POSTED,
    ]
    with app.store.unit_of_work() as uow:
        refused = [x for x in uow.exceptions.all() if x.reason == "erp_rejected"]
    assert len(refused) == 1 and refused[0].subject["journal"].endswith(":reversal")
    app.close()


@pytest.mark.parametrize("attempts", [1, 3])
def test_exhausted_retries_park_with_an_item(deployment: Path, attempts: int) -> None:
    erp = ScriptedERP(faults=[TransientError("HTTP 500", target="erp") for _ in range(50)])
    app, worker, _ = flow(deployment, erp)
    worker.max_attempts = attempts
    worker.run_until_idle(max_wait_seconds=3600)
    with app.store.unit_of_work() as uow:
        reasons = [x.reason for x in uow.exceptions.all()]
    assert "retries_exhausted" in reasons
    assert not erp.booked
    app.close()


def test_backoff_is_full_jitter_and_capped() -> None:
    worker = Worker.__new__(Worker)
    worker.rng = random.Random(3)
    delays = [worker.backoff(n, OutageError("x", target="t")) for n in range(1, 30)]
    assert all(0 <= d <= 300 for d in delays)
    assert max(delays[:3]) <= 4
