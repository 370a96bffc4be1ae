"""Envelope scan: find every ST..SE in a file and check the control structure.

``scan`` reads the stream once, in chunks, and only splits the envelope
segments (ISA/GS/ST/SE/GE/IEA) into elements; everything else is counted.
Transactions are hashed incrementally, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import BinaryIO

from revbridge.formats.x12.issues import X12Error, X12Issue, make_issue
from revbridge.formats.x12.tokenizer import Batch, Delimiters, iter_batches

_ENVELOPE_IDS = frozenset({"ISA", "IEA", "GS", "GE", "ST", "SE"})
MAX_OUTSIDE_ISSUES = 20


@dataclass(frozen=True, slots=True)
class TransactionSlice:
    """One ST..SE found in a file, located by byte offsets."""

    start: int
    end: int
    first_segment: int
    segment_count: int
    delimiters: Delimiters
    sender_id: str
    receiver_id: str
    interchange_control: str
    usage: str
    functional_id: str
    group_control: str
    version: str
    transaction_set: str
    control_number: str
    issues: tuple[X12Issue, ...]
    content_hash: str

    @property
    def natural_key(self) -> str:
        return (
            f"{self.sender_id}|{self.interchange_control}|{self.group_control}|"
            f"{self.control_number}"
        )

    @property
    def ok(self) -> bool:
        """True when the transaction has no error-level envelope issue."""
        return not any(i.severity == "error" for i in self.issues)


@dataclass(frozen=True, slots=True)
class EnvelopeReport:
    """Every transaction in the file plus interchange/group-level issues."""

    transactions: list[TransactionSlice]
    issues: list[X12Issue]


@dataclass(slots=True)
class _Interchange:
    number: int
    sender_id: str
    receiver_id: str
    control: str
    usage: str
    groups: int = 0


@dataclass(slots=True)
class _Group:
    number: int
    functional_id: str
    control: str
    version: str
    transactions: int = 0


@dataclass(slots=True)
class _Open:
    """A transaction whose SE has not been seen yet."""

    start: int
    number: int
    delimiters: Delimiters
    transaction_set: str
    control_number: str
    hasher: hashlib._Hash
    hashed_to: int  # position in the current buffer up to which bytes are hashed
    issues: list[X12Issue] = field(default_factory=list)


class _Scanner:
    def __init__(self) -> None:
        self.transactions: list[TransactionSlice] = []
        self.issues: list[X12Issue] = []
        self.isa: _Interchange | None = None
        self.gs: _Group | None = None
        self.tx: _Open | None = None
        self.last_envelope = 0  # number of the last envelope segment seen
        self.last_segment = 0
        self.outside_reported = 0
        self.buf = ""  # buffer of the current batch
        self.base = 0  # byte offset of buf[0]
        self.cut = 0  # start (in buf) of the envelope segment being handled

    # -- batch loop -------------------------------------------------------------------------

    def feed(self, batch: Batch) -> None:
        delims, number, base, buf, split = batch
        elem = delims.element
        needles = [sid + elem for sid in _ENVELOPE_IDS]
        for i, start in split.locate(buf, split.candidates(buf, needles)):
            elements = split.text_at(i, start).split(elem)
            if elements[0] in _ENVELOPE_IDS:
                self.buf, self.base, self.cut = buf, base, start
                self._envelope(elements, number + i, split.end_of(i, start), delims)
        self.last_segment = number + split.size - 1
        tx = self.tx
        if tx is not None:
            tx.hasher.update(buf[tx.hashed_to : split.carry].encode("latin-1"))
            tx.hashed_to = 0

    def _envelope(self, els: list[str], number: int, end: int, delims: Delimiters) -> None:
        self._check_outside(number)
        self.last_envelope = number
        sid = els[0]
        if sid == "ST":
            self._st(els, number, delims)
        elif sid == "SE":
            self._se(els, number, end)
        elif sid == "GS":
            self._gs(els, number)
        elif sid == "GE":
            self._ge(els, number)
        elif sid == "ISA":
            self._isa(els, number)
        else:
            self._iea(els, number)

    def _check_outside(self, number: int) -> None:
        gap = number - self.last_envelope - 1
        if gap <= 0 or self.tx is not None:
            return
        self.outside_reported += 1
        if self.outside_reported <= MAX_OUTSIDE_ISSUES:
            first = self.last_envelope + 1
            self.issues.append(
                make_issue(
                    "segment_outside_transaction",
                    f"{gap} segment(s) outside any ST..SE",
                    first,
                )
            )

    # -- interchange / group ----------------------------------------------------------------

    def _isa(self, els: list[str], number: int) -> None:
        if self.isa is not None:
            self._missing("IEA", number, "ISA")
        get = _getter(els)
        self.isa = _Interchange(number, get(6).strip(), get(8).strip(), get(13), get(15))
        if get(12) != "00501":
            self.issues.append(
                make_issue(
                    "not_5010", f"ISA12 is {get(12)!r}, expected '00501'", number, "ISA", "ISA12"
                )
            )

    def _gs(self, els: list[str], number: int) -> None:
        if self.gs is not None:
            self._missing("GE", number, "GS")
        if self.isa is None:
            self.issues.append(make_issue("gs_outside_interchange", "GS before ISA", number, "GS"))
        else:
            self.isa.groups += 1
        get = _getter(els)
        self.gs = _Group(number, get(1), get(6), get(8))
        if not get(8).startswith("005010"):
            self.issues.append(
                make_issue(
                    "not_5010", f"GS08 is {get(8)!r}, expected 005010...", number, "GS", "GS08"
                )
            )

    def _ge(self, els: list[str], number: int) -> None:
        if self.tx is not None:
            self._close_truncated(number, "GE")
        gs = self.gs
        if gs is None:
            self.issues.append(make_issue("ge_without_gs", "GE without GS", number, "GE"))
            return
        get = _getter(els)
        if get(1) != str(gs.transactions):
            self.issues.append(
                make_issue(
                    "ge_count_mismatch",
                    f"GE01 is {get(1)!r} but the group has {gs.transactions} transaction(s)",
                    number,
                    "GE",
                    "GE01",
                )
            )
        if get(2) != gs.control:
            self.issues.append(
                make_issue(
                    "ge_control_mismatch",
                    f"GE02 {get(2)!r} does not match GS06 {gs.control!r}",
                    number,
                    "GE",
                    "GE02",
                )
            )
        self.gs = None

    def _iea(self, els: list[str], number: int) -> None:
        if self.gs is not None:
            self._missing("GE", number, "IEA")
        isa = self.isa
        if isa is None:
            self.issues.append(make_issue("iea_without_isa", "IEA without ISA", number, "IEA"))
            return
        get = _getter(els)
        if get(1) != str(isa.groups):
            self.issues.append(
                make_issue(
                    "iea_count_mismatch",
                    f"IEA01 is {get(1)!r} but the interchange has {isa.groups} group(s)",
                    number,
                    "IEA",
                    "IEA01",
                )
            )
        if get(2) != isa.control:
            self.issues.append(
                make_issue(
                    "iea_control_mismatch",
                    f"IEA02 {get(2)!r} does not match ISA13 {isa.control!r}",
                    number,
                    "IEA",
                    "IEA02",
                )
            )
        self.isa = None

    def _missing(self, trailer: str, number: int, seen: str) -> None:
        if trailer == "GE" and self.tx is not None:
            self._close_truncated(number, seen)
        if trailer == "GE":
            self.gs = None
        else:
            self.isa = None
        self.issues.append(
            make_issue(
                f"missing_{trailer.lower()}", f"{seen} before the expected {trailer}", number, seen
            )
        )

    # -- transactions -----------------------------------------------------------------------

    def _st(self, els: list[str], number: int, delims: Delimiters) -> None:
        if self.tx is not None:
            self._close_truncated(number, "ST")
        if self.gs is None:
            self.issues.append(
                make_issue("st_outside_group", "ST outside a GS..GE group", number, "ST")
            )
        else:
            self.gs.transactions += 1
        get = _getter(els)
        start = self.cut
        self.tx = _Open(self.base + start, number, delims, get(1), get(2), hashlib.sha256(), start)

    def _se(self, els: list[str], number: int, end: int) -> None:
        tx = self.tx
        if tx is None:
            self.issues.append(make_issue("se_without_st", "SE without ST", number, "SE"))
            return
        tx.hasher.update(self.buf[tx.hashed_to : end].encode("latin-1"))
        count = number - tx.number + 1
        get = _getter(els)
        if get(1) != str(count):
            tx.issues.append(
                make_issue(
                    "se_count_mismatch",
                    f"SE01 is {get(1)!r} but the transaction has {count} segments",
                    number,
                    "SE",
                    "SE01",
                    transaction=tx.control_number,
                )
            )
        if get(2) != tx.control_number:
            tx.issues.append(
                make_issue(
                    "se_control_mismatch",
                    f"SE02 {get(2)!r} does not match ST02 {tx.control_number!r}",
                    number,
                    "SE",
                    "SE02",
                    transaction=tx.control_number,
                )
            )
        self._emit(tx, self.base + end, count)

    def _close_truncated(self, number: int, seen: str) -> None:
        """Close the open transaction without SE; it stops where the current segment starts."""
        tx = self.tx
        if tx is None:
            return
        tx.hasher.update(self.buf[tx.hashed_to : self.cut].encode("latin-1"))
        tx.issues.append(
            make_issue(
                "truncated",
                f"transaction has no SE (found {seen or 'end of file'} first)",
                number,
                seen or None,
                "SE",
                transaction=tx.control_number,
            )
        )
        self._emit(tx, self.base + self.cut, number - tx.number)

    def _emit(self, tx: _Open, end: int, count: int) -> None:
        isa = self.isa or _Interchange(0, "", "", "", "")
        gs = self.gs or _Group(0, "", "", "")
        self.transactions.append(
            TransactionSlice(
                start=tx.start,
                end=max(end, tx.start),
                first_segment=tx.number,
                segment_count=count,
                delimiters=tx.delimiters,
                sender_id=isa.sender_id,
                receiver_id=isa.receiver_id,
                interchange_control=isa.control,
                usage=isa.usage,
                functional_id=gs.functional_id,
                group_control=gs.control,
                version=gs.version,
                transaction_set=tx.transaction_set,
                control_number=tx.control_number,
                issues=tuple(tx.issues),
                content_hash=tx.hasher.hexdigest(),
            )
        )
        self.tx = None

    # -- end of stream ----------------------------------------------------------------------

    def finish(self, end_offset: int) -> EnvelopeReport:
        last = self.last_segment + 1
        self._check_outside(last)
        self.buf, self.base, self.cut = "", end_offset, 0
        self._close_truncated(last, "")
        if self.gs is not None:
            self.issues.append(
                make_issue("truncated", "file ends before GE (truncated)", last, None, "GE")
            )
        if self.isa is not None:
            self.issues.append(
                make_issue("truncated", "file ends before IEA (truncated)", last, None, "IEA")
            )
        return EnvelopeReport(self.transactions, self.issues)


def _getter(els: list[str]) -> _Get:
    return _Get(els)


class _Get:
    __slots__ = ("els",)

    def __init__(self, els: list[str]) -> None:
        self.els = els

    def __call__(self, i: int) -> str:
        return self.els[i] if i < len(self.els) else ""


def scan(stream: BinaryIO, chunk_size: int = 1 << 20) -> EnvelopeReport:
    """Scan a whole X12 stream once; never raises on bad data (issues are reported)."""
    scanner = _Scanner()
    end_offset = 0
    try:
        for batch in iter_batches(stream, chunk_size):
            scanner.feed(batch)
            end_offset = batch[2] + batch[4].carry
    except X12Error as exc:
        scanner.issues.append(exc.issue)
    return scanner.finish(end_offset)
