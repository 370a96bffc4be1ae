"""Contract: journals are kept exactly (Decimal amounts), once per key, traceable by source."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest

from revbridge.domain.events import utcnow
from revbridge.domain.journal import Journal, JournalLine, JournalStatus
from revbridge.errors import StoreError
from revbridge.store.base import NewUnit, RawMessage, Store

MakeJournal = Callable[..., Journal]


def test_add_and_get_exactly(store: Store, make_journal: MakeJournal) -> None:
    journal = make_journal("J-1", amount="1234567.10")
    before = utcnow()
    with store.unit_of_work() as uow:
        assert uow.journals.add(journal, target="tryton", unit_id=None) is True
    with store.unit_of_work() as uow:
        record = uow.journals.get("J-1")
        assert uow.journals.get("J-404") is None
    assert record is not None
    assert record.journal == journal
    debit = record.journal.lines[0].debit
    assert isinstance(debit, Decimal)
    assert str(debit) == "1234567.10"
    assert str(record.journal.lines[1].debit) == "0.00"
    assert isinstance(record.journal.lines[0].dimensions, dict)
    assert (record.status, record.target, record.unit_id) == (
        JournalStatus.PREPARED,
        "tryton",
        None,
    )
    assert (record.erp_document_id, record.posted_at, record.last_error) == (None, None, None)
    assert before <= record.created_at <= utcnow()


def test_many_lines_keep_their_order(store: Store) -> None:
    amounts = [Decimal("0.01"), Decimal("10"), Decimal("99999999999.99"), Decimal("5.50")]
    lines = [
        JournalLine(f"4{i:03d}", Decimal("0.00"), a, f"line {i}") for i, a in enumerate(amounts)
    ]
    lines.append(JournalLine("1100", sum(amounts, Decimal("0.00")), Decimal("0.00")))
    journal = Journal(
        "J-lines", "ACME", utcnow().date(), "many", tuple(lines), "r1", "CAD", "deposit"
    )
    with store.unit_of_work() as uow:
        uow.journals.add(journal, target="gl-file", unit_id=None)
    with store.unit_of_work() as uow:
        record = uow.journals.get("J-lines")
    assert record is not None
    assert record.journal == journal
    assert [str(line.credit) for line in record.journal.lines] == [
        "0.01",
        "10",
        "99999999999.99",
        "5.50",
        "0.00",
    ]


def test_add_is_idempotent(store: Store, make_journal: MakeJournal) -> None:
    with store.unit_of_work() as uow:
        assert uow.journals.add(make_journal("J-1", amount="10.00"), target="a", unit_id=None)
        uow.journals.mark_failed("J-1", "ERP said no")
    with store.unit_of_work() as uow:
        assert (
            uow.journals.add(make_journal("J-1", amount="99.00"), target="b", unit_id=None) is False
        )
        record = uow.journals.get("J-1")
        assert len(uow.journals.all()) == 1
    assert record is not None
    assert (record.target, record.status, record.journal.total) == (
        "a",
        JournalStatus.FAILED,
        Decimal("10.00"),
    )


def test_unit_reference(
    store: Store,
    make_journal: MakeJournal,
    add_raw: Callable[..., RawMessage],
    new_unit: Callable[..., NewUnit],
) -> None:
    with store.unit_of_work() as uow:
        unit = uow.units.add(new_unit(add_raw(uow, b"x").id))
        uow.journals.add(make_journal("J-1"), target="t", unit_id=unit.id)
        record = uow.journals.get("J-1")
        assert record is not None and record.unit_id == unit.id
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.journals.add(make_journal("J-2"), target="t", unit_id=unit.id + 1000)


def test_keys_by_source(store: Store, make_journal: MakeJournal) -> None:
    with store.unit_of_work() as uow:
        uow.journals.add(
            make_journal("J-1", source={"claim": "CLM-1", "trace": "TRN-1"}),
            target="t",
            unit_id=None,
        )
        uow.journals.add(
            make_journal("J-2", source={"payer_claim": "CLM-1"}), target="t", unit_id=None
        )
        uow.journals.add(
            make_journal("J-3", source={"claim": "CLM-3", "trace": "TRN-1"}),
            target="t",
            unit_id=None,
        )
    with store.unit_of_work() as uow:
        assert sorted(uow.journals.keys_by_source("CLM-1")) == ["J-1", "J-2"]
        assert sorted(uow.journals.keys_by_source("TRN-1")) == ["J-1", "J-3"]
        assert uow.journals.keys_by_source("claim") == []
        assert uow.journals.keys_by_source("nothing") == []


def test_keys_by_source_skips_positional_references(
    store: Store, make_journal: MakeJournal
) -> None:
    source = {"patient_control_number": "7", "raw_id": "17", "unit_id": "18", "segment": "19"}
    with store.unit_of_work() as uow:
        uow.journals.add(make_journal("J-1", source=source), target="t", unit_id=None)
    with store.unit_of_work() as uow:
        assert uow.journals.keys_by_source("7") == ["J-1"]
        assert [uow.journals.keys_by_source(n) for n in ("17", "18", "19")] == [[], [], []]


def test_mark_posted_and_failed(store: Store, make_journal: MakeJournal) -> None:
    at = utcnow() + timedelta(seconds=3)
    with store.unit_of_work() as uow:
        for key in ("J-1", "J-2", "J-3"):
            uow.journals.add(make_journal(key), target="t", unit_id=None)
        uow.journals.mark_posted("J-1", "MOVE/42", at)
        uow.journals.mark_failed("J-2", "account 1200 closed")
    with store.unit_of_work() as uow:
        posted, failed = uow.journals.get("J-1"), uow.journals.get("J-2")
        assert [r.journal.key for r in uow.journals.all(JournalStatus.POSTED)] == ["J-1"]
        assert [r.journal.key for r in uow.journals.all(JournalStatus.FAILED)] == ["J-2"]
        assert [r.journal.key for r in uow.journals.all(JournalStatus.PREPARED)] == ["J-3"]
        assert sorted(r.journal.key for r in uow.journals.all()) == ["J-1", "J-2", "J-3"]
        with pytest.raises(KeyError):
            uow.journals.mark_posted("J-404", "x", at)
        with pytest.raises(KeyError):
            uow.journals.mark_failed("J-404", "x")
    assert posted is not None and failed is not None
    assert (posted.status, posted.erp_document_id, posted.posted_at) == (
        JournalStatus.POSTED,
        "MOVE/42",
        at,
    )
    assert (failed.status, failed.last_error) == (JournalStatus.FAILED, "account 1200 closed")
