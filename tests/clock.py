"""The one fake clock of the tests: ``sleep`` advances it (and is recorded), ``jump`` moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """Injected time, so hours of backoff and outage run in milliseconds.

    By default it starts a second ahead of real time: the store stamps new jobs and outbox
    items with real time, and a fake clock behind those stamps would be a clock skew no
    test asked for. Pass ``at`` to start elsewhere.
    """

    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime.now(UTC) + timedelta(seconds=1)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += timedelta(seconds=seconds)

    def jump(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
