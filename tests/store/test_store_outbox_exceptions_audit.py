"""Contract: outbox lifecycle, exception items (dedupe, resolve, work queue), approvals, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from revbridge.domain.events import utcnow
from revbridge.errors import StoreError
from revbridge.store.base import (
    ApprovalStatus,
    ExceptionStatus,
    NewException,
    OutboxStatus,
    Resolution,
    Store,
)


def test_outbox_lifecycle(store: Store) -> None:
    now = utcnow() + timedelta(seconds=1)
    with store.unit_of_work() as uow:
        first = uow.outbox.add("tryton", "J-1")
        second = uow.outbox.add("tryton", "J-2")
        other = uow.outbox.add("gl-file", "J-1")
        assert [item.id for item in uow.outbox.due("tryton", now, 10)] == [first, second]
        assert [item.id for item in uow.outbox.due("tryton", now, 1)] == [first]
        assert [item.id for item in uow.outbox.due("gl-file", now, 10)] == [other]
        item = uow.outbox.due("tryton", now, 1)[0]
        assert (item.target, item.journal_key, item.status, item.attempts) == (
            "tryton",
            "J-1",
            OutboxStatus.PENDING,
            0,
        )
        assert (item.document_id, item.last_error) == (None, None)

        uow.outbox.mark_in_flight([first, second], "w1")
        later = now + timedelta(minutes=2)
        uow.outbox.mark_retry(first, "timeout after commit?", later, "w1")
        uow.outbox.mark_done(second, "MOVE/7")
        assert uow.outbox.due("tryton", now, 10) == []
        retried = uow.outbox.due("tryton", later, 10)
        assert [(i.id, i.status, i.attempts, i.last_error) for i in retried] == [
            (first, OutboxStatus.IN_FLIGHT, 1, "timeout after commit?")
        ]
        assert retried[0].run_after == later

        uow.outbox.mark_in_flight([first], "w1")
        uow.outbox.mark_failed(first, "rejected: period closed")
        assert uow.outbox.due("tryton", later, 10) == []
        assert uow.outbox.count() == 3
        assert uow.outbox.count(OutboxStatus.DONE) == 1
        assert uow.outbox.count(OutboxStatus.FAILED) == 1
        assert uow.outbox.count(OutboxStatus.PENDING) == 1
        assert uow.outbox.count(OutboxStatus.IN_FLIGHT) == 0
        done = uow.outbox.due("gl-file", now, 10)
        assert len(done) == 1
    with store.unit_of_work() as uow:
        with pytest.raises(KeyError):
            uow.outbox.mark_done(999, "x")
        with pytest.raises(KeyError):
            uow.outbox.mark_failed(999, "x")
        with pytest.raises(KeyError):
            uow.outbox.mark_retry(999, "x", now, "w1")
        with pytest.raises(KeyError):
            uow.outbox.mark_in_flight([999], "w1")


def test_outbox_attempts_count(store: Store) -> None:
    now = utcnow() + timedelta(seconds=1)
    with store.unit_of_work() as uow:
        item_id = uow.outbox.add("t", "J-1")
        uow.outbox.mark_in_flight([item_id], "w1")
        uow.outbox.mark_in_flight([item_id], "w1")
        (item,) = uow.outbox.due("t", now, 5)
        assert (item.status, item.attempts) == (OutboxStatus.IN_FLIGHT, 2)


def test_exception_dedupe(store: Store) -> None:
    item = NewException(
        reason="unmatched_payment",
        detail="TRN 1234 has no claim",
        dedupe_key="unmatched:TRN-1234",
        subject={"trace": "TRN-1234", "amount": Decimal("10.50")},
    )
    with store.unit_of_work() as uow:
        item_id, opened = uow.exceptions.open(item)
        assert opened is True
        assert uow.exceptions.open(item) == (item_id, False)
    with store.unit_of_work() as uow:
        again = NewException("other", "other detail", "unmatched:TRN-1234")
        assert uow.exceptions.open(again) == (item_id, False)
        stored = uow.exceptions.get(item_id)
    assert (stored.reason, stored.detail, stored.status) == (
        "unmatched_payment",
        "TRN 1234 has no claim",
        ExceptionStatus.OPEN,
    )
    assert dict(stored.subject) == {"trace": "TRN-1234", "amount": "10.50"}
    assert (stored.resolved_at, stored.resolved_by) == (None, None)
    assert stored.opened_at.utcoffset() is not None


def test_exception_resolve_and_list(store: Store) -> None:
    at = utcnow()
    with store.unit_of_work() as uow:
        ids = [uow.exceptions.open(NewException("r", "d", f"k{i}"))[0] for i in range(3)]
        uow.exceptions.resolve(ids[1], "alice@billing", at)
    with store.unit_of_work() as uow:
        resolved = uow.exceptions.get(ids[1])
        assert (resolved.status, resolved.resolved_by, resolved.resolved_at) == (
            ExceptionStatus.RESOLVED,
            "alice@billing",
            at,
        )
        assert [i.id for i in uow.exceptions.all()] == ids
        assert [i.id for i in uow.exceptions.all(ExceptionStatus.OPEN)] == [ids[0], ids[2]]
        assert [i.id for i in uow.exceptions.all(ExceptionStatus.RESOLVED)] == [ids[1]]
        with pytest.raises(StoreError):
            uow.exceptions.resolve(ids[1], "bob", at + timedelta(hours=1))
        assert uow.exceptions.get(ids[1]).resolved_by == "alice@billing"
        with pytest.raises(KeyError):
            uow.exceptions.get(999)
        with pytest.raises(KeyError):
            uow.exceptions.resolve(999, "alice", at)


def test_exception_subject_refuses_floats(store: Store) -> None:
    with pytest.raises(TypeError), store.unit_of_work() as uow:
        uow.exceptions.open(NewException("r", "d", "k", {"amount": 1.25}))


def test_audit(store: Store) -> None:
    before = utcnow()
    with store.unit_of_work() as uow:
        uow.audit.record("alice", "exception.resolve", "exception", "7", {"note": "paid by check"})
        uow.audit.record("system", "job.retry", "job", "7")
        uow.audit.record("bob", "exception.reopen", "exception", "7")
    with store.unit_of_work() as uow:
        entries = uow.audit.for_subject("exception", "7")
        assert uow.audit.for_subject("exception", "8") == []
    assert [(e.actor, e.action) for e in entries] == [
        ("alice", "exception.resolve"),
        ("bob", "exception.reopen"),
    ]
    assert entries[0].id < entries[1].id
    assert dict(entries[0].detail) == {"note": "paid by check"}
    assert dict(entries[1].detail) == {}
    assert (entries[0].subject_type, entries[0].subject_id) == ("exception", "7")
    assert before <= entries[0].at <= utcnow()


# ------------------------------------------------------------------ exception work queue


def _open(store: Store, key: str = "k1", reason: str = "claim_denied") -> int:
    with store.unit_of_work() as uow:
        item_id, _ = uow.exceptions.open(NewException(reason, "detail", key, {"claim": "C1"}))
    return item_id


def test_exception_assign_notes_and_filters(store: Store) -> None:
    first = _open(store, "k1", "claim_denied")
    second = _open(store, "k2", "unknown_payer")
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    with store.unit_of_work() as uow:
        uow.exceptions.assign(first, "ana")
        note_id = uow.exceptions.add_note(first, "ana", at, "called the payer")
        uow.exceptions.add_note(first, "ben", at, "appeal sent")
    with store.unit_of_work() as uow:
        assert uow.exceptions.get(first).assignee == "ana"
        assert [n.text for n in uow.exceptions.notes(first)] == ["called the payer", "appeal sent"]
        note = uow.exceptions.notes(first)[0]
        assert (note.id, note.exception_id, note.at, note.actor) == (note_id, first, at, "ana")
        assert uow.exceptions.notes(second) == []
        assert [i.id for i in uow.exceptions.all(assignee="ana")] == [first]
        assert [i.id for i in uow.exceptions.all(reason="unknown_payer")] == [second]
        assert [i.id for i in uow.exceptions.all(ExceptionStatus.OPEN, reason="claim_denied")] == [
            first
        ]
        uow.exceptions.assign(first, None)
        assert uow.exceptions.get(first).assignee is None
    with pytest.raises(KeyError), store.unit_of_work() as uow:
        uow.exceptions.add_note(9999, "ana", at, "nowhere")


def test_exception_resolution_is_recorded_and_resolving_twice_is_refused(store: Store) -> None:
    item_id = _open(store)
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    with store.unit_of_work() as uow:
        uow.exceptions.resolve(item_id, "ana", at, Resolution.WRITTEN_OFF)
        item = uow.exceptions.get(item_id)
    assert (item.status, item.resolution, item.resolved_by) == (
        ExceptionStatus.RESOLVED,
        Resolution.WRITTEN_OFF,
        "ana",
    )
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.exceptions.resolve(item_id, "ben", at)


def test_a_resolved_item_whose_problem_returns_is_opened_again(store: Store) -> None:
    item_id = _open(store)
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    with store.unit_of_work() as uow:
        uow.exceptions.add_note(item_id, "ana", at, "retrying")
        uow.exceptions.resolve(item_id, "ana", at, Resolution.RETRIED)
    with store.unit_of_work() as uow:
        again, opened = uow.exceptions.open(NewException("claim_denied", "again", "k1", {}))
        item = uow.exceptions.get(item_id)
    assert (again, opened) == (item_id, True)
    assert (item.status, item.resolution, item.resolved_at, item.detail) == (
        ExceptionStatus.OPEN,
        None,
        None,
        "again",
    )
    with store.unit_of_work() as uow:
        assert len(uow.exceptions.notes(item_id)) == 1
        assert uow.exceptions.open(NewException("claim_denied", "x", "k1", {})) == (item_id, False)


def test_approvals(store: Store) -> None:
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    with store.unit_of_work() as uow:
        first = uow.approvals.request(
            "write_off", {"exception_id": 3, "amount": "900.00"}, "ana", at
        )
        second = uow.approvals.request("bulk_replay", {"raw_ids": [1, 2]}, "ana", at)
    assert (first.kind, dict(first.subject), first.requested_by, first.requested_at) == (
        "write_off",
        {"exception_id": 3, "amount": "900.00"},
        "ana",
        at,
    )
    assert (first.status, first.decided_by, first.decided_at) == (
        ApprovalStatus.PENDING,
        None,
        None,
    )
    with store.unit_of_work() as uow:
        uow.approvals.decide(first.id, "ben", at, approve=True)
        uow.approvals.decide(second.id, "ben", at, approve=False)
    with store.unit_of_work() as uow:
        assert uow.approvals.get(first.id).status == ApprovalStatus.APPROVED
        assert uow.approvals.get(first.id).decided_by == "ben"
        assert uow.approvals.get(second.id).status == ApprovalStatus.REFUSED
        assert uow.approvals.all(ApprovalStatus.PENDING) == []
        assert [a.id for a in uow.approvals.all()] == [first.id, second.id]
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.approvals.decide(first.id, "carl", at, approve=False)
    with pytest.raises(KeyError), store.unit_of_work() as uow:
        uow.approvals.get(999)
