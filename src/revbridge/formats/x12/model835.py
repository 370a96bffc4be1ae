"""Typed model of one 5010 835 transaction (ST..SE). Money is ``Decimal``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, make_dataclass
from datetime import date
from decimal import Decimal
from typing import TypeVar, cast


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One CAS triplet: group (CAS01), reason, amount, quantity."""

    group: str
    reason: str
    amount: Decimal
    quantity: Decimal | None
    segment_number: int


@dataclass(frozen=True, slots=True)
class ServiceLine:
    """Loop 2110: one SVC with its DTM*472, CAS, REF*6R and AMT*B6."""

    procedure: str  # SVC01 with the component separator normalised to ":"
    charge: Decimal
    paid: Decimal
    revenue_code: str | None
    units: Decimal | None
    control_number: str | None  # REF*6R
    service_date: date | None  # DTM*472
    allowed: Decimal | None  # AMT*B6
    adjustments: tuple[Adjustment, ...]
    segment_number: int


@dataclass(frozen=True, slots=True)
class ClaimPayment:
    """Loop 2100: one CLP with its claim-level CAS and its service lines."""

    patient_control_number: str  # CLP01
    status: str  # CLP02
    charge: Decimal  # CLP03
    paid: Decimal  # CLP04
    patient_responsibility: Decimal | None  # CLP05
    filing_indicator: str  # CLP06
    payer_claim_number: str  # CLP07 ("" if absent)
    facility_type: str  # CLP08
    frequency: str  # CLP09
    original_payer_claim_number: str | None  # REF*F8
    statement_from: date | None  # DTM*232
    statement_to: date | None  # DTM*233
    adjustments: tuple[Adjustment, ...]
    lines: tuple[ServiceLine, ...]
    segment_number: int


@dataclass(frozen=True, slots=True)
class ProviderAdjustment:
    """One PLB reason/amount pair (PLB03/PLB04, PLB05/PLB06, ...)."""

    provider_id: str  # PLB01
    fiscal_period_end: date | None  # PLB02
    reason: str  # PLBxx-1
    reference: str | None  # PLBxx-2
    amount: Decimal
    segment_number: int


@dataclass(frozen=True, slots=True)
class Party:
    """N1 loop (1000A payer / 1000B payee); ``tin`` is REF*TJ."""

    name: str
    id_qualifier: str
    id: str
    tin: str | None = None


EMPTY_PARTY = Party("", "", "")


@dataclass(frozen=True, slots=True)
class Remittance835:
    """One 835 transaction = one payment (BPR/TRN)."""

    control_number: str  # ST02
    handling: str  # BPR01
    total_paid: Decimal  # BPR02
    credit_debit: str  # BPR03
    method: str  # BPR04
    payment_format: str  # BPR05
    payer_identifier: str  # BPR10
    receiver_account: str  # BPR15
    effective_date: date | None  # BPR16
    trace_type: str  # TRN01
    trace_number: str  # TRN02
    trace_payer: str  # TRN03
    trace_supplemental: str  # TRN04
    production_date: date | None  # DTM*405
    payer: Party
    payee: Party
    claims: tuple[ClaimPayment, ...]
    provider_adjustments: tuple[ProviderAdjustment, ...]
    first_segment: int
    segment_count: int
    # Remaining BPR bank elements, kept so ACH completeness can be checked and re-rendered.
    sender_dfi_qualifier: str = ""  # BPR06
    sender_dfi_id: str = ""  # BPR07
    sender_account_qualifier: str = ""  # BPR08
    sender_account: str = ""  # BPR09
    payer_supplemental: str = ""  # BPR11
    receiver_dfi_qualifier: str = ""  # BPR12
    receiver_dfi_id: str = ""  # BPR13
    receiver_account_qualifier: str = ""  # BPR14


# -- fast construction ----------------------------------------------------------------------
#
# A frozen dataclass __init__ sets every field through object.__setattr__, which dominates
# parsing time.  The parser builds a mutable twin with the identical slot layout and then
# re-labels it as the frozen class: the result is a genuine, immutable instance.
# Safe because CPython itself refuses a ``__class__`` assignment between incompatible
# layouts (TypeError) and the slot check below fails at import if the model changes.
# Measured (3.11, Adjustment): frozen __init__ ~580 ns, this ~260 ns, object.__new__ plus
# slot-descriptor __set__ ~330 ns, object.__new__ plus object.__setattr__ ~480 ns.

_T = TypeVar("_T")


def _fast_builder(cls: type[_T]) -> Callable[..., _T]:
    twin = make_dataclass(
        f"_{cls.__name__}Twin",
        [(f.name, object) for f in fields(cls)],  # type: ignore[arg-type]
        slots=True,
    )
    if twin.__slots__ != cls.__slots__:  # type: ignore[attr-defined]
        raise TypeError(f"slot layout of {cls.__name__} changed")

    def build(*args: object) -> _T:
        obj = twin(*args)
        obj.__class__ = cls
        return cast(_T, obj)

    build.__name__ = f"new_{cls.__name__}"
    return build


new_adjustment = _fast_builder(Adjustment)
new_service_line = _fast_builder(ServiceLine)
new_claim_payment = _fast_builder(ClaimPayment)
new_provider_adjustment = _fast_builder(ProviderAdjustment)
