"""Classify an HTTP answer (or a failed exchange) into the error tree of DESIGN.md §8.

The class decides what happens next, so it must be right per target: a throttled call
waits and never parks; a business refusal parks at once; an outage waits for the circuit
breaker; an indeterminate call is looked up before anything is resent. Cloud ERPs do not
all throttle with 429: NetSuite answers ``400`` with ``SSS_REQUEST_LIMIT_EXCEEDED`` when
its concurrency limit is hit, which is throttling, not a refusal of the content.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from revbridge.errors import (
    BusinessError,
    DeliveryError,
    IndeterminateError,
    OutageError,
    ThrottledError,
    TransientError,
)

#: Body markers of a 400 that means "too many requests" (NetSuite's concurrency limit).
THROTTLE_MARKERS = ("SSS_REQUEST_LIMIT_EXCEEDED",)


def retry_after_seconds(headers: Mapping[str, str], now: dt.datetime | None = None) -> float | None:
    """The ``Retry-After`` header in seconds from ``now`` (delay-seconds or HTTP-date).

    ``None`` when absent or unreadable; a date in the past gives 0.
    """
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _seconds_until(text: str, now: dt.datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def classify_response(
    target: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    what: str = "call",
    now: dt.datetime | None = None,
) -> DeliveryError | None:
    """The error an answer stands for, or ``None`` for a success (2xx).

    408 and 5xx: transient. 429, and 503 with ``Retry-After``: throttled. A 400 whose body
    names a request-limit marker: throttled. Other 4xx: business (the content or the
    request was refused; sending it again unchanged cannot help). Anything else
    (1xx, 3xx): transient, since it is no verdict on the content.
    """
    if 200 <= status < 300:
        return None
    code = f"http_{status}"
    detail = _short(body)
    message = f"{what}: {target} answered HTTP {status}" + (f": {detail}" if detail else "")
    retry_after = retry_after_seconds(headers, now)
    if status == 429 or (status == 503 and retry_after is not None) or _limit_marker(status, body):
        return ThrottledError(message, target=target, retry_after=retry_after, code=code)
    if status == 408 or status >= 500:
        return TransientError(message, target=target, code=code)
    if 400 <= status < 500:
        return BusinessError(message, target=target, code=code)
    return TransientError(message, target=target, code=code)


def classify_exchange_failure(
    target: str, error: BaseException, *, sent: bool, what: str = "call"
) -> DeliveryError:
    """A call that got no answer: an outage if the request never left (connection
    refused, unreachable host, connect timeout), indeterminate if it may have arrived
    (timeout or reset after sending: the target may have committed)."""
    if not sent:
        return OutageError(
            f"{what}: cannot reach {target}: {error}", target=target, code="unreachable"
        )
    return IndeterminateError(
        f"{what}: no answer from {target}, it may have committed: {error}",
        target=target,
        code="no_answer",
    )


def _limit_marker(status: int, body: bytes) -> bool:
    if status != 400:
        return False
    text = body[:4096].decode("utf-8", "replace")
    return any(marker in text for marker in THROTTLE_MARKERS)


def _short(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()
