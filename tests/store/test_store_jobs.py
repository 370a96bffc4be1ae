"""Contract: the job queue (claim order, leases, fencing tokens, due times)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from revbridge.domain.events import utcnow
from revbridge.errors import LeaseLost, StoreError
from revbridge.store.base import JobStatus, Store

LEASE = 30.0


def _enqueue(store: Store, *specs: tuple[str, datetime | None]) -> list[int]:
    with store.unit_of_work() as uow:
        return [
            uow.jobs.enqueue(kind, f"ACC-{i}", {"n": i}, run_after=at)
            for i, (kind, at) in enumerate(specs)
        ]


def test_enqueue_and_get(store: Store) -> None:
    before = utcnow()
    with store.unit_of_work() as uow:
        job_id = uow.jobs.enqueue("normalise", "ISA*1", {"unit_id": 7, "why": ["a", None]})
        job = uow.jobs.get(job_id)
    assert (job.kind, job.key, dict(job.payload)) == (
        "normalise",
        "ISA*1",
        {"unit_id": 7, "why": ["a", None]},
    )
    assert (job.status, job.attempts, job.fence) == (JobStatus.READY, 0, 0)
    assert (job.lease_owner, job.lease_expires_at, job.last_error) == (None, None, None)
    assert before <= job.run_after <= utcnow()


def test_claim_oldest_first(store: Store) -> None:
    now = utcnow()
    first, second, third = _enqueue(
        store, ("a", now), ("a", now), ("a", now - timedelta(seconds=5))
    )
    with store.unit_of_work() as uow:
        claimed = [uow.jobs.claim("w1", now, LEASE) for _ in range(4)]
    assert [job.id if job else None for job in claimed] == [third, first, second, None]


def test_claim_leases_the_job(store: Store) -> None:
    (job_id,) = _enqueue(store, ("a", None))
    now = utcnow()
    with store.unit_of_work() as uow:
        job = uow.jobs.claim("worker-7", now, LEASE)
    assert job is not None
    assert job.id == job_id
    assert (job.status, job.lease_owner, job.attempts, job.fence) == (
        JobStatus.LEASED,
        "worker-7",
        1,
        1,
    )
    assert job.lease_expires_at == now + timedelta(seconds=LEASE)
    with store.unit_of_work() as uow:
        assert uow.jobs.get(job_id) == job


def test_run_after_is_respected(store: Store) -> None:
    now = utcnow()
    later = now + timedelta(minutes=5)
    (job_id,) = _enqueue(store, ("a", later))
    with store.unit_of_work() as uow:
        assert uow.jobs.claim("w", now, LEASE) is None
        assert uow.jobs.next_run_after() == later
        job = uow.jobs.claim("w", later, LEASE)
    assert job is not None and job.id == job_id


def test_kinds_filter(store: Store) -> None:
    now = utcnow()
    a, b = _enqueue(store, ("normalise", now), ("post", now))
    with store.unit_of_work() as uow:
        assert uow.jobs.claim("w", now, LEASE, kinds=[]) is None
        job = uow.jobs.claim("w", now, LEASE, kinds=["post", "reconcile"])
        assert job is not None and job.id == b
        assert uow.jobs.claim("w", now, LEASE, kinds=["post"]) is None
        job = uow.jobs.claim("w", now, LEASE)
        assert job is not None and job.id == a


def test_leased_job_is_not_claimed_before_expiry(store: Store) -> None:
    now = utcnow()
    _enqueue(store, ("a", now))
    with store.unit_of_work() as uow:
        assert uow.jobs.claim("w1", now, LEASE) is not None
        assert uow.jobs.claim("w2", now + timedelta(seconds=LEASE - 0.001), LEASE) is None


def test_reclaim_after_expiry_bumps_the_fence(store: Store) -> None:
    now = utcnow()
    (job_id,) = _enqueue(store, ("a", now))
    with store.unit_of_work() as uow:
        first = uow.jobs.claim("w1", now, LEASE)
        second = uow.jobs.claim("w2", now + timedelta(seconds=LEASE), LEASE)
    assert first is not None and second is not None
    assert second.id == job_id
    assert (second.lease_owner, second.fence, second.attempts) == ("w2", first.fence + 1, 2)


@pytest.mark.parametrize("action", ["complete", "retry", "park"])
def test_stale_fence_loses_the_lease(store: Store, action: str) -> None:
    now = utcnow()
    (job_id,) = _enqueue(store, ("a", now))
    with store.unit_of_work() as uow:
        stale = uow.jobs.claim("w1", now, LEASE)
        fresh = uow.jobs.claim("w2", now + timedelta(seconds=LEASE + 1), LEASE)
    assert stale is not None and fresh is not None
    with store.unit_of_work() as uow:
        with pytest.raises(LeaseLost):
            if action == "complete":
                uow.jobs.complete(job_id, stale.fence)
            elif action == "retry":
                uow.jobs.retry(job_id, stale.fence, "boom", now)
            else:
                uow.jobs.park(job_id, stale.fence, "boom")
        assert uow.jobs.get(job_id) == fresh
        uow.jobs.complete(job_id, fresh.fence)
        assert uow.jobs.get(job_id).status == JobStatus.DONE
        with pytest.raises(LeaseLost):
            uow.jobs.complete(job_id, fresh.fence)


def test_complete_retry_park(store: Store) -> None:
    now = utcnow()
    done_id, retry_id, park_id = _enqueue(store, ("a", now), ("a", now), ("a", now))
    later = now + timedelta(minutes=1)
    with store.unit_of_work() as uow:
        fences = {}
        for _ in range(3):
            job = uow.jobs.claim("w", now, LEASE)
            assert job is not None
            fences[job.id] = job.fence
        uow.jobs.complete(done_id, fences[done_id])
        uow.jobs.retry(retry_id, fences[retry_id], "ERP timeout", later)
        uow.jobs.park(park_id, fences[park_id], "unknown payer")
    with store.unit_of_work() as uow:
        done, retried, parked = (uow.jobs.get(i) for i in (done_id, retry_id, park_id))
        assert done.status == JobStatus.DONE
        assert (retried.status, retried.run_after, retried.last_error) == (
            JobStatus.READY,
            later,
            "ERP timeout",
        )
        assert (retried.lease_owner, retried.lease_expires_at) == (None, None)
        assert (parked.status, parked.last_error) == (JobStatus.PARKED, "unknown payer")
        assert uow.jobs.claim("w", now, LEASE) is None
        again = uow.jobs.claim("w", later, LEASE)
        assert again is not None and again.id == retry_id
        assert (again.attempts, again.fence) == (2, retried.fence + 1)


def test_count_and_next_run_after(store: Store) -> None:
    now = utcnow()
    with store.unit_of_work() as uow:
        assert uow.jobs.count() == 0
        assert uow.jobs.next_run_after() is None
    soon, later = now + timedelta(seconds=10), now + timedelta(seconds=99)
    _enqueue(store, ("a", later), ("a", soon), ("a", now))
    with store.unit_of_work() as uow:
        assert uow.jobs.next_run_after() == now
        job = uow.jobs.claim("w", now, LEASE)
        assert job is not None
        assert uow.jobs.next_run_after() == soon
        assert (uow.jobs.count(), uow.jobs.count(JobStatus.READY)) == (3, 2)
        assert (uow.jobs.count(JobStatus.LEASED), uow.jobs.count(JobStatus.DONE)) == (1, 0)
        uow.jobs.complete(job.id, job.fence)
        assert uow.jobs.count(JobStatus.DONE) == 1


def test_times_must_be_aware_and_ids_known(store: Store) -> None:
    with store.unit_of_work() as uow:
        with pytest.raises(ValueError):
            uow.jobs.claim("w", datetime(2025, 1, 1), LEASE)
        with pytest.raises(ValueError):
            uow.jobs.enqueue("a", "k", {}, run_after=datetime(2025, 1, 1))
        with pytest.raises(KeyError):
            uow.jobs.get(12345)
        with pytest.raises(KeyError):
            uow.jobs.complete(12345, 1)
        assert uow.jobs.claim("w", datetime(2025, 1, 1, tzinfo=UTC), LEASE) is None


def test_float_in_payload_is_refused(store: Store) -> None:
    with pytest.raises(TypeError), store.unit_of_work() as uow:
        uow.jobs.enqueue("a", "k", {"amount": 1.5})


# ------------------------------------------------------------------------ order per key


def _enqueue_keyed(store: Store, *keys: str) -> list[int]:
    with store.unit_of_work() as uow:
        return [uow.jobs.enqueue("k", key, {"n": i}) for i, key in enumerate(keys)]


def _claim(store: Store, now: datetime, owner: str = "w") -> int | None:
    with store.unit_of_work() as uow:
        job = uow.jobs.claim(owner, now, LEASE)
    return None if job is None else job.id


def test_one_key_runs_in_order_and_keys_run_in_parallel(store: Store) -> None:
    a1, b1, a2 = _enqueue_keyed(store, "A", "B", "A")
    now = utcnow() + timedelta(seconds=1)
    assert _claim(store, now) == a1
    assert _claim(store, now) == b1
    assert _claim(store, now) is None  # a2 waits for a1, though it is due
    with store.unit_of_work() as uow:
        uow.jobs.complete(a1, uow.jobs.get(a1).fence)
    assert _claim(store, now) == a2


def test_a_parked_job_holds_back_its_own_key_only(store: Store) -> None:
    a1, a2, b1 = _enqueue_keyed(store, "A", "A", "B")
    now = utcnow() + timedelta(seconds=1)
    assert _claim(store, now) == a1
    with store.unit_of_work() as uow:
        uow.jobs.park(a1, uow.jobs.get(a1).fence, "poison")
    assert _claim(store, now) == b1
    assert _claim(store, now) is None
    with store.unit_of_work() as uow:
        uow.jobs.requeue(a1, now)
        requeued = uow.jobs.get(a1)
    assert (requeued.status, requeued.attempts) == (JobStatus.READY, 0)
    assert _claim(store, now) == a1
    with store.unit_of_work() as uow:
        uow.jobs.complete(a1, uow.jobs.get(a1).fence)
    assert _claim(store, now) == a2


def test_defer_does_not_count_an_attempt(store: Store) -> None:
    (job_id,) = _enqueue_keyed(store, "A")
    now = utcnow() + timedelta(seconds=1)
    assert _claim(store, now) == job_id
    later = now + timedelta(minutes=1)
    with store.unit_of_work() as uow:
        job = uow.jobs.get(job_id)
        uow.jobs.defer(job_id, job.fence, "circuit open", later)
        deferred = uow.jobs.get(job_id)
    assert (deferred.status, deferred.attempts, deferred.run_after) == (JobStatus.READY, 0, later)
    assert deferred.last_error == "circuit open"
    assert _claim(store, now) is None
    with pytest.raises(LeaseLost), store.unit_of_work() as uow:
        uow.jobs.defer(job_id, job.fence, "again", later)


def test_requeue_refuses_a_job_that_is_not_parked(store: Store) -> None:
    (job_id,) = _enqueue_keyed(store, "A")
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.jobs.requeue(job_id, utcnow())


def test_requeue_fences_out_the_last_holder(store: Store) -> None:
    (job_id,) = _enqueue_keyed(store, "A")
    now = utcnow() + timedelta(seconds=1)
    _claim(store, now)
    with store.unit_of_work() as uow:
        fence = uow.jobs.get(job_id).fence
        uow.jobs.park(job_id, fence, "poison")
        uow.jobs.requeue(job_id, now)
    with pytest.raises(LeaseLost), store.unit_of_work() as uow:
        uow.jobs.complete(job_id, fence)


def test_all_lists_by_status(store: Store) -> None:
    a, b = _enqueue_keyed(store, "A", "B")
    now = utcnow() + timedelta(seconds=1)
    _claim(store, now)
    with store.unit_of_work() as uow:
        assert [job.id for job in uow.jobs.all()] == [a, b]
        assert [job.id for job in uow.jobs.all(JobStatus.LEASED)] == [a]
        assert [job.id for job in uow.jobs.all(JobStatus.READY)] == [b]
        assert [job.id for job in uow.jobs.all(limit=1)] == [a]


def test_extend_holds_the_lease_only_for_its_fence(store: Store) -> None:
    now = utcnow()
    (job_id,) = _enqueue(store, ("a", now))
    with store.unit_of_work() as uow:
        first = uow.jobs.claim("w1", now, LEASE)
        assert first is not None
        uow.jobs.extend(job_id, first.fence, now + timedelta(seconds=20), LEASE)
        assert uow.jobs.claim("w2", now + timedelta(seconds=LEASE), LEASE) is None
        second = uow.jobs.claim("w2", now + timedelta(seconds=20 + LEASE), LEASE)
        assert second is not None and second.fence == first.fence + 1
        with pytest.raises(LeaseLost):  # the paused holder learns it before sending
            uow.jobs.extend(job_id, first.fence, now + timedelta(seconds=60), LEASE)


def test_the_leases_of_dead_owners_end_at_once(store: Store) -> None:
    now = utcnow()
    dead_job, live_job, _ = _enqueue(store, ("a", now), ("b", now), ("c", now))
    with store.unit_of_work() as uow:
        held = [uow.jobs.claim(owner, now, LEASE) for owner in ("dead", "live")]
        assert [j.id if j else None for j in held] == [dead_job, live_job]
        assert uow.jobs.lease_owners(now) == ["dead", "live"]
        assert uow.jobs.expire_leases([], now) == 0
        assert uow.jobs.expire_leases(["dead", "unknown"], now) == 1
        assert uow.jobs.lease_owners(now) == ["live"]
        taken = uow.jobs.claim("heir", now, LEASE, kinds=["a", "b"])
        assert uow.jobs.claim("heir", now, LEASE, kinds=["a", "b"]) is None  # live: kept
    assert taken is not None and held[0] is not None
    assert (taken.id, taken.lease_owner, taken.fence) == (dead_job, "heir", held[0].fence + 1)
    with store.unit_of_work() as uow, pytest.raises(LeaseLost):
        uow.jobs.complete(dead_job, held[0].fence)  # not dead after all: it cannot commit
