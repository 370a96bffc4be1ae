"""Prepare a Tryton database for revbridge over JSON-RPC (``revbridge erp setup``).

Creates what posting needs and nothing else: the currency, one party + company per
legal entity (party ``code`` = entity code), admin access to all companies, a fiscal
year with monthly periods and its strict move sequence per company, a few account types
and the accounts (``code`` = account number, no party required), and a general journal.

Idempotent: every object is looked up by its natural key first; a second run with the
same input creates nothing and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from revbridge.errors import ConfigurationError
from revbridge.post.tryton_rpc import TrytonRPC

ACCOUNT_KINDS = ("asset", "liability", "revenue", "expense", "equity")

#: kind -> (account type name, account.account.type values)
_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    "asset": ("Assets (revbridge)", {"statement": "balance", "assets": True}),
    "liability": ("Liabilities (revbridge)", {"statement": "balance", "assets": False}),
    "equity": ("Equity (revbridge)", {"statement": "balance", "assets": False}),
    "revenue": ("Revenue (revbridge)", {"statement": "income", "revenue": True}),
    "expense": ("Expense (revbridge)", {"statement": "income", "expense": True}),
}

_CURRENCY_NAMES = {
    "USD": ("U.S. Dollar", "$"),
    "EUR": ("Euro", "€"),
    "CAD": ("Canadian Dollar", "$"),
}

DEFAULT_JOURNAL_CODE = "MISC"


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """A legal entity: becomes a Tryton company whose party code is ``code``."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """A GL account, created in every company with ``code`` = account number."""

    code: str
    name: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ACCOUNT_KINDS:
            raise ConfigurationError(
                f"account {self.code}: kind {self.kind!r} is not one of {', '.join(ACCOUNT_KINDS)}"
            )


@dataclass(slots=True)
class SetupReport:
    """What ``setup_erp`` found and what it had to create (empty ``created`` = no change)."""

    currency_id: int = 0
    companies: dict[str, int] = field(default_factory=dict)
    fiscal_years: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, dict[str, int]] = field(default_factory=dict)
    journal_id: int = 0
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def setup_erp(
    rpc: TrytonRPC,
    *,
    entities: Sequence[EntitySpec],
    accounts: Sequence[AccountSpec],
    fiscal_year: int,
    currency: str = "USD",
    journal_code: str = DEFAULT_JOURNAL_CODE,
) -> SetupReport:
    """Make the database ready for ``TrytonSink``; safe to run again."""
    if not entities:
        raise ConfigurationError("erp setup: no entities given")
    codes = [a.code for a in accounts]
    if len(set(codes)) != len(codes):
        raise ConfigurationError("erp setup: an account code is listed twice")
    report = SetupReport()
    report.currency_id = _currency(rpc, currency, report)
    for entity in entities:
        report.companies[entity.code] = _company(rpc, entity, report.currency_id, report)
    _user_access(rpc, list(report.companies.values()), report)
    sequence_type = _move_sequence_type(rpc)
    for entity in entities:
        company = report.companies[entity.code]
        ctx = _context(company)
        report.fiscal_years[entity.code] = _fiscal_year(
            rpc, entity, company, fiscal_year, sequence_type, ctx, report
        )
        types = _account_types(rpc, entity, company, ctx, report)
        report.accounts[entity.code] = _accounts(rpc, entity, company, accounts, types, ctx, report)
    report.journal_id = _journal(rpc, journal_code, report)
    return report


def _context(company: int) -> dict[str, Any]:
    return {"company": company, "language": "en"}


def _search(rpc: TrytonRPC, model: str, domain: list[Any], ctx: dict[str, Any]) -> list[int]:
    ids = rpc.model(model, "search", domain, 0, None, None, ctx)
    return [int(i) for i in ids]


def _read(
    rpc: TrytonRPC, model: str, ids: list[int], fields: list[str], ctx: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = rpc.model(model, "read", ids, fields, ctx)
    return list(rows)


def _create(
    rpc: TrytonRPC, model: str, values: dict[str, Any], ctx: dict[str, Any], report: SetupReport
) -> int:
    (new_id,) = rpc.model(model, "create", [values], ctx)
    report.created.append(f"{model}:{new_id}")
    return int(new_id)


def _currency(rpc: TrytonRPC, code: str, report: SetupReport) -> int:
    ctx: dict[str, Any] = {}
    found = _search(rpc, "currency.currency", [["code", "=", code]], ctx)
    if found:
        return found[0]
    name, symbol = _CURRENCY_NAMES.get(code, (code, code))
    return _create(
        rpc,
        "currency.currency",
        {
            "name": name,
            "symbol": symbol,
            "code": code,
            "digits": 2,
            "rounding": Decimal("0.01"),
        },
        ctx,
        report,
    )


def _company(rpc: TrytonRPC, entity: EntitySpec, currency: int, report: SetupReport) -> int:
    ctx: dict[str, Any] = {}
    found = _search(rpc, "company.company", [["party.code", "=", entity.code]], ctx)
    if found:
        return found[0]
    parties = _search(rpc, "party.party", [["code", "=", entity.code]], ctx)
    if parties:
        party = parties[0]
    else:
        party = _create(rpc, "party.party", {"name": entity.name, "code": entity.code}, ctx, report)
    return _create(rpc, "company.company", {"party": party, "currency": currency}, ctx, report)


def _user_access(rpc: TrytonRPC, companies: list[int], report: SetupReport) -> None:
    user_id = rpc.user_id
    if user_id is None:
        user_id = rpc.login()
    (user,) = _read(rpc, "res.user", [user_id], ["companies", "company", "company_filter"], {})
    values: dict[str, Any] = {}
    missing = [c for c in companies if c not in user["companies"]]
    if missing:
        values["companies"] = [["add", missing]]
    if user["company_filter"] != "all":
        values["company_filter"] = "all"
    if not user["company"]:
        values["company"] = companies[0]
    if values:
        rpc.model("res.user", "write", [user_id], values, {})
        report.updated.append(f"res.user:{user_id}")


def _move_sequence_type(rpc: TrytonRPC) -> int:
    found = _search(rpc, "ir.sequence.type", [["name", "=", "Account Move"]], {})
    if not found:
        raise ConfigurationError("erp setup: sequence type 'Account Move' not found (account?)")
    return found[0]


def _fiscal_year(
    rpc: TrytonRPC,
    entity: EntitySpec,
    company: int,
    year: int,
    sequence_type: int,
    ctx: dict[str, Any],
    report: SetupReport,
) -> int:
    start, end = dt.date(year, 1, 1), dt.date(year, 12, 31)
    found = _search(
        rpc,
        "account.fiscalyear",
        [["company", "=", company], ["start_date", "<=", start], ["end_date", ">=", end]],
        ctx,
    )
    if found:
        return found[0]
    name = f"{entity.code} {year}"
    sequence = _create(
        rpc,
        "ir.sequence.strict",
        {"name": f"{name} moves", "sequence_type": sequence_type, "company": company},
        ctx,
        report,
    )
    periods = []
    for month in range(1, 13):
        first = dt.date(year, month, 1)
        following = dt.date(year + (month == 12), month % 12 + 1, 1)
        periods.append(
            {
                "name": f"{year}-{month:02d}",
                "start_date": first,
                "end_date": following - dt.timedelta(days=1),
                "type": "standard",
            }
        )
    return _create(
        rpc,
        "account.fiscalyear",
        {
            "name": name,
            "company": company,
            "start_date": start,
            "end_date": end,
            "move_sequence": sequence,
            "periods": [["create", periods]],
        },
        ctx,
        report,
    )


def _account_types(
    rpc: TrytonRPC, entity: EntitySpec, company: int, ctx: dict[str, Any], report: SetupReport
) -> dict[str, int]:
    types: dict[str, int] = {}
    for kind, (name, values) in _TYPES.items():
        found = _search(
            rpc, "account.account.type", [["company", "=", company], ["name", "=", name]], ctx
        )
        if found:
            types[kind] = found[0]
        else:
            types[kind] = _create(
                rpc,
                "account.account.type",
                {"name": name, "company": company, **values},
                ctx,
                report,
            )
    return types


def _accounts(
    rpc: TrytonRPC,
    entity: EntitySpec,
    company: int,
    specs: Sequence[AccountSpec],
    types: dict[str, int],
    ctx: dict[str, Any],
    report: SetupReport,
) -> dict[str, int]:
    codes = [s.code for s in specs]
    ids = _search(rpc, "account.account", [["company", "=", company], ["code", "in", codes]], ctx)
    existing = {
        row["code"]: row for row in _read(rpc, "account.account", ids, ["code", "name"], ctx)
    }
    result: dict[str, int] = {}
    to_create: list[dict[str, Any]] = []
    for spec in specs:
        row = existing.get(spec.code)
        if row is None:
            to_create.append(
                {
                    "name": spec.name,
                    "code": spec.code,
                    "company": company,
                    "type": types[spec.kind],
                    "closed": False,
                    "party_required": False,
                    "reconcile": False,
                }
            )
            continue
        result[spec.code] = int(row["id"])
        if row["name"] != spec.name:
            rpc.model("account.account", "write", [row["id"]], {"name": spec.name}, ctx)
            report.updated.append(f"account.account:{row['id']}")
    if to_create:
        new_ids = rpc.model("account.account", "create", to_create, ctx)
        for values, new_id in zip(to_create, new_ids, strict=True):
            result[values["code"]] = int(new_id)
            report.created.append(f"account.account:{new_id}")
    return result


def _journal(rpc: TrytonRPC, code: str, report: SetupReport) -> int:
    ctx: dict[str, Any] = {}
    found = _search(rpc, "account.journal", [["code", "=", code], ["type", "=", "general"]], ctx)
    if found:
        return found[0]
    return _create(
        rpc,
        "account.journal",
        {"name": "Miscellaneous", "code": code, "type": "general"},
        ctx,
        report,
    )
