"""Races only a shared store has: two workers normalising two copies of one payment (a
resend under new control numbers) at the same moment, on PostgreSQL. Neither sees the
other's events when it looks; the loser's insert of the same (deterministic) event ids is
refused once the winner commits, and it must then treat its copy as the resend it is, not
park it as a processing error. The moment is forced: each worker waits for the other right
after it looked for an earlier copy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.domain.events import Event
from revbridge.ingest.x12_files import ingest_file
from revbridge.orchestrate import handlers
from revbridge.sample import write_sample
from revbridge.store.base import JobStatus, UnitOfWork, UnitStatus
from tests.conftest import WORKED_EXAMPLE
from tests.pg import use_postgres

WAIT = 10.0


@pytest.fixture
def app(tmp_path: Path, pg_clean_dsn: str) -> Iterator[bootstrap.App]:
    config = use_postgres(write_sample(tmp_path / "deploy", target="gl"), pg_clean_dsn)
    application = bootstrap.build(bootstrap.read_config(str(config)))
    yield application
    application.close()


def test_a_resend_normalised_at_the_same_moment_is_a_duplicate(
    app: bootstrap.App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resend = tmp_path / "resend.835"
    resend.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004712"))
    assert [ingest_file(app.store, p).status for p in (WORKED_EXAMPLE, resend)] == [
        "accepted",
        "accepted",
    ]
    both_looked = threading.Barrier(2, timeout=WAIT)
    waited = threading.local()
    received = handlers._received

    def look_then_wait(uow: UnitOfWork, payment_key: str) -> Event | None:
        found = received(uow, payment_key)
        if not getattr(waited, "done", False):
            waited.done = True
            both_looked.wait()
        return found

    monkeypatch.setattr(handlers, "_received", look_then_wait)
    workers = [app.worker(), app.worker()]
    for number, worker in enumerate(workers):
        worker.owner = f"racer-{number}"
    threads = [threading.Thread(target=w.run_once, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)

    with app.store.unit_of_work() as uow:
        statuses = sorted(u.status for raw in (1, 2) for u in uow.units.by_raw(raw))
        reasons = [x.reason for x in uow.exceptions.all()]
        jobs = uow.jobs.all()
    assert statuses == [UnitStatus.DUPLICATE, UnitStatus.NORMALISED]
    assert "processing_error" not in reasons
    assert [j.status for j in jobs if j.kind == "normalise"] == [JobStatus.DONE] * 2
    assert len([j for j in jobs if j.kind == "journal"]) == 1
