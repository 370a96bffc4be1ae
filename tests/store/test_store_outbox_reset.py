"""Contract: a person's retry of a journal the target refused (``Outbox.reset``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from revbridge.domain.events import utcnow
from revbridge.errors import StoreError
from revbridge.store.base import OutboxStatus, Store


def test_a_failed_item_becomes_pending_again_keeping_its_history(store: Store) -> None:
    now = utcnow() + timedelta(seconds=1)
    later = now + timedelta(minutes=5)
    with store.unit_of_work() as uow:
        item_id = uow.outbox.add("erp", "J-1")
        uow.outbox.add("erp", "J-2")
        uow.outbox.mark_in_flight([item_id], "w1")
        uow.outbox.mark_failed(item_id, "period closed")
        assert uow.outbox.reset("erp", "J-1", later) == item_id
    with store.unit_of_work() as uow:
        assert [i.journal_key for i in uow.outbox.due("erp", now, 10)] == ["J-2"]
        due = [i for i in uow.outbox.due("erp", later, 10) if i.id == item_id]
        assert uow.outbox.count(OutboxStatus.FAILED) == 0
    assert [(i.status, i.attempts, i.last_error, i.run_after) for i in due] == [
        (OutboxStatus.PENDING, 1, "period closed", later)
    ]


def test_only_a_failed_item_for_that_target_can_be_reset(store: Store) -> None:
    now = utcnow()
    with store.unit_of_work() as uow:
        item_id = uow.outbox.add("erp", "J-1")
        uow.outbox.mark_in_flight([item_id], "w1")
        uow.outbox.mark_failed(item_id, "refused")
        uow.outbox.add("erp", "J-2")
    for target, key in (("erp", "J-2"), ("gl", "J-1"), ("erp", "J-9")):
        with pytest.raises(StoreError), store.unit_of_work() as uow:
            uow.outbox.reset(target, key, now)
    with store.unit_of_work() as uow:
        uow.outbox.reset("erp", "J-1", now)
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.outbox.reset("erp", "J-1", now)


def test_an_item_names_its_sender_until_the_outcome_is_known(store: Store) -> None:
    now = utcnow() + timedelta(seconds=1)
    with store.unit_of_work() as uow:
        ids = [uow.outbox.add("erp", f"J-{n}") for n in range(4)]
        uow.outbox.mark_in_flight(ids, "A")
        uow.outbox.mark_in_flight(ids[3:], "B")  # B took over: A's call may still commit
        assert [i.sender for i in uow.outbox.due("erp", now, 10)] == ["A"] * 4
        uow.outbox.mark_retry(ids[0], "timed out", now, "A")  # A's call returned
        uow.outbox.mark_done(ids[1], "DOC-1")
        uow.outbox.mark_failed(ids[2], "refused")
        uow.outbox.mark_retry(ids[3], "timed out", now, "B")  # B's did, not A's
        assert [(i.id, i.status, i.sender) for i in uow.outbox.due("erp", now, 10)] == [
            (ids[0], OutboxStatus.IN_FLIGHT, None),
            (ids[3], OutboxStatus.IN_FLIGHT, "A"),
        ]


def test_a_dead_sender_is_replaced_by_the_worker_that_sends_again(store: Store) -> None:
    now = utcnow() + timedelta(seconds=1)
    with store.unit_of_work() as uow:
        ids = [uow.outbox.add("erp", f"J-{n}") for n in range(3)]
        uow.outbox.mark_in_flight(ids[:2], "A")
        uow.outbox.mark_in_flight(ids[2:], "C")
        # B takes over: A is known dead (its call can no longer commit), C is not
        uow.outbox.mark_in_flight(ids, "B", dead={"A"})
        assert [i.sender for i in uow.outbox.due("erp", now, 10)] == ["B", "B", "C"]


def test_an_unsure_item_comes_back_in_flight_to_be_looked_up_first(store: Store) -> None:
    now = utcnow() + timedelta(seconds=1)
    with store.unit_of_work() as uow:
        item_id = uow.outbox.add("erp", "J-1")
        uow.outbox.mark_in_flight([item_id], "A")
        uow.outbox.mark_failed(item_id, "indeterminate")
        assert uow.outbox.reset("erp", "J-1", now, unsure=True) == item_id
        due = uow.outbox.due("erp", now, 10)
    assert [(i.id, i.status, i.sender) for i in due] == [(item_id, OutboxStatus.IN_FLIGHT, None)]
