"""The per-target guard: token bucket, circuit breaker, calls in flight, Retry-After gate.

Every test runs on a fake clock: no test waits, none depends on wall-clock timing.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from revbridge.errors import (
    BusinessError,
    IndeterminateError,
    OutageError,
    ThrottledError,
    TransientError,
)
from revbridge.orchestrate.target_guard import (
    BUSY_WAIT_SECONDS,
    DEFAULT_THROTTLE_SECONDS,
    BreakerState,
    CircuitBreaker,
    GuardPolicy,
    InFlightCap,
    RetryAfterGate,
    TargetGuard,
    TokenBucket,
)
from tests.clock import FakeClock


def guard(clock: FakeClock, **policy: float) -> TargetGuard:
    values: dict[str, float] = {
        "rate_per_second": 0.0,
        "burst": 1,
        "max_in_flight": 0,
        "breaker_failures": 3,
        "breaker_open_seconds": 30.0,
        "half_open_probes": 1,
        **policy,
    }
    return TargetGuard(
        "erp",
        GuardPolicy(
            rate_per_second=values["rate_per_second"],
            burst=int(values["burst"]),
            max_in_flight=int(values["max_in_flight"]),
            breaker_failures=int(values["breaker_failures"]),
            breaker_open_seconds=values["breaker_open_seconds"],
            half_open_probes=int(values["half_open_probes"]),
        ),
        clock,
    )


def call(g: TargetGuard, error: Exception | None = None) -> float:
    """Admit, report and release one call; the wait if it was not admitted."""
    wait = g.admit()
    if wait == 0:
        g.record(error)
        g.release()
    return wait


# -- token bucket -------------------------------------------------------------------------


def test_bucket_allows_the_burst_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(20.0, 5, now=0.0)
    for _ in range(5):
        assert bucket.wait(0.0) == 0
        bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.05)
    assert bucket.wait(0.05) == 0  # one token back after 1/rate
    bucket.take(0.05)
    assert bucket.wait(0.05) == pytest.approx(0.05)


def test_bucket_never_holds_more_than_the_burst() -> None:
    bucket = TokenBucket(10.0, 3, now=0.0)
    assert bucket.wait(3600.0) == 0
    for _ in range(3):
        bucket.take(3600.0)
    assert bucket.wait(3600.0) > 0


def test_zero_rate_means_no_limit() -> None:
    bucket = TokenBucket(0.0, 1, now=0.0)
    for _ in range(1000):
        assert bucket.wait(0.0) == 0
        bucket.take(0.0)


def test_throttling_drains_the_bucket_and_lowers_the_rate_which_recovers() -> None:
    bucket = TokenBucket(20.0, 10, now=0.0)
    bucket.throttled(0.0)
    assert bucket.tokens <= 0
    assert bucket.rate < 20.0
    assert bucket.wait(0.0) == pytest.approx(1 / bucket.rate)
    lowered = bucket.rate
    for _ in range(2000):
        bucket.succeeded()
    assert lowered < bucket.rate == 20.0  # climbs back, never above the configured rate


def test_repeated_throttling_keeps_a_floor() -> None:
    bucket = TokenBucket(20.0, 1, now=0.0)
    for _ in range(100):
        bucket.throttled(0.0)
    assert bucket.rate == pytest.approx(1.0)  # 5% of the configured rate


# -- circuit breaker ----------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, open_seconds=30.0)
    breaker.failure(0.0)
    breaker.failure(0.0)
    breaker.success()  # a success in between resets the count
    breaker.failure(1.0)
    breaker.failure(1.0)
    assert breaker.state(1.0) is BreakerState.CLOSED
    breaker.failure(2.0)
    assert breaker.state(2.0) is BreakerState.OPEN
    assert breaker.wait(2.0) == pytest.approx(30.0)
    assert breaker.wait(20.0) == pytest.approx(12.0)


def test_breaker_half_opens_after_the_cool_down_and_a_probe_success_closes_it() -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=30.0)
    breaker.failure(0.0)
    assert breaker.state(29.9) is BreakerState.OPEN
    assert breaker.state(30.0) is BreakerState.HALF_OPEN
    assert breaker.wait(30.0) == 0
    breaker.begin(30.0)
    assert breaker.wait(30.0) == BUSY_WAIT_SECONDS  # one probe at a time
    breaker.end()
    breaker.success()
    assert breaker.state(30.0) is BreakerState.CLOSED


def test_a_probe_failure_reopens_for_a_full_cool_down() -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=30.0)
    breaker.failure(0.0)
    breaker.begin(31.0)
    breaker.end()
    breaker.failure(31.0)
    assert breaker.state(31.0) is BreakerState.OPEN
    assert breaker.wait(31.0) == pytest.approx(30.0)


def test_zero_failures_never_opens() -> None:
    breaker = CircuitBreaker(failures=0, open_seconds=30.0)
    for _ in range(100):
        breaker.failure(0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED


# -- in-flight cap and Retry-After gate ---------------------------------------------------


def test_in_flight_cap_never_blocks_and_is_thread_safe() -> None:
    cap = InFlightCap(3)
    granted: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        ok = cap.try_acquire()
        with lock:
            granted.append(ok)

    threads = [threading.Thread(target=grab) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 3 and cap.count == 3
    cap.release()
    assert cap.try_acquire()
    with pytest.raises(RuntimeError):
        InFlightCap(1).release()


def test_gate_holds_until_the_latest_retry_after() -> None:
    gate = RetryAfterGate()
    gate.hold(0.0, 10.0)
    gate.hold(1.0, 2.0)  # a shorter, later Retry-After does not shorten the wait
    assert gate.wait(5.0) == pytest.approx(5.0)
    assert gate.wait(10.0) == 0


# -- the combined guard -------------------------------------------------------------------


def test_guard_paces_calls_at_the_configured_rate() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, rate_per_second=20.0, burst=1)
    sent = 0
    for _ in range(10_000):
        wait = call(g)
        if wait:
            clock.sleep(wait)
        else:
            sent += 1
        if clock.at >= datetime(2025, 3, 1, 8, 1, tzinfo=UTC):
            break
    assert 1190 <= sent <= 1201  # 60 s at 20/s (plus the first token)


def test_guard_sends_nothing_before_retry_after_expires() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock)
    assert call(g, ThrottledError("429", target="erp", retry_after=12.0)) == 0
    assert g.admit() == pytest.approx(12.0)
    assert "Retry-After" in g.refusal
    clock.sleep(11.999)
    assert g.admit() > 0
    clock.sleep(0.001)
    assert g.admit() == 0
    g.release(called=False)


def test_throttling_without_retry_after_waits_a_default() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock)
    call(g, ThrottledError("429", target="erp"))
    assert g.admit() == pytest.approx(DEFAULT_THROTTLE_SECONDS)


@pytest.mark.parametrize(
    "error",
    [
        OutageError("refused", target="erp"),
        TransientError("HTTP 502", target="erp"),
        IndeterminateError("timeout", target="erp"),
    ],
)
def test_failures_open_the_breaker_and_the_guard_waits_for_half_open(error: Exception) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, breaker_failures=3, breaker_open_seconds=60.0)
    for _ in range(3):
        assert call(g, error) == 0
    assert g.state is BreakerState.OPEN
    assert g.admit() == pytest.approx(60.0)
    assert g.wait() == pytest.approx(60.0)
    clock.sleep(60.0)
    assert g.admit() == 0  # the probe
    assert g.admit() == BUSY_WAIT_SECONDS  # no second probe while the first is out
    g.record(None)
    g.release()
    assert g.state is BreakerState.CLOSED
    assert call(g) == 0


def test_a_failed_probe_reopens_and_a_long_outage_costs_one_probe_per_cool_down() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, breaker_failures=3, breaker_open_seconds=30.0)
    down = OutageError("refused", target="erp")
    calls = 0
    for _ in range(100_000):  # 30 minutes of outage
        wait = g.admit()
        if wait:
            clock.sleep(wait)
            continue
        calls += 1
        g.record(down)
        g.release()
        if clock.at >= datetime(2025, 3, 1, 8, 30, tzinfo=UTC):
            break
    assert calls == 3 + 60  # three to open, then one probe every 30 s


def test_business_and_throttled_answers_show_the_target_is_up() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, breaker_failures=2)
    call(g, OutageError("refused", target="erp"))
    call(g, BusinessError("period closed", target="erp"))
    call(g, OutageError("refused", target="erp"))
    assert g.state is BreakerState.CLOSED
    call(g, ThrottledError("429", target="erp", retry_after=0.0))
    call(g, OutageError("refused", target="erp"))
    assert g.state is BreakerState.CLOSED


def test_our_own_bug_is_no_verdict_on_the_target() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, breaker_failures=1)
    assert call(g, KeyError("oops")) == 0
    assert g.state is BreakerState.CLOSED


def test_in_flight_cap_and_release_give_slots_back() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, max_in_flight=2, rate_per_second=100.0, burst=2)
    assert g.admit() == 0 and g.admit() == 0
    assert g.admit() == BUSY_WAIT_SECONDS
    assert "in flight" in g.refusal
    g.release(called=False)  # no call made: the slot and the token come back
    assert g.admit() == 0
    g.release()
    g.release()
    assert g.in_flight.count == 0
    with pytest.raises(RuntimeError):
        g.release()  # no slot is held


def test_a_job_that_was_let_start_can_finish_and_its_debt_slows_the_next() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, rate_per_second=10.0, burst=1)
    assert g.admit() == 0
    g.record(None)  # the look-up
    assert g.again() == 0  # the post, though the bucket is empty
    g.record(None)
    g.release()
    assert g.admit() == pytest.approx(0.2)  # two tokens to earn back at 10/s


def test_again_stops_when_the_target_said_wait() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, breaker_failures=1)
    assert g.admit() == 0
    g.record(ThrottledError("429", target="erp", retry_after=5.0))
    assert g.again() == pytest.approx(5.0)
    g.record(None)  # (a later success clears nothing: the gate stands)
    assert g.again() > 0
    g.release()
    clock.sleep(5.0)
    assert g.admit() == 0
    g.record(OutageError("refused", target="erp"))
    assert g.again() == pytest.approx(30.0)
    g.release()


def test_calling_reports_the_outcome_and_reraises() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    g = guard(clock, breaker_failures=1)
    assert g.admit() == 0
    with pytest.raises(OutageError), g.calling():
        raise OutageError("refused", target="erp")
    assert g.state is BreakerState.OPEN
    g.release()
    assert g.in_flight.count == 0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        GuardPolicy(rate_per_second=-1)
    with pytest.raises(ValueError):
        GuardPolicy(burst=0)
    with pytest.raises(ValueError):
        GuardPolicy(half_open_probes=0)


def test_the_retry_after_gate_is_open_until_asked_and_never_longer_than_asked() -> None:
    gate = RetryAfterGate()
    assert gate.wait(-3600.0) == 0  # a clock stepped back before any Retry-After
    gate.hold(10.0, 5.0)
    assert gate.wait(12.0) == 3.0
    assert gate.wait(-3600.0) == 5.0  # stepped back after one: at most what was asked
    assert gate.wait(15.0) == 0
