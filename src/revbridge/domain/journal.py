"""Balanced double-entry journals: the only thing revbridge sends to a ledger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum

from revbridge.domain.money import ZERO, cents
from revbridge.domain.values import slot_constructor


class UnbalancedJournal(ValueError):
    """A journal whose debits and credits differ, or with a malformed line."""


class JournalStatus(StrEnum):
    PREPARED = "prepared"
    POSTED = "posted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One side of a posting. Exactly one of ``debit`` / ``credit`` is non-zero."""

    account: str
    debit: Decimal
    credit: Decimal
    description: str = ""
    dimensions: Mapping[str, str] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    @property
    def net(self) -> Decimal:
        return self.debit - self.credit


@dataclass(frozen=True, slots=True)
class Journal:
    """A balanced journal with a deterministic ``key`` (the ERP's external reference)."""

    key: str
    entity: str
    date: date
    description: str
    lines: tuple[JournalLine, ...]
    rule_version: str
    currency: str = "USD"
    kind: str = "remittance"

    def __post_init__(self) -> None:
        check_balanced(self.key, self.lines)

    @property
    def total(self) -> Decimal:
        return sum((line.debit for line in self.lines), ZERO)


new_line = slot_constructor(JournalLine)
"""``JournalLine(...)`` for hot paths: every field positionally, in declaration order."""


def check_balanced(key: str, lines: tuple[JournalLine, ...]) -> None:
    """Refuse a journal that does not balance to the cent, or has a bad line."""
    if not lines:
        raise UnbalancedJournal(f"journal {key}: no lines")
    debit = credit = ZERO
    in_cents: set[int] = set()  # ids of amounts found to be whole cents (lines share them)
    for number, line in enumerate(lines, start=1):
        # Inline the test for the usual line (exactly one side non-zero, a positive amount in
        # cents, an account): this runs for every line of every journal built or read.
        # Anything else goes to _check_line, which says what is wrong. The lines of a
        # posting pair, and amounts read back, share their Decimal: tested once.
        side = line.debit or line.credit
        if (not line.debit) == (not line.credit) or not line.account:
            _check_line(key, number, line)
        if id(side) not in in_cents:
            if side < ZERO or cents(side) != side:
                _check_line(key, number, line)
            in_cents.add(id(side))
        debit += line.debit
        credit += line.credit
    if debit != credit:
        raise UnbalancedJournal(f"journal {key}: debits {debit} != credits {credit}")


def _check_line(key: str, number: int, line: JournalLine) -> None:
    for side in (line.debit, line.credit):
        if side < 0 or cents(side) != side:
            raise UnbalancedJournal(f"journal {key} line {number}: bad amount {side}")
    if (line.debit == 0) == (line.credit == 0):
        raise UnbalancedJournal(f"journal {key} line {number}: needs exactly one side")
    if not line.account:
        raise UnbalancedJournal(f"journal {key} line {number}: no account")


def posting_pair(
    debit_account: str,
    credit_account: str,
    amount: Decimal,
    *,
    description: str,
    dimensions: Mapping[str, str],
    source: Mapping[str, str],
) -> tuple[JournalLine, JournalLine]:
    """Two lines moving ``amount`` from credit to debit; a negative amount swaps sides."""
    value = cents(amount)
    if value < 0:
        debit_account, credit_account, value = credit_account, debit_account, -value
    return (
        new_line(debit_account, value, ZERO, description, dimensions, source),
        new_line(credit_account, ZERO, value, description, dimensions, source),
    )
