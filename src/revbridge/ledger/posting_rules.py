"""The versioned posting-rule set: which account each adjustment and PLB code moves.

Conventions (domain.md §5.3): an adjustment moves AR of the payer's financial class to the
account its rule names; a PLB amount moves cash clearing against the account of its code,
and the sign decides the direction (positive = deducted from the payment). Every PLB moves
cash, so every PLB posts: a ``72`` and its offsetting ``WO`` net to zero on the same account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from revbridge.errors import ConfigurationError


class Action(StrEnum):
    CONTRACTUAL = "contractual"  # E6: Dr contractual[class] / Cr AR[class]
    PATIENT = "patient_responsibility"  # E7: Dr AR[self-pay] / Cr AR[class]
    DENIAL = "denial"  # E9: keep AR open, open a denial work item, post nothing yet
    INFORMATION = "information"  # E8: e.g. OA-23 on a secondary remittance; no posting
    ACCOUNT = "account"  # Dr <account> / Cr AR[class]


@dataclass(frozen=True, slots=True)
class AdjustmentRule:
    group: str
    reasons: frozenset[str] | None  # None: any reason in the group
    action: Action
    account: str | None = None

    def matches(self, group: str, reason: str) -> bool:
        return self.group == group and (self.reasons is None or reason in self.reasons)


@dataclass(frozen=True, slots=True)
class ProviderRule:
    code: str
    account: str  # used when the amount is positive (deducted from the payment)
    account_when_negative: str  # used when the amount is negative (added to the payment)

    def account_for(self, amount_sign: int) -> str:
        return self.account if amount_sign > 0 else self.account_when_negative


@dataclass(frozen=True, slots=True)
class PostingRules:
    version: str
    cash_clearing: str
    self_pay_class: str
    suspense: str
    adjustments: tuple[AdjustmentRule, ...]
    provider: Mapping[str, ProviderRule]
    _found: dict[tuple[str, str], AdjustmentRule | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )  # (group, reason) -> rule: every adjustment of every claim asks

    def adjustment_rule(self, group: str, reason: str) -> AdjustmentRule | None:
        """The first rule that matches, in file order; None when the code is unmapped."""
        code = (group, reason)
        if code not in self._found:
            self._found[code] = next((r for r in self.adjustments if r.matches(*code)), None)
        return self._found[code]

    def provider_rule(self, code: str) -> ProviderRule | None:
        return self.provider.get(code)


def load_posting_rules(path: Path) -> PostingRules:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(str(exc), location=str(path)) from exc
    try:
        return _rules(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"posting rules: {exc!r}", location=str(path)) from exc


def _rules(doc: Mapping[str, Any]) -> PostingRules:
    accounts = doc["accounts"]
    return PostingRules(
        version=str(doc["version"]),
        cash_clearing=str(accounts["cash_clearing"]),
        self_pay_class=str(doc.get("self_pay_class", "self_pay")),
        suspense=str(accounts["suspense"]),
        adjustments=tuple(_adjustment(row) for row in doc["adjustments"]),
        provider={str(code): _provider(str(code), row) for code, row in doc["provider"].items()},
    )


def _adjustment(row: Mapping[str, Any]) -> AdjustmentRule:
    reasons = row.get("reasons")
    action = Action(row["action"])
    account = row.get("account")
    if action is Action.ACCOUNT and not account:
        raise ValueError(f"rule {dict(row)}: action 'account' needs an account")
    return AdjustmentRule(
        group=str(row["group"]),
        reasons=None if reasons is None else frozenset(str(r) for r in reasons),
        action=action,
        account=None if account is None else str(account),
    )


def _provider(code: str, row: Mapping[str, Any]) -> ProviderRule:
    account = str(row["account"])
    return ProviderRule(code, account, str(row.get("account_when_negative", account)))
