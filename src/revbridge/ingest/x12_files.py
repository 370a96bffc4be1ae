"""Input ``x12_files``: X12 files from a drop folder (or given on the command line).

The file's bytes are stored exactly, in one transaction with one unit per ST..SE found in
it; only then is the file acknowledged (moved to ``accepted/``). Dedupe: the same file
bytes again, or the same control numbers with the same bytes, are duplicates; the same
control numbers with *different* bytes are processed and flagged for review.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from revbridge.formats.x12.envelope import EnvelopeReport, TransactionSlice, scan
from revbridge.formats.x12.issues import X12Issue
from revbridge.registry import ComponentSpec, Field
from revbridge.store.base import NewException, NewUnit, RawMessage, Store, UnitOfWork, UnitStatus

SPEC = ComponentSpec(
    "inputs",
    "x12_files",
    "Watches a folder for X12 5010 files (835 remittances). Each file is stored byte for byte "
    "before it is moved to the accepted or rejected folder.",
    (
        Field("path", "path", "Folder to watch.", example="inbox"),
        Field(
            "accepted_dir", "path", "Where acknowledged files go (default: <path>/accepted).", None
        ),
        Field(
            "rejected_dir", "path", "Where unreadable files go (default: <path>/rejected).", None
        ),
        Field("pattern", "string", "Glob of file names to pick up.", "*"),
        Field("poll_seconds", "number", "How often to look for new files.", 2.0),
    ),
)

CHANNEL = "x12_files"
SUPPORTED_VERSION = "005010X221A1"
CHUNK = 1 << 20


@dataclass
class FileOutcome:
    path: str
    status: str  # accepted | duplicate | rejected
    raw_id: int | None = None
    transactions: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "status": self.status,
            "raw_id": self.raw_id,
            "transactions": self.transactions,
            "new": self.new,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "problems": self.problems,
        }


def iter_files(paths: list[Path], pattern: str = "*") -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.glob(pattern) if p.is_file())
        else:
            yield path


def ingest_file(store: Store, path: Path, *, channel: str = CHANNEL) -> FileOutcome:
    """Store the file and its units; raises ``OSError`` only if the file cannot be read."""
    size, digest = _size_and_hash(path)
    with store.unit_of_work() as uow:
        if uow.raw.find_by_sha256(digest) is not None:
            return FileOutcome(str(path), "duplicate")
    with path.open("rb") as stream:
        report = scan(stream)
    with store.unit_of_work() as uow, path.open("rb") as stream:
        if uow.raw.find_by_sha256(digest) is not None:  # a concurrent ingest got there first
            return FileOutcome(str(path), "duplicate")
        return _store(uow, stream, report, str(path), path.name, digest, size, channel)


def ingest_bytes(
    uow: UnitOfWork, data: bytes, *, name: str, channel: str = CHANNEL, replaces: int | None = None
) -> FileOutcome:
    """Store bytes a person supplied (an edited file) in the caller's transaction, exactly
    as ``ingest_file`` stores a file, so the edit and what it is linked to commit together.

    ``replaces`` is the raw message the edit corrects: an edited transaction keeping that
    message's control numbers is the correction itself, not a reuse to review."""
    digest = hashlib.sha256(data).hexdigest()
    if uow.raw.find_by_sha256(digest) is not None:
        return FileOutcome(name, "duplicate")
    report = scan(io.BytesIO(data))
    stream = io.BytesIO(data)
    return _store(uow, stream, report, name, name, digest, len(data), channel, replaces)


def _store(
    uow: UnitOfWork,
    stream: BinaryIO,
    report: EnvelopeReport,
    label: str,
    name: str,
    digest: str,
    size: int,
    channel: str,
    replaces: int | None = None,
) -> FileOutcome:
    raw = uow.raw.add(
        channel=channel,
        name=name,
        content_type="application/edi-x12",
        sha256=digest,
        size=size,
        stream=stream,
    )
    outcome = _units(uow, raw, report, FileOutcome(label, "accepted", raw.id), replaces)
    uow.audit.record("revbridge", "raw.received", "raw", str(raw.id), outcome.as_dict())
    return outcome


def _size_and_hash(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _units(
    uow: UnitOfWork,
    raw: RawMessage,
    report: EnvelopeReport,
    out: FileOutcome,
    replaces: int | None = None,
) -> FileOutcome:
    for issue in report.issues:
        _open(uow, raw, "envelope_error" if report.transactions else "rejected_file", issue, None)
        out.problems.append(_where(issue))
    for tx in report.transactions:
        out.transactions += 1
        _unit(uow, raw, tx, out, replaces)
    if out.new == 0:
        out.status = "duplicate" if out.duplicates and not out.problems else "rejected"
    return out


def _unit(
    uow: UnitOfWork,
    raw: RawMessage,
    tx: TransactionSlice,
    out: FileOutcome,
    replaces: int | None = None,
) -> None:
    if uow.units.find(tx.natural_key, tx.content_hash) is not None:
        out.duplicates += 1
        return
    issues = list(_problems(tx))
    unit = uow.units.add(_new_unit(raw, tx))
    for issue in issues:
        _open(uow, raw, "rejected_transaction", issue, unit.id)
        out.problems.append(_where(issue))
    if issues:
        uow.units.set_status(unit.id, UnitStatus.REJECTED, issues[0].message)
        out.rejected += 1
        return
    reused = uow.units.natural_key_seen(tx.natural_key, tx.content_hash)
    if reused is not None and reused.raw_id != replaces:
        _control_number_reused(uow, raw, tx, unit.id, reused.id)
    uow.jobs.enqueue("normalise", f"unit:{unit.id}", {"unit_id": unit.id})
    out.new += 1


def _problems(tx: TransactionSlice) -> Iterator[X12Issue]:
    yield from (i for i in tx.issues if i.severity == "error")
    if tx.transaction_set != "835":
        yield X12Issue(
            "unsupported_transaction",
            f"transaction set {tx.transaction_set} has no "
            "normaliser (only 835 remittances are read)",
            tx.first_segment,
            "ST",
            "ST01",
            tx.control_number,
        )
    elif tx.version != SUPPORTED_VERSION:
        yield X12Issue(
            "not_5010",
            f"GS08 is {tx.version!r}; expected {SUPPORTED_VERSION}",
            None,
            "GS",
            "GS08",
            tx.control_number,
        )


def _new_unit(raw: RawMessage, tx: TransactionSlice) -> NewUnit:
    envelope = {
        "delimiters": tx.delimiters.encode(),
        "sender_id": tx.sender_id,
        "receiver_id": tx.receiver_id,
        "interchange_control": tx.interchange_control,
        "usage": tx.usage,
        "functional_id": tx.functional_id,
        "group_control": tx.group_control,
        "version": tx.version,
        "transaction_set": tx.transaction_set,
        "control_number": tx.control_number,
    }
    return NewUnit(
        raw.id,
        f"x12.{tx.transaction_set}",
        tx.natural_key,
        tx.content_hash,
        tx.start,
        tx.end,
        tx.first_segment,
        envelope,
    )


def _control_number_reused(
    uow: UnitOfWork, raw: RawMessage, tx: TransactionSlice, unit_id: int, earlier: int
) -> None:
    detail = (
        f"{raw.name}: control numbers {tx.natural_key} were used before by unit {earlier} "
        "with different content; processed anyway — please review"
    )
    subject = {
        "file": raw.name,
        "raw_id": raw.id,
        "unit_id": unit_id,
        "earlier_unit_id": earlier,
        "natural_key": tx.natural_key,
        "segment": tx.first_segment,
    }
    uow.exceptions.open(
        NewException("control_number_reused", detail, f"control_number_reused:{unit_id}", subject)
    )


def issue_exception(
    reason: str,
    issue: X12Issue,
    *,
    file: str,
    raw_id: int,
    unit_id: int | None,
    transaction: str | None = None,
) -> NewException:
    """An exception item for an X12 problem, naming file, transaction, segment and element."""
    subject = {
        "file": file,
        "raw_id": raw_id,
        "unit_id": unit_id,
        "segment": issue.segment_number,
        "segment_id": issue.segment_id,
        "element": issue.element,
        "transaction": issue.transaction or transaction,
        "code": issue.code,
    }
    dedupe = f"{reason}:{raw_id}:{unit_id}:{issue.code}:{issue.segment_number}:{issue.element}"
    return NewException(reason, f"{file}: {_where(issue)}", dedupe, subject)


def _open(
    uow: UnitOfWork, raw: RawMessage, reason: str, issue: X12Issue, unit_id: int | None
) -> None:
    uow.exceptions.open(
        issue_exception(reason, issue, file=raw.name, raw_id=raw.id, unit_id=unit_id)
    )


def _where(issue: X12Issue) -> str:
    parts = [
        f"transaction {issue.transaction}" if issue.transaction else "",
        f"segment {issue.segment_number}" if issue.segment_number else "",
        f"({issue.segment_id}{'/' + issue.element if issue.element else ''})"
        if issue.segment_id
        else "",
    ]
    return " ".join(p for p in parts if p) + f": {issue.message}"
