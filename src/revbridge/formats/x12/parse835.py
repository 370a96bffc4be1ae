"""Parse one 5010 835 transaction (ST..SE) into :class:`Remittance835`.

Loop-aware: DTM/REF/AMT/CAS belong to the open SVC (2110) if there is one in
the current CLP (2100), else to the CLP.  Segments that are not modelled
(NM1, MIA, MOA, LQ, QTY, PER, ...) are skipped.  Structural problems raise
:class:`X12Error` naming the segment number, id, element and ST02.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date
from decimal import Decimal
from itertools import count, repeat

from revbridge.domain.money import InvalidAmount, parse_amount
from revbridge.formats.x12.issues import X12Error, fail
from revbridge.formats.x12.model835 import (
    EMPTY_PARTY,
    Adjustment,
    ClaimPayment,
    Party,
    ProviderAdjustment,
    Remittance835,
    ServiceLine,
    new_adjustment,
    new_claim_payment,
    new_provider_adjustment,
    new_service_line,
)
from revbridge.formats.x12.tokenizer import Delimiters, Segment, split_texts

CAS_GROUPS = frozenset({"CO", "PR", "OA", "PI", "CR"})
MAX_AMOUNT_DIGITS = 10
MAX_QUANTITY_DIGITS = 15
_CACHE_LIMIT = 1 << 16
# Validated text -> value caches (amounts and dates repeat a lot in real remittances).
_amounts: dict[str, Decimal] = {}
_quantities: dict[str, Decimal] = {}
_dates: dict[str, date] = {}

# Loop contexts.
_HEADER, _PAYER, _PAYEE, _CLAIM, _LINE, _FOOTER = range(6)


def _element(sid: str, index: int) -> str:
    return f"{sid}{index:02d}"


class _Line:
    """Mutable 2110 accumulator."""

    __slots__ = (
        "adjustments",
        "allowed",
        "charge",
        "control",
        "els",
        "number",
        "paid",
        "service_date",
        "units",
    )

    def __init__(
        self, els: list[str], number: int, charge: Decimal, paid: Decimal, units: Decimal | None
    ) -> None:
        self.els = els
        self.number = number
        self.charge = charge
        self.paid = paid
        self.units = units
        self.adjustments: list[Adjustment] = []
        self.control: str | None = None
        self.service_date: date | None = None
        self.allowed: Decimal | None = None


class _Claim:
    """Mutable 2100 accumulator."""

    __slots__ = (
        "adjustments",
        "charge",
        "date_from",
        "date_to",
        "els",
        "lines",
        "number",
        "original",
        "paid",
        "responsibility",
    )

    def __init__(
        self,
        els: list[str],
        number: int,
        charge: Decimal,
        paid: Decimal,
        responsibility: Decimal | None,
    ) -> None:
        self.els = els
        self.number = number
        self.charge = charge
        self.paid = paid
        self.responsibility = responsibility
        self.adjustments: list[Adjustment] = []
        self.lines: list[ServiceLine] = []
        self.original: str | None = None
        self.date_from: date | None = None
        self.date_to: date | None = None


class _Parser:
    def __init__(self, delimiters: Delimiters) -> None:
        self.component = delimiters.component
        self.control = ""
        self.number = 0  # number of the segment being parsed
        self.sid = ""
        self.context = _HEADER
        self.bpr: list[str] | None = None
        self.bpr_number = 0
        self.trn: list[str] | None = None
        self.production: date | None = None
        self.payer = EMPTY_PARTY
        self.payee = EMPTY_PARTY
        self.claim: _Claim | None = None
        self.line: _Line | None = None
        self.claims: list[ClaimPayment] = []
        self.plb: list[ProviderAdjustment] = []
        self.handlers: dict[str, Callable[[list[str]], None]] = {
            "CAS": self._cas,
            "SVC": self._svc,
            "DTM": self._dtm,
            "REF": self._ref,
            "AMT": self._amt,
            "CLP": self._clp,
            "LX": self._lx,
            "PLB": self._plb,
            "N1": self._n1,
            "BPR": self._bpr,
            "TRN": self._trn,
            "SE": self._se,
        }

    # -- errors and values ------------------------------------------------------------------

    def error(self, code: str, what: str, index: int | None = None) -> X12Error:
        element = _element(self.sid, index) if index is not None else None
        return fail(code, what, self.number, self.sid, element, transaction=self.control or None)

    def amount(self, els: list[str], index: int) -> Decimal:
        """Required amount element (HIPAA: at most 10 digits)."""
        text = els[index] if index < len(els) else ""
        value = _amounts.get(text)
        if value is None:
            value = self._new_decimal(text, index, MAX_AMOUNT_DIGITS)
            if len(_amounts) < _CACHE_LIMIT:
                _amounts[text] = value
        return value

    def optional_amount(self, els: list[str], index: int) -> Decimal | None:
        if index >= len(els) or not els[index]:
            return None
        return self.amount(els, index)

    def optional_decimal(self, els: list[str], index: int) -> Decimal | None:
        """A quantity (R, up to 15 digits), or None when absent."""
        text = els[index] if index < len(els) else ""
        if not text:
            return None
        value = _quantities.get(text)
        if value is None:
            value = self._new_decimal(text, index, MAX_QUANTITY_DIGITS)
            if len(_quantities) < _CACHE_LIMIT:
                _quantities[text] = value
        return value

    def _new_decimal(self, text: str, index: int, max_digits: int) -> Decimal:
        """Validate an X12 ``R`` value (optional minus, digits, one optional point)."""
        if not text:
            raise self.error("missing_amount", "required amount is missing", index)
        digits = text.replace(".", "", 1)
        if digits[:1] == "-":
            digits = digits[1:]
        if not (digits.isdecimal() and digits.isascii()):
            raise self.error("bad_amount", f"not an X12 decimal: {text!r}", index)
        if len(digits) > max_digits:
            raise self.error("bad_amount", f"{text!r} has more than {max_digits} digits", index)
        try:
            return parse_amount(text)
        except InvalidAmount as exc:  # pragma: no cover - the checks above reject these
            raise self.error("bad_amount", str(exc), index) from exc

    def date(self, els: list[str], index: int) -> date | None:
        text = els[index] if index < len(els) else ""
        if not text:
            return None
        value = _dates.get(text)
        if value is not None:
            return value
        try:
            if len(text) != 8 or not text.isdigit():
                raise ValueError(text)
            value = date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError as exc:
            raise self.error("bad_date", f"not a CCYYMMDD date: {text!r}", index) from exc
        if len(_dates) < _CACHE_LIMIT:
            _dates[text] = value
        return value

    # -- driver -----------------------------------------------------------------------------

    def run(self, rows: Iterator[tuple[int, list[str]]]) -> Remittance835:
        """Parse ``(segment number, elements)`` rows lazily (only one row split at a time)."""
        head = next(rows, None)
        if head is None or head[1][0] != "ST":
            self.number, self.sid = (head[0], head[1][0]) if head else (0, "")
            raise self.error("no_st", "an 835 transaction must start with ST")
        first = head[0]
        self._st(head[1], first)
        handlers = self.handlers
        size = 1
        for number, els in rows:
            size += 1
            handler = handlers.get(els[0])
            if handler is not None:
                self.number = number
                self.sid = els[0]
                handler(els)
        self._close_claim()
        return self._build(first, size)

    def _st(self, els: list[str], number: int) -> None:
        self.number, self.sid = number, "ST"
        self.control = els[2] if len(els) > 2 else ""
        if els[1:2] != ["835"]:
            raise self.error("not_835", f"ST01 is {els[1:2]!r}, expected '835'", 1)

    # -- header -----------------------------------------------------------------------------

    def _bpr(self, els: list[str]) -> None:
        self.amount(els, 2)
        self.date(els, 16)
        if len(els) < 5:
            raise self.error("bpr_too_short", "BPR needs at least BPR01..BPR04", len(els))
        self.bpr, self.bpr_number = els, self.number

    def _trn(self, els: list[str]) -> None:
        if len(els) < 3:
            raise self.error("trn_too_short", "TRN needs TRN01 and TRN02", len(els))
        self.trn = els

    def _n1(self, els: list[str]) -> None:
        self._close_claim()
        code = els[1] if len(els) > 1 else ""
        party = Party(*(els[i] if i < len(els) else "" for i in (2, 3, 4)))
        if code == "PR":
            self.payer, self.context = party, _PAYER
        elif code == "PE":
            self.payee, self.context = party, _PAYEE
        else:
            self.context = _HEADER

    def _ref(self, els: list[str]) -> None:
        qualifier = els[1] if len(els) > 1 else ""
        value = els[2] if len(els) > 2 else ""
        context = self.context
        if context == _LINE:
            if qualifier == "6R" and self.line is not None:
                self.line.control = value
        elif context == _CLAIM:
            if qualifier == "F8" and self.claim is not None:
                self.claim.original = value
        elif qualifier == "TJ" and context in (_PAYER, _PAYEE):
            self._set_tin(value)

    def _set_tin(self, value: str) -> None:
        if self.context == _PAYER:
            p = self.payer
            self.payer = Party(p.name, p.id_qualifier, p.id, value)
        else:
            p = self.payee
            self.payee = Party(p.name, p.id_qualifier, p.id, value)

    def _dtm(self, els: list[str]) -> None:
        qualifier = els[1] if len(els) > 1 else ""
        context = self.context
        if context == _LINE:
            line = self.line
            if line is not None and (
                qualifier == "472" or (qualifier == "150" and not line.service_date)
            ):
                line.service_date = self.date(els, 2)
        elif context == _CLAIM:
            claim = self.claim
            if claim is not None:
                if qualifier == "232":
                    claim.date_from = self.date(els, 2)
                elif qualifier == "233":
                    claim.date_to = self.date(els, 2)
        elif qualifier == "405" and context == _HEADER:
            self.production = self.date(els, 2)

    def _amt(self, els: list[str]) -> None:
        if self.context == _LINE and self.line is not None and els[1:2] == ["B6"]:
            self.line.allowed = self.amount(els, 2)

    # -- claims -----------------------------------------------------------------------------

    def _lx(self, els: list[str]) -> None:
        self._close_claim()
        self.context = _HEADER

    def _clp(self, els: list[str]) -> None:
        self._close_claim()
        if len(els) < 7:
            raise self.error(
                "clp_too_short", f"CLP has {len(els) - 1} elements, needs CLP01..CLP06", len(els)
            )
        self.claim = _Claim(
            els,
            self.number,
            self.amount(els, 3),
            self.amount(els, 4),
            self.optional_amount(els, 5),
        )
        self.context = _CLAIM

    def _svc(self, els: list[str]) -> None:
        claim = self.claim
        if claim is None:
            raise self.error("svc_outside_claim", "SVC before any CLP")
        self._close_line()
        if len(els) < 4:
            raise self.error("svc_too_short", "SVC needs SVC01..SVC03", len(els))
        self.line = _Line(
            els,
            self.number,
            self.amount(els, 2),
            self.amount(els, 3),
            self.optional_decimal(els, 5),
        )
        self.context = _LINE

    def _cas(self, els: list[str]) -> None:
        context = self.context
        if context == _LINE and self.line is not None:
            target = self.line.adjustments
        elif context in (_CLAIM, _LINE) and self.claim is not None:
            target = self.claim.adjustments
        else:
            raise self.error("cas_outside_claim", "CAS outside a claim (CLP) loop")
        group = els[1] if len(els) > 1 else ""
        if group not in CAS_GROUPS:
            raise self.error("bad_cas_group", f"unknown CAS group code {group!r}", 1)
        number = self.number
        size = len(els)
        for k in range(2, size, 3):
            reason = els[k]
            if not reason and (k + 1 >= size or not els[k + 1]):
                continue
            if not reason:
                raise self.error("bad_cas", "CAS amount without a reason code", k)
            quantity = self.optional_decimal(els, k + 2) if k + 2 < size else None
            target.append(new_adjustment(group, reason, self.amount(els, k + 1), quantity, number))

    def _close_line(self) -> None:
        line = self.line
        if line is None:
            return
        self.line = None
        els = line.els
        claim = self.claim
        assert claim is not None
        procedure = els[1]
        if self.component != ":":
            procedure = procedure.replace(self.component, ":")
        claim.lines.append(
            new_service_line(
                procedure,
                line.charge,
                line.paid,
                (els[4] or None) if len(els) > 4 else None,
                line.units,
                line.control,
                line.service_date,
                line.allowed,
                tuple(line.adjustments),
                line.number,
            )
        )

    def _close_claim(self) -> None:
        self._close_line()
        claim = self.claim
        if claim is None:
            return
        self.claim = None
        els = claim.els
        size = len(els)
        self.claims.append(
            new_claim_payment(
                els[1],
                els[2],
                claim.charge,
                claim.paid,
                claim.responsibility,
                els[6],
                els[7] if size > 7 else "",
                els[8] if size > 8 else "",
                els[9] if size > 9 else "",
                claim.original,
                claim.date_from,
                claim.date_to,
                tuple(claim.adjustments),
                tuple(claim.lines),
                claim.number,
            )
        )

    # -- footer -----------------------------------------------------------------------------

    def _plb(self, els: list[str]) -> None:
        self._close_claim()
        self.context = _FOOTER
        provider = els[1] if len(els) > 1 else ""
        period = self.date(els, 2)
        size = len(els)
        for k in range(3, size, 2):
            composite = els[k]
            if not composite and (k + 1 >= size or not els[k + 1]):
                continue
            if not composite:
                raise self.error("bad_plb", "PLB amount without a reason code", k)
            reason, _, reference = composite.partition(self.component)
            amount = self.amount(els, k + 1)
            self.plb.append(
                new_provider_adjustment(
                    provider, period, reason, reference or None, amount, self.number
                )
            )

    def _se(self, els: list[str]) -> None:
        self._close_claim()
        self.context = _FOOTER

    # -- result -----------------------------------------------------------------------------

    def _build(self, first: int, count: int) -> Remittance835:
        bpr, trn = self.bpr, self.trn
        if bpr is None or trn is None:
            self.number, self.sid = first, "ST"
            missing = "BPR" if bpr is None else "TRN"
            raise fail(
                f"missing_{missing.lower()}",
                f"transaction has no {missing} segment",
                first,
                "ST",
                missing,
                transaction=self.control or None,
            )

        def b(i: int) -> str:
            return bpr[i] if i < len(bpr) else ""

        def t(i: int) -> str:
            return trn[i] if i < len(trn) else ""

        self.number, self.sid = self.bpr_number, "BPR"
        return Remittance835(
            control_number=self.control,
            handling=b(1),
            total_paid=self.amount(bpr, 2),
            credit_debit=b(3),
            method=b(4),
            payment_format=b(5),
            payer_identifier=b(10),
            receiver_account=b(15),
            effective_date=self.date(bpr, 16),
            trace_type=t(1),
            trace_number=t(2),
            trace_payer=t(3),
            trace_supplemental=t(4),
            production_date=self.production,
            payer=self.payer,
            payee=self.payee,
            claims=tuple(self.claims),
            provider_adjustments=tuple(self.plb),
            first_segment=first,
            segment_count=count,
            sender_dfi_qualifier=b(6),
            sender_dfi_id=b(7),
            sender_account_qualifier=b(8),
            sender_account=b(9),
            payer_supplemental=b(11),
            receiver_dfi_qualifier=b(12),
            receiver_dfi_id=b(13),
            receiver_account_qualifier=b(14),
        )


def parse_835(segments: Iterable[Segment], delimiters: Delimiters) -> Remittance835:
    """Parse the segments of ONE 835 transaction (ST..SE)."""
    return _Parser(delimiters).run((s.number, s.elements) for s in segments)


def parse_835_bytes(data: bytes, delimiters: Delimiters, first_segment: int = 1) -> Remittance835:
    """Parse the bytes of ONE 835 transaction (ST..SE); segments numbered from ``first_segment``."""
    texts = split_texts(data, delimiters)
    rows = zip(count(first_segment), map(str.split, texts, repeat(delimiters.element)))
    return _Parser(delimiters).run(rows)
