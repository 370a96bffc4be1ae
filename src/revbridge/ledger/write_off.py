"""Denial write-off (domain.md §5.3 E9): Dr denial write-off[class] / Cr AR[class].

A denial is posted as information only and its amount stays in AR while it is appealed
(§5.5). When a person decides it is final, this journal moves the denied amount (or part
of it) out of AR. Everything it needs was recorded on the ``claim_denied`` item when the
remittance was booked, so the write-off uses the same accounts, dimensions and source
references as the remittance journal that left the amount in AR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from revbridge.domain.journal import Journal, posting_pair
from revbridge.domain.money import cents

KIND = "writeoff"
_DIMENSIONS = ("entity", "facility", "payer", "financial_class")
_SOURCE = (
    "trn",
    "payer_trn",
    "raw_id",
    "unit_id",
    "segment",
    "patient_control_number",
    "payer_claim_number",
)


class NotWritable(ValueError):
    """The item does not hold what a write-off needs (e.g. opened by an older revbridge)."""


@dataclass(frozen=True, slots=True)
class Denial:
    """A denied amount left in AR, as recorded on its ``claim_denied`` item."""

    payment: str
    ar_account: str
    denial_account: str
    denied_amount: Decimal
    code: str | None
    dimensions: Mapping[str, str]
    source: Mapping[str, str]

    @property
    def entity(self) -> str:
        return self.dimensions["entity"]


def denial_from_subject(subject: Mapping[str, Any]) -> Denial:
    """Read a ``claim_denied`` item's subject; raises ``NotWritable`` if it lacks a field."""
    needed = ("payment", "ar_account", "denial_account", "denied_amount", *_DIMENSIONS)
    missing = [name for name in needed if not subject.get(name)]
    if missing:
        raise NotWritable(f"the item does not record {', '.join(missing)}")
    try:
        denied = Decimal(str(subject["denied_amount"]))
    except InvalidOperation as exc:
        raise NotWritable(f"denied amount {subject['denied_amount']!r} is not a number") from exc
    return Denial(
        payment=str(subject["payment"]),
        ar_account=str(subject["ar_account"]),
        denial_account=str(subject["denial_account"]),
        denied_amount=denied,
        code=subject.get("code") or None,
        dimensions={name: str(subject[name]) for name in _DIMENSIONS},
        source={name: str(subject[name]) for name in _SOURCE if subject.get(name) is not None},
    )


def write_off_key(denial: Denial, exception_id: int) -> str:
    """Deterministic: one write-off per item, whoever carries it out and however often."""
    return f"835:{denial.payment}:{denial.entity}:{KIND}:{exception_id}"


def check_amount(denial: Denial, amount: Decimal | None) -> Decimal:
    """The amount to write off: the denied amount by default, never more, always cents."""
    value = denial.denied_amount if amount is None else amount
    if not value.is_finite() or value <= 0:
        raise ValueError(f"write-off amount must be positive, not {value}")
    if cents(value) != value:
        raise ValueError(f"write-off amount {value} has more than two decimal places")
    if value > denial.denied_amount:
        raise ValueError(
            f"write-off amount {value} is more than the denied amount {denial.denied_amount}"
        )
    return cents(value)


def build_write_off(
    denial: Denial, *, exception_id: int, amount: Decimal, on: date, rule_version: str
) -> Journal:
    """The E9 journal; ``on`` is the day the write-off was decided (its accounting date)."""
    value = check_amount(denial, amount)
    reason = denial.code or "denial"
    dimensions = {**denial.dimensions, "adjustment_reason": reason}
    source = {**denial.source, "exception_id": str(exception_id)}
    account = denial.source.get("patient_control_number", "")
    return Journal(
        key=write_off_key(denial, exception_id),
        entity=denial.entity,
        date=on,
        description=f"denial write-off {reason} {account}".strip(),
        lines=posting_pair(
            denial.denial_account,
            denial.ar_account,
            value,
            description=f"write-off {reason} {account}".strip(),
            dimensions=dimensions,
            source=source,
        ),
        rule_version=rule_version,
        kind=KIND,
    )
