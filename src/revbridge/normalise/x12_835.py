"""Normaliser ``x12_835``: one X12 835 transaction set -> canonical events, or a rejection.

A pure function of (bytes, mapping version): the event ids are UUIDv7 whose time is the
remittance date and whose random bits are a hash of the input, so a replay of the same
bytes under the same mapping version yields the very same events.

Mapping versions (both stay replayable, ``MAPPINGS``):

- ``x12_835/2`` (current): a claim's CAS adjustments (claim and service-line level) are
  carried in its ``claim.adjudicated`` / ``claim.reversed`` event, ``data.adjustments``, in
  segment order, each with its CAS ``segment``: one event per claim instead of one per
  claim and per CAS triplet (≈ 1.1 events per claim instead of ≈ 7.7).
  Its claim events are built by a C fast path (``_fast_x12_835.c``, built by ``pip
  install``) when it is there; the Python builder below is its reference (used without the
  extension, and whenever the fast path declines a model it was not written for), and
  ``tests/normalise/test_x12_835_fast.py`` checks that both give equal events.
- ``x12_835/1``: an ``adjustment.booked`` event per CAS triplet, after its claim's event.
  Events stored under it are still read by the ledger and the work queue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from itertools import chain
from typing import Any

from revbridge.domain.events import (
    Event,
    EventType,
    SourceRef,
    new_event,
    new_source,
    uuid7_from_int,
)
from revbridge.domain.money import money_str
from revbridge.formats.x12.balance import check_835
from revbridge.formats.x12.issues import X12Error, X12Issue
from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    ProviderAdjustment,
    Remittance835,
    ServiceLine,
)
from revbridge.formats.x12.parse835 import parse_835_bytes
from revbridge.formats.x12.tokenizer import Delimiters
from revbridge.registry import ComponentSpec

MAPPING_VERSION = "x12_835/2"
FLAT_MAPPING_VERSION = "x12_835/1"  # an adjustment.booked event per CAS triplet
SCHEMA_VERSION = 1

SECONDARY_STATUSES = frozenset({"2", "3", "20", "21"})
STATUS_KINDS = {
    "1": "primary",
    "2": "secondary",
    "3": "tertiary",
    "4": "denied",
    "19": "primary_forwarded",
    "20": "secondary_forwarded",
    "21": "tertiary_forwarded",
    "22": "reversal",
    "23": "not_our_claim",
    "25": "predetermination",
}
UNKNOWN_STATUS_KIND = "unknown"
_ID_STRIDE = 0x9E3779B97F4A7C15F39D  # odd: ordinals map to distinct 80-bit tails

#: What the C fast path is configured with (the classes it builds and reads, the mapping's
#: constants); the tests configure it again from this.
FAST_CONFIGURATION = (
    Event,
    SourceRef,
    ClaimPayment,
    ServiceLine,
    Adjustment,
    money_str,
    Decimal,
    STATUS_KINDS,
    UNKNOWN_STATUS_KIND,
    SECONDARY_STATUSES,
    EventType.CLAIM_ADJUDICATED,
    EventType.CLAIM_REVERSED,
    SCHEMA_VERSION,
    _ID_STRIDE,
)

try:
    from revbridge.normalise import _fast_x12_835
except ImportError:  # installed without the C extension: pure Python only
    FAST = False
else:
    FAST = True
    _fast_x12_835.configure(*FAST_CONFIGURATION)


@dataclass(frozen=True, slots=True)
class Normalised:
    events: list[Event]
    warnings: list[X12Issue]
    payment_key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Rejected:
    issues: list[X12Issue]


@dataclass(frozen=True, slots=True)
class UnitInput:
    """What the normaliser reads: the unit's bytes and where they came from."""

    data: bytes
    delimiters: str
    first_segment: int
    raw_id: int
    unit_id: int
    channel: str
    content_hash: str
    envelope: Mapping[str, str] = field(default_factory=dict)


def normalise_835(unit: UnitInput, recorded_at: datetime) -> Normalised | Rejected:
    """Mapping ``x12_835/2``: a claim's adjustments inside its event."""
    return _normalise(unit, recorded_at, MAPPING_VERSION)


def normalise_835_flat(unit: UnitInput, recorded_at: datetime) -> Normalised | Rejected:
    """Mapping ``x12_835/1``: an ``adjustment.booked`` event per CAS triplet."""
    return _normalise(unit, recorded_at, FLAT_MAPPING_VERSION)


def normalise_835_reference(unit: UnitInput, recorded_at: datetime) -> Normalised | Rejected:
    """:func:`normalise_835` with the Python builder only (the C fast path's reference)."""
    return _normalise(unit, recorded_at, MAPPING_VERSION, fast=False)


def _normalise(
    unit: UnitInput, recorded_at: datetime, version: str, *, fast: bool = FAST
) -> Normalised | Rejected:
    try:
        remittance = parse_835_bytes(
            unit.data, Delimiters.decode(unit.delimiters), unit.first_segment
        )
    except X12Error as exc:
        return Rejected([exc.issue])
    issues = check_835(remittance)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        return Rejected(errors)
    warnings = [i for i in issues if i.severity != "error"]
    return _events(remittance, unit, recorded_at, warnings, version, fast=fast)


def payment_key(remittance: Remittance835) -> str:
    """(TRN03, TRN02): the identity of a payment (domain.md §1.3)."""
    return f"{remittance.trace_payer}:{remittance.trace_number}"


def _events(
    r: Remittance835,
    unit: UnitInput,
    recorded_at: datetime,
    warnings: list[X12Issue],
    version: str,
    *,
    fast: bool,
) -> Normalised:
    fingerprint = _fingerprint(unit)
    build = _Builder(r, unit, recorded_at, version)
    payment = _payment_keys(r)
    head = _remittance_body(r, payment)
    head[3]["fingerprint"] = fingerprint
    claims = build.claim_events(r) if fast and version == MAPPING_VERSION else None
    if claims is None:  # the reference builder (also for x12_835/1)
        nested = version != FLAT_MAPPING_VERSION
        bodies = chain([head], _claim_bodies(r, payment, nested=nested), _plb_bodies(r, payment))
        events = [build.event(n, *body) for n, body in enumerate(bodies)]
    else:
        events = [build.event(0, *head), *claims]
        first = len(events)
        events += (build.event(first + n, *body) for n, body in enumerate(_plb_bodies(r, payment)))
    return Normalised(events, warnings, payment_key(r), fingerprint)


def _fingerprint(unit: UnitInput) -> str:
    """What the remittance says, without its control numbers: the bytes between the ST
    and SE segments. A resend under new ISA/GS/ST numbers has the same fingerprint."""
    delimiters = Delimiters.decode(unit.delimiters)
    terminator = delimiters.segment.encode("latin-1")
    body_start = unit.data.find(terminator) + len(terminator)
    body_end = unit.data.rfind(b"SE" + delimiters.element.encode("latin-1"))
    return hashlib.sha256(unit.data[body_start:body_end]).hexdigest()


Body = tuple[str, int, dict[str, str], dict[str, Any]]


def _payment_keys(r: Remittance835) -> dict[str, str]:
    return {"payment": payment_key(r), "trace_number": r.trace_number}


def _remittance_body(r: Remittance835, payment: dict[str, str]) -> Body:
    return EventType.REMITTANCE_RECEIVED, r.first_segment, payment, _remittance_data(r)


def _claim_bodies(r: Remittance835, payment: dict[str, str], *, nested: bool) -> Iterator[Body]:
    """(type, segment, keys, data) for the events of the remittance's claims, in order;
    ``nested``: a claim's adjustments in its event's data, else an event each."""
    reversed_accounts: set[str] = set()
    for claim in r.claims:
        keys = _claim_keys(payment, claim)
        correction = claim.status != "22" and (
            claim.original_payer_claim_number is not None
            or claim.patient_control_number in reversed_accounts
        )
        if claim.status == "22":
            reversed_accounts.add(claim.patient_control_number)
        kind = EventType.CLAIM_REVERSED if claim.status == "22" else EventType.CLAIM_ADJUDICATED
        data = _claim_data(claim, correction)
        if nested:
            data["adjustments"] = _nested_adjustments(claim)
            yield kind, claim.segment_number, keys, data
            continue
        yield kind, claim.segment_number, keys, data
        for adjustment, line in _adjustments(claim):
            data = _adjustment_data(claim, adjustment, line, correction)
            yield EventType.ADJUSTMENT_BOOKED, adjustment.segment_number, keys, data


def _plb_bodies(r: Remittance835, payment: dict[str, str]) -> Iterator[Body]:
    for plb in r.provider_adjustments:
        keys = {**payment, **({"plb_reference": plb.reference} if plb.reference else {})}
        yield EventType.PROVIDER_ADJUSTMENT_BOOKED, plb.segment_number, keys, _plb_data(plb)


def _claim_keys(payment: dict[str, str], claim: ClaimPayment) -> dict[str, str]:
    """The payment's keys and the claim's, in one new mapping."""
    keys = {**payment, "patient_control_number": claim.patient_control_number}
    if claim.payer_claim_number:
        keys["payer_claim_number"] = claim.payer_claim_number
    if claim.original_payer_claim_number:
        keys["original_payer_claim_number"] = claim.original_payer_claim_number
    return keys


def _adjustments(claim: ClaimPayment) -> Iterator[tuple[Adjustment, str | None]]:
    for adjustment in claim.adjustments:
        yield adjustment, None
    for line in claim.lines:
        for adjustment in line.adjustments:
            yield adjustment, line.control_number or line.procedure


@lru_cache(maxsize=4096)
def _iso(value: date | None) -> str | None:
    """A date as ISO text, remembered: a remittance's claims and lines repeat a few dates,
    and a lookup costs a fraction of ``isoformat`` (this runs for every claim and line)."""
    return value.isoformat() if value else None


def _remittance_data(r: Remittance835) -> dict[str, Any]:
    return {
        "control_number": r.control_number,
        "handling": r.handling,
        "total_paid": money_str(r.total_paid),
        "credit_debit": r.credit_debit,
        "method": r.method,
        "effective_date": _iso(r.effective_date),
        "production_date": _iso(r.production_date),
        "trace_number": r.trace_number,
        "trace_payer": r.trace_payer,
        "receiver_account": r.receiver_account,
        "payer_id": r.payer.id,
        "payer_name": r.payer.name,
        "payee_id_qualifier": r.payee.id_qualifier,
        "payee_id": r.payee.id,
        "payee_tin": r.payee.tin,
        "payee_name": r.payee.name,
        "claim_count": len(r.claims),
        "provider_adjustment_count": len(r.provider_adjustments),
    }


def _claim_data(claim: ClaimPayment, correction: bool) -> dict[str, Any]:
    return {
        "status": claim.status,
        "status_kind": STATUS_KINDS.get(claim.status, UNKNOWN_STATUS_KIND),
        "correction": correction,
        "charge": money_str(claim.charge),
        "paid": money_str(claim.paid),
        "patient_responsibility": (
            None
            if claim.patient_responsibility is None
            else money_str(claim.patient_responsibility)
        ),
        "filing_indicator": claim.filing_indicator,
        "facility_type": claim.facility_type,
        "frequency": claim.frequency,
        "statement_from": _iso(claim.statement_from),
        "statement_to": _iso(claim.statement_to),
        "lines": [
            {
                "procedure": line.procedure,
                "charge": money_str(line.charge),
                "paid": money_str(line.paid),
                "revenue_code": line.revenue_code,
                "control_number": line.control_number,
                "service_date": _iso(line.service_date),
                "segment": line.segment_number,
            }
            for line in claim.lines
        ],
    }


def _adjustment_data(
    claim: ClaimPayment, adjustment: Adjustment, line: str | None, correction: bool
) -> dict[str, Any]:
    informational = adjustment.group == "OA" and adjustment.reason == "23"
    return {
        "group": adjustment.group,
        "reason": adjustment.reason,
        "amount": money_str(adjustment.amount),
        "quantity": None if adjustment.quantity is None else str(adjustment.quantity),
        "level": "claim" if line is None else "line",
        "line": line,
        "claim_status": claim.status,
        "correction": correction,
        "informational": informational and claim.status in SECONDARY_STATUSES,
    }


def _nested_adjustments(claim: ClaimPayment) -> list[dict[str, Any]]:
    """A claim's adjustments inside its event (``x12_835/2``), claim level then each line's:
    as an ``adjustment.booked`` event's data, less what the claim already says (its status,
    correction), plus its CAS segment (an event's source says it under ``x12_835/1``)."""
    secondary = claim.status in SECONDARY_STATUSES
    nested = _nested(claim.adjustments, "claim", None, secondary)
    for line in claim.lines:
        if line.adjustments:
            reference = line.control_number or line.procedure
            nested += _nested(line.adjustments, "line", reference, secondary)
    return nested


def _nested(
    adjustments: Sequence[Adjustment], level: str, line: str | None, secondary: bool
) -> list[dict[str, Any]]:
    """The data of adjustments at one level, built in one comprehension (this runs for every
    CAS triplet); ``informational`` as in ``_adjustment_data``."""
    return [
        {
            "group": adjustment.group,
            "reason": adjustment.reason,
            "amount": money_str(adjustment.amount),
            "quantity": None if adjustment.quantity is None else str(adjustment.quantity),
            "level": level,
            "line": line,
            "informational": secondary and adjustment.group == "OA" and adjustment.reason == "23",
            "segment": adjustment.segment_number,
        }
        for adjustment in adjustments
    ]


def _plb_data(plb: ProviderAdjustment) -> dict[str, Any]:
    return {
        "reason": plb.reason,
        "reference": plb.reference,
        "amount": money_str(plb.amount),
        "provider_id": plb.provider_id,
        "fiscal_period_end": _iso(plb.fiscal_period_end),
    }


class _Builder:
    def __init__(
        self, r: Remittance835, unit: UnitInput, recorded_at: datetime, version: str
    ) -> None:
        self.unit, self.recorded_at = unit, recorded_at
        self.payment = payment_key(r)
        day = r.production_date or r.effective_date or recorded_at.date()
        self.occurred_at = datetime(day.year, day.month, day.day, tzinfo=UTC)
        self.unix_ms = int(self.occurred_at.timestamp() * 1000)
        self.correlation_id = f"835:{self.payment}"
        seed = f"{unit.content_hash}|{version}".encode()
        self.base = int.from_bytes(hashlib.sha256(seed).digest()[:10], "big")

    def event(
        self, ordinal: int, kind: str, segment: int, keys: dict[str, str], data: dict[str, Any]
    ) -> Event:
        tail = (self.base + ordinal * _ID_STRIDE) % (1 << 80)  # distinct per ordinal, stable
        unit = self.unit
        return new_event(  # Event(...) with every field, in order
            uuid7_from_int(self.unix_ms, tail),  # id
            kind,  # type
            SCHEMA_VERSION,
            self.occurred_at,
            self.recorded_at,
            None,  # entity
            None,  # facility
            keys,
            self.correlation_id,
            None,  # causation_id
            new_source(unit.channel, unit.raw_id, unit.unit_id, segment, None),
            data,
        )

    def claim_events(self, r: Remittance835) -> list[Event] | None:
        """The events of the remittance's claims (ordinals from 1, after the remittance's)
        by the C fast path, as ``_claim_bodies(nested=True)`` and ``event`` build them;
        None when the fast path declines the model (the caller builds them itself)."""
        unit = self.unit
        return _fast_x12_835.claim_events(
            r.claims,
            1,
            self.unix_ms,
            self.base,
            self.occurred_at,
            self.recorded_at,
            self.correlation_id,
            unit.channel,
            unit.raw_id,
            unit.unit_id,
            self.payment,
            r.trace_number,
        )


SPEC = ComponentSpec(
    "normalisers",
    "x12_835",
    "Turns X12 5010 835 remittances into canonical events: remittance received, claim "
    "adjudicated/reversed (with the claim's adjustments), provider-level adjustment booked. "
    f"Mapping version {MAPPING_VERSION} ({FLAT_MAPPING_VERSION}, an adjustment booked event "
    "per adjustment, stays replayable).",
    (),
)
