"""Per-target delivery policy, end to end: ingest → normalise → journal → post.

The ERP here is a stand-in that enforces a 20 requests/s limit the way cloud ERPs do
(429 + Retry-After, or NetSuite's ``400 SSS_REQUEST_LIMIT_EXCEEDED``), can refuse
connections for a while (an outage), and books each key once. Its answers go through
``post.http_errors`` like a real HTTP adapter's. Time is a fake clock shared by the ERP
and the worker, so a 30-minute outage runs in a second.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.errors import (
    BusinessError,
    ConfigurationError,
    OutageError,
    ThrottledError,
    TransientError,
)
from revbridge.formats.x12.synthetic import synthetic_835
from revbridge.ingest.x12_files import ingest_file
from revbridge.orchestrate.target_guard import BreakerState
from revbridge.orchestrate.worker import Deferred, JobContext, Worker
from revbridge.post.base import JournalSink
from revbridge.post.http_errors import classify_exchange_failure, classify_response
from tests.clock import FakeClock
from tests.conftest import WORKED_EXAMPLE

LIMIT = 20.0
COOL_DOWN = 30  # breaker_open_seconds of the outage test
WAIT = 12.0  # the wait each deferral signal below asks for
NETSUITE_BODY = b'{"o:errorDetails":[{"o:errorCode":"SSS_REQUEST_LIMIT_EXCEEDED"}]}'


@dataclass
class LimitedERP(JournalSink):
    """Books journals once per key; answers over-limit calls like a cloud ERP."""

    clock: FakeClock
    rate: float = LIMIT
    burst: float = 2.0
    style: str = "429"  # or "netsuite"
    down_until: datetime | None = None
    booked: dict[str, Journal] = field(default_factory=dict)
    log: list[tuple[datetime, int]] = field(default_factory=list)  # (when, HTTP status)
    violations: int = 0  # calls received before a Retry-After we sent had expired
    name: str = "limited"
    _tokens: float = 0.0
    _at: datetime | None = None
    _not_before: datetime | None = None

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        self._answer()
        for journal in journals:
            if journal.key in self.booked:
                raise BusinessError(f"duplicate {journal.key}", target=self.name, code="dup")
            self.booked[journal.key] = journal
        return {j.key: f"doc-{j.key}" for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        self._answer()
        return {k: f"doc-{k}" for k in keys if k in self.booked}

    def close(self) -> None:
        return None

    def _answer(self) -> None:
        now = self.clock.now()
        if self.down_until is not None and now < self.down_until:
            self.log.append((now, 0))
            raise classify_exchange_failure(self.name, ConnectionRefusedError(111), sent=False)
        if self._not_before is not None and now < self._not_before:
            self.violations += 1
        status, headers, body = self._limit(now)
        self.log.append((now, status))
        error = classify_response(self.name, status, headers, body, now=now)
        if error is not None:
            raise error

    def _limit(self, now: datetime) -> tuple[int, dict[str, str], bytes]:
        elapsed = 0.0 if self._at is None else (now - self._at).total_seconds()
        self._tokens = min(self.burst, (self.burst if self._at is None else self._tokens))
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._at = now
        if self._tokens >= 1 - 1e-9:  # float rounding is no call over the limit
            self._tokens -= 1
            return 200, {}, b"{}"
        if self.style == "netsuite":
            return 400, {}, NETSUITE_BODY
        wait = math.ceil((1 - self._tokens) / self.rate)
        self._not_before = now + timedelta(seconds=wait)
        return 429, {"Retry-After": str(wait)}, b"rate limit exceeded"


def deployment_with(folder: Path, **limits: Any) -> Path:
    """The sample deployment, posting to ``gl`` with these limits, one journal per call."""
    from revbridge.sample import write_sample

    config = write_sample(folder)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    for output in data["outputs"]:
        if output["name"] == "gl":
            output.update(limits)
    data["worker"] = {**(data.get("worker") or {}), "post_batch_size": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return config


def run(
    config: Path, make_erp: Any, files: Sequence[Path]
) -> tuple[bootstrap.App, Worker, LimitedERP, FakeClock]:
    clock = FakeClock()
    erp: LimitedERP = make_erp(clock)
    app = bootstrap.build(load_config(config, bootstrap.SPECS), clock, lambda _name: erp)
    worker = app.worker()
    worker.rng = random.Random(7)
    for path in files:
        ingest_file(app.store, path)
    worker.run_until_idle(max_wait_seconds=3600)
    return app, worker, erp, clock


def exception_reasons(app: bootstrap.App) -> list[str]:
    with app.store.unit_of_work() as uow:
        return sorted(x.reason for x in uow.exceptions.all())


def journal_keys(app: bootstrap.App) -> list[str]:
    with app.store.unit_of_work() as uow:
        records = uow.journals.all()
    assert all(r.status == JournalStatus.POSTED for r in records)
    return sorted(r.journal.key for r in records)


@pytest.fixture(scope="module")
def remittances(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The worked example plus a synthetic file: a few dozen journals to post."""
    synthetic = tmp_path_factory.mktemp("remittances") / "synthetic.835"
    synthetic.write_bytes(synthetic_835(seed=11, claims=80, claims_per_transaction=2))
    return [WORKED_EXAMPLE, synthetic]


@pytest.fixture(scope="module")
def baseline(
    tmp_path_factory: pytest.TempPathFactory, remittances: list[Path]
) -> tuple[list[str], list[str]]:
    """What an unlimited, healthy ERP ends with: the journal keys and exception reasons."""
    config = deployment_with(tmp_path_factory.mktemp("baseline"))
    app, _, erp, _ = run(config, lambda c: LimitedERP(c, rate=1e9, burst=1e9), remittances)
    keys, reasons = journal_keys(app), exception_reasons(app)
    assert sorted(erp.booked) == keys and len(keys) > 30
    app.close()
    return keys, reasons


def test_nothing_is_sent_before_retry_after_and_every_journal_posts_once(
    tmp_path: Path, remittances: list[Path], baseline: tuple[list[str], list[str]]
) -> None:
    # Configured above the ERP's real limit, as when the published figure is wrong: the
    # 429s teach the guard the real rate, and their Retry-After is always honoured.
    config = deployment_with(tmp_path / "deploy", rate_per_second=30, burst=5)
    app, worker, erp, _ = run(config, lambda c: LimitedERP(c, burst=2), remittances)
    throttled = [at for at, status in erp.log if status == 429]
    assert throttled, "the limit was never hit: the test proves nothing"
    assert erp.violations == 0
    assert sorted(erp.booked) == journal_keys(app) == baseline[0]
    assert exception_reasons(app) == baseline[1]
    assert worker.stats.parked == 0 and worker.stats.retried == 0  # 429 share: the bench
    app.close()


def test_at_the_published_limit_the_erp_never_says_429(
    tmp_path: Path, remittances: list[Path], baseline: tuple[list[str], list[str]]
) -> None:
    config = deployment_with(tmp_path / "deploy", rate_per_second=LIMIT, burst=2)
    app, _, erp, _ = run(config, lambda c: LimitedERP(c, burst=2), remittances)
    assert [s for _, s in erp.log if s != 200] == []  # the rate achieved: bench_rate_limit.py
    assert sorted(erp.booked) == baseline[0]
    app.close()


def test_a_30_minute_outage_opens_no_exception_item_and_posts_everything_once(
    tmp_path: Path, remittances: list[Path], baseline: tuple[list[str], list[str]]
) -> None:
    config = deployment_with(
        tmp_path / "deploy",
        rate_per_second=LIMIT,
        burst=2,
        breaker_failures=3,
        breaker_open_seconds=COOL_DOWN,
    )

    def down_for_30_minutes(clock: FakeClock) -> LimitedERP:
        return LimitedERP(clock, burst=2, down_until=clock.now() + timedelta(minutes=30))

    app, worker, erp, clock = run(config, down_for_30_minutes, remittances)
    assert erp.down_until is not None and clock.now() > erp.down_until
    assert exception_reasons(app) == baseline[1]  # nothing new: the outage parked nothing
    assert worker.stats.parked == 0
    assert sorted(erp.booked) == journal_keys(app) == baseline[0]
    refused = [at for at, status in erp.log if status == 0]
    probes = refused[3:]  # the breaker opened after 3 failures; then only half-open probes
    assert probes, "the breaker never probed the down ERP"
    # behaviour on the fake clock: no probe before the breaker's cool-down has passed
    assert all((b - a).total_seconds() >= COOL_DOWN for a, b in itertools.pairwise(probes))
    assert app.guards["gl"].state is BreakerState.CLOSED  # drain rate: bench_rate_limit.py
    app.close()


def test_netsuite_request_limit_is_throttling_never_a_refusal(
    tmp_path: Path, remittances: list[Path], baseline: tuple[list[str], list[str]]
) -> None:
    config = deployment_with(tmp_path / "deploy", rate_per_second=40, burst=4)
    app, worker, erp, _ = run(config, lambda c: LimitedERP(c, style="netsuite"), remittances)
    assert any(status == 400 for _, status in erp.log)
    assert "erp_rejected" not in exception_reasons(app)
    assert exception_reasons(app) == baseline[1]
    assert worker.stats.parked == 0
    assert sorted(erp.booked) == baseline[0]
    app.close()


def test_an_outage_never_counts_attempts_but_a_transient_fault_does(
    tmp_path: Path,
) -> None:
    class Flaky(LimitedERP):
        def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
            raise OutageError("refused", target=self.name)

    config = deployment_with(tmp_path / "deploy", breaker_failures=2, breaker_open_seconds=60)
    clock = FakeClock()
    erp = Flaky(clock)
    app = bootstrap.build(load_config(config, bootstrap.SPECS), clock, lambda _name: erp)
    worker = app.worker()
    ingest_file(app.store, WORKED_EXAMPLE)
    for _ in range(200):  # a few hours of fake time
        if not worker.run_once():
            clock.sleep(60)
    with app.store.unit_of_work() as uow:
        posts = [j for j in uow.jobs.all() if j.kind == "post"]
    assert worker.stats.parked == 0
    assert max(j.attempts for j in posts) <= 1  # deferrals are not attempts
    assert "retries_exhausted" not in exception_reasons(app)
    app.close()


@pytest.mark.parametrize(
    "signal",
    [
        Deferred(WAIT, "circuit breaker open"),
        ThrottledError("429", target="erp", retry_after=WAIT),
        OutageError("connection refused", target="erp"),
    ],
)
def test_waits_are_deferrals_that_never_count_or_park(
    app: bootstrap.App, signal: Exception
) -> None:
    clock = FakeClock()
    raised: list[datetime] = []

    def handler(ctx: JobContext) -> None:
        raised.append(clock.now())
        if len(raised) <= 20:
            raise signal
        with ctx.store.unit_of_work() as uow:
            ctx.complete(uow)

    worker = Worker(app.store, {"x": handler}, clock, max_attempts=1, rng=random.Random(2))
    with app.store.unit_of_work() as uow:
        job_id = uow.jobs.enqueue("x", "k", {})
    worker.run_until_idle(max_wait_seconds=3600)
    with app.store.unit_of_work() as uow:
        job = uow.jobs.get(job_id)
    assert job.status == "done" and job.attempts == 1
    assert worker.stats.parked == 0 and worker.stats.deferred == 20
    if not isinstance(signal, OutageError):
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(raised)]
        assert min(gaps) >= WAIT  # on the fake clock: never run again before the wait it gave


def test_transient_failures_count_and_park_after_max_attempts(app: bootstrap.App) -> None:
    clock = FakeClock()

    def handler(ctx: JobContext) -> None:
        raise TransientError("HTTP 502", target="erp")

    worker = Worker(app.store, {"x": handler}, clock, max_attempts=3, rng=random.Random(2))
    with app.store.unit_of_work() as uow:
        uow.jobs.enqueue("x", "k", {})
    worker.run_until_idle(max_wait_seconds=3600)
    assert worker.stats.retried == 2 and worker.stats.parked == 1


def test_each_output_gets_a_guard_with_its_configured_limits(deployment: Path) -> None:
    app = bootstrap.build(load_config(deployment, bootstrap.SPECS))
    erp, gl = app.guards["erp"].policy, app.guards["gl"].policy
    assert (erp.rate_per_second, erp.burst, erp.max_in_flight) == (10.0, 10, 4)
    assert gl.rate_per_second == 0  # a local folder needs no rate limit
    assert app.services.guards is not None and app.services.guards("gl") is app.guards["gl"]
    app.close()


def test_nonsense_limits_refuse_to_start(tmp_path: Path) -> None:
    config = deployment_with(tmp_path / "deploy", rate_per_second=-5)
    with pytest.raises(ConfigurationError, match=r"outputs\.gl"):
        bootstrap.build(load_config(config, bootstrap.SPECS))
