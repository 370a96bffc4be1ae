"""Contract: one unit of work is one transaction."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from revbridge.domain.events import Event, utcnow
from revbridge.domain.journal import Journal
from revbridge.errors import StoreError
from revbridge.store.base import NewException, NewUnit, RawMessage, Store


class Boom(Exception):
    pass


def test_exception_rolls_everything_back(
    store: Store,
    add_raw: Callable[..., RawMessage],
    new_unit: Callable[..., NewUnit],
    make_event: Callable[..., Event],
    make_journal: Callable[..., Journal],
) -> None:
    with pytest.raises(Boom), store.unit_of_work() as uow:
        raw = add_raw(uow, b"bytes that must vanish")
        uow.units.add(new_unit(raw.id))
        uow.events.append([make_event(keys={"claim": "CLM-RB"}, correlation_id="RB")])
        uow.jobs.enqueue("normalise", "k", {"raw_id": raw.id})
        uow.journals.add(make_journal("J-RB"), target="t", unit_id=None)
        uow.outbox.add("t", "J-RB")
        uow.exceptions.open(NewException("r", "d", "rb"))
        uow.audit.record("a", "b", "raw", str(raw.id))
        raise Boom
    with store.unit_of_work() as uow:
        assert uow.raw.find_by_sha256(raw.sha256) is None
        with pytest.raises(KeyError):
            uow.raw.get(raw.id)
        assert uow.units.by_raw(raw.id) == []
        assert uow.events.count() == 0
        assert uow.events.by_key("CLM-RB") == []
        assert uow.events.by_correlation("RB") == []
        assert uow.jobs.count() == 0
        assert uow.jobs.next_run_after() is None
        assert uow.journals.get("J-RB") is None
        assert uow.journals.keys_by_source("CLM-1") == []
        assert uow.outbox.count() == 0
        assert uow.exceptions.all() == []
        assert uow.audit.for_subject("raw", str(raw.id)) == []


def test_clean_exit_commits(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.jobs.enqueue("a", "k", {})
    with store.unit_of_work() as uow:
        assert uow.jobs.count() == 1


def test_store_usable_after_a_failed_unit_of_work(store: Store) -> None:
    with pytest.raises(Boom), store.unit_of_work() as uow:
        uow.jobs.enqueue("a", "k", {})
        raise Boom
    with store.unit_of_work() as uow:
        uow.jobs.enqueue("a", "k", {})
    with store.unit_of_work() as uow:
        assert uow.jobs.count() == 1


def test_after_commit_actions_run_once_committed_and_never_after_a_rollback(
    store: Store,
) -> None:
    seen: list[int] = []

    def count_jobs() -> None:  # a new unit of work: the committing one has ended
        with store.unit_of_work() as uow:
            seen.append(uow.jobs.count())

    with store.unit_of_work() as uow:
        uow.jobs.enqueue("a", "k", {})
        uow.after_commit(count_jobs)
        assert seen == []
    assert seen == [1]
    with pytest.raises(Boom), store.unit_of_work() as uow:
        uow.jobs.enqueue("a", "k", {})
        uow.after_commit(count_jobs)
        raise Boom
    assert seen == [1]


def test_repositories_refuse_use_after_the_unit_of_work(store: Store) -> None:
    with store.unit_of_work() as uow:
        pass
    with pytest.raises(StoreError):
        uow.jobs.count()
    with pytest.raises(StoreError):
        uow.jobs.claim("w", utcnow(), 1.0)
