"""Remittance events -> balanced journals (domain.md §5.3 E5–E9, E18–E26; E23/E24 apart).

Granularity: one journal per payment (TRN) and legal entity, with reversals (CLP02 22) and
corrections (the re-adjudication after a reversal) in journals of their own. Every line
carries dimensions and the source references that let a person trace it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from revbridge.domain.events import Event, EventType
from revbridge.domain.journal import Journal, LineColumns
from revbridge.domain.master import OTHER_CLASS, Facility, FinancialClass, MasterData
from revbridge.domain.money import money_str
from revbridge.ledger.posting_rules import Action, AdjustmentRule, PostingRules
from revbridge.store.base import NewException, data_as

KINDS = ("remittance", "reversal", "correction")
_LINE_REFERENCES = ("patient_control_number", "payer_claim_number", "plb_reference")


@dataclass(frozen=True, slots=True)
class LedgerResult:
    journals: list[Journal]
    exceptions: list[NewException]


@dataclass
class _Context:
    header: Event
    facility: Facility
    payer_id: str
    fc: FinancialClass
    self_pay: FinancialClass
    rules: PostingRules
    lines: dict[str, LineColumns] = field(default_factory=lambda: {k: LineColumns() for k in KINDS})
    exceptions: list[NewException] = field(default_factory=list)
    claim_status: dict[str, str] = field(default_factory=dict)
    denial: dict[str, Any] | None = None  # subject of the current claim's claim-level denial
    shared_dimensions: dict[str, dict[str, str]] = field(default_factory=dict)  # by reason
    source_event: Event | None = None  # the event ``source_parts`` are of
    source_parts: tuple[dict[str, str], dict[str, str]] = ({}, {})
    bookings: dict[tuple[str, str], _Booking | None] = field(default_factory=dict)  # by code
    heads: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict)  # by raw, unit

    @property
    def payment(self) -> str:
        return self.header.keys["payment"]

    def dimensions(self, reason: str = "") -> dict[str, str]:
        """A line's dimensions: one dict per reason, shared by the lines (never changed)."""
        dims = self.shared_dimensions.get(reason)
        if dims is None:
            dims = {
                "entity": self.facility.entity,
                "facility": self.facility.code,
                "payer": self.payer_id,
                "financial_class": self.fc.code,
            }
            if reason:
                dims["adjustment_reason"] = reason
            self.shared_dimensions[reason] = dims
        return dims

    def source(self, event: Event, segment: int | None) -> dict[str, str]:
        """A line's source references: ``segment`` is the CAS segment of an adjustment
        carried in its claim's event, else the event's own segment."""
        head, tail = self.parts(event)
        where = event.source.segment if segment is None else segment
        return {**head, "segment": str(where), **tail}

    def parts(self, event: Event) -> tuple[dict[str, str], dict[str, str]]:
        """The references of ``event``'s lines before and after ``segment``."""
        if event is not self.source_event:  # a claim's adjustments ask in a row
            self.source_event = event
            self.source_parts = self._source_parts(event)
        return self.source_parts

    def _source_parts(self, event: Event) -> tuple[dict[str, str], dict[str, str]]:
        """The references before and after ``segment``, the same for every line of ``event``."""
        where = (event.source.raw_id, event.source.unit_id)
        head = self.heads.get(where)
        if head is None:  # the same for the events of a unit: one per remittance
            head = self.heads[where] = {
                "trn": self.header.data["trace_number"],
                "payer_trn": self.header.data["trace_payer"],
                "raw_id": str(where[0]),
                "unit_id": str(where[1]),
            }
        keys = event.keys
        return head, {name: keys[name] for name in _LINE_REFERENCES if name in keys}

    def exception(
        self, reason: str, detail: str, event: Event, segment: int | None, **extra: Any
    ) -> dict[str, Any]:
        subject = {**self.source(event, segment), "payment": self.payment, **extra}
        dedupe = f"{reason}:{self.payment}:{event.source.unit_id}:{subject['segment']}"
        self.exceptions.append(NewException(reason, detail, dedupe, subject))
        return subject

    def denied(self, code: str | None, amount: Decimal) -> dict[str, Any]:
        """What a denial write-off (E9) needs, so a person can book it from the item alone."""
        return {
            **self.dimensions(),
            "ar_account": self.fc.ar_account,
            "denial_account": self.fc.denial_account,
            "denied_amount": money_str(amount),
            "code": code,
        }


def build_remittance_journals(
    events: Sequence[Event], master: MasterData, rules: PostingRules
) -> LedgerResult:
    """Journals and exception items for the events of one remittance (one TRN)."""
    header = next(e for e in events if e.type == EventType.REMITTANCE_RECEIVED)
    ctx_or_result = _context(header, master, rules)
    if isinstance(ctx_or_result, LedgerResult):
        return ctx_or_result
    ctx = ctx_or_result
    for event in events:
        _apply(ctx, event)
    return LedgerResult(_journals(ctx, header, rules), ctx.exceptions)


def _context(header: Event, master: MasterData, rules: PostingRules) -> _Context | LedgerResult:
    data = header.data
    npi = data["payee_id"] if data["payee_id_qualifier"] == "XX" else None
    tin = data["payee_tin"] or (data["payee_id"] if data["payee_id_qualifier"] == "FI" else None)
    facility = master.facility_for(npi, tin)
    payer_id = data["payer_id"] or data["trace_payer"]
    if facility is None:
        detail = f"payee {data['payee_name']!r} (NPI {npi}, TIN {tin}) is not in the master data"
        subject = {"payment": header.keys["payment"], "payee_npi": npi, "payee_tin": tin}
        item = NewException(
            "unknown_payee", detail, f"unknown_payee:{header.keys['payment']}", subject
        )
        return LedgerResult([], [item])
    payer = master.payers.get(payer_id)
    ctx = _Context(
        header=header,
        facility=facility,
        payer_id=payer_id,
        fc=master.financial_class(payer.financial_class if payer else OTHER_CLASS),
        self_pay=master.financial_class(rules.self_pay_class),
        rules=rules,
    )
    if payer is None:
        detail = f"payer {payer_id} ({data['payer_name']}) is not mapped; posted under class other"
        ctx.exceptions.append(
            NewException("unknown_payer", detail, f"unknown_payer:{payer_id}", {"payer": payer_id})
        )
    return ctx


def _apply(ctx: _Context, event: Event) -> None:
    if event.type in (EventType.CLAIM_ADJUDICATED, EventType.CLAIM_REVERSED):
        claim = data_as(event.data, _Claim)
        kind = _kind(event.type, claim.claim_status, claim.correction)
        _claim(ctx, event, claim, kind)
        _nested_adjustments(ctx, event, claim, kind)  # x12_835/2
    elif event.type == EventType.ADJUSTMENT_BOOKED:  # stored by mapping x12_835/1
        booked = data_as(event.data, _BookedAdjustment)
        kind = _kind(event.type, booked.claim_status, booked.correction)
        _adjustment(ctx, event, _Adjusted(booked, None, booked.claim_status, kind))
    elif event.type == EventType.PROVIDER_ADJUSTMENT_BOOKED:
        _provider(ctx, event)


class _Adjustment(msgspec.Struct, gc=False):
    """What the ledger reads of a CAS adjustment (values as the normaliser wrote them)."""

    group: Any
    reason: Any
    amount: Any
    informational: Any


class _NestedAdjustment(_Adjustment, gc=False):
    """An adjustment inside its claim's event (x12_835/2): ``segment`` its CAS segment."""

    segment: Any


class _BookedAdjustment(_Adjustment, gc=False):
    """An ``adjustment.booked`` event's data (x12_835/1)."""

    claim_status: Any
    correction: Any = None


class _Claim(msgspec.Struct, gc=False):
    """What the ledger reads of a claim event's data, decoded without the rest (its
    service lines, amounts it does not post): this runs for every claim."""

    status: Any
    paid: Any
    correction: Any = None
    claim_status: Any = None
    adjustments: list[_NestedAdjustment] = []


class _Adjusted(NamedTuple):  # a tuple: one is made per adjustment, cheaply
    """One CAS adjustment: inside its claim's event (``segment`` its CAS segment) or an
    ``adjustment.booked`` event of its own (``segment`` None: the event's)."""

    data: _Adjustment
    segment: int | None
    claim_status: str
    kind: str


def _kind(event_type: str, claim_status: Any, correction: Any) -> str:
    if event_type == EventType.CLAIM_REVERSED or claim_status == "22":
        return "reversal"
    return "correction" if correction else "remittance"


def _claim(ctx: _Context, event: Event, claim: _Claim, kind: str) -> None:
    paid = Decimal(claim.paid)
    ctx.denial = None
    if claim.status == "4":
        detail = f"claim denied; AR kept open for appeal (paid {paid})"
        ctx.denial = ctx.exception(
            "claim_denied", detail, event, None, **ctx.denied(None, Decimal(0))
        )
    if paid:
        ctx.lines[kind].pair(
            ctx.rules.cash_clearing,
            ctx.fc.ar_account,
            paid,
            f"payment {event.keys['patient_control_number']}",
            ctx.dimensions(),
            ctx.source(event, None),
        )


class _Booking(NamedTuple):
    """How an adjustment code whose rule simply books it is posted: its reason, the account
    to debit and the lines' dimensions, the same for every adjustment of that code."""

    reason: str
    account: str
    dimensions: dict[str, str]


def _nested_adjustments(ctx: _Context, event: Event, claim: _Claim, kind: str) -> None:
    """The adjustments inside a claim's event, in a loop of their own (this runs for every
    CAS adjustment): the lines of a code that simply books (``_booking``) are made here,
    as ``_adjustment`` would make them, those of one CAS segment sharing their source (read
    only, as every line's mappings); any other code goes through ``_adjustment``."""
    status = claim.status
    pair, ar_account, bookings = ctx.lines[kind].pair, ctx.fc.ar_account, ctx.bookings
    pcn = event.keys["patient_control_number"]
    head, tail = ctx.parts(event)
    segment: Any = None  # the last CAS segment booked
    source: dict[str, str] | None = None  # its lines' source
    for data in claim.adjustments:
        if data.informational:
            continue
        amount = Decimal(data.amount)
        if not amount:
            continue
        code = (data.group, data.reason)
        booking = bookings[code] if code in bookings else _booking(ctx, code)
        if booking is None:
            _adjustment(ctx, event, _Adjusted(data, data.segment, status, kind))
            continue
        reason, account, dimensions = booking
        if source is None or data.segment != segment:  # a CAS segment's share one
            segment = data.segment
            source = {**head, "segment": str(segment), **tail}
        pair(account, ar_account, amount, f"{reason} {pcn}", dimensions, source)


def _booking(ctx: _Context, code: tuple[str, str]) -> _Booking | None:
    """How adjustments of ``code`` are booked, if its rule simply books them to an account
    (None: no rule, a denial, information); remembered in ``ctx.bookings``, so asked once
    per code and remittance."""
    reason = f"{code[0]}-{code[1]}"
    account = _booked_account(ctx, ctx.rules.adjustment_rule(*code))
    booking = None if account is None else _Booking(reason, account, ctx.dimensions(reason))
    ctx.bookings[code] = booking
    return booking


def _adjustment(ctx: _Context, event: Event, adjusted: _Adjusted) -> None:
    data = adjusted.data
    if data.informational:
        return
    amount = Decimal(data.amount)
    if not amount:
        return
    reason = f"{data.group}-{data.reason}"
    rule = ctx.rules.adjustment_rule(data.group, data.reason)
    debit = _adjustment_account(ctx, rule, event, adjusted, reason)
    if debit is None:
        return
    ctx.lines[adjusted.kind].pair(
        debit,
        ctx.fc.ar_account,
        amount,
        f"{reason} {event.keys['patient_control_number']}",
        ctx.dimensions(reason),
        ctx.source(event, adjusted.segment),
    )


def _adjustment_account(
    ctx: _Context, rule: AdjustmentRule | None, event: Event, adjusted: _Adjusted, reason: str
) -> str | None:
    """The account to debit, or None when the rule says not to post (yet)."""
    if rule is None:
        detail = f"adjustment {reason} has no posting rule; booked to suspense {ctx.rules.suspense}"
        ctx.exception("unmapped_code", detail, event, adjusted.segment, code=reason)
        return ctx.rules.suspense
    if rule.action is Action.DENIAL:
        _denial(ctx, event, adjusted, reason)
    return _booked_account(ctx, rule)


def _booked_account(ctx: _Context, rule: AdjustmentRule | None) -> str | None:
    """The account ``rule`` books to with nothing else to do; None: no rule, a denial,
    information (which post nothing or open an item)."""
    if rule is None:
        return None
    if rule.action is Action.CONTRACTUAL:
        return ctx.fc.contractual_account
    if rule.action is Action.PATIENT:
        return ctx.self_pay.ar_account
    if rule.action is Action.ACCOUNT:
        return rule.account
    return None


def _denial(ctx: _Context, event: Event, adjusted: _Adjusted, reason: str) -> None:
    """A denial stays in AR (E9 deferred); its amount is what a later write-off may move."""
    amount = Decimal(adjusted.data.amount)
    if adjusted.claim_status == "4" and ctx.denial is not None:
        ctx.denial["denied_amount"] = money_str(Decimal(ctx.denial["denied_amount"]) + amount)
        ctx.denial["code"] = ctx.denial["code"] or reason
        return
    if adjusted.claim_status != "4":
        detail = f"line/claim denial {reason} ({adjusted.data.amount}); AR kept open for appeal"
        denied = ctx.denied(reason, amount)
        ctx.exception("claim_denied", detail, event, adjusted.segment, **denied)


def _provider(ctx: _Context, event: Event) -> None:
    data = event.data
    amount = Decimal(data["amount"])
    if not amount:
        return
    rule = ctx.rules.provider_rule(data["reason"])
    if rule is None:
        account = ctx.rules.suspense
        detail = f"PLB {data['reason']} has no posting rule; booked to suspense {account}"
        ctx.exception("unmapped_code", detail, event, None, code=f"PLB-{data['reason']}")
    else:
        account = rule.account_for(1 if amount > 0 else -1)
    ctx.lines["remittance"].pair(
        account,
        ctx.rules.cash_clearing,
        amount,
        f"PLB {data['reason']} {data['reference'] or ''}".strip(),
        ctx.dimensions(f"PLB-{data['reason']}"),
        ctx.source(event, None),
    )


def _journals(ctx: _Context, header: Event, rules: PostingRules) -> list[Journal]:
    data: Mapping[str, Any] = header.data
    day = date.fromisoformat(data["production_date"] or data["effective_date"] or _day(header))
    return [
        Journal(
            key=f"835:{ctx.payment}:{ctx.facility.entity}:{kind}",
            entity=ctx.facility.entity,
            date=day,
            description=f"835 {kind} {data['payer_name']} TRN {data['trace_number']}",
            lines=lines.lines(),
            rule_version=rules.version,
            kind=kind,
        )
        for kind, lines in ctx.lines.items()
        if len(lines)
    ]


def _day(header: Event) -> str:
    return header.occurred_at.date().isoformat()
