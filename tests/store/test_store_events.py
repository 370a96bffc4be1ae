"""Contract: the event log (positions, exact envelopes, lookups, JSON rules for data)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest

from revbridge.domain.events import Event, SourceRef
from revbridge.errors import StoreError
from revbridge.store.base import Store, data_as

MakeEvent = Callable[..., Event]


def test_envelope_round_trips_exactly(store: Store, make_event: MakeEvent) -> None:
    event = make_event(data={"amount": "10.00", "nested": {"list": [1, True, None, "x"]}})
    bare = Event(
        id="00000000-0000-7000-8000-000000000001",
        type="exception.opened",
        schema_version=3,
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        recorded_at=datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        entity=None,
        facility=None,
        keys={},
        correlation_id="c",
        causation_id=None,
        source=SourceRef(channel="api", raw_id=0, unit_id=0),
    )
    with store.unit_of_work() as uow:
        positions = uow.events.append([event, bare])
    with store.unit_of_work() as uow:
        stored = uow.events.read_from(0)
    assert [item.position for item in stored] == positions
    assert [item.event for item in stored] == [event, bare]
    assert stored[0].event.occurred_at.tzinfo == UTC
    assert isinstance(stored[0].event.source, SourceRef)


def test_times_come_back_as_the_same_instant_in_utc(store: Store, make_event: MakeEvent) -> None:
    eastern = timezone(timedelta(hours=-5))
    at = datetime(2025, 3, 14, 4, 26, 53, 999999, tzinfo=eastern)
    with store.unit_of_work() as uow:
        uow.events.append([make_event(at=at)])
    with store.unit_of_work() as uow:
        back = uow.events.read_from(0)[0].event
    assert back.occurred_at == at
    assert back.occurred_at.utcoffset() == timedelta(0)
    assert back.occurred_at.isoformat() == "2025-03-14T09:26:53.999999+00:00"


def test_naive_times_are_refused(store: Store, make_event: MakeEvent) -> None:
    with pytest.raises(ValueError), store.unit_of_work() as uow:
        uow.events.append([make_event(at=datetime(2025, 1, 1))])


def test_decimals_in_data_come_back_as_strings(store: Store, make_event: MakeEvent) -> None:
    data = {"paid": Decimal("123.40"), "adjustments": [Decimal("-0.01"), Decimal("1E+2")]}
    with store.unit_of_work() as uow:
        uow.events.append([make_event(data=data)])
    with store.unit_of_work() as uow:
        back = uow.events.read_from(0)[0].event.data
    assert back == {"paid": "123.40", "adjustments": ["-0.01", "1E+2"]}
    assert Decimal(back["paid"]) == data["paid"]


@pytest.mark.parametrize(
    "data",
    [{"paid": 123.45}, {"lines": [{"amount": 0.1}]}, {"deep": {"deeper": (1, 2.0)}}],
)
def test_floats_in_data_are_refused(
    store: Store, make_event: MakeEvent, data: dict[str, object]
) -> None:
    with pytest.raises(TypeError), store.unit_of_work() as uow:
        uow.events.append([make_event(data=data)])
    with store.unit_of_work() as uow:
        assert uow.events.count() == 0


def test_non_json_data_is_refused(store: Store, make_event: MakeEvent) -> None:
    with pytest.raises(TypeError), store.unit_of_work() as uow:
        uow.events.append([make_event(data={"when": datetime(2025, 1, 1, tzinfo=UTC)})])
    with pytest.raises(TypeError), store.unit_of_work() as uow:
        uow.events.append([make_event(data={"by_number": {1: "x"}})])


def test_positions_strictly_increase_across_transactions(
    store: Store, make_event: MakeEvent
) -> None:
    seen: list[int] = []
    for size in (1, 3, 0, 2):
        with store.unit_of_work() as uow:
            positions = uow.events.append([make_event() for _ in range(size)])
        assert len(positions) == size
        seen += positions
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.events.append([make_event()])
        raise RuntimeError("rolled back")
    with store.unit_of_work() as uow:
        after = uow.events.append([make_event()])
        assert uow.events.count() == 7
    assert after[0] > seen[-1]


def test_repeated_event_id_is_refused(store: Store, make_event: MakeEvent) -> None:
    event = make_event()
    with store.unit_of_work() as uow:
        uow.events.append([event])
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.events.append([make_event(), event])
    with store.unit_of_work() as uow:
        assert uow.events.count() == 1


def test_by_correlation_in_order(store: Store, make_event: MakeEvent) -> None:
    a1, b1, a2, a3 = (make_event(correlation_id=c) for c in ("A", "B", "A", "A"))
    with store.unit_of_work() as uow:
        uow.events.append([a1, b1, a2])
    with store.unit_of_work() as uow:
        uow.events.append([a3])
    with store.unit_of_work() as uow:
        found = uow.events.by_correlation("A")
        assert [item.event for item in found] == [a1, a2, a3]
        assert [item.position for item in found] == sorted(item.position for item in found)
        assert uow.events.by_correlation("none") == []


def test_by_key_matches_any_key_name(store: Store, make_event: MakeEvent) -> None:
    first = make_event(keys={"claim_id": "CLM-1", "account": "ACC-1"})
    second = make_event(keys={"payer_claim_control": "CLM-1"})
    third = make_event(keys={"account": "ACC-2", "encounter": "ACC-2"})
    with store.unit_of_work() as uow:
        uow.events.append([first, second, third])
    with store.unit_of_work() as uow:
        assert [item.event for item in uow.events.by_key("CLM-1")] == [first, second]
        assert [item.event for item in uow.events.by_key("ACC-2")] == [third]
        assert uow.events.by_key("claim_id") == []


def test_read_from_pages(store: Store, make_event: MakeEvent) -> None:
    events = [make_event() for _ in range(25)]
    with store.unit_of_work() as uow:
        uow.events.append(events)
    pages: list[list[Event]] = []
    after = 0
    with store.unit_of_work() as uow:
        while page := uow.events.read_from(after, limit=10):
            pages.append([item.event for item in page])
            after = page[-1].position
        assert uow.events.read_from(after) == []
        assert uow.events.count() == 25
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [event for page in pages for event in page] == events


class _Shape(msgspec.Struct):
    amount: str
    items: list[int] = []


def test_data_reads_back_as_a_mapping_and_in_a_declared_shape(
    store: Store, make_event: MakeEvent
) -> None:
    data = {"amount": "10.00", "items": [1, 2], "other": {"deep": ["x", None]}}
    with store.unit_of_work() as uow:
        uow.events.append([make_event(data=data), make_event(data={"items": [3]})])
    with store.unit_of_work() as uow:
        first, second = (s.event.data for s in uow.events.read_from(0))
    shaped = data_as(first, _Shape)  # from the stored text, before the mapping is read
    assert (shaped.amount, shaped.items) == ("10.00", [1, 2])
    assert data_as(data, _Shape) == shaped  # an event not read from the store: converted
    assert first == data and data == first and dict(first) == data and len(first) == 3
    assert "other" in first and first.get("missing") is None and repr(first) == repr(data)
    assert data_as(first, _Shape) == shaped  # from the mapping, once read
    with pytest.raises(ValueError, match="_Shape"):
        data_as(second, _Shape)  # no amount
    assert second == {"items": [3]} and second != first
