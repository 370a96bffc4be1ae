"""Contract: incremental reads of exception items and audit entries (for the Parquet export)."""

from __future__ import annotations

from revbridge.store.base import NewException, Store


def test_exceptions_read_from_is_incremental(store: Store) -> None:
    with store.unit_of_work() as uow:
        ids = [uow.exceptions.open(NewException("r", "d", f"k{i}"))[0] for i in range(5)]
    with store.unit_of_work() as uow:
        assert [i.id for i in uow.exceptions.read_from(0)] == ids
        assert [i.id for i in uow.exceptions.read_from(ids[1], limit=2)] == ids[2:4]
        assert uow.exceptions.read_from(ids[-1]) == []


def test_audit_read_from_is_incremental(store: Store) -> None:
    with store.unit_of_work() as uow:
        for n in range(4):
            uow.audit.record("ana", f"act.{n}", "unit", str(n), {"n": n})
    with store.unit_of_work() as uow:
        entries = uow.audit.read_from(0)
        assert [e.action for e in entries] == ["act.0", "act.1", "act.2", "act.3"]
        later = uow.audit.read_from(entries[1].id, limit=1)
        assert [e.action for e in later] == ["act.2"]
        assert dict(later[0].detail) == {"n": 2}
        assert uow.audit.read_from(entries[-1].id) == []
