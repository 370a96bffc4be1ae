"""The ERP misbehaves; revbridge still books every journal exactly once.

In process, on real SQLite (store and ERP book in separate files), with a fake clock so
that hours of backoff, Retry-After and outage take milliseconds. Every scenario ends with
the checker: nothing acknowledged lost, nothing booked twice, everything balanced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from revbridge.store.base import JobStatus
from tests.conftest import WORKED_EXAMPLE
from tests.faults.checker import Report, SenderHistory
from tests.faults.corpus import write_corpus
from tests.faults.erp import Call, FaultERP, FaultPlan, call_log
from tests.faults.harness import (
    Deployment,
    FakeClock,
    ingest_all,
    make_deployment,
    record,
    run_until_quiet,
    scale,
)

CAUSED_BY_THE_TARGET = frozenset(
    {"retries_exhausted", "processing_error", "business_rejection", "erp_rejected"}
)
"""Items a misbehaving target can cause (as opposed to items about the data)."""


@dataclass
class Outcome:
    deployment: Deployment
    senders: SenderHistory
    report: Report
    erp: FaultERP
    calls: list[Call]

    def caused_by_target(self) -> dict[str, int]:
        return {k: v for k, v in self.report.open_exceptions.items() if k in CAUSED_BY_THE_TARGET}


def scenario(
    work: Path,
    name: str,
    plan: FaultPlan,
    *,
    files: int,
    batch: int = 50,
    max_attempts: int = 8,
    seed: int = 1,
) -> Outcome:
    """Deliver a corpus (each file twice, plus the worked example), work until quiet
    through the faulty ERP, then check the three histories."""
    deployment = make_deployment(work / "deploy", post_batch_size=batch, max_attempts=max_attempts)
    paths = [*write_corpus(work / "msgs", seed=seed, files=files), WORKED_EXAMPLE]
    clock = FakeClock()
    app, erp = deployment.app(clock, plan)
    senders = SenderHistory()
    try:
        ingest_all(app, paths + paths[::2], senders)
        run_until_quiet(app, clock, seed=seed)
    finally:
        app.close()
    report = record(name, deployment.check(senders))
    return Outcome(deployment, senders, report, erp, call_log(deployment.erp_db))


def test_timeouts_where_half_the_timed_out_calls_did_commit(work: Path) -> None:
    plan = FaultPlan(timeout_rate=0.4, timeout_commit_rate=0.5, seed=3)
    out = scenario(work, "timeouts", plan, files=scale(8, 60), batch=1)
    out.report.assert_ok()
    committed = out.erp.outcomes.get("timeout_committed", 0)
    lost = out.erp.outcomes.get("timeout_lost", 0)
    assert committed > 0 and lost - committed in (0, 1), "half the timed-out calls committed"
    found = sum(int(c.outcome.split()[1]) for c in out.calls if c.op == "lookup")
    assert found > 0, "a timed-out call that committed is found by lookup, not resent"
    assert out.caused_by_target() == {}


def test_a_5xx_storm_within_the_retry_budget(work: Path) -> None:
    plan = FaultPlan(storms=[(1, 5), (7, 12)], seed=4)
    out = scenario(work, "5xx storm", plan, files=scale(6, 40), batch=4)
    out.report.assert_ok()
    assert out.erp.outcomes.get("503", 0) == 9
    assert out.caused_by_target() == {}


def test_a_5xx_storm_past_the_retry_budget_parks_until_a_person_retries(
    work: Path,
) -> None:
    plan = FaultPlan(storms=[(1, 10**6)], seed=5)
    out = scenario(work, "5xx storm past budget", plan, files=scale(4, 20), max_attempts=3)
    report = out.report.assert_ok()  # parked with an open item: not lost
    assert report.open_exceptions.get("retries_exhausted") == 1
    assert report.covered.get("retries_exhausted", 0) == report.expected_journals
    assert report.posted == 0

    clock = FakeClock()
    plan.storms = []  # the storm is over; a person retries the parked job
    app, _erp = out.deployment.app(clock, plan)
    try:
        with app.store.unit_of_work() as uow:
            (parked,) = uow.jobs.all(JobStatus.PARKED)
            uow.jobs.requeue(parked.id, clock.now())
            (item,) = uow.exceptions.all("open", reason="retries_exhausted")
            uow.exceptions.resolve(item.id, "person", clock.now(), "retried")
        run_until_quiet(app, clock)
    finally:
        app.close()
    after = record("5xx storm past budget, retried", out.deployment.check(out.senders))
    after.assert_ok()
    assert after.posted == after.expected_journals > 0
    assert "retries_exhausted" not in after.open_exceptions


def test_business_rejections_become_items_and_nothing_else_is_lost(work: Path) -> None:
    plan = FaultPlan(reject_kinds=frozenset({"reversal"}), seed=6)
    out = scenario(work, "business rejections", plan, files=scale(6, 40), batch=5)
    report = out.report.assert_ok()
    refused = report.open_exceptions.get("erp_rejected", 0)
    assert refused > 0 and report.covered.get("erp_rejected") == refused
    assert report.posted == report.expected_journals - refused
    assert not {k for k in out.caused_by_target() if k != "erp_rejected"}


def test_a_mix_of_5xx_timeouts_and_failing_lookups(work: Path) -> None:
    plan = FaultPlan(transient_rate=0.2, timeout_rate=0.2, lookup_failure_rate=0.3, seed=7)
    out = scenario(work, "5xx + timeouts + failing lookups", plan, files=scale(8, 60), batch=2)
    out.report.assert_ok()
    assert out.erp.outcomes.get("lookup_timeout", 0) > 0
    assert out.caused_by_target() == {}


# ------------------------------------------- throttling and outage (needs target_guard)


def _inside_retry_after(calls: list[Call], seconds: float) -> int:
    """Requests sent while a Retry-After received earlier had not yet expired."""
    count, until = 0, None
    for call in calls:
        if until is not None and call.at < until and call.outcome != "429":
            count += 1
        if call.outcome == "429":
            until = call.at + timedelta(seconds=seconds)
    return count


def test_429_with_retry_after_at_20_requests_per_second(work: Path) -> None:
    plan = FaultPlan(rate_limit=20, retry_after=1.0, seed=8)
    out = scenario(work, "429 at 20/s", plan, files=scale(10, 80), batch=1)
    out.report.assert_ok()
    assert out.erp.outcomes.get("429", 0) > 0, "the scenario throttled"
    assert out.caused_by_target() == {}
    print(f"requests inside a Retry-After window: {_inside_retry_after(out.calls, 1.0)}")


def test_netsuite_style_400_request_limit_is_throttling(work: Path) -> None:
    plan = FaultPlan(rate_limit=20, netsuite_400=True, seed=9)
    out = scenario(work, "NetSuite 400", plan, files=scale(10, 80), batch=1)
    out.report.assert_ok()
    assert out.erp.outcomes.get("400_SSS_REQUEST_LIMIT_EXCEEDED", 0) > 0
    assert out.caused_by_target() == {}, "a request limit is not a refusal of the content"


def test_a_30_minute_outage(work: Path) -> None:
    start = FakeClock().now() - timedelta(seconds=5)
    plan = FaultPlan(outage=(start, start + timedelta(minutes=30)), seed=10)
    out = scenario(work, "30-minute outage", plan, files=scale(6, 40), batch=5)
    report = out.report.assert_ok()
    assert out.erp.outcomes.get("outage", 0) > 0
    assert out.caused_by_target() == {}, "an outage opens no item"
    assert report.posted == report.expected_journals
    tried = [c for c in out.calls if c.outcome == "outage"]
    print(f"calls during the outage: {len(tried)}")
