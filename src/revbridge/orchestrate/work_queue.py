"""The exception work queue: what people see of the items revbridge could not settle
alone, and what they may do about them.

Every action is one transaction holding its effects, the item's new state and an audit
entry naming who acted (and the store's time), so the trail an auditor reads is exactly
what happened. Actions on a closed item, or that mean nothing for the item's reason, are
refused with ``ActionRefused`` saying why. A write-off above the configured amount is
only requested here; a second person's approval carries it out (``Approvals``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from revbridge.domain.events import Event, EventType
from revbridge.domain.money import money_str
from revbridge.errors import ActionRefused, StoreError
from revbridge.ingest.x12_files import ingest_bytes
from revbridge.ledger.write_off import (
    Denial,
    NotWritable,
    build_write_off,
    check_amount,
    denial_from_subject,
)
from revbridge.orchestrate.approvals import Approvals, Executor
from revbridge.orchestrate.clock import Clock
from revbridge.orchestrate.handlers import (
    ERP_INDETERMINATE,
    NORMALISE,
    POST,
    Services,
    prepare_journal,
)
from revbridge.store.base import (
    Approval,
    ApprovalStatus,
    AuditEntry,
    ExceptionItem,
    ExceptionStatus,
    JobStatus,
    Note,
    Resolution,
    Store,
    UnitOfWork,
    UnitStatus,
)

WRITE_OFF = "write_off"
CLAIM_DENIED = "claim_denied"
ERP_REJECTED = "erp_rejected"
RESUBMITTABLE = frozenset(
    {
        "rejected_file",
        "envelope_error",
        "rejected_transaction",
        "control_number_reused",
        "payment_conflict",
    }
)
_RETRY_HINTS = {
    CLAIM_DENIED: "write it off when the denial is final, or resolve it once appealed",
    "unknown_payer": "add the payer to the master data, then resolve it",
    "unknown_payee": "add the facility to the master data, then resolve it",
    "unmapped_code": "add a posting rule for the code, then resolve it",
    "payer_data_warning": "resolve it once reviewed",
}


class NotFound(LookupError):
    """No exception item (or approval) with that id."""


# ------------------------------------------------------------------------------ views


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """How long people have per reason, and which write-offs need a second person."""

    default_sla_hours: float = 48.0
    sla_hours: Mapping[str, float] = field(default_factory=dict)
    write_off_approval_above: Decimal = Decimal("1000.00")

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> QueueSettings:
        """From the validated ``exceptions`` section (missing keys keep the defaults)."""
        defaults = cls()
        return cls(
            default_sla_hours=float(values.get("default_sla_hours", defaults.default_sla_hours)),
            sla_hours=dict(values.get("sla_hours") or {}),
            write_off_approval_above=Decimal(
                str(values.get("write_off_approval_above", defaults.write_off_approval_above))
            ),
        )

    def sla(self, reason: str) -> timedelta:
        return timedelta(hours=self.sla_hours.get(reason, self.default_sla_hours))


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """An item as people see it: with its age and when its SLA runs out."""

    item: ExceptionItem
    age: timedelta
    sla_due: datetime
    overdue: bool

    def view(self) -> dict[str, Any]:
        """The stable JSON shape (CLI ``--format json`` and the HTTP API alike)."""
        item = self.item
        return {
            "id": item.id,
            "reason": item.reason,
            "status": item.status,
            "detail": item.detail,
            "source": dict(item.subject),
            "opened_at": item.opened_at.isoformat(),
            "assignee": item.assignee,
            "resolution": item.resolution,
            "resolved_at": _iso(item.resolved_at),
            "resolved_by": item.resolved_by,
            "age_hours": round(self.age.total_seconds() / 3600, 2),
            "sla_due": self.sla_due.isoformat(),
            "overdue": self.overdue,
        }


@dataclass(frozen=True, slots=True)
class ItemDetails:
    """One item with everything said and done about it."""

    entry: QueueEntry
    notes: list[Note]
    audit: list[AuditEntry]
    approvals: list[tuple[Approval, list[AuditEntry]]]
    raw: dict[str, Any] | None

    def view(self) -> dict[str, Any]:
        return {
            **self.entry.view(),
            "notes": [
                {"id": n.id, "at": n.at.isoformat(), "actor": n.actor, "text": n.text}
                for n in self.notes
            ],
            "audit": [audit_view(e) for e in self.audit],
            "approvals": [
                {**approval_view(a), "audit": [audit_view(e) for e in trail]}
                for a, trail in self.approvals
            ],
            "raw": self.raw,
        }


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did: the item afterwards and the action's own facts."""

    action: str
    entry: QueueEntry
    detail: Mapping[str, Any]

    def view(self) -> dict[str, Any]:
        return {"action": self.action, "item": self.entry.view(), "detail": dict(self.detail)}


def approval_view(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.id,
        "kind": approval.kind,
        "subject": dict(approval.subject),
        "status": approval.status,
        "requested_by": approval.requested_by,
        "requested_at": approval.requested_at.isoformat(),
        "decided_by": approval.decided_by,
        "decided_at": _iso(approval.decided_at),
    }


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "detail": dict(entry.detail),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# ---------------------------------------------------------------------------- service


class WorkQueue:
    """The work queue over a store. ``approvals`` decides the requests it makes."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: QueueSettings,
        services: Services,
        executors: Mapping[str, Executor] | None = None,
    ) -> None:
        """``executors`` carry out other kinds of approval request (e.g. bulk replay), so
        one approvals queue serves every kind."""
        self.store, self.clock, self.settings, self.services = store, clock, settings, services
        kinds = {**(executors or {}), WRITE_OFF: self._approved_write_off}
        self.approvals = Approvals(store, clock, kinds)

    # ------------------------------------------------------------------- read

    def items(
        self,
        status: str | None = None,
        *,
        reason: str | None = None,
        assignee: str | None = None,
        overdue: bool | None = None,
        reader: str | None = None,
    ) -> list[QueueEntry]:
        """Items by id. A ``reader`` (an API caller) is audited: items name patients'
        accounts, and every read of them through the API is recorded."""
        with self.store.unit_of_work() as uow:
            items = uow.exceptions.all(status, reason=reason, assignee=assignee)
            entries = [self.entry(item) for item in items]
            entries = [e for e in entries if overdue is None or e.overdue == overdue]
            if reader is not None:
                filters = {"status": status, "reason": reason, "assignee": assignee}
                detail = {**filters, "overdue": overdue, "ids": [e.item.id for e in entries]}
                uow.audit.record(reader, "exception.list", "exception", "*", detail)
        return entries

    def show(self, item_id: int, reader: str | None = None) -> ItemDetails:
        with self.store.unit_of_work() as uow:
            item = _item(uow, item_id)
            if reader is not None:
                uow.audit.record(reader, "exception.read", "exception", str(item_id))
            return ItemDetails(
                entry=self.entry(item),
                notes=uow.exceptions.notes(item_id),
                audit=uow.audit.for_subject("exception", str(item_id)),
                approvals=[
                    (a, uow.audit.for_subject("approval", str(a.id)))
                    for a in _approvals_of(uow, item_id)
                ],
                raw=_raw_view(uow, item),
            )

    def entry(self, item: ExceptionItem) -> QueueEntry:
        now = self.clock.now()
        due = item.opened_at + self.settings.sla(item.reason)
        end = item.resolved_at if item.resolved_at is not None else now
        is_open = item.status == ExceptionStatus.OPEN
        return QueueEntry(item, max(end - item.opened_at, timedelta(0)), due, is_open and now > due)

    def approval_list(self, status: str | None = None) -> list[Approval]:
        return self.approvals.all(status)

    def approve(self, approval_id: int, actor: str) -> Mapping[str, Any]:
        """Approve and carry out a request (never by the person who asked for it)."""
        self._approval(approval_id)
        return self.approvals.approve(approval_id, _who(actor))

    def refuse(self, approval_id: int, actor: str, reason: str) -> Approval:
        self._approval(approval_id)
        self.approvals.refuse(approval_id, _who(actor), _required(reason, "a reason"))
        return self._approval(approval_id)

    # ----------------------------------------------------------------- people

    def assign(self, item_id: int, assignee: str | None, actor: str) -> ActionResult:
        """Give the item to a person (``None``: take it back to the pool)."""
        actor = _who(actor)
        target = assignee.strip() if assignee and assignee.strip() else None
        with self.store.unit_of_work() as uow:
            item = _open(uow, item_id)
            uow.exceptions.assign(item_id, target)
            action = "assign" if target else "unassign"
            detail = {"assignee": target, "previous": item.assignee}
            uow.audit.record(actor, f"exception.{action}", "exception", str(item_id), detail)
            return self._result(uow, action, item_id, detail)

    def note(self, item_id: int, text: str, actor: str) -> ActionResult:
        """A note may be added to a closed item too: what was learnt later belongs there."""
        actor, text = _who(actor), _required(text, "the note's text")
        with self.store.unit_of_work() as uow:
            _item(uow, item_id)
            note_id = uow.exceptions.add_note(item_id, actor, self.clock.now(), text)
            detail = {"note_id": note_id}
            uow.audit.record(actor, "exception.note", "exception", str(item_id), detail)
            return self._result(uow, "note", item_id, detail)

    # ---------------------------------------------------------------- actions

    def retry(self, item_id: int, actor: str) -> ActionResult:
        """Run a parked job again, or send a journal the ERP refused again, or one whose
        booking is in doubt (looked up first: sent only if the ERP does not hold it)."""
        actor = _who(actor)
        with self.store.unit_of_work() as uow:
            item = self._actionable(uow, item_id)
            if "job_id" in item.subject:
                detail = self._requeue(uow, int(item.subject["job_id"]))
            elif item.reason in (ERP_REJECTED, ERP_INDETERMINATE):
                detail = self._resend(uow, item)
            else:
                hint = _RETRY_HINTS.get(item.reason, "resubmit corrected bytes instead")
                raise ActionRefused(f"retry means nothing for a {item.reason} item: {hint}")
            return self._close(uow, item, actor, Resolution.RETRIED, "retry", detail)

    def resubmit(
        self,
        item_id: int,
        data: bytes,
        actor: str,
        *,
        comment: str = "",
        name: str | None = None,
    ) -> ActionResult:
        """Ingest a person's corrected copy of the item's file as a new raw message.

        The original bytes are never touched; the link between the two (who, why, both
        hashes) is audited on the item and on both raw messages, in one transaction with
        the new message and its units."""
        actor = _who(actor)
        if not data:
            raise ValueError("the corrected file is empty")
        with self.store.unit_of_work() as uow:
            item = self._actionable(uow, item_id)
            if item.reason not in RESUBMITTABLE or item.subject.get("raw_id") is None:
                raise ActionRefused(
                    f"resubmit applies to items about a received file "
                    f"({', '.join(sorted(RESUBMITTABLE))}), not to a {item.reason} item"
                )
            link = self._ingest_edit(uow, item, data, actor, comment, name)
            return self._close(uow, item, actor, Resolution.RESUBMITTED, "resubmit", link)

    def write_off(self, item_id: int, actor: str, amount: Decimal | None = None) -> ActionResult:
        """Write a denial off (E9); above the configured amount, ask a second person."""
        actor = _who(actor)
        with self.store.unit_of_work() as uow:
            item = self._actionable(uow, item_id)
            denial = _denial(item)
            value = check_amount(denial, amount)
            if value > self.settings.write_off_approval_above:
                return self._request_write_off(uow, item, value, actor)
            detail = self._book_write_off(uow, item, denial, value, actor, None)
            return self._result(uow, "write_off", item_id, detail)

    def reject(self, item_id: int, actor: str, reason: str) -> ActionResult:
        """Close the item: its input will not be processed. The reason is required."""
        actor, reason = _who(actor), _required(reason, "a reason")
        with self.store.unit_of_work() as uow:
            item = self._actionable(uow, item_id)
            detail: dict[str, Any] = {"reason": reason}
            unit_id = self._abandoned_unit(uow, item, f"rejected by {actor}: {reason}")
            if unit_id is not None:
                detail["unit_id"] = unit_id
            return self._close(uow, item, actor, Resolution.REJECTED, "reject", detail)

    def resolve(self, item_id: int, actor: str, note: str | None = None) -> ActionResult:
        """Close the item: the person dealt with it (the note says how)."""
        actor = _who(actor)
        with self.store.unit_of_work() as uow:
            item = self._actionable(uow, item_id)
            detail: dict[str, Any] = {}
            if note and note.strip():
                detail["note_id"] = uow.exceptions.add_note(
                    item_id, actor, self.clock.now(), note.strip()
                )
            return self._close(uow, item, actor, Resolution.RESOLVED, "resolve", detail)

    # ---------------------------------------------------------------- helpers

    def _actionable(self, uow: UnitOfWork, item_id: int) -> ExceptionItem:
        """An open item that no pending approval holds (its decision comes first)."""
        item = _open(uow, item_id)
        pending = [a.id for a in _approvals_of(uow, item_id) if a.status == ApprovalStatus.PENDING]
        if pending:
            raise ActionRefused(
                f"item {item_id} waits for approval {pending[0]}; "
                "it must be approved or refused first"
            )
        return item

    def _result(
        self, uow: UnitOfWork, action: str, item_id: int, detail: Mapping[str, Any]
    ) -> ActionResult:
        return ActionResult(action, self.entry(uow.exceptions.get(item_id)), detail)

    def _close(
        self,
        uow: UnitOfWork,
        item: ExceptionItem,
        actor: str,
        resolution: str,
        action: str,
        detail: Mapping[str, Any],
    ) -> ActionResult:
        if resolution != Resolution.RETRIED:
            _no_parked_post_job(uow, item)
        uow.exceptions.resolve(item.id, actor, self.clock.now(), resolution)
        full = {**detail, "resolution": resolution}
        uow.audit.record(actor, f"exception.{action}", "exception", str(item.id), full)
        return self._result(uow, action, item.id, full)

    def _requeue(self, uow: UnitOfWork, job_id: int) -> dict[str, Any]:
        try:
            uow.jobs.requeue(job_id, self.clock.now())
        except (KeyError, StoreError) as exc:
            raise ActionRefused(f"job {job_id} cannot be retried: {_message(exc)}") from exc
        return {"job_id": job_id}

    def _resend(self, uow: UnitOfWork, item: ExceptionItem) -> dict[str, Any]:
        journal, target = str(item.subject["journal"]), str(item.subject["target"])
        try:
            outbox_id = uow.outbox.reset(
                target, journal, self.clock.now(), unsure=item.reason == ERP_INDETERMINATE
            )
        except StoreError as exc:
            raise ActionRefused(f"journal {journal} cannot be sent again: {exc}") from exc
        uow.jobs.enqueue(POST, target, {"target": target})
        return {"journal": journal, "target": target, "outbox_id": outbox_id}

    def _ingest_edit(
        self,
        uow: UnitOfWork,
        item: ExceptionItem,
        data: bytes,
        actor: str,
        comment: str,
        name: str | None,
    ) -> dict[str, Any]:
        original = uow.raw.get(int(item.subject["raw_id"]))
        digest = hashlib.sha256(data).hexdigest()
        stored = uow.raw.find_by_sha256(digest)
        if stored is not None:
            same = "the original itself" if stored.id == original.id else f"raw {stored.id}"
            raise ActionRefused(f"these bytes are already stored ({same}); nothing to resubmit")
        outcome = ingest_bytes(
            uow, data, name=name or original.name, channel=original.channel, replaces=original.id
        )
        if outcome.transactions and outcome.duplicates == outcome.transactions:
            raise ActionRefused(
                "every transaction in the edited file is stored already, byte for byte and "
                "under the same control numbers: correct the transaction itself, or give the "
                "corrected interchange new control numbers (ISA13, GS06)"
            )
        link = {
            "exception_id": item.id,
            "original_raw_id": original.id,
            "original_sha256": original.sha256,
            "new_raw_id": outcome.raw_id,
            "new_sha256": digest,
            "comment": comment.strip(),
            "outcome": outcome.status,
            "transactions": outcome.transactions,
            "problems": outcome.problems,
        }
        uow.audit.record(actor, "raw.resubmitted", "raw", str(original.id), link)
        uow.audit.record(actor, "raw.resubmission_of", "raw", str(outcome.raw_id), link)
        return link

    def _request_write_off(
        self, uow: UnitOfWork, item: ExceptionItem, value: Decimal, actor: str
    ) -> ActionResult:
        subject = {"exception_id": item.id, "amount": money_str(value)}
        approval = self.approvals.request_in(uow, WRITE_OFF, subject, actor)
        detail = {
            "approval_id": approval.id,
            "amount": money_str(value),
            "approval_above": money_str(self.settings.write_off_approval_above),
        }
        uow.audit.record(actor, "exception.write_off_requested", "exception", str(item.id), detail)
        return self._result(uow, "write_off_requested", item.id, detail)

    def _approved_write_off(
        self, uow: UnitOfWork, approval: Approval, approver: str
    ) -> Mapping[str, Any]:
        """The ``write_off`` executor: runs inside the approval's own transaction."""
        item = _open(uow, int(approval.subject["exception_id"]))
        if item.reason != CLAIM_DENIED:
            raise ActionRefused(f"item {item.id} is a {item.reason} item, not a denial")
        denial = denial_from_subject(item.subject)
        value = check_amount(denial, Decimal(str(approval.subject["amount"])))
        return self._book_write_off(uow, item, denial, value, approver, approval)

    def _book_write_off(
        self,
        uow: UnitOfWork,
        item: ExceptionItem,
        denial: Denial,
        value: Decimal,
        actor: str,
        approval: Approval | None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        journal = build_write_off(
            denial,
            exception_id=item.id,
            amount=value,
            on=now.astimezone(UTC).date(),
            rule_version=self.services.rules.version,
        )
        decided = {
            "write_off_of": item.id,
            "decided_by": actor,
            "requested_by": approval.requested_by if approval else actor,
        }
        target = self.services.target
        unit_id = int(item.subject["unit_id"])
        if not prepare_journal(uow, journal, target, unit_id, _cause(uow, item), decided):
            raise ActionRefused(f"journal {journal.key} exists already: written off before")
        uow.jobs.enqueue(POST, target, {"target": target})
        detail: dict[str, Any] = {
            "journal": journal.key,
            "amount": money_str(value),
            "denied_amount": money_str(denial.denied_amount),
            "target": target,
        }
        if approval is not None:
            detail |= {"approval_id": approval.id, "requested_by": approval.requested_by}
        self._close(uow, item, actor, Resolution.WRITTEN_OFF, "write_off", detail)
        return {**detail, "exception_id": item.id}

    def _abandoned_unit(self, uow: UnitOfWork, item: ExceptionItem, why: str) -> int | None:
        """A unit whose normalise job is parked will never be read: say so on the unit."""
        if item.subject.get("job_kind") != NORMALISE or item.subject.get("unit_id") is None:
            return None
        unit = uow.units.get(int(item.subject["unit_id"]))
        if unit.status != UnitStatus.PENDING:
            return None
        uow.units.set_status(unit.id, UnitStatus.REJECTED, why)
        return unit.id

    def _approval(self, approval_id: int) -> Approval:
        with self.store.unit_of_work() as uow:
            try:
                return uow.approvals.get(approval_id)
            except KeyError as exc:
                raise NotFound(f"no approval {approval_id}") from exc


# ------------------------------------------------------------------------- functions


def _item(uow: UnitOfWork, item_id: int) -> ExceptionItem:
    try:
        return uow.exceptions.get(item_id)
    except KeyError as exc:
        raise NotFound(f"no exception item {item_id}") from exc


def _open(uow: UnitOfWork, item_id: int) -> ExceptionItem:
    item = _item(uow, item_id)
    if item.status != ExceptionStatus.OPEN:
        raise ActionRefused(
            f"item {item_id} is closed ({item.resolution or item.status}"
            f"{' by ' + item.resolved_by if item.resolved_by else ''})"
        )
    return item


def _no_parked_post_job(uow: UnitOfWork, item: ExceptionItem) -> None:
    """A parked post job holds back every later journal to its target: only retry it."""
    if item.subject.get("job_kind") != POST or item.subject.get("job_id") is None:
        return
    job = uow.jobs.get(int(item.subject["job_id"]))
    if job.status == JobStatus.PARKED:
        raise ActionRefused(
            f"job {job.id} posts to {job.key}; while it stays parked no later journal reaches "
            f"{job.key}: retry it (once the target works) instead of closing the item"
        )


def _approvals_of(uow: UnitOfWork, item_id: int) -> list[Approval]:
    return [a for a in uow.approvals.all() if a.subject.get("exception_id") == item_id]


def _denial(item: ExceptionItem) -> Denial:
    if item.reason != CLAIM_DENIED:
        raise ActionRefused(f"only a claim_denied item can be written off, not {item.reason}")
    try:
        return denial_from_subject(item.subject)
    except NotWritable as exc:
        raise ActionRefused(f"item {item.id} cannot be written off: {exc}") from exc


def _cause(uow: UnitOfWork, item: ExceptionItem) -> Event:
    """The claim or adjustment event the denial was read from (the write-off's cause): the
    event of the item's segment, or the claim event carrying the adjustment of that CAS
    segment (mapping x12_835/2)."""
    unit_id, segment = int(item.subject["unit_id"]), int(item.subject["segment"])
    kinds = (EventType.CLAIM_ADJUDICATED, EventType.CLAIM_REVERSED, EventType.ADJUSTMENT_BOOKED)
    for stored in uow.events.by_key(str(item.subject["payment"])):
        event = stored.event
        if event.type in kinds and event.source.unit_id == unit_id and _holds(event, segment):
            return event
    raise ActionRefused(f"the events item {item.id} was read from are not stored")


def _holds(event: Event, segment: int) -> bool:
    nested = event.data.get("adjustments", ())
    return event.source.segment == segment or any(a["segment"] == segment for a in nested)


def _raw_view(uow: UnitOfWork, item: ExceptionItem) -> dict[str, Any] | None:
    """The item's raw message, with every edited copy a person resubmitted of it (and,
    for an edited copy, the original it replaces): the edit is found beside the original."""
    raw_id = item.subject.get("raw_id")
    if raw_id is None:
        return None
    raw = uow.raw.get(int(raw_id))
    trail = uow.audit.for_subject("raw", str(raw.id))
    return {
        "id": raw.id,
        "name": raw.name,
        "channel": raw.channel,
        "sha256": raw.sha256,
        "size": raw.size,
        "received_at": raw.received_at.isoformat(),
        "resubmissions": [_link(e) for e in trail if e.action == "raw.resubmitted"],
        "resubmission_of": next(
            (_link(e) for e in trail if e.action == "raw.resubmission_of"), None
        ),
    }


def _link(entry: AuditEntry) -> dict[str, Any]:
    return {"at": entry.at.isoformat(), "actor": entry.actor, **dict(entry.detail)}


def _who(actor: str) -> str:
    return _required(actor, "who acts (a user name)")


def _required(text: str, what: str) -> str:
    if not text or not text.strip():
        raise ValueError(f"{what} is required")
    return text.strip()


def _message(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__
