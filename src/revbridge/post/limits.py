"""The delivery limits every output declares: rate, burst, calls in flight, breaker.

Each target has its own published limits (a cloud ERP: so many requests per window, so
many concurrent calls) and its own way of failing, so the limits are fields of the
output, with defaults that suit the kind of output. ``bootstrap`` turns them into one
``TargetGuard`` per output.
"""

from __future__ import annotations

from revbridge.registry import Field


def limit_fields(*, rate_per_second: float, burst: int, max_in_flight: int) -> tuple[Field, ...]:
    """The limit fields, with this output's defaults for the rate and concurrency."""
    return (
        Field(
            "rate_per_second",
            "number",
            "Steady calls per second to this output (0: no limit). Set it at or below the "
            "target's published limit; a throttled answer lowers it for a while.",
            rate_per_second,
        ),
        Field("burst", "integer", "Calls that may go at once after a quiet spell.", burst),
        Field(
            "max_in_flight",
            "integer",
            "Calls to this output at the same time, across threads (0: no cap).",
            max_in_flight,
        ),
        Field(
            "breaker_failures",
            "integer",
            "Consecutive failed calls (outage, transient, no answer) that open the circuit "
            "breaker; while open nothing is sent (0: never open).",
            5,
        ),
        Field(
            "breaker_open_seconds",
            "number",
            "How long the breaker stays open before probe calls test the output again.",
            30.0,
        ),
        Field(
            "half_open_probes",
            "integer",
            "Probe calls let through at once when the breaker half-opens.",
            1,
        ),
    )
