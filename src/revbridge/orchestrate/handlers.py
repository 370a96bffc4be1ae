"""Job handlers: normalise a unit, build its journals, post journals to their target.

Each handler does its work in one transaction with the completion of its job; ``post``
is the exception by necessity: it records the attempt *before* calling the target, so a
crash mid-call leaves an in-flight item that is looked up in the target before any resend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from revbridge.domain.events import Event, EventType, deterministic_id
from revbridge.domain.journal import Journal
from revbridge.domain.master import MasterData
from revbridge.errors import BusinessError, DeliveryError, OutageError, StoreError, ThrottledError
from revbridge.formats.x12.issues import X12Issue
from revbridge.ingest.x12_files import issue_exception
from revbridge.ledger.posting_rules import PostingRules
from revbridge.ledger.remittance import build_remittance_journals
from revbridge.normalise.x12_835 import Normalised, Rejected, UnitInput, normalise_835
from revbridge.orchestrate import owners
from revbridge.orchestrate.target_guard import TargetGuard
from revbridge.orchestrate.worker import Deferred, Handler, JobContext
from revbridge.post.base import JournalSink
from revbridge.store.base import (
    NewException,
    OutboxItem,
    OutboxStatus,
    RawMessage,
    UnitOfWork,
    UnitStatus,
)

NORMALISE, JOURNAL, POST = "normalise", "journal", "post"
SYSTEM = "revbridge"
ERP_INDETERMINATE = "erp_indeterminate"


@dataclass(frozen=True, slots=True)
class Services:
    master: MasterData
    rules: PostingRules
    target: str
    sinks: Callable[[str], JournalSink]
    post_batch_size: int = 50
    guards: Callable[[str], TargetGuard] | None = None  # per target; None: unguarded


def handlers(services: Services) -> dict[str, Handler]:
    return {
        NORMALISE: normalise,
        JOURNAL: lambda ctx: journal(ctx, services),
        POST: lambda ctx: post(ctx, services),
    }


# ----------------------------------------------------------------------------- normalise


def normalise(ctx: JobContext) -> None:
    with ctx.store.unit_of_work() as uow:
        source, raw = unit_input(uow, int(ctx.job.payload["unit_id"]))
        result = normalise_835(source, ctx.clock.now())
        if isinstance(result, Rejected):
            _reject(uow, source, raw.name, result.issues)
        else:
            _accept(uow, source, raw.name, result)
        ctx.complete(uow)


def unit_input(uow: UnitOfWork, unit_id: int) -> tuple[UnitInput, RawMessage]:
    """What a normaliser reads for a stored unit: its bytes and where they came from. The
    normalise job and replay read a unit the same way, so a replay sees the same input."""
    unit = uow.units.get(unit_id)
    raw = uow.raw.get(unit.raw_id)
    data = uow.raw.read(unit.raw_id, unit.byte_start, unit.byte_end)
    source = UnitInput(
        data=data,
        delimiters=unit.envelope["delimiters"],
        first_segment=unit.first_segment,
        raw_id=unit.raw_id,
        unit_id=unit.id,
        channel=raw.channel,
        content_hash=unit.content_hash,
        envelope=unit.envelope,
    )
    return source, raw


def _issue(reason: str, issue: X12Issue, unit: UnitInput, name: str) -> NewException:
    return issue_exception(
        reason,
        issue,
        file=name,
        raw_id=unit.raw_id,
        unit_id=unit.unit_id,
        transaction=unit.envelope.get("control_number"),
    )


def _reject(uow: UnitOfWork, unit: UnitInput, name: str, issues: Sequence[X12Issue]) -> None:
    uow.units.set_status(unit.unit_id, UnitStatus.REJECTED, issues[0].message)
    for issue in issues:
        uow.exceptions.open(_issue("rejected_transaction", issue, unit, name))
    uow.audit.record(SYSTEM, "unit.rejected", "unit", str(unit.unit_id), {"issues": len(issues)})


def _accept(uow: UnitOfWork, unit: UnitInput, name: str, result: Normalised) -> None:
    prior = _received(uow, result.payment_key)
    if prior is not None:
        _resent(uow, unit, result, prior)
        return
    try:
        uow.events.append(result.events)
    except StoreError:
        # Another worker normalised the same payment (a resend under other control numbers)
        # at the same time and committed first: its events took the (deterministic) ids.
        # The refusal came after its commit, so a new read sees them: decide as if it had
        # come first. The unit of work is still usable after a refused write.
        prior = _received(uow, result.payment_key)
        if prior is None:
            raise
        _resent(uow, unit, result, prior)
        return
    uow.units.set_status(unit.unit_id, UnitStatus.NORMALISED)
    for issue in result.warnings:
        uow.exceptions.open(_issue("payer_data_warning", issue, unit, name))
    header = result.events[0]
    uow.jobs.enqueue(
        JOURNAL,
        result.payment_key,
        {"correlation_id": header.correlation_id, "unit_id": unit.unit_id},
    )
    uow.audit.record(
        SYSTEM,
        "unit.normalised",
        "unit",
        str(unit.unit_id),
        {"events": len(result.events), "payment": result.payment_key},
    )


def _received(uow: UnitOfWork, payment_key: str) -> Event | None:
    """The ``remittance.received`` event of an earlier copy of this payment, if any."""
    return next(
        (
            s.event
            for s in uow.events.by_key(payment_key)
            if s.event.type == EventType.REMITTANCE_RECEIVED
        ),
        None,
    )


def _resent(uow: UnitOfWork, unit: UnitInput, result: Normalised, prior: Event) -> None:
    """The payment (TRN03, TRN02) was received before: a resend, or a payer error."""
    if prior.data.get("fingerprint") == result.fingerprint:
        uow.units.set_status(
            unit.unit_id,
            UnitStatus.DUPLICATE,
            f"payment {result.payment_key} already received (resend)",
        )
        return
    uow.units.set_status(
        unit.unit_id,
        UnitStatus.REJECTED,
        f"payment {result.payment_key} received before with different content",
    )
    detail = (
        f"payment {result.payment_key} was received before (unit {prior.source.unit_id}) "
        "with different content; a corrected 835 must be escalated to the payer, not posted"
    )
    subject = {
        "payment": result.payment_key,
        "unit_id": unit.unit_id,
        "raw_id": unit.raw_id,
        "earlier_unit_id": prior.source.unit_id,
    }
    uow.exceptions.open(
        NewException("payment_conflict", detail, f"payment_conflict:{unit.unit_id}", subject)
    )


# ------------------------------------------------------------------------------- journal


def journal(ctx: JobContext, services: Services) -> None:
    correlation_id = str(ctx.job.payload["correlation_id"])
    with ctx.store.unit_of_work() as uow:
        events = [s.event for s in uow.events.by_correlation(correlation_id)]
        result = build_remittance_journals(events, services.master, services.rules)
        unit_id = int(ctx.job.payload["unit_id"])
        added = [
            j
            for j in result.journals
            if prepare_journal(uow, j, services.target, unit_id, events[0])
        ]
        for item in result.exceptions:
            uow.exceptions.open(item)
        if added:  # one ready post job per target takes every due item: no need for more
            uow.jobs.enqueue_once(POST, services.target, {"target": services.target})
        ctx.complete(uow)


def prepare_journal(
    uow: UnitOfWork,
    journal: Journal,
    target: str,
    unit_id: int,
    cause: Event,
    detail: Mapping[str, Any] | None = None,
) -> bool:
    """Store the journal, its outbox item and its ``journal.prepared`` event in the caller's
    transaction; ``False`` (and nothing changes) if the key exists. The journal job and
    replay both prepare journals this way, so the post job sees no difference; ``detail``
    adds to the event's data (replay records what it reverses and why)."""
    if not uow.journals.add(journal, target=target, unit_id=unit_id):
        return False
    uow.outbox.add(target, journal.key)
    uow.events.append(
        [
            _journal_event(
                EventType.JOURNAL_PREPARED,
                journal,
                cause,
                {
                    "lines": len(journal.lines),
                    "total": f"{journal.total:f}",
                    "rule_version": journal.rule_version,
                    "target": target,
                    **(detail or {}),
                },
            )
        ]
    )
    return True


def _journal_event(kind: str, journal: Journal, cause: Event, data: Mapping[str, Any]) -> Event:
    return Event(
        id=deterministic_id(kind, journal.key),
        type=kind,
        schema_version=1,
        occurred_at=cause.recorded_at,
        recorded_at=cause.recorded_at,
        entity=journal.entity,
        facility=None,
        keys={"journal": journal.key, **{k: v for k, v in cause.keys.items() if k == "payment"}},
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
        source=cause.source,
        data=dict(data),
    )


# ---------------------------------------------------------------------------------- post


def post(ctx: JobContext, services: Services) -> None:
    """Deliver the target's due items; every call to the target is admitted by its guard.

    The first call is admitted before anything is marked in flight, so a wait (rate
    limit, Retry-After, open breaker) leaves no trace but the job's deferral.
    """
    target = str(ctx.job.payload["target"])
    sink = services.sinks(target)
    calls = _Calls(services.guards(target) if services.guards else None)
    try:
        _post(ctx, services, target, sink, calls)
    finally:
        calls.release()


def _post(
    ctx: JobContext, services: Services, target: str, sink: JournalSink, calls: _Calls
) -> None:
    with ctx.store.unit_of_work() as uow:
        items = uow.outbox.due(target, ctx.clock.now(), services.post_batch_size)
        if len(items) < services.post_batch_size:
            _follow_up(uow, target, items)
        if not items:
            ctx.complete(uow)
            return
        journals = {i.journal_key: _journal(uow, i.journal_key) for i in items}
        calls.admit()
        ctx.hold(uow)  # a holder that paused past its lease learns it here, before sending
        dead = {i.sender for i in items if i.sender is not None and owners.is_dead(i.sender)}
        uow.outbox.mark_in_flight([i.id for i in items], ctx.owner, dead=dead)
    outcome = _Outcome(posted={})
    try:
        outcome.posted.update(_already_there(calls, sink, items))
        outcome.in_doubt.update(_in_doubt(ctx, sink, items, outcome.posted))
        _deliver(
            calls,
            sink,
            [journals[i.journal_key] for i in items if i.journal_key not in outcome.settled],
            outcome,
        )
    except (DeliveryError, Deferred) as exc:
        _record(ctx, items, journals, outcome, complete=False)
        _postpone(ctx, [i for i in items if i.journal_key not in outcome.settled], exc)
        signal = calls.signal(exc)
        if signal is exc:
            raise
        raise signal from exc
    _record(
        ctx, items, journals, outcome, complete=True, more=len(items) == services.post_batch_size
    )


def _follow_up(uow: UnitOfWork, target: str, taken: Sequence[OutboxItem]) -> None:
    """Leave a post job for items not yet due by this worker's clock, due when the first of
    them is. Items are stamped by the clock of the process that made them; one ahead of
    ours (another host, an NTP step) made items this job cannot take yet, and the journal
    jobs that made them counted on a ready post job (``enqueue_once``): this one."""
    upcoming = uow.outbox.due(target, _END_OF_TIME, len(taken) + 1)
    ids = {item.id for item in taken}
    later = [item.run_after for item in upcoming if item.id not in ids]
    if later:
        uow.jobs.enqueue(POST, target, {"target": target}, run_after=min(later))


_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
_R = TypeVar("_R")


class _Calls:
    """The calls one post job makes to its target, one after the other, under one slot
    of the target's guard: the first admitted by ``admit`` (which may be asked ahead),
    each further one by ``again``. ``release`` frees the slot when the job is done."""

    def __init__(self, guard: TargetGuard | None) -> None:
        self.guard = guard
        self._held = False
        self._called = False

    def admit(self) -> None:
        """Hold a slot, or raise ``Deferred`` with the guard's wait."""
        if self.guard is None or self._held:
            return
        self._raise_if_waiting(self.guard.admit())
        self._held, self._called = True, False

    def call(self, send: Callable[[], _R]) -> _R:
        if self.guard is None:
            return send()
        if not self._held:
            self.admit()
        elif self._called:
            self._raise_if_waiting(self.guard.again())
        self._called = True
        with self.guard.calling():
            return send()

    def release(self) -> None:
        if self.guard is not None and self._held:
            self._held = False
            self.guard.release(called=self._called)

    def _raise_if_waiting(self, wait: float) -> None:
        if wait > 0 and self.guard is not None:
            raise Deferred(wait, self.guard.refusal)

    def signal(self, exc: Exception) -> Exception:
        """What the worker should see: a throttled or down target defers the job (no
        attempt counted) until the guard would admit a call again; anything else as is."""
        if self.guard is None or not isinstance(exc, ThrottledError | OutageError):
            return exc
        wait = self.guard.wait()
        if wait <= 0:
            return exc  # breaker still closed: the worker's backoff spaces the next try
        return Deferred(wait, f"{type(exc).__name__}: {exc}")


@dataclass
class _Outcome:
    posted: dict[str, str]
    refused: dict[str, BusinessError] = field(default_factory=dict)
    in_doubt: dict[str, str] = field(default_factory=dict)  # key -> sender of a call under way

    @property
    def settled(self) -> set[str]:
        """Keys not to send in this job: posted, or sent by a call that may still commit."""
        return {*self.posted, *self.in_doubt}


def _journal(uow: UnitOfWork, key: str) -> Journal:
    record = uow.journals.get(key)
    if record is None:
        raise LookupError(f"outbox names journal {key}, which is not stored")
    return record.journal


def _already_there(calls: _Calls, sink: JournalSink, items: Sequence[OutboxItem]) -> dict[str, str]:
    """Keys whose earlier attempt's outcome is unknown: ask the target before resending."""
    unsure = [i.journal_key for i in items if i.status == OutboxStatus.IN_FLIGHT]
    return dict(calls.call(lambda: sink.lookup(unsure))) if unsure else {}


def _in_doubt(
    ctx: JobContext, sink: JournalSink, items: Sequence[OutboxItem], found: Mapping[str, str]
) -> dict[str, str]:
    """Keys absent from the target that a call by another lease holder was sending, and
    that call may still commit: its holder lost the lease mid-call (paused, partitioned)
    and is not known dead. A target that is idempotent by key absorbs that late commit, so
    its keys are sent again; any other would book them twice, so they are not sent: key ->
    that sender, for a person to check (``ERP_INDETERMINATE``)."""
    if sink.idempotent:
        return {}
    return {
        i.journal_key: i.sender
        for i in items
        if i.sender is not None
        and i.journal_key not in found
        and i.sender != ctx.owner
        and not owners.is_dead(i.sender)
    }


def _deliver(calls: _Calls, sink: JournalSink, batch: Sequence[Journal], outcome: _Outcome) -> None:
    """Post the batch; if the target refuses it, post one by one so one bad journal fails alone."""
    if not batch:
        return
    try:
        outcome.posted.update(calls.call(lambda: sink.post(batch)))
        return
    except BusinessError as exc:
        if len(batch) == 1:
            outcome.refused[batch[0].key] = exc
            return
    for journal in batch:
        _deliver(calls, sink, [journal], outcome)


def _record(
    ctx: JobContext,
    items: Sequence[OutboxItem],
    journals: Mapping[str, Journal],
    outcome: _Outcome,
    *,
    complete: bool,
    more: bool = False,
) -> None:
    now = ctx.clock.now()
    with ctx.store.unit_of_work() as uow:
        posted: list[Event] = []
        for item in items:
            if item.journal_key in outcome.posted:
                posted.append(
                    _mark_posted(
                        uow, item, journals[item.journal_key], outcome.posted[item.journal_key], now
                    )
                )
            elif item.journal_key in outcome.refused:
                _mark_refused(uow, item, outcome.refused[item.journal_key])
            elif item.journal_key in outcome.in_doubt:
                _mark_in_doubt(uow, item, outcome.in_doubt[item.journal_key])
        uow.events.append(posted)  # one append for the batch: the posting is in series
        if more:
            uow.jobs.enqueue_once(POST, items[0].target, {"target": items[0].target})
        if complete:
            ctx.complete(uow)
        else:
            ctx.hold(uow)


def _mark_posted(
    uow: UnitOfWork, item: OutboxItem, journal: Journal, document_id: str, now: datetime
) -> Event:
    """Record the posting; returns its ``journal.posted`` event for the caller to append."""
    uow.outbox.mark_done(item.id, document_id)
    uow.journals.mark_posted(item.journal_key, document_id, now)
    prepared = next(
        s.event
        for s in uow.events.by_key(journal.key)
        if s.event.type == EventType.JOURNAL_PREPARED
    )
    return _journal_event(
        EventType.JOURNAL_POSTED,
        journal,
        prepared,
        {"target": item.target, "erp_document_id": document_id},
    )


def _mark_refused(uow: UnitOfWork, item: OutboxItem, exc: BusinessError) -> None:
    """The target refused the journal's content: park it for a person."""
    uow.outbox.mark_failed(item.id, str(exc))
    uow.journals.mark_failed(item.journal_key, str(exc))
    uow.exceptions.open(
        NewException(
            "erp_rejected",
            f"{item.target} refused journal {item.journal_key}: {exc}",
            f"erp_rejected:{item.journal_key}",
            {"journal": item.journal_key, "target": item.target, "code": exc.code},
        )
    )


def _mark_in_doubt(uow: UnitOfWork, item: OutboxItem, sender: str) -> None:
    """A call by a lost lease may still book the journal: out of the queue until a person
    retries it (looked up again first) or finds it booked."""
    detail = (
        f"indeterminate: {sender} lost its lease while its call to {item.target} was in "
        f"flight; {item.journal_key} was not there when looked up, and {item.target} "
        "accepts a second document per key: check the ERP, then retry (it is looked up "
        "again before anything is sent)"
    )
    uow.outbox.mark_failed(item.id, detail)
    uow.exceptions.open(
        NewException(
            ERP_INDETERMINATE,
            detail,
            f"{ERP_INDETERMINATE}:{item.journal_key}",
            {"journal": item.journal_key, "target": item.target, "sender": sender},
        )
    )


def _postpone(ctx: JobContext, items: Sequence[OutboxItem], exc: Exception) -> None:
    """Leave the items in flight (outcome unknown); the job's own backoff times the retry.

    They keep their place in the queue: the next attempt takes the same items first, so
    journals reach the target in order, and a long outage leaves one batch to look up
    when the target is back rather than every item its probes happened to take.
    """
    with ctx.store.unit_of_work() as uow:
        ctx.hold(uow)
        for item in items:
            uow.outbox.mark_retry(
                item.id, f"{type(exc).__name__}: {exc}", item.run_after, ctx.owner
            )
