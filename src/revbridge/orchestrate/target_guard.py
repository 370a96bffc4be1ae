"""Per-target protection: what may be sent to one target, and when.

An ERP publishes limits (requests per window, calls in flight) and has bad days. Sending
past a limit earns 429s and, on some ERPs, a temporary ban; hammering a target that is
down only delays its recovery. A ``TargetGuard`` answers, before each call, "go" or "wait
this long", from four parts:

- ``RetryAfterGate``: nothing is sent before a received ``Retry-After`` has expired.
- ``CircuitBreaker``: after N consecutive failures the target is left alone for a
  cool-down, then a few probe calls decide whether it is back.
- ``InFlightCap``: at most N callers at the same time (the ERP's concurrency limit); a
  caller's own calls go one after the other, so each holds one slot for all of them.
- ``TokenBucket``: a steady rate with a small burst; a throttled answer drains it and
  lowers its rate, which then climbs back slowly (so a limit lower than configured is
  found, and 429s stay rare after warm-up).

Time comes from the injected ``Clock``; the guard never sleeps. The caller defers its
work by the wait it is given, so hours of outage are tested in milliseconds.

A guard lives in one process. Post jobs for a target share one queue key, so they run
one at a time across all workers and a deferred job holds back the rest: a Retry-After
or an open breaker seen by one worker therefore holds for all. The rate and the calls in
flight are counted per process.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from revbridge.errors import BusinessError, DeliveryError, ThrottledError
from revbridge.orchestrate.clock import Clock

#: Wait suggested when every call slot (in flight, or half-open probe) is taken: the guard
#: cannot know when one frees up, so the caller looks again shortly.
BUSY_WAIT_SECONDS = 0.25
#: Wait after a throttled answer that carried no ``Retry-After``.
DEFAULT_THROTTLE_SECONDS = 1.0
#: Multiplicative decrease of the bucket rate on each throttled answer.
THROTTLE_RATE_FACTOR = 0.7
#: Additive increase per successful call, as a fraction of the configured rate.
RECOVERY_STEP_FRACTION = 0.001
#: The adapted rate never falls below this fraction of the configured rate.
MIN_RATE_FRACTION = 0.05
#: Token shortfall treated as none: float rounding must not turn "now" into "in 1e-17 s".
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Limits for one target (the output's config fields). Zero disables a limit."""

    rate_per_second: float = 0.0
    burst: int = 1
    max_in_flight: int = 0
    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.rate_per_second < 0 or self.burst < 1 or self.max_in_flight < 0:
            raise ValueError(f"invalid rate limit: {self}")
        if self.breaker_failures < 0 or self.breaker_open_seconds < 0:
            raise ValueError(f"invalid circuit breaker: {self}")
        if self.half_open_probes < 1:
            raise ValueError("half_open_probes must be at least 1")


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; one call takes one token.

    Not thread-safe on its own: ``TargetGuard`` serialises access. Times are seconds on
    any monotonic scale (the guard passes POSIX seconds from its clock).
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.configured = rate
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._at = now

    @property
    def unlimited(self) -> bool:
        return self.configured <= 0

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0: one is available now)."""
        if self.unlimited:
            return 0.0
        self._refill(now)
        return 0.0 if self.tokens >= 1 - _EPSILON else (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        """Take a token (after ``wait`` said 0)."""
        if not self.unlimited:
            self._refill(now)
            self.tokens -= 1

    def give_back(self) -> None:
        """Return a token taken for a call that was not made."""
        if not self.unlimited:
            self.tokens = min(self.burst, self.tokens + 1)

    def throttled(self, now: float) -> None:
        """The target said "too many": empty the bucket and lower the rate."""
        if self.unlimited:
            return
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)
        floor = self.configured * MIN_RATE_FRACTION
        self.rate = max(floor, self.rate * THROTTLE_RATE_FACTOR)

    def succeeded(self) -> None:
        """Climb back towards the configured rate, one small step per accepted call."""
        if not self.unlimited:
            self.rate = min(self.configured, self.rate + self.configured * RECOVERY_STEP_FRACTION)

    def _refill(self, now: float) -> None:
        if now > self._at:
            self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
            self._at = now


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures (0: never); open for
    ``open_seconds``; then half-open, admitting ``probes`` calls at a time: a success
    closes it, a failure opens it again for another cool-down.

    Not thread-safe on its own: ``TargetGuard`` serialises access.
    """

    def __init__(self, failures: int, open_seconds: float, probes: int = 1) -> None:
        self.failures, self.open_seconds, self.probes = failures, open_seconds, probes
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = 0

    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self.half_open_at:
            self._state, self._probing = BreakerState.HALF_OPEN, 0
        return self._state

    @property
    def half_open_at(self) -> float:
        return self._opened_at + self.open_seconds

    def wait(self, now: float) -> float:
        """Seconds before a call may be admitted (0: now)."""
        state = self.state(now)
        if state is BreakerState.OPEN:
            return self.half_open_at - now
        if state is BreakerState.HALF_OPEN and self._probing >= self.probes:
            return BUSY_WAIT_SECONDS
        return 0.0

    def begin(self, now: float) -> None:
        """An admitted call starts (in half-open state it is a probe)."""
        if self.state(now) is BreakerState.HALF_OPEN:
            self._probing += 1

    def end(self) -> None:
        """An admitted call ended or was not made: its probe slot is free again."""
        if self._state is BreakerState.HALF_OPEN:
            self._probing = max(0, self._probing - 1)

    def success(self) -> None:
        """The target answered: it is up, whatever state we thought it was in."""
        self._consecutive = 0
        self._state, self._probing = BreakerState.CLOSED, 0

    def failure(self, now: float) -> None:
        self._consecutive += 1
        state = self.state(now)
        probe_failed = state is BreakerState.HALF_OPEN
        too_many = state is BreakerState.CLOSED and 0 < self.failures <= self._consecutive
        if probe_failed or too_many:
            self._open(now)

    def _open(self, now: float) -> None:
        self._state, self._opened_at, self._probing = BreakerState.OPEN, now, 0


class InFlightCap:
    """At most ``limit`` calls at once (0: no cap); acquiring never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def try_acquire(self) -> bool:
        with self._lock:
            if self.limit and self._count >= self.limit:
                return False
            self._count += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self._count <= 0:
                raise RuntimeError("released a call slot that was not held")
            self._count -= 1


class RetryAfterGate:
    """Closed until the latest ``Retry-After`` the target sent has expired.

    Open until the target first sends one; and never closed for longer than it asked,
    so a clock stepped back (NTP, a resumed VM) cannot stretch a wait."""

    def __init__(self) -> None:
        self.until: float | None = None
        self.asked = 0.0

    def hold(self, now: float, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.until is None or now + seconds > self.until:
            self.until, self.asked = now + seconds, seconds

    def wait(self, now: float) -> float:
        return 0.0 if self.until is None else min(max(0.0, self.until - now), self.asked)


class TargetGuard:
    """The limits of one target, combined; thread-safe.

    A caller (one post job) asks ``admit()``: 0 means go, and it then holds one call
    slot until ``release()``; any other answer is the seconds to wait. Holding the slot,
    it may make several calls one after the other (look keys up, then post): the first
    is covered by ``admit()``, each further one by ``again()``. Every call's outcome is
    reported by ``record(error)``, or by making the call inside ``calling()``.
    """

    def __init__(self, name: str, policy: GuardPolicy, clock: Clock) -> None:
        self.name, self.policy, self.clock = name, policy, clock
        self._epoch = clock.now()
        self.bucket = TokenBucket(policy.rate_per_second, policy.burst, self._now())
        self.breaker = CircuitBreaker(
            policy.breaker_failures, policy.breaker_open_seconds, policy.half_open_probes
        )
        self.in_flight = InFlightCap(policy.max_in_flight)
        self.gate = RetryAfterGate()
        self.refusal = ""  # why the last admit() or again() said wait, for the job's record
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TargetGuard({self.name!r}, {self.state.value})"

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self.breaker.state(self._now())

    def _now(self) -> float:
        """Seconds since the guard was made: small numbers keep float rounding small."""
        return (self.clock.now() - self._epoch).total_seconds()

    def wait(self) -> float:
        """Seconds before the target may be called again because it asked us to wait
        (Retry-After) or is deemed down (breaker open); 0: now. Ignores the rate limit
        and the calls in flight, which are ours to pace."""
        with self._lock:
            now = self._now()
            return _whole_microseconds(max(self.gate.wait(now), self.breaker.wait(now)))

    def admit(self) -> float:
        """0.0: go (a call slot is held, a token taken); else the seconds to wait."""
        with self._lock:
            now = self._now()
            blocked = self._blocked(now)
            if blocked > 0:
                return blocked
            if not self.in_flight.try_acquire():
                return self._refuse("calls in flight at the cap", BUSY_WAIT_SECONDS)
            paced = self.bucket.wait(now)
            if paced > 0:
                self.in_flight.release()
                return self._refuse("rate limit", paced)
            self.bucket.take(now)
            self.breaker.begin(now)
            return 0.0

    def again(self) -> float:
        """Another call on a held slot: 0.0 go, else the seconds to wait (Retry-After or
        breaker; the slot should then be released). The token is taken even if the
        bucket is empty, as a debt the next ``admit()`` waits off: a job that was let
        start must be able to finish, or a look-up before each post could starve it."""
        with self._lock:
            now = self._now()
            blocked = self._blocked(now, follow_up=True)
            if blocked > 0:
                return blocked
            self.bucket.take(now)
            return 0.0

    def _blocked(self, now: float, *, follow_up: bool = False) -> float:
        if self.gate.wait(now) > 0:
            return self._refuse("the target's Retry-After has not expired", self.gate.wait(now))
        state = self.breaker.state(now)
        if state is BreakerState.OPEN or (not follow_up and self.breaker.wait(now) > 0):
            label = state.value.replace("_", "-")
            return self._refuse(f"circuit breaker {label}", self.breaker.wait(now))
        return 0.0

    def _refuse(self, reason: str, seconds: float) -> float:
        self.refusal = f"{self.name}: {reason}"
        return _whole_microseconds(seconds)

    def release(self, *, called: bool = True) -> None:
        """Done calling: free the slot (``called=False``: no call was made, so the
        token goes back too)."""
        with self._lock:
            self.in_flight.release()
            self.breaker.end()
            if not called:
                self.bucket.give_back()

    def record(self, error: BaseException | None) -> None:
        """The outcome of one call: ``None`` for success, or what it raised."""
        with self._lock:
            now = self._now()
            if error is None or isinstance(error, BusinessError):
                self.breaker.success()  # the target answered (refusing content is an answer)
                self.bucket.succeeded()
            elif isinstance(error, ThrottledError):
                self.breaker.success()  # up, only busy
                self.bucket.throttled(now)
                delay = DEFAULT_THROTTLE_SECONDS if error.retry_after is None else error.retry_after
                self.gate.hold(now, delay)
            elif isinstance(error, DeliveryError):  # transient, indeterminate, outage
                self.breaker.failure(now)
            # anything else is our own bug, not the target's doing: no verdict on it

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Make one call in the block and record its outcome (the slot stays held)."""
        try:
            yield
        except BaseException as exc:
            self.record(exc)
            raise
        self.record(None)


def _whole_microseconds(seconds: float) -> float:
    """Round a wait up to the clock's resolution, so that waiting it always gets there."""
    if seconds <= 0:
        return 0.0
    return max(1, math.ceil(seconds * 1_000_000 - _EPSILON)) / 1_000_000
