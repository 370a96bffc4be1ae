"""The exception work queue on real SQLite: every action, its audit, SLA and approvals."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.errors import ActionRefused, BusinessError
from revbridge.ingest.x12_files import ingest_file
from revbridge.orchestrate.work_queue import NotFound, QueueEntry, WorkQueue
from revbridge.post.base import JournalSink
from revbridge.store.base import (
    ApprovalStatus,
    ExceptionStatus,
    JobStatus,
    Resolution,
    UnitStatus,
)
from tests.clock import FakeClock
from tests.conftest import WORKED_EXAMPLE

PAYMENT = "1999999999:EFT20250106A"


@dataclass
class ERP(JournalSink):
    """Books in memory; ``refuse`` kinds are refused; the first ``crashes`` calls fail
    with an error no adapter expects (the worker parks the job at once)."""

    refuse: set[str] = field(default_factory=set)
    crashes: int = 0
    booked: dict[str, Journal] = field(default_factory=dict)

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("driver bug")
        if any(j.kind in self.refuse for j in journals):
            raise BusinessError("period closed", target="erp", code="UserError")
        for journal in journals:
            assert journal.key not in self.booked, f"{journal.key} booked twice"
            self.booked[journal.key] = journal
        return {j.key: f"move-{j.key}" for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        return {k: f"move-{k}" for k in keys if k in self.booked}

    def close(self) -> None:
        return None


def build(
    deployment: Path, clock: FakeClock, config: str = "", erp: ERP | None = None
) -> bootstrap.App:
    if config:
        deployment.write_text(deployment.read_text() + config)
    sinks = None if erp is None else (lambda _name: erp)
    return bootstrap.build(load_config(deployment, bootstrap.SPECS), clock, sinks)


def process(app: bootstrap.App, *paths: Path) -> None:
    for path in paths:
        ingest_file(app.store, path)
    app.worker().run_until_idle(max_wait_seconds=3600)


def only(queue: WorkQueue, reason: str) -> QueueEntry:
    (entry,) = queue.items(reason=reason)
    return entry


def gl_rows(app: bootstrap.App) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(Path(app.config.output("gl").options["path"]).glob("gl-*.csv")):
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(deployment: Path, clock: FakeClock) -> Iterator[bootstrap.App]:
    application = build(deployment, clock)
    process(application, WORKED_EXAMPLE)
    yield application
    application.close()


@pytest.fixture
def queue(app: bootstrap.App) -> WorkQueue:
    return app.work_queue()


@pytest.fixture
def denied(queue: WorkQueue) -> int:
    return only(queue, "claim_denied").item.id


def audit(queue: WorkQueue, item_id: int) -> list[tuple[str, str]]:
    return [(e.actor, e.action) for e in queue.show(item_id).audit]


# ---------------------------------------------------------------------- list, SLA, people


def test_items_carry_age_sla_and_overdue(deployment: Path, clock: FakeClock) -> None:
    app = build(deployment, clock, "exceptions:\n  sla_hours: {claim_denied: 2}\n")
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    entry = only(queue, "claim_denied")
    assert entry.sla_due == entry.item.opened_at + timedelta(hours=2)
    assert not entry.overdue and queue.items(overdue=True) == []
    clock.at += timedelta(hours=3)
    late = only(queue, "claim_denied")
    assert late.overdue and 3.0 <= late.view()["age_hours"] < 3.1
    assert [e.item.id for e in queue.items(overdue=True)] == [entry.item.id]
    assert queue.items("resolved") == [] and queue.items(assignee="ana") == []
    view = late.view()
    assert {"id", "reason", "status", "detail", "source", "opened_at"} <= set(view)
    assert view["sla_due"] == late.sla_due.isoformat() and view["overdue"] is True
    app.close()


def test_default_sla_applies_to_reasons_without_their_own(queue: WorkQueue) -> None:
    entry = only(queue, "claim_denied")
    assert entry.sla_due - entry.item.opened_at == timedelta(hours=48)


def test_assign_unassign_and_notes_are_audited_with_who_and_when(
    queue: WorkQueue, denied: int
) -> None:
    before = datetime.now(UTC)
    queue.assign(denied, "ana", "lead")
    assert [e.item.id for e in queue.items(assignee="ana")] == [denied]
    queue.note(denied, "appeal sent to ACME", "ana")
    queue.assign(denied, None, "ana")
    details = queue.show(denied)
    assert details.entry.item.assignee is None
    assert [(n.actor, n.text) for n in details.notes] == [("ana", "appeal sent to ACME")]
    trail = details.audit
    assert [(e.actor, e.action) for e in trail] == [
        ("lead", "exception.assign"),
        ("ana", "exception.note"),
        ("ana", "exception.unassign"),
    ]
    assert all(before <= e.at <= datetime.now(UTC) for e in trail)
    assert dict(trail[0].detail) == {"assignee": "ana", "previous": None}


def test_acting_needs_a_name_and_an_existing_item(queue: WorkQueue, denied: int) -> None:
    with pytest.raises(ValueError, match="who acts"):
        queue.note(denied, "x", "  ")
    with pytest.raises(ValueError, match="text"):
        queue.note(denied, "", "ana")
    with pytest.raises(NotFound):
        queue.show(999)
    with pytest.raises(NotFound):
        queue.resolve(999, "ana")


# -------------------------------------------------------------------------- write-off


def test_write_off_at_or_below_the_limit_is_booked_at_once_and_posts_once(
    app: bootstrap.App, queue: WorkQueue, denied: int
) -> None:
    result = queue.write_off(denied, "ana")
    key = f"835:{PAYMENT}:RHS:writeoff:{denied}"
    assert result.action == "write_off"
    assert result.detail["journal"] == key and result.detail["amount"] == "500.00"
    item = result.entry.item
    assert (item.status, item.resolution, item.resolved_by) == (
        ExceptionStatus.RESOLVED,
        Resolution.WRITTEN_OFF,
        "ana",
    )
    with app.store.unit_of_work() as uow:
        record = uow.journals.get(key)
    assert record is not None
    journal = record.journal
    assert journal.kind == "writeoff" and journal.entity == "RHS"
    assert [(line.account, line.debit, line.credit) for line in journal.lines] == [
        ("5230", Decimal("500.00"), Decimal("0.00")),
        ("1115", Decimal("0.00"), Decimal("500.00")),
    ]
    line = journal.lines[0]
    assert line.dimensions == {
        "entity": "RHS",
        "facility": "H01",
        "payer": "ACME01",
        "financial_class": "commercial",
        "adjustment_reason": "CO-50",
    }
    assert line.source["patient_control_number"] == "ACCT1002"
    assert line.source["trn"] == "EFT20250106A" and line.source["exception_id"] == str(denied)

    app.worker().run_until_idle(max_wait_seconds=0)
    app.worker().run_until_idle(max_wait_seconds=0)
    rows = [r for r in gl_rows(app) if r["journal_key"] == key]
    assert len(rows) == 2  # two lines, once
    with app.store.unit_of_work() as uow:
        posted = uow.journals.get(key)
    assert posted is not None and posted.status == JournalStatus.POSTED
    assert ("ana", "exception.write_off") in audit(queue, denied)
    with pytest.raises(ActionRefused, match="closed"):
        queue.write_off(denied, "ben")


def test_a_part_of_the_denied_amount_may_be_written_off(
    app: bootstrap.App, queue: WorkQueue, denied: int
) -> None:
    for bad in (Decimal("500.01"), Decimal("0"), Decimal("-5"), Decimal("10.005")):
        with pytest.raises(ValueError):
            queue.write_off(denied, "ana", bad)
    result = queue.write_off(denied, "ana", Decimal("120.50"))
    with app.store.unit_of_work() as uow:
        record = uow.journals.get(str(result.detail["journal"]))
    assert record is not None and record.journal.total == Decimal("120.50")


def test_only_a_denial_can_be_written_off(
    deployment: Path, clock: FakeClock, tmp_path: Path
) -> None:
    app = build(deployment, clock)
    unknown = tmp_path / "unknown.835"
    unknown.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"XV*ACME01", b"XV*NEWPLAN7"))
    process(app, unknown)
    queue = app.work_queue()
    with pytest.raises(ActionRefused, match="claim_denied"):
        queue.write_off(only(queue, "unknown_payer").item.id, "ana")
    app.close()


def test_above_the_limit_a_second_person_must_approve(deployment: Path, clock: FakeClock) -> None:
    app = build(deployment, clock, 'exceptions:\n  write_off_approval_above: "100.00"\n')
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    denied = only(queue, "claim_denied").item.id

    asked = queue.write_off(denied, "ana")
    assert asked.action == "write_off_requested"
    assert asked.entry.item.status == ExceptionStatus.OPEN
    approval_id = int(asked.detail["approval_id"])
    (pending,) = queue.approval_list(ApprovalStatus.PENDING)
    assert pending.id == approval_id and pending.requested_by == "ana"
    assert dict(pending.subject) == {"exception_id": denied, "amount": "500.00"}
    with app.store.unit_of_work() as uow:
        assert not [r for r in uow.journals.all() if r.journal.kind == "writeoff"]

    with pytest.raises(ActionRefused, match="second person"):
        queue.approve(approval_id, "ana")
    for action in (
        lambda: queue.write_off(denied, "ana"),
        lambda: queue.resolve(denied, "ben", "paid by check"),
        lambda: queue.reject(denied, "ben", "duplicate"),
    ):
        with pytest.raises(ActionRefused, match="waits for approval"):
            action()

    outcome = queue.approve(approval_id, "ben")
    key = f"835:{PAYMENT}:RHS:writeoff:{denied}"
    assert outcome["journal"] == key and outcome["requested_by"] == "ana"
    details = queue.show(denied)
    item = details.entry.item
    assert (item.resolution, item.resolved_by) == (Resolution.WRITTEN_OFF, "ben")
    assert [(e.actor, e.action) for e in details.audit] == [
        ("ana", "exception.write_off_requested"),
        ("ben", "exception.write_off"),
    ]
    ((approval, trail),) = details.approvals
    assert (approval.status, approval.decided_by) == (ApprovalStatus.APPROVED, "ben")
    assert [(e.actor, e.action) for e in trail] == [
        ("ana", "approval.requested"),
        ("ben", "approval.approved"),
    ]
    with pytest.raises(ActionRefused, match="already approved"):
        queue.approve(approval_id, "carl")
    app.worker().run_until_idle(max_wait_seconds=0)
    assert len([r for r in gl_rows(app) if r["journal_key"] == key]) == 2
    app.close()


def test_a_refused_write_off_books_nothing_and_leaves_the_item_open(
    deployment: Path, clock: FakeClock
) -> None:
    app = build(deployment, clock, 'exceptions:\n  write_off_approval_above: "0.00"\n')
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    denied = only(queue, "claim_denied").item.id
    approval_id = int(queue.write_off(denied, "ana", Decimal("50")).detail["approval_id"])
    with pytest.raises(ValueError, match="reason"):
        queue.refuse(approval_id, "ben", " ")
    refused = queue.refuse(approval_id, "ben", "appeal still open")
    assert (refused.status, refused.decided_by) == (ApprovalStatus.REFUSED, "ben")
    assert queue.show(denied).entry.item.status == ExceptionStatus.OPEN
    with app.store.unit_of_work() as uow:
        assert not [r for r in uow.journals.all() if r.journal.kind == "writeoff"]
    assert queue.write_off(denied, "ana").action == "write_off_requested"  # may ask again
    with pytest.raises(NotFound):
        queue.approve(999, "ben")
    app.close()


def test_an_item_closed_meanwhile_is_not_written_off_on_approval(
    deployment: Path, clock: FakeClock
) -> None:
    app = build(deployment, clock, 'exceptions:\n  write_off_approval_above: "0.00"\n')
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    denied = only(queue, "claim_denied").item.id
    approval_id = int(queue.write_off(denied, "ana").detail["approval_id"])
    with app.store.unit_of_work() as uow:  # closed behind the queue's back
        uow.exceptions.resolve(denied, "someone", clock.now())
    with pytest.raises(ActionRefused, match="closed"):
        queue.approve(approval_id, "ben")
    assert queue.approval_list(ApprovalStatus.PENDING)[0].id == approval_id  # rolled back
    app.close()


# --------------------------------------------------------------------------- resubmit


def test_resubmit_keeps_the_original_and_ingests_the_edit(
    deployment: Path, clock: FakeClock, tmp_path: Path
) -> None:
    app = build(deployment, clock)
    original_bytes = WORKED_EXAMPLE.read_bytes().replace(b"005010X221A1", b"004010X091A1")
    bad = tmp_path / "bad.835"
    bad.write_bytes(original_bytes)
    process(app, bad)
    queue = app.work_queue()
    item = only(queue, "rejected_transaction").item
    original_raw = int(item.subject["raw_id"])

    with pytest.raises(ActionRefused, match="stored already"):  # same ST..SE, same numbers
        queue.resubmit(item.id, WORKED_EXAMPLE.read_bytes(), "ana")
    with pytest.raises(ActionRefused, match="original itself"):
        queue.resubmit(item.id, original_bytes, "ana")

    edited = WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004799")
    result = queue.resubmit(item.id, edited, "ana", comment="GS08 fixed; new ISA13", name="fix.835")
    link = result.detail
    assert result.entry.item.resolution == Resolution.RESUBMITTED
    assert link["original_raw_id"] == original_raw and link["outcome"] == "accepted"
    new_raw = int(link["new_raw_id"])
    with app.store.unit_of_work() as uow:
        assert uow.raw.read(original_raw) == original_bytes
        assert uow.raw.read(new_raw) == edited
        assert link["original_sha256"] == uow.raw.get(original_raw).sha256
        assert link["new_sha256"] == uow.raw.get(new_raw).sha256
        assert uow.raw.get(new_raw).name == "fix.835"
        assert [a.action for a in uow.audit.for_subject("raw", str(original_raw))][-1] == (
            "raw.resubmitted"
        )
        assert [a.action for a in uow.audit.for_subject("raw", str(new_raw))] == [
            "raw.received",
            "raw.resubmission_of",
        ]
    raw = queue.show(item.id).raw
    assert raw is not None and raw["id"] == original_raw
    assert [(e["new_raw_id"], e["actor"], e["comment"]) for e in raw["resubmissions"]] == [
        (new_raw, "ana", "GS08 fixed; new ISA13")
    ]
    app.worker().run_until_idle(max_wait_seconds=0)
    with app.store.unit_of_work() as uow:
        assert len(uow.journals.all(JournalStatus.POSTED)) == 3
    app.close()


def test_an_edited_transaction_keeping_its_numbers_is_not_flagged_as_reuse(
    deployment: Path, clock: FakeClock, tmp_path: Path
) -> None:
    app = build(deployment, clock)
    bad = tmp_path / "bad.835"
    bad.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"SE*40*0001", b"SE*41*0001"))
    process(app, bad)
    queue = app.work_queue()
    item = queue.items(reason="rejected_transaction")[0].item
    queue.resubmit(item.id, WORKED_EXAMPLE.read_bytes(), "ana")
    app.worker().run_until_idle(max_wait_seconds=0)
    assert queue.items(reason="control_number_reused") == []
    with app.store.unit_of_work() as uow:
        assert len(uow.journals.all()) == 3
    app.close()


def test_resubmit_applies_to_items_about_a_file(queue: WorkQueue, denied: int) -> None:
    with pytest.raises(ActionRefused, match="resubmit applies"):
        queue.resubmit(denied, b"ISA*...", "ana")
    with pytest.raises(ValueError, match="empty"):
        queue.resubmit(denied, b"", "ana")


# ------------------------------------------------------------------------------ retry


def test_retry_of_a_parked_job(deployment: Path, clock: FakeClock) -> None:
    erp = ERP(crashes=1)
    app = build(deployment, clock, erp=erp)
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    item = only(queue, "processing_error").item
    assert item.subject["job_kind"] == "post"
    job_id = int(item.subject["job_id"])
    with app.store.unit_of_work() as uow:
        assert uow.jobs.get(job_id).status == JobStatus.PARKED
    for close in (lambda: queue.resolve(item.id, "ana"), lambda: queue.reject(item.id, "ana", "x")):
        with pytest.raises(ActionRefused, match="retry it"):
            close()

    result = queue.retry(item.id, "ana")
    assert result.entry.item.resolution == Resolution.RETRIED
    assert result.detail["job_id"] == job_id
    app.worker().run_until_idle(max_wait_seconds=3600)
    assert len(erp.booked) == 3
    assert ("ana", "exception.retry") in audit(queue, item.id)
    with pytest.raises(ActionRefused, match="closed"):
        queue.retry(item.id, "ana")
    app.close()


def test_retry_of_a_journal_the_erp_refused(deployment: Path, clock: FakeClock) -> None:
    erp = ERP(refuse={"reversal"})
    app = build(deployment, clock, erp=erp)
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    item = only(queue, "erp_rejected").item
    assert sorted(j.kind for j in erp.booked.values()) == ["correction", "remittance"]

    erp.refuse.clear()
    result = queue.retry(item.id, "ana")
    assert result.detail["journal"] == item.subject["journal"]
    app.worker().run_until_idle(max_wait_seconds=0)
    assert sorted(j.kind for j in erp.booked.values()) == ["correction", "remittance", "reversal"]
    with app.store.unit_of_work() as uow:
        record = uow.journals.get(str(item.subject["journal"]))
    assert record is not None and record.status == JournalStatus.POSTED
    app.close()


def test_a_refused_again_journal_reopens_its_item(deployment: Path, clock: FakeClock) -> None:
    erp = ERP(refuse={"reversal"})
    app = build(deployment, clock, erp=erp)
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    item = only(queue, "erp_rejected").item
    queue.retry(item.id, "ana")
    app.worker().run_until_idle(max_wait_seconds=0)
    again = only(queue, "erp_rejected").item
    assert (again.id, again.status) == (item.id, ExceptionStatus.OPEN)
    app.close()


def test_retry_means_nothing_for_a_denial(queue: WorkQueue, denied: int) -> None:
    with pytest.raises(ActionRefused, match="write it off"):
        queue.retry(denied, "ana")


# ---------------------------------------------------------------------- reject, resolve


def test_reject_needs_a_reason_and_closes_the_item(queue: WorkQueue, denied: int) -> None:
    with pytest.raises(ValueError, match="reason"):
        queue.reject(denied, "ana", "")
    result = queue.reject(denied, "ana", "duplicate of a corrected claim")
    assert (result.entry.item.resolution, result.entry.item.resolved_by) == (
        Resolution.REJECTED,
        "ana",
    )
    entry = queue.show(denied).audit[-1]
    assert (entry.actor, entry.action) == ("ana", "exception.reject")
    assert entry.detail["reason"] == "duplicate of a corrected claim"
    for action in (
        lambda: queue.resolve(denied, "ben"),
        lambda: queue.assign(denied, "ben", "lead"),
        lambda: queue.retry(denied, "ben"),
    ):
        with pytest.raises(ActionRefused, match="closed"):
            action()
    queue.note(denied, "payer confirmed", "ben")  # notes remain possible


def test_resolve_with_a_note(queue: WorkQueue, denied: int) -> None:
    result = queue.resolve(denied, "ana", "appeal won; payer reprocessed")
    assert result.entry.item.resolution == Resolution.RESOLVED
    details = queue.show(denied)
    assert [n.text for n in details.notes] == ["appeal won; payer reprocessed"]
    assert details.audit[-1].detail["note_id"] == details.notes[0].id
    assert [e.item.id for e in queue.items("resolved")] == [denied]


def test_rejecting_a_parked_normalise_job_marks_its_unit(
    deployment: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from revbridge.orchestrate import handlers

    def broken(*_args: object) -> object:
        raise RuntimeError("mapping bug")

    monkeypatch.setattr(handlers, "normalise_835", broken)
    app = build(deployment, clock)
    process(app, WORKED_EXAMPLE)
    queue = app.work_queue()
    item = only(queue, "processing_error").item
    result = queue.reject(item.id, "ana", "superseded by a corrected file")
    unit_id = int(result.detail["unit_id"])
    with app.store.unit_of_work() as uow:
        unit = uow.units.get(unit_id)
    assert unit.status == UnitStatus.REJECTED
    assert unit.reason == "rejected by ana: superseded by a corrected file"
    app.close()
