"""Post journals to Tryton as ``account.move`` records, exactly once per key.

Each journal becomes one posted move in the company whose party code is the journal's
entity, with ``revbridge_key`` = ``journal.key``. The ``revbridge_erp`` module makes
(company, revbridge_key) unique in the database and offers
``account.move.revbridge_create_post``, which creates *and* posts a list of moves in one
transaction: a call either books all its moves or none, so no key is ever left on a
draft move.

Journals are grouped per company and sent ``batch_size`` at a time. When Tryton refuses a
batch because a key already exists (an earlier call committed although its answer was
lost), the keys already present are looked up and returned as posted, and the rest is
sent again (one by one if the batch is refused again).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from revbridge.domain.journal import Journal
from revbridge.errors import BusinessError
from revbridge.post.base import JournalSink
from revbridge.post.limits import limit_fields
from revbridge.post.tryton_rpc import TARGET, TrytonRPC
from revbridge.registry import ComponentSpec, Field

DEFAULT_JOURNAL_CODE = "MISC"

SPEC = ComponentSpec(
    "outputs",
    "erp_tryton",
    "Posts journals to Tryton (trytond 8.2, modules account + revbridge_erp) over JSON-RPC. "
    "Each move carries the journal key, unique per company, so a resend is refused by the ERP.",
    (
        Field(
            "url",
            "string",
            "Base URL of the trytond JSON-RPC server.",
            example="http://127.0.0.1:8000/",
        ),
        Field("database", "string", "Tryton database name.", example="revbridge"),
        Field("user", "string", "Tryton user.", "admin"),
        Field("password", "secret", "Password of that user.", example="${REVBRIDGE_ERP_PASSWORD}"),
        Field("journal", "string", "Code of the Tryton journal moves are booked in.", "MISC"),
        Field("batch_size", "integer", "Moves per create call.", 50),
        Field(
            "timeout_seconds",
            "number",
            "Answer timeout; past it the outcome is unknown "
            "and the key is looked up before any resend.",
            30.0,
        ),
        *limit_fields(rate_per_second=10.0, burst=10, max_in_flight=4),
    ),
)


@dataclass(frozen=True, slots=True)
class _Period:
    id: int
    start: dt.date
    end: dt.date


class TrytonSink(JournalSink):
    """A ``JournalSink`` over Tryton JSON-RPC (requires the ``revbridge_erp`` module)."""

    idempotent = True  # (company, revbridge_key) is unique in Tryton's database

    name = "erp_tryton"

    def __init__(
        self,
        rpc: TrytonRPC,
        *,
        journal_code: str = DEFAULT_JOURNAL_CODE,
        batch_size: int = 100,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.rpc = rpc
        self.journal_code = journal_code
        self.batch_size = batch_size
        self._companies: dict[str, int] = {}
        self._currencies: dict[str, str] = {}
        self._accounts: dict[int, dict[str, int]] = {}
        self._periods: dict[int, list[_Period]] = {}
        self._journal_id: int | None = None

    # -- JournalSink

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        if not journals:
            return {}
        keys = [j.key for j in journals]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise BusinessError(
                f"journal key {dup} appears twice in one call", target=TARGET, code=dup
            )
        # Resolve and validate everything before sending anything.
        per_company: dict[int, list[tuple[Journal, dict[str, Any]]]] = {}
        for journal in journals:
            company = self._company(journal)
            per_company.setdefault(company, []).append((journal, self._values(company, journal)))
        result: dict[str, str] = {}
        for company, items in per_company.items():
            for start in range(0, len(items), self.batch_size):
                result.update(self._post_batch(company, items[start : start + self.batch_size]))
        return result

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        found: dict[str, str] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self.rpc.model(
                "account.move",
                "search_read",
                [["revbridge_key", "in", chunk]],
                0,
                None,
                [["id", "ASC"]],
                ["revbridge_key"],
                {},
            )
            for row in rows:
                found.setdefault(str(row["revbridge_key"]), str(row["id"]))
        return found

    def close(self) -> None:
        self.rpc.close()

    # -- posting

    def _post_batch(
        self, company: int, items: Sequence[tuple[Journal, dict[str, Any]]]
    ) -> dict[str, str]:
        try:
            return self._create_post(company, items)
        except BusinessError as exc:
            if exc.code != "duplicate_key":
                if len(items) == 1:
                    raise BusinessError(
                        f"journal {items[0][0].key}: {exc}", target=TARGET, code=items[0][0].key
                    ) from exc
                raise
        # Some keys are already booked: they count as posted; send the rest again.
        existing = self._lookup_company(company, [j.key for j, _ in items])
        rest = [(j, v) for j, v in items if j.key not in existing]
        if not rest:
            return existing
        try:
            return {**existing, **self._create_post(company, rest)}
        except BusinessError as exc:
            if exc.code != "duplicate_key":
                raise
        result = dict(existing)
        for journal, values in rest:  # a concurrent poster races us: one by one
            try:
                result.update(self._create_post(company, [(journal, values)]))
            except BusinessError as exc:
                if exc.code != "duplicate_key":
                    raise BusinessError(
                        f"journal {journal.key}: {exc}", target=TARGET, code=journal.key
                    ) from exc
                result.update(self._lookup_company(company, [journal.key]))
        return result

    def _create_post(
        self, company: int, items: Sequence[tuple[Journal, dict[str, Any]]]
    ) -> dict[str, str]:
        ids = self.rpc.model(
            "account.move",
            "revbridge_create_post",
            [values for _, values in items],
            {"company": company},
        )
        return {journal.key: str(move_id) for (journal, _), move_id in zip(items, ids, strict=True)}

    def _lookup_company(self, company: int, keys: Sequence[str]) -> dict[str, str]:
        rows = self.rpc.model(
            "account.move",
            "search_read",
            [["company", "=", company], ["revbridge_key", "in", list(keys)]],
            0,
            None,
            None,
            ["revbridge_key"],
            {"company": company},
        )
        return {str(row["revbridge_key"]): str(row["id"]) for row in rows}

    def _values(self, company: int, journal: Journal) -> dict[str, Any]:
        accounts = self._account_ids(company)
        missing = sorted({line.account for line in journal.lines if line.account not in accounts})
        if missing:
            raise BusinessError(
                f"journal {journal.key}: unknown account code(s) {', '.join(missing)} "
                f"for entity {journal.entity} in Tryton",
                target=TARGET,
                code=journal.key,
            )
        return {
            "company": company,
            "journal": self._journal(),
            "period": self._period(company, journal),
            "date": journal.date,
            "description": journal.description,
            "revbridge_key": journal.key,
            "lines": [
                [
                    "create",
                    [
                        {
                            "account": accounts[line.account],
                            "debit": line.debit,
                            "credit": line.credit,
                            "description": line.description,
                        }
                        for line in journal.lines
                    ],
                ]
            ],
        }

    # -- master data (cached)

    def _company(self, journal: Journal) -> int:
        code = journal.entity
        if code not in self._companies:
            rows = self.rpc.model(
                "company.company",
                "search_read",
                [["party.code", "=", code]],
                0,
                None,
                None,
                ["currency.code"],
                {},
            )
            if not rows:
                raise BusinessError(
                    f"journal {journal.key}: unknown entity {code} (no Tryton company whose "
                    f"party code is {code})",
                    target=TARGET,
                    code=journal.key,
                )
            self._companies[code] = int(rows[0]["id"])
            self._currencies[code] = str(rows[0]["currency."]["code"])
        if self._currencies[code] != journal.currency:
            raise BusinessError(
                f"journal {journal.key}: currency {journal.currency} but entity {code} "
                f"keeps its books in {self._currencies[code]}",
                target=TARGET,
                code=journal.key,
            )
        return self._companies[code]

    def _account_ids(self, company: int) -> dict[str, int]:
        if company not in self._accounts:
            rows = self.rpc.model(
                "account.account",
                "search_read",
                [
                    ["company", "=", company],
                    ["code", "!=", None],
                    ["type", "!=", None],
                    ["closed", "!=", True],
                ],
                0,
                None,
                None,
                ["code"],
                {"company": company},
            )
            self._accounts[company] = {str(row["code"]): int(row["id"]) for row in rows}
        return self._accounts[company]

    def _period(self, company: int, journal: Journal) -> int:
        if company not in self._periods:
            self._periods[company] = self._load_periods(company)
        for period in self._periods[company]:
            if period.start <= journal.date <= period.end:
                return period.id
        # A period may have been opened since we loaded: reload once.
        self._periods[company] = self._load_periods(company)
        for period in self._periods[company]:
            if period.start <= journal.date <= period.end:
                return period.id
        raise BusinessError(
            f"journal {journal.key}: no open period on {journal.date.isoformat()} "
            f"for entity {journal.entity} in Tryton",
            target=TARGET,
            code=journal.key,
        )

    def _load_periods(self, company: int) -> list[_Period]:
        rows = self.rpc.model(
            "account.period",
            "search_read",
            [["company", "=", company], ["state", "=", "open"], ["type", "=", "standard"]],
            0,
            None,
            None,
            ["start_date", "end_date"],
            {"company": company},
        )
        return [_Period(int(r["id"]), r["start_date"], r["end_date"]) for r in rows]

    def _journal(self) -> int:
        if self._journal_id is None:
            ids = self.rpc.model(
                "account.journal", "search", [["code", "=", self.journal_code]], 0, 1, None, {}
            )
            if not ids:
                raise BusinessError(
                    f"no Tryton journal with code {self.journal_code}", target=TARGET, code=None
                )
            self._journal_id = int(ids[0])
        return self._journal_id
