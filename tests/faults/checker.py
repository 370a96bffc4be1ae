"""The fault suite's checker: three histories, compared.

- ``SenderHistory``: every delivery and what its sender was told (accepted / duplicate /
  rejected, or nothing: the sender was killed, or the call failed).
- ``StoreHistory``: what the revbridge store holds (raw messages, units, events, jobs,
  journals, open exception items), read through the ``Store`` interface, plus SQLite's
  ``PRAGMA integrity_check``.
- ``ERPHistory``: what the ERP's own book holds (key -> documents and their lines), read
  from the fault ERP's SQLite file or from a GL CSV folder.

``check`` asserts the guarantees of DESIGN.md §3 over them:

- **no loss**: every message a sender was told was accepted (or a duplicate of an accepted
  one) is in the store, and every journal its transactions should produce (recomputed here
  from the file bytes, independently of the pipeline) is in the ERP with the expected
  lines, or an open exception item names it (its unit, payment, journal, or the parked
  post job of its target);
- **no double**: no key booked twice in the ERP, and no two ERP documents with the same
  content (same source references) under different keys;
- **balance**: every journal in the store and every ERP document balances (Decimal);
- **agreement**: each posted store journal's document id is the ERP's, nothing booked in
  the ERP is unknown to the store or recorded there as refused;
- **integrity**: SQLite ``integrity_check`` and ``foreign_key_check`` are clean.

With ``final=False`` (between steps of a run) only the safety properties are checked:
work may be in flight, so loss is not judged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from revbridge.domain.events import EventType
from revbridge.domain.journal import Journal, JournalStatus
from revbridge.domain.master import MasterData
from revbridge.formats.x12.envelope import TransactionSlice, scan
from revbridge.ingest.x12_files import SUPPORTED_VERSION
from revbridge.ledger.posting_rules import PostingRules
from revbridge.ledger.remittance import build_remittance_journals
from revbridge.normalise.x12_835 import Normalised, UnitInput, normalise_835
from revbridge.store.base import (
    ExceptionItem,
    ExceptionStatus,
    Job,
    JobStatus,
    JournalRecord,
    RawMessage,
    Store,
    Unit,
)
from revbridge.store.sqlite import SQLiteStore

ZERO = Decimal(0)

TOLD = ("accepted", "duplicate", "rejected")
"""What a sender can be told; ``None`` means it was told nothing."""

EXCUSES = frozenset(
    {
        "rejected_file",
        "rejected_transaction",
        "envelope_error",
        "payment_conflict",
        "unknown_payee",
        "erp_rejected",
        "erp_indeterminate",
        "business_rejection",
        "processing_error",
        "retries_exhausted",
    }
)
"""Reasons of open exception items that account for a journal not being in the ERP.
Informational items (claim_denied, unknown_payer, unmapped_code, ...) excuse nothing."""

_VOLATILE_SOURCE = frozenset({"raw_id", "unit_id", "segment"})
"""Source references that depend on which copy of a message was processed first."""


# ---------------------------------------------------------------------------- senders


@dataclass(frozen=True, slots=True)
class Delivery:
    sender: str
    path: Path
    sha256: str
    told: str | None

    @property
    def acknowledged(self) -> bool:
        return self.told in ("accepted", "duplicate")


@dataclass
class SenderHistory:
    deliveries: list[Delivery] = field(default_factory=list)

    def add(self, sender: str, path: Path, told: str | None) -> Delivery:
        if told is not None and told not in TOLD:
            raise ValueError(f"a sender cannot be told {told!r}")
        delivery = Delivery(sender, path, sha256_of(path), told)
        self.deliveries.append(delivery)
        return delivery

    def add_cli(self, sender: str, paths: Iterable[Path], stdout: str | None) -> None:
        """The deliveries of one ``revbridge ingest --format json`` call.

        Files missing from its answer (the process was killed, or the answer was not
        JSON) were told nothing."""
        wanted = list(paths)
        told: list[str | None] = [None] * len(wanted)
        try:
            answer = json.loads(stdout) if stdout else None
        except json.JSONDecodeError:
            answer = None
        if isinstance(answer, dict):
            for index, item in enumerate(answer.get("files", [])[: len(wanted)]):
                if Path(item["path"]) == wanted[index]:
                    told[index] = str(item["status"])
        for path, status in zip(wanted, told, strict=True):
            self.add(sender, path, status)

    def told(self) -> Counter[str]:
        return Counter(d.told or "nothing" for d in self.deliveries)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ store


@dataclass
class StoreHistory:
    raws: dict[str, RawMessage]
    units: dict[int, list[Unit]]
    journals: dict[str, JournalRecord]
    jobs: list[Job]
    exceptions: list[ExceptionItem]
    fingerprints: dict[str, list[str]]  # payment -> fingerprints of the received headers
    posted_events: set[str]
    outbox_open: set[str]  # journal keys whose outbox item is pending or in flight
    integrity: str

    @classmethod
    def read(cls, path: Path, shas: Iterable[str]) -> StoreHistory:
        integrity = integrity_check(path)
        store = SQLiteStore(path)
        try:
            return cls._read(store, set(shas), integrity)
        finally:
            store.close()

    @classmethod
    def _read(cls, store: Store, shas: set[str], integrity: str) -> StoreHistory:
        with store.unit_of_work() as uow:
            raws = {sha: raw for sha in shas if (raw := uow.raw.find_by_sha256(sha)) is not None}
            units = {raw.id: uow.units.by_raw(raw.id) for raw in raws.values()}
            journals = {r.journal.key: r for r in uow.journals.all()}
            jobs = uow.jobs.all(limit=10**9)
            exceptions = uow.exceptions.all()
            fingerprints: dict[str, list[str]] = {}
            posted: set[str] = set()
            after = 0
            while batch := uow.events.read_from(after, 5000):
                for stored in batch:
                    event = stored.event
                    if event.type == EventType.REMITTANCE_RECEIVED:
                        payment = event.keys["payment"]
                        fingerprints.setdefault(payment, []).append(event.data["fingerprint"])
                    elif event.type == EventType.JOURNAL_POSTED:
                        posted.add(event.keys["journal"])
                after = batch[-1].position
            outbox_open: set[str] = set()
            for target in {r.target for r in journals.values()}:
                due = uow.outbox.due(target, _far_future(), 10**9)
                outbox_open.update(i.journal_key for i in due)
        return cls(
            raws, units, journals, jobs, exceptions, fingerprints, posted, outbox_open, integrity
        )

    def unit_for(self, raw: RawMessage | None, tx: TransactionSlice) -> Unit | None:
        """The unit a transaction of a delivered file became (or duplicated)."""
        candidates = self.units.get(raw.id, []) if raw is not None else []
        for unit in candidates:
            if unit.byte_start == tx.start and unit.byte_end == tx.end:
                return unit
        for units in self.units.values():
            for unit in units:
                if unit.natural_key == tx.natural_key and unit.content_hash == tx.content_hash:
                    return unit
        return None

    def open_exceptions(self) -> list[ExceptionItem]:
        return [x for x in self.exceptions if x.status == ExceptionStatus.OPEN]

    def unfinished_jobs(self) -> list[Job]:
        return [j for j in self.jobs if j.status in (JobStatus.READY, JobStatus.LEASED)]


def _far_future() -> datetime:
    return datetime(9999, 1, 1, tzinfo=UTC)


def integrity_check(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()
    return "ok" if rows == [("ok",)] and not fk else f"{rows} {fk}"


# -------------------------------------------------------------------------------- ERP


@dataclass(frozen=True, slots=True)
class ERPLine:
    account: str
    debit: Decimal
    credit: Decimal
    dimensions: str  # JSON, sorted keys
    source: str  # JSON, sorted keys


@dataclass(frozen=True, slots=True)
class ERPDocument:
    id: str
    key: str
    entity: str
    date: str
    kind: str
    lines: tuple[ERPLine, ...]

    def balanced(self) -> bool:
        return bool(self.lines) and sum((x.debit for x in self.lines), ZERO) == sum(
            (x.credit for x in self.lines), ZERO
        )

    def content(self) -> tuple[Any, ...]:
        """What the document says, without where the copy it came from was stored."""
        return (
            self.entity,
            self.date,
            tuple(
                sorted(
                    (x.account, x.debit, x.credit, x.dimensions, _stable_source(x.source))
                    for x in self.lines
                )
            ),
        )

    def signature(self) -> tuple[Any, ...]:
        return (self.entity, self.date, self.kind, _line_signature(self.lines))


@dataclass
class ERPHistory:
    documents: list[ERPDocument]

    @classmethod
    def from_fault_erp(cls, path: Path) -> ERPHistory:
        if not path.exists():
            return cls([])
        conn = sqlite3.connect(path)
        try:
            heads = conn.execute(
                "SELECT id, key, entity, date, kind FROM documents ORDER BY id"
            ).fetchall()
            rows = conn.execute(
                "SELECT document_id, account, debit, credit, dimensions, source FROM lines"
                " ORDER BY document_id, line_no"
            ).fetchall()
        finally:
            conn.close()
        lines: dict[int, list[ERPLine]] = {}
        for number, account, debit, credit, dims, source in rows:
            lines.setdefault(number, []).append(
                ERPLine(account, Decimal(debit), Decimal(credit), dims, source)
            )
        return cls(
            [
                ERPDocument(f"DOC-{n}", key, entity, day, kind, tuple(lines.get(n, [])))
                for n, key, entity, day, kind in heads
            ]
        )

    @classmethod
    def from_gl_folder(cls, folder: Path) -> ERPHistory:
        """GL CSV files as the ERP's book: a key in two files is two documents."""
        documents: list[ERPDocument] = []
        for path in sorted(folder.glob("gl-*.csv")):
            per_key: dict[str, list[dict[str, str]]] = {}
            with path.open(newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(io.StringIO(handle.read())):
                    per_key.setdefault(row["journal_key"], []).append(row)
            for key, rows in per_key.items():
                documents.append(
                    ERPDocument(
                        f"{path.name}#{key}",
                        key,
                        rows[0]["entity"],
                        rows[0]["date"],
                        rows[0]["kind"],
                        tuple(
                            ERPLine(
                                r["account"],
                                Decimal(r["debit"]),
                                Decimal(r["credit"]),
                                json.dumps(json.loads(r["dimensions"]), sort_keys=True),
                                json.dumps(json.loads(r["source"]), sort_keys=True),
                            )
                            for r in rows
                        ),
                    )
                )
        return cls(documents)

    def by_key(self) -> dict[str, list[ERPDocument]]:
        found: dict[str, list[ERPDocument]] = {}
        for document in self.documents:
            found.setdefault(document.key, []).append(document)
        return found


def _stable_source(source: str) -> str:
    refs = {k: v for k, v in json.loads(source).items() if k not in _VOLATILE_SOURCE}
    return json.dumps(refs, sort_keys=True)


def _line_signature(lines: Iterable[ERPLine]) -> tuple[Any, ...]:
    return tuple(sorted((x.account, x.debit, x.credit, x.dimensions) for x in lines))


def journal_signature(journal: Journal) -> tuple[Any, ...]:
    lines = [
        ERPLine(
            x.account,
            x.debit,
            x.credit,
            json.dumps(dict(x.dimensions), sort_keys=True),
            json.dumps(dict(x.source), sort_keys=True),
        )
        for x in journal.lines
    ]
    return (journal.entity, journal.date.isoformat(), journal.kind, _line_signature(lines))


# ------------------------------------------------------------------------------ check


@dataclass
class Report:
    deliveries: int = 0
    told: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    transactions: int = 0
    payments: int = 0
    expected_journals: int = 0
    posted: int = 0
    nothing_to_post: int = 0
    covered: dict[str, int] = field(default_factory=dict)
    store_journals: int = 0
    erp_documents: int = 0
    open_exceptions: dict[str, int] = field(default_factory=dict)
    unfinished_jobs: int = 0
    integrity: str = ""
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    unbalanced: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [f"lost: {x}" for x in self.lost]
        found += [f"doubled: {x}" for x in self.doubled]
        found += [f"unbalanced: {x}" for x in self.unbalanced]
        found += [f"mismatch: {x}" for x in self.mismatched]
        if self.integrity != "ok":
            found.append(f"integrity_check: {self.integrity}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def assert_ok(self) -> Report:
        assert self.ok, "\n".join([self.summary(), *self.problems[:40]])
        return self

    def summary(self) -> str:
        told = ", ".join(f"{k} {v}" for k, v in sorted(self.told.items()))
        covered = ", ".join(f"{k} {v}" for k, v in sorted(self.covered.items())) or "none"
        items = ", ".join(f"{k} {v}" for k, v in sorted(self.open_exceptions.items())) or "none"
        return (
            f"deliveries {self.deliveries} ({told}); messages {self.messages}, "
            f"transactions {self.transactions}, payments {self.payments}; "
            f"journals expected {self.expected_journals}, posted {self.posted}, "
            f"covered by an open item ({covered}), nothing to post {self.nothing_to_post}; "
            f"store journals {self.store_journals}, ERP documents {self.erp_documents}; "
            f"lost {len(self.lost)}, doubled {len(self.doubled)}, "
            f"unbalanced {len(self.unbalanced)}, mismatched {len(self.mismatched)}; "
            f"open items ({items}); unfinished jobs {self.unfinished_jobs}; "
            f"integrity {self.integrity}"
        )


@dataclass
class _Expected:
    """What one transaction of a delivered file should have produced."""

    tx: TransactionSlice
    normalised: Normalised | None
    journals: list[Journal]
    ingest_problem: bool
    unknown_payee: bool


def check(
    senders: SenderHistory,
    store_path: Path,
    erp: ERPHistory,
    master: MasterData,
    rules: PostingRules,
    *,
    final: bool = True,
) -> Report:
    """Compare the three histories; returns the report (``report.assert_ok()`` to assert)."""
    acknowledged = {d.sha256: d for d in senders.deliveries if d.acknowledged}
    store = StoreHistory.read(store_path, {d.sha256 for d in senders.deliveries})
    report = Report(
        deliveries=len(senders.deliveries),
        told=dict(senders.told()),
        messages=len(acknowledged),
        store_journals=len(store.journals),
        erp_documents=len(erp.documents),
        integrity=store.integrity,
        unfinished_jobs=len(store.unfinished_jobs()),
        open_exceptions=dict(Counter(x.reason for x in store.open_exceptions())),
    )
    by_key = erp.by_key()
    _check_doubles(erp, by_key, report)
    _check_balance(store, erp, report)
    _check_agreement(store, by_key, report, final=final)
    if final:
        _check_no_loss(acknowledged, store, by_key, master, rules, report)
        for delivery in senders.deliveries:
            if delivery.told == "rejected" and not _rejection_recorded(store, delivery):
                report.lost.append(f"{delivery.path.name}: told rejected, but no open item")
    return report


def _check_doubles(
    erp: ERPHistory, by_key: Mapping[str, list[ERPDocument]], report: Report
) -> None:
    for key, documents in by_key.items():
        if len(documents) > 1:
            report.doubled.append(f"{key} booked {len(documents)}x ({documents[0].id}, ...)")
    seen: dict[tuple[Any, ...], str] = {}
    for document in erp.documents:
        content = document.content()
        other = seen.setdefault(content, document.key)
        if other != document.key:
            report.doubled.append(f"{document.key}: same content as {other}")


def _check_balance(store: StoreHistory, erp: ERPHistory, report: Report) -> None:
    for key, record in store.journals.items():
        lines = record.journal.lines
        debit = sum((x.debit for x in lines), ZERO)
        credit = sum((x.credit for x in lines), ZERO)
        if not lines or debit != credit or any(x.debit < 0 or x.credit < 0 for x in lines):
            report.unbalanced.append(f"store {key}: Dr {debit} Cr {credit}")
    for document in erp.documents:
        if not document.balanced():
            report.unbalanced.append(f"ERP {document.id} ({document.key})")


def _check_agreement(
    store: StoreHistory,
    by_key: Mapping[str, list[ERPDocument]],
    report: Report,
    *,
    final: bool,
) -> None:
    for key, record in store.journals.items():
        documents = by_key.get(key, [])
        if record.status == JournalStatus.POSTED:
            if record.erp_document_id not in {d.id for d in documents}:
                report.mismatched.append(
                    f"{key}: store says posted as {record.erp_document_id}, ERP holds "
                    f"{[d.id for d in documents]}"
                )
            if key not in store.posted_events:
                report.mismatched.append(f"{key}: posted without a journal.posted event")
            if documents and documents[0].signature() != journal_signature(record.journal):
                report.mismatched.append(f"{key}: ERP lines differ from the store's")
        elif record.status == JournalStatus.FAILED and documents:
            report.mismatched.append(f"{key}: store says refused, ERP booked {documents[0].id}")
        elif final and documents and not _post_parked(store, record.target):
            report.mismatched.append(
                f"{key}: booked in the ERP as {documents[0].id} but never recorded as posted"
            )
    for key, documents in by_key.items():
        if key not in store.journals:
            report.mismatched.append(f"{key}: in the ERP ({documents[0].id}), not in the store")


def _check_no_loss(
    acknowledged: Mapping[str, Delivery],
    store: StoreHistory,
    by_key: Mapping[str, list[ERPDocument]],
    master: MasterData,
    rules: PostingRules,
    report: Report,
) -> None:
    payments: set[str] = set()
    expected_keys: set[str] = set()
    posted_keys: set[str] = set()
    covered: dict[str, set[str]] = {}
    nothing: set[str] = set()
    for sha, delivery in acknowledged.items():
        raw = store.raws.get(sha)
        if raw is None:
            report.lost.append(f"{delivery.path.name}: told {delivery.told}, not in the store")
            continue
        for expected in _expectations(delivery.path, master, rules):
            report.transactions += 1
            unit = store.unit_for(raw, expected.tx)
            where = f"{delivery.path.name} ST {expected.tx.control_number}"
            if expected.ingest_problem or expected.normalised is None:
                reason = _excused(store, unit=unit, raw=raw)
                if reason is None:
                    report.lost.append(f"{where}: rejected, but no open item names it")
                else:
                    covered.setdefault(reason, set()).add(f"{sha}:{expected.tx.start}")
                continue
            payment = expected.normalised.payment_key
            payments.add(payment)
            if expected.unknown_payee:
                reason = _excused(store, unit=unit, payment=payment, reasons={"unknown_payee"})
                if reason is None:
                    report.lost.append(f"{where}: payee unknown, but no open item")
                else:
                    covered.setdefault(reason, set()).add(payment)
                continue
            received = store.fingerprints.get(payment, [])
            if expected.normalised.fingerprint not in received[:1]:
                reason = _excused(store, unit=unit)
                if reason is None:
                    state = "another version" if received else "nothing"
                    report.lost.append(f"{where}: payment {payment}: store received {state}")
                else:
                    covered.setdefault(reason, set()).add(f"{sha}:{expected.tx.start}")
                continue
            if not expected.journals:
                if _journal_job_done(store, payment) or _excused(
                    store, correlation=f"835:{payment}"
                ):
                    nothing.add(payment)
                else:
                    report.lost.append(f"{where}: payment {payment}: journal job not done")
                continue
            for journal in expected.journals:
                expected_keys.add(journal.key)
                documents = by_key.get(journal.key, [])
                if documents and documents[0].signature() == journal_signature(journal):
                    posted_keys.add(journal.key)
                    continue
                reason = _excused(store, journal=journal.key, correlation=f"835:{payment}")
                if reason is None:
                    state = "different lines" if documents else "nothing"
                    report.lost.append(f"{where}: {journal.key}: ERP holds {state}, no open item")
                else:
                    covered.setdefault(reason, set()).add(journal.key)
    report.payments = len(payments)
    report.expected_journals = len(expected_keys)
    report.posted = len(posted_keys)
    report.covered = {reason: len(things) for reason, things in covered.items()}
    report.nothing_to_post = len(nothing)


def expected_journal_keys(path: Path, master: MasterData, rules: PostingRules) -> set[str]:
    """The keys of the journals a file should produce, recomputed from its bytes."""
    return {j.key for e in _expectations(path, master, rules) for j in e.journals}


def _expectations(path: Path, master: MasterData, rules: PostingRules) -> list[_Expected]:
    """Recompute, from the file bytes alone, what each transaction should produce."""
    with path.open("rb") as stream:
        report = scan(stream)
    data = path.read_bytes()
    found: list[_Expected] = []
    for tx in report.transactions:
        bad = (
            tx.transaction_set != "835"
            or tx.version != SUPPORTED_VERSION
            or any(i.severity == "error" for i in tx.issues)
        )
        if bad:
            found.append(_Expected(tx, None, [], True, False))
            continue
        unit = UnitInput(
            data=data[tx.start : tx.end],
            delimiters=tx.delimiters.encode(),
            first_segment=tx.first_segment,
            raw_id=0,
            unit_id=0,
            channel="check",
            content_hash=tx.content_hash,
            envelope={"control_number": tx.control_number},
        )
        result = normalise_835(unit, _far_future())
        if not isinstance(result, Normalised):
            found.append(_Expected(tx, None, [], False, False))
            continue
        ledger = build_remittance_journals(result.events, master, rules)
        unknown = any(x.reason == "unknown_payee" for x in ledger.exceptions)
        found.append(_Expected(tx, result, list(ledger.journals), False, unknown))
    return found


def _excused(
    store: StoreHistory,
    *,
    unit: Unit | None = None,
    raw: RawMessage | None = None,
    payment: str | None = None,
    journal: str | None = None,
    correlation: str | None = None,
    reasons: frozenset[str] | set[str] = EXCUSES,
) -> str | None:
    """The reason of an open item that accounts for the thing not being posted, if any.

    A unit is named by its id, a payment by its key (unknown payee), a journal by its key
    (refused), by the correlation id of its journal job, or by its target's parked post
    job while its outbox item is still open."""
    record = store.journals.get(journal) if journal else None
    for item in store.open_exceptions():
        if item.reason not in reasons or item.reason not in EXCUSES:
            continue
        subject = item.subject
        names = (
            (unit is not None and str(subject.get("unit_id")) == str(unit.id))
            or (raw is not None and str(subject.get("raw_id")) == str(raw.id))
            or (payment is not None and subject.get("payment") == payment)
            or (journal is not None and subject.get("journal") == journal)
            or (correlation is not None and subject.get("correlation_id") == correlation)
            or (
                record is not None
                and subject.get("job_kind") == "post"
                and subject.get("target") == record.target
                and journal in store.outbox_open
            )
        )
        if names:
            return item.reason
    return None


def _post_parked(store: StoreHistory, target: str) -> bool:
    return any(
        j.kind == "post" and j.status == JobStatus.PARKED and j.key == target for j in store.jobs
    )


def _journal_job_done(store: StoreHistory, payment: str) -> bool:
    return any(j.kind == "journal" and j.key == payment and j.status == "done" for j in store.jobs)


def _rejection_recorded(store: StoreHistory, delivery: Delivery) -> bool:
    raw = store.raws.get(delivery.sha256)
    if raw is None:
        return False
    return any(str(x.subject.get("raw_id")) == str(raw.id) for x in store.open_exceptions())
