"""Contract: raw messages are listed by time received, in id order, page by page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from revbridge.store.base import RawMessage, Store

AddRaw = Callable[..., RawMessage]


def _three(store: Store, add_raw: AddRaw) -> list[RawMessage]:
    with store.unit_of_work() as uow:
        return [add_raw(uow, f"message {n}".encode(), name=f"{n}.835") for n in range(3)]


def test_everything_in_id_order_and_paged(store: Store, add_raw: AddRaw) -> None:
    raws = _three(store, add_raw)
    with store.unit_of_work() as uow:
        assert uow.raw.received() == raws
        first = uow.raw.received(limit=2)
        rest = uow.raw.received(after_id=first[-1].id, limit=2)
        assert uow.raw.received(after_id=raws[-1].id) == []
        assert uow.raw.received(limit=0) == []
    assert first + rest == raws


def test_time_range_is_half_open(store: Store, add_raw: AddRaw) -> None:
    raws = _three(store, add_raw)
    since, until = raws[1].received_at, raws[2].received_at
    with store.unit_of_work() as uow:
        between = uow.raw.received(since, until)
        from_second = uow.raw.received(since=since)
        before_second = uow.raw.received(until=since)
        later = uow.raw.received(since=until + timedelta(seconds=1))
    # Several messages may share a timestamp: the expectation follows the stored times.
    assert between == [r for r in raws if since <= r.received_at < until]
    assert from_second == [r for r in raws if r.received_at >= since]
    assert before_second == [r for r in raws if r.received_at < since]
    assert raws[1] in from_second and raws[1] not in before_second
    assert later == []
