"""Contract: by_key finds exactly the events holding a value, however appends share keys.

Backends may index keys as they like (SQLite indexes where a run of consecutive events
holding a value starts); these tests compare by_key with a plain scan of every event.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from revbridge.domain.events import Event
from revbridge.store.base import Store

MakeEvent = Callable[..., Event]
VALUES = ("PAY-1", "PAY-2", "CLM-1", "CLM-2", "CLM-3", "J-1")


def _random_keys(rng: random.Random) -> dict[str, str]:
    names = ("payment", "claim", "journal", "other")
    return {name: rng.choice(VALUES) for name in rng.sample(names, rng.randint(0, 3))}


def _append_batches(store: Store, make_event: MakeEvent, rng: random.Random) -> list[Event]:
    """Appends of 1..12 events; an event often repeats the keys (the very dict) of the one
    before, as a claim's adjustments do, or a few of them."""
    appended: list[Event] = []
    for _ in range(25):
        batch: list[Event] = []
        keys = _random_keys(rng)
        for _ in range(rng.randint(1, 12)):
            roll = rng.random()
            if roll < 0.3:
                keys = _random_keys(rng)
            elif roll < 0.5:
                keys = {**keys, **_random_keys(rng)}
            batch.append(make_event(keys=keys))
        with store.unit_of_work() as uow:
            uow.events.append(batch)
        appended += batch
    return appended


@pytest.mark.parametrize("seed", range(6))
def test_by_key_equals_a_scan(store: Store, make_event: MakeEvent, seed: int) -> None:
    appended = _append_batches(store, make_event, random.Random(seed))
    with store.unit_of_work() as uow:
        for value in (*VALUES, "unknown"):
            expected = [e.id for e in appended if value in e.keys.values()]
            assert [s.event.id for s in uow.events.by_key(value)] == expected, value


def test_runs_broken_by_one_event_and_resumed(store: Store, make_event: MakeEvent) -> None:
    shared = {"payment": "PAY-1", "claim": "CLM-1"}
    events = [
        make_event(keys=shared),
        make_event(keys=shared),
        make_event(keys={"claim": "CLM-2"}),
        make_event(keys=shared),
        make_event(keys={"payment": "PAY-1"}),
    ]
    with store.unit_of_work() as uow:
        uow.events.append(events)
        uow.events.append([make_event(keys={"claim": "CLM-1"})])
    with store.unit_of_work() as uow:
        assert len(uow.events.by_key("PAY-1")) == 4
        assert len(uow.events.by_key("CLM-1")) == 4
        assert len(uow.events.by_key("CLM-2")) == 1


def test_a_rolled_back_append_leaves_no_key(store: Store, make_event: MakeEvent) -> None:
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.events.append([make_event(keys={"claim": "CLM-9"})])
        raise RuntimeError("abort")
    with store.unit_of_work() as uow:
        uow.events.append(
            [make_event(keys={"claim": "CLM-8"}), make_event(keys={"claim": "CLM-8"})]
        )
    with store.unit_of_work() as uow:
        assert uow.events.by_key("CLM-9") == []
        assert len(uow.events.by_key("CLM-8")) == 2
