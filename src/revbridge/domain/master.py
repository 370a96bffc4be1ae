"""Master data the ledger needs: who we are, who pays, which account is which."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OTHER_CLASS = "other"
SELF_PAY_CLASS = "self_pay"


@dataclass(frozen=True, slots=True)
class LegalEntity:
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Facility:
    code: str
    name: str
    entity: str
    npi: str
    tin: str


@dataclass(frozen=True, slots=True)
class Payer:
    id: str
    name: str
    financial_class: str


@dataclass(frozen=True, slots=True)
class FinancialClass:
    code: str
    name: str
    ar_account: str
    contractual_account: str
    denial_account: str


@dataclass(frozen=True, slots=True)
class Account:
    code: str
    name: str
    kind: str  # asset | liability | equity | revenue | expense


@dataclass(frozen=True, slots=True)
class MasterData:
    entities: Mapping[str, LegalEntity]
    facilities: tuple[Facility, ...]
    payers: Mapping[str, Payer]
    classes: Mapping[str, FinancialClass]
    accounts: Mapping[str, Account]
    _by_npi: dict[str, Facility] = field(default_factory=dict, repr=False, compare=False)
    _by_tin: dict[str, Facility] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for facility in self.facilities:
            self._by_npi.setdefault(facility.npi, facility)
            self._by_tin.setdefault(facility.tin, facility)

    def facility_for(self, npi: str | None, tin: str | None) -> Facility | None:
        """The facility a payee identifies: its NPI first, then its TIN."""
        if npi and npi in self._by_npi:
            return self._by_npi[npi]
        if tin and tin in self._by_tin:
            return self._by_tin[tin]
        return None

    def financial_class(self, code: str) -> FinancialClass:
        return self.classes.get(code) or self.classes[OTHER_CLASS]
