"""Contract: units, their dedupe by (natural key, bytes), and control-number reuse."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from revbridge.errors import StoreError
from revbridge.store.base import NewUnit, RawMessage, Store, UnitStatus

AddRaw = Callable[..., RawMessage]
MakeUnit = Callable[..., NewUnit]


def test_add_get_by_raw(store: Store, add_raw: AddRaw, new_unit: MakeUnit) -> None:
    with store.unit_of_work() as uow:
        raw = add_raw(uow, b"ISA...ST*835*0001...SE...ST*835*0002...SE")
        first = uow.units.add(new_unit(raw.id, "K1", b"one"))
        second = uow.units.add(new_unit(raw.id, "K2", b"two"), UnitStatus.REJECTED)
    with store.unit_of_work() as uow:
        assert uow.units.get(first.id) == first
        assert uow.units.by_raw(raw.id) == [first, second]
        assert uow.units.by_raw(raw.id + 1) == []
    assert first.status == UnitStatus.PENDING
    assert second.status == UnitStatus.REJECTED
    assert first.reason is None
    assert dict(first.envelope) == {"ISA13": "000000001", "GS06": "1", "ST02": "0001"}
    assert (first.kind, first.natural_key, first.byte_start, first.byte_end) == (
        "x12.835",
        "K1",
        0,
        3,
    )
    assert first.first_segment == 3
    assert first.created_at.utcoffset() is not None


def test_same_key_same_bytes_is_a_duplicate(
    store: Store, add_raw: AddRaw, new_unit: MakeUnit
) -> None:
    with store.unit_of_work() as uow:
        raw = add_raw(uow, b"x")
        original = uow.units.add(new_unit(raw.id, "K1", b"body"))
    with store.unit_of_work() as uow:
        assert uow.units.find("K1", new_unit(raw.id, "K1", b"body").content_hash) == original
        assert uow.units.find("K1", new_unit(raw.id, "K1", b"else").content_hash) is None
        assert uow.units.find("K2", original.content_hash) is None
        assert uow.units.natural_key_seen("K1", original.content_hash) is None


def test_second_live_copy_is_refused_but_a_duplicate_is_recorded(
    store: Store, add_raw: AddRaw, new_unit: MakeUnit
) -> None:
    with store.unit_of_work() as uow:
        raw = add_raw(uow, b"x")
        original = uow.units.add(new_unit(raw.id, "K1", b"body"))
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.units.add(new_unit(raw.id, "K1", b"body"))
    with store.unit_of_work() as uow:
        copy = uow.units.add(new_unit(raw.id, "K1", b"body"), UnitStatus.DUPLICATE)
        assert copy.id != original.id
        assert uow.units.find("K1", original.content_hash) == original


def test_natural_key_reused_with_different_bytes(
    store: Store, add_raw: AddRaw, new_unit: MakeUnit
) -> None:
    with store.unit_of_work() as uow:
        raw = add_raw(uow, b"x")
        earlier = uow.units.add(new_unit(raw.id, "K1", b"v1"))
        later = uow.units.add(new_unit(raw.id, "K1", b"v2"))
    with store.unit_of_work() as uow:
        assert uow.units.natural_key_seen("K1", later.content_hash) == earlier
        assert uow.units.natural_key_seen("K1", earlier.content_hash) == later
        assert (
            uow.units.natural_key_seen("K1", new_unit(raw.id, "K1", b"v3").content_hash) == earlier
        )
        assert uow.units.natural_key_seen("K9", earlier.content_hash) is None


def test_set_status(store: Store, add_raw: AddRaw, new_unit: MakeUnit) -> None:
    with store.unit_of_work() as uow:
        unit = uow.units.add(new_unit(add_raw(uow, b"x").id))
        uow.units.set_status(unit.id, UnitStatus.REJECTED, "segment 4: bad CLP02")
    with store.unit_of_work() as uow:
        stored = uow.units.get(unit.id)
        assert (stored.status, stored.reason) == (UnitStatus.REJECTED, "segment 4: bad CLP02")
        uow.units.set_status(unit.id, UnitStatus.NORMALISED)
        assert uow.units.get(unit.id).reason is None


def test_unknown_ids(store: Store, add_raw: AddRaw, new_unit: MakeUnit) -> None:
    with store.unit_of_work() as uow:
        with pytest.raises(KeyError):
            uow.units.get(999)
        with pytest.raises(KeyError):
            uow.units.set_status(999, UnitStatus.NORMALISED)
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.units.add(new_unit(999))
