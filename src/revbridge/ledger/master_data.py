"""Load master data from one YAML file, with optional CSV files for the long lists."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from revbridge.domain.master import (
    OTHER_CLASS,
    Account,
    Facility,
    FinancialClass,
    LegalEntity,
    MasterData,
    Payer,
)
from revbridge.errors import ConfigurationError

ACCOUNT_KINDS = frozenset({"asset", "liability", "equity", "revenue", "expense"})


def load_master_data(path: Path) -> MasterData:
    """Read ``path`` (YAML). ``payers_csv`` / ``accounts_csv`` keys name CSV files beside it."""
    doc = _read_yaml(path)
    rows = _Rows(path, doc)
    data = MasterData(
        entities={e.code: e for e in map(_entity, rows.rows("entities"))},
        facilities=tuple(map(_facility, rows.rows("facilities"))),
        payers={p.id: p for p in map(_payer, rows.rows("payers"))},
        classes={c.code: c for c in map(_class, rows.rows("financial_classes"))},
        accounts={a.code: a for a in map(_account, rows.rows("accounts"))},
    )
    _check(path, data)
    return data


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(str(exc), location=str(path)) from exc
    if not isinstance(doc, dict):
        raise ConfigurationError("master data must be a mapping", location=str(path))
    return doc


class _Rows:
    """Rows of a section: inline in the YAML, or from ``<section>_csv`` beside it."""

    def __init__(self, path: Path, doc: Mapping[str, Any]) -> None:
        self.path, self.doc = path, doc

    def rows(self, section: str) -> list[Mapping[str, str]]:
        inline = self.doc.get(section) or []
        csv_name = self.doc.get(f"{section}_csv")
        rows = list(inline) + (self._csv(csv_name) if csv_name else [])
        return [self._strings(section, n, row) for n, row in enumerate(rows, start=1)]

    def _csv(self, name: str) -> list[Mapping[str, str]]:
        csv_path = self.path.parent / name
        try:
            with csv_path.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        except OSError as exc:
            raise ConfigurationError(str(exc), location=str(csv_path)) from exc

    def _strings(self, section: str, number: int, row: object) -> Mapping[str, str]:
        if not isinstance(row, Mapping):
            raise ConfigurationError(
                f"{section} row {number} is not a mapping", location=str(self.path)
            )
        return {str(k): "" if v is None else str(v) for k, v in row.items()}


def _need(row: Mapping[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not row.get(n)]
    if missing:
        raise ConfigurationError(f"row {dict(row)} lacks {', '.join(missing)}")
    return [row[n] for n in names]


def _entity(row: Mapping[str, str]) -> LegalEntity:
    return LegalEntity(*_need(row, "code", "name"))


def _facility(row: Mapping[str, str]) -> Facility:
    return Facility(*_need(row, "code", "name", "entity", "npi", "tin"))


def _payer(row: Mapping[str, str]) -> Payer:
    return Payer(*_need(row, "id", "name", "financial_class"))


def _class(row: Mapping[str, str]) -> FinancialClass:
    return FinancialClass(
        *_need(row, "code", "name", "ar_account", "contractual_account", "denial_account")
    )


def _account(row: Mapping[str, str]) -> Account:
    return Account(*_need(row, "code", "name", "kind"))


def _check(path: Path, data: MasterData) -> None:
    problems = list(_problems(data))
    if problems:
        raise ConfigurationError("; ".join(problems), location=str(path))


def _problems(data: MasterData) -> Iterable[str]:
    if OTHER_CLASS not in data.classes:
        yield f"financial class {OTHER_CLASS!r} is required (unknown payers post under it)"
    for facility in data.facilities:
        if facility.entity not in data.entities:
            yield f"facility {facility.code}: unknown entity {facility.entity}"
    for payer in data.payers.values():
        if payer.financial_class not in data.classes:
            yield f"payer {payer.id}: unknown financial class {payer.financial_class}"
    for fc in data.classes.values():
        for code in (fc.ar_account, fc.contractual_account, fc.denial_account):
            if code not in data.accounts:
                yield f"financial class {fc.code}: unknown account {code}"
    for account in data.accounts.values():
        if account.kind not in ACCOUNT_KINDS:
            yield f"account {account.code}: kind must be one of {sorted(ACCOUNT_KINDS)}"
