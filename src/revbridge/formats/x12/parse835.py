"""Parse one 5010 835 transaction (ST..SE) into :class:`Remittance835`.

Loop-aware: DTM/REF/AMT/CAS belong to the open SVC (2110) if there is one in
the current CLP (2100), else to the CLP.  Segments that are not modelled
(NM1, MIA, MOA, LQ, QTY, PER, ...) are skipped.  Structural problems raise
:class:`X12Error` naming the segment number, id, element and ST02.

Performance notes (this is the hot path of remittance intake, see
``bench/bench_x12_parse.py``):

* one fused loop (:meth:`_Parser.run`) over ``(segment number, elements)`` rows
  dispatches the frequent segments (CAS, DTM, REF, SVC, AMT, CLP) with an
  ``if`` chain ordered by frequency; the rare ones go through a handler table;
* the open claim and service line live in local variables of that loop, so the
  loop context follows from them: a line is open <=> we are in 2110, a claim
  without a line <=> 2100 (``self.context`` only tells header/payer/payee/footer);
* value helpers are plain functions that raise :class:`_BadValue` (element index,
  code, text); the loop turns it into an :class:`X12Error` naming the segment it
  is on, so no per-segment bookkeeping is needed for error messages;
* amounts, quantities and dates are validated once per distinct text and cached.

:func:`parse_835_bytes` first tries the C fast path (``_fast835.c``, built by
``pip install``), which tokenizes and builds the same model objects; it declines
whatever this parser would reject, so this parser stays the reference and the
only source of error messages (``tests/formats/test_x12_parse835_fast.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded
from itertools import count, repeat
from typing import NamedTuple

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

try:
    from revbridge.formats.x12 import _fast835
except ImportError:  # installed without the C extension: pure Python only
    FAST = False
else:
    FAST = True
    # Context.create_decimal is ~40% cheaper than Decimal(text).  The fast path only converts
    # values of at most MAX_QUANTITY_DIGITS digits, so with that precision the result is
    # Decimal(text) exactly; the traps make any rounding an error rather than a wrong value.
    # It builds those Decimals directly when their layout matches the ones this makes (checked
    # by configure, see "direct Decimals" in _fast835.c) and calls this otherwise.
    _EXACT = Context(prec=MAX_QUANTITY_DIGITS, traps=[InvalidOperation, Inexact, Rounded])
    _fast835.configure(
        _EXACT.create_decimal, Adjustment, ServiceLine, ClaimPayment, ProviderAdjustment
    )

_CACHE_LIMIT = 1 << 16
# Validated text -> value caches (amounts and dates repeat a lot in real remittances).
_amounts: dict[str, Decimal] = {}
_quantities: dict[str, Decimal] = {}
_dates: dict[str, date] = {}

# Header loop contexts (2100/2110 follow from the open claim/line, see module notes).
_HEADER, _PAYER, _PAYEE, _FOOTER = range(4)
# Rare segments that end the open claim (2100) before their handler runs.
_CLOSES_CLAIM = frozenset({"LX", "N1", "PLB", "SE"})


def _element(sid: str, index: int) -> str:
    return f"{sid}{index:02d}"


# -- values -------------------------------------------------------------------------------


class _BadValue(Exception):
    """A bad element in the segment being parsed; :meth:`_Parser.run` adds the segment."""

    def __init__(self, code: str, what: str, index: int | None = None) -> None:
        super().__init__(what)
        self.code = code
        self.what = what
        self.index = index


def _new_decimal(text: str, index: int, max_digits: int) -> Decimal:
    """Validate an X12 ``R`` value (optional minus, digits, one optional point)."""
    if not text:
        raise _BadValue("missing_amount", "required amount is missing", index)
    digits = text.replace(".", "", 1).removeprefix("-")
    if not (digits.isdecimal() and digits.isascii()):
        raise _BadValue("bad_amount", f"not an X12 decimal: {text!r}", index)
    if len(digits) > max_digits:
        raise _BadValue("bad_amount", f"{text!r} has more than {max_digits} digits", index)
    try:
        return Decimal(text)  # only digits, "-" and "." are left: always finite
    except InvalidOperation as exc:  # e.g. ".-5": right characters, wrong order
        raise _BadValue("bad_amount", f"not a decimal amount: {text!r}", index) from exc


def _new_amount(text: str, index: int) -> Decimal:
    """Cache miss for an amount (HIPAA: at most 10 digits); callers try ``_amounts`` first."""
    value = _new_decimal(text, index, MAX_AMOUNT_DIGITS)
    if len(_amounts) < _CACHE_LIMIT:
        _amounts[text] = value
    return value


def _amount(els: list[str], index: int) -> Decimal:
    """Required amount element."""
    text = els[index] if index < len(els) else ""
    value = _amounts.get(text)
    return _new_amount(text, index) if value is None else value


def _optional_amount(els: list[str], index: int) -> Decimal | None:
    if index >= len(els) or not els[index]:
        return None
    return _amount(els, index)


def _quantity(text: str, index: int) -> Decimal:
    """A non-empty quantity (R, up to 15 digits)."""
    value = _quantities.get(text)
    if value is None:
        value = _new_decimal(text, index, MAX_QUANTITY_DIGITS)
        if len(_quantities) < _CACHE_LIMIT:
            _quantities[text] = value
    return value


def _date(els: list[str], index: int) -> date | None:
    """A CCYYMMDD element, or None when absent."""
    text = els[index] if index < len(els) else ""
    if not text:
        return None
    value = _dates.get(text)
    if value is not None:
        return value
    try:
        if len(text) != 8 or not (text.isdecimal() and text.isascii()):
            raise ValueError(text)
        value = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as exc:
        raise _BadValue("bad_date", f"not a CCYYMMDD date: {text!r}", index) from exc
    if len(_dates) < _CACHE_LIMIT:
        _dates[text] = value
    return value


def _cas(els: list[str], number: int, out: list[Adjustment]) -> None:
    """Append the adjustments of one CAS (up to six reason/amount/quantity triplets)."""
    size = len(els)
    group = els[1] if size > 1 else ""
    if group not in CAS_GROUPS:
        raise _BadValue("bad_cas_group", f"unknown CAS group code {group!r}", 1)
    amounts = _amounts
    for k in range(2, size, 3):
        reason = els[k]
        text = els[k + 1] if k + 1 < size else ""
        if not reason:
            if not text:
                continue  # empty triplet
            raise _BadValue("bad_cas", "CAS amount without a reason code", k)
        quantity = _quantity(els[k + 2], k + 2) if k + 2 < size and els[k + 2] else None
        amount = amounts.get(text)
        if amount is None:
            amount = _new_amount(text, k + 1)
        out.append(new_adjustment(group, reason, amount, quantity, number))


# -- loop accumulators --------------------------------------------------------------------


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


def _service_line(line: _Line, component: str) -> ServiceLine:
    els = line.els
    procedure = els[1]
    if component != ":":
        procedure = procedure.replace(component, ":")
    return new_service_line(
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


def _claim_payment(claim: _Claim) -> ClaimPayment:
    els = claim.els
    size = len(els)
    return new_claim_payment(
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


def _svc(
    els: list[str], number: int, claim: _Claim | None, line: _Line | None, component: str
) -> _Line:
    """Open a 2110 (closing the previous one)."""
    if claim is None:
        raise _BadValue("svc_outside_claim", "SVC before any CLP")
    if line is not None:
        claim.lines.append(_service_line(line, component))
    if len(els) < 4:
        raise _BadValue("svc_too_short", "SVC needs SVC01..SVC03", len(els))
    charge = _amounts.get(els[2])
    if charge is None:
        charge = _new_amount(els[2], 2)
    paid = _amounts.get(els[3])
    if paid is None:
        paid = _new_amount(els[3], 3)
    units = _quantity(els[5], 5) if len(els) > 5 and els[5] else None
    return _Line(els, number, charge, paid, units)


def _dtm(els: list[str], line: _Line | None, claim: _Claim | None) -> None:
    """DTM inside a claim: 472/150 service date of the line, else 232/233 of the claim."""
    qualifier = els[1] if len(els) > 1 else ""
    if line is not None:
        if qualifier == "472" or (qualifier == "150" and not line.service_date):
            line.service_date = _date(els, 2)
    elif claim is not None:
        if qualifier == "232":
            claim.date_from = _date(els, 2)
        elif qualifier == "233":
            claim.date_to = _date(els, 2)


def _ref(els: list[str], line: _Line | None, claim: _Claim | None) -> None:
    """REF inside a claim: 6R control number of the line, else F8 original claim number."""
    qualifier = els[1] if len(els) > 1 else ""
    if line is not None:
        if qualifier == "6R":
            line.control = els[2] if len(els) > 2 else ""
    elif claim is not None and qualifier == "F8":
        claim.original = els[2] if len(els) > 2 else ""


def _clp(els: list[str], number: int) -> _Claim:
    if len(els) < 7:
        raise _BadValue(
            "clp_too_short", f"CLP has {len(els) - 1} elements, needs CLP01..CLP06", len(els)
        )
    charge = _amounts.get(els[3])
    if charge is None:
        charge = _new_amount(els[3], 3)
    paid = _amounts.get(els[4])
    if paid is None:
        paid = _new_amount(els[4], 4)
    return _Claim(els, number, charge, paid, _optional_amount(els, 5))


# -- parser -------------------------------------------------------------------------------


class _Parser:
    def __init__(self, delimiters: Delimiters) -> None:
        self.component = delimiters.component
        self.control = ""
        self.number = 0  # number of the (rare) segment being handled
        self.sid = ""
        self.context = _HEADER  # meaningful only while no claim is open
        self.bpr: list[str] | None = None
        self.total_paid = Decimal(0)
        self.effective_date: date | None = None
        self.trn: list[str] | None = None
        self.production: date | None = None
        self.payer = EMPTY_PARTY
        self.payee = EMPTY_PARTY
        self.claims: list[ClaimPayment] = []
        self.plb: list[ProviderAdjustment] = []

    def error(self, code: str, what: str, index: int | None = None) -> X12Error:
        element = _element(self.sid, index) if index is not None else None
        return fail(code, what, self.number, self.sid, element, transaction=self.control or None)

    # -- driver -----------------------------------------------------------------------------

    def run(self, rows: Iterator[tuple[int, list[str]]], size: int) -> Remittance835:
        """Parse ``size`` rows of ``(segment number, elements)``, the first being ST."""
        head = next(rows, None)
        if head is None or head[1][0] != "ST":
            self.number, self.sid = (head[0], head[1][0]) if head else (0, "")
            raise self.error("no_st", "an 835 transaction must start with ST")
        first, els = head
        self._st(els, first)
        self._loop(rows)
        return self._build(first, size)

    def _loop(self, rows: Iterator[tuple[int, list[str]]]) -> None:
        """The fused segment loop (see the module notes)."""
        component = self.component
        handlers = _RARE_HANDLERS
        claim: _Claim | None = None  # open 2100
        line: _Line | None = None  # open 2110 (only while a claim is open)
        number, sid = 0, ""
        try:
            for number, els in rows:
                sid = els[0]
                if sid == "CAS":
                    if line is not None:
                        _cas(els, number, line.adjustments)
                    elif claim is not None:
                        _cas(els, number, claim.adjustments)
                    else:
                        raise _BadValue("cas_outside_claim", "CAS outside a claim (CLP) loop")
                elif sid == "DTM":
                    if line is not None or claim is not None:
                        _dtm(els, line, claim)
                    elif els[1:2] == ["405"] and self.context == _HEADER:
                        self.production = _date(els, 2)
                elif sid == "REF":
                    if line is not None or claim is not None:
                        _ref(els, line, claim)
                    elif els[1:2] == ["TJ"] and self.context in (_PAYER, _PAYEE):
                        self._set_tin(els[2] if len(els) > 2 else "")
                elif sid == "SVC":
                    line = _svc(els, number, claim, line, component)
                elif sid == "AMT":
                    if line is not None and els[1:2] == ["B6"]:
                        line.allowed = _amount(els, 2)
                elif sid == "CLP":
                    if claim is not None:
                        self._close(claim, line)
                        line = None
                    claim = _clp(els, number)
                else:
                    handler = handlers.get(sid)
                    if handler is None:
                        continue  # not modelled
                    if claim is not None and sid in _CLOSES_CLAIM:
                        self._close(claim, line)
                        claim = line = None
                    self.number, self.sid = number, sid
                    handler(self, els)
        except _BadValue as bad:
            # The value helpers do not know where they are: name the segment here.
            self.number, self.sid = number, sid
            raise self.error(bad.code, bad.what, bad.index) from bad.__cause__
        if claim is not None:  # no SE: close what is still open
            self._close(claim, line)

    def _close(self, claim: _Claim, line: _Line | None) -> None:
        """End the open claim (and its open service line, if any)."""
        if line is not None:
            claim.lines.append(_service_line(line, self.component))
        self.claims.append(_claim_payment(claim))

    def _st(self, els: list[str], number: int) -> None:
        self.number, self.sid = number, "ST"
        self.control = els[2] if len(els) > 2 else ""
        if els[1:2] != ["835"]:
            raise self.error("not_835", f"ST01 is {els[1:2]!r}, expected '835'", 1)

    # -- rare segments (self.number / self.sid name the segment) ----------------------------

    def _bpr(self, els: list[str]) -> None:
        self.total_paid = _amount(els, 2)
        self.effective_date = _date(els, 16)
        if len(els) < 5:
            raise self.error("bpr_too_short", "BPR needs at least BPR01..BPR04", len(els))
        self.bpr = els

    def _trn(self, els: list[str]) -> None:
        if len(els) < 3:
            raise self.error("trn_too_short", "TRN needs TRN01 and TRN02", len(els))
        self.trn = els

    def _n1(self, els: list[str]) -> None:
        code = els[1] if len(els) > 1 else ""
        party = Party(*(els[i] if i < len(els) else "" for i in (2, 3, 4)))
        if code == "PR":
            self.payer, self.context = party, _PAYER
        elif code == "PE":
            self.payee, self.context = party, _PAYEE
        else:
            self.context = _HEADER

    def _set_tin(self, value: str) -> None:
        if self.context == _PAYER:
            p = self.payer
            self.payer = Party(p.name, p.id_qualifier, p.id, value)
        else:
            p = self.payee
            self.payee = Party(p.name, p.id_qualifier, p.id, value)

    def _lx(self, els: list[str]) -> None:
        self.context = _HEADER

    def _plb(self, els: list[str]) -> None:
        self.context = _FOOTER
        provider = els[1] if len(els) > 1 else ""
        period = _date(els, 2)
        size = len(els)
        for k in range(3, size, 2):
            composite = els[k]
            if not composite and (k + 1 >= size or not els[k + 1]):
                continue
            if not composite:
                raise self.error("bad_plb", "PLB amount without a reason code", k)
            reason, _, reference = composite.partition(self.component)
            amount = _amount(els, k + 1)
            self.plb.append(
                new_provider_adjustment(
                    provider, period, reason, reference or None, amount, self.number
                )
            )

    def _se(self, els: list[str]) -> None:
        self.context = _FOOTER

    # -- result -----------------------------------------------------------------------------

    def _build(self, first: int, count: int) -> Remittance835:
        bpr, trn = self.bpr, self.trn
        if bpr is None or trn is None:
            missing = "BPR" if bpr is None else "TRN"
            raise fail(
                f"missing_{missing.lower()}",
                f"transaction has no {missing} segment",
                first,
                "ST",
                missing,
                transaction=self.control or None,
            )
        header = _Header(
            self.control,
            bpr,
            trn,
            self.total_paid,
            self.effective_date,
            self.production,
            self.payer,
            self.payee,
        )
        return _remittance(header, tuple(self.claims), tuple(self.plb), first, count)


class _Header(NamedTuple):
    """What a transaction's ST/BPR/TRN/DTM*405/N1 say (both parsers fill it)."""

    control: str
    bpr: list[str]
    trn: list[str]
    total_paid: Decimal
    effective_date: date | None
    production: date | None
    payer: Party
    payee: Party


def _remittance(
    h: _Header,
    claims: tuple[ClaimPayment, ...],
    plb: tuple[ProviderAdjustment, ...],
    first: int,
    count: int,
) -> Remittance835:
    bpr, trn = h.bpr, h.trn

    def b(i: int) -> str:
        return bpr[i] if i < len(bpr) else ""

    def t(i: int) -> str:
        return trn[i] if i < len(trn) else ""

    return Remittance835(
        control_number=h.control,
        handling=b(1),
        total_paid=h.total_paid,
        credit_debit=b(3),
        method=b(4),
        payment_format=b(5),
        payer_identifier=b(10),
        receiver_account=b(15),
        effective_date=h.effective_date,
        trace_type=t(1),
        trace_number=t(2),
        trace_payer=t(3),
        trace_supplemental=t(4),
        production_date=h.production,
        payer=h.payer,
        payee=h.payee,
        claims=claims,
        provider_adjustments=plb,
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


# Segments the fused loop does not handle inline (a few per transaction).  Plain functions,
# not bound methods kept on the parser: those would make every parser a reference cycle
# that keeps its whole model alive until the cyclic GC runs (measured: ~20% of parse time).
_RARE_HANDLERS: dict[str, Callable[[_Parser, list[str]], None]] = {
    "LX": _Parser._lx,
    "PLB": _Parser._plb,
    "N1": _Parser._n1,
    "BPR": _Parser._bpr,
    "TRN": _Parser._trn,
    "SE": _Parser._se,
}


def parse_835(segments: Iterable[Segment], delimiters: Delimiters) -> Remittance835:
    """Parse the segments of ONE 835 transaction (ST..SE)."""
    rows = [(s.number, s.elements) for s in segments]
    return _Parser(delimiters).run(iter(rows), len(rows))


def parse_835_bytes(data: bytes, delimiters: Delimiters, first_segment: int = 1) -> Remittance835:
    """Parse the bytes of ONE 835 transaction (ST..SE); segments numbered from ``first_segment``.

    Uses the C fast path when it is built; it declines (None) whatever the reference parser
    would reject, and the reference then raises the exact error.
    """
    if FAST:
        found = _fast835.parse(
            data, delimiters.element, delimiters.component, delimiters.segment, first_segment
        )
        if found is not None:
            control, bpr, trn, paid, effective, production, payer, payee, claims, plb, size = found
            header = _Header(
                control, bpr, trn, paid, effective, production, Party(*payer), Party(*payee)
            )
            return _remittance(header, claims, plb, first_segment, size)
    return parse_835_bytes_reference(data, delimiters, first_segment)


def parse_835_bytes_reference(
    data: bytes, delimiters: Delimiters, first_segment: int = 1
) -> Remittance835:
    """The pure-Python parser of :func:`parse_835_bytes` (the fast path's reference)."""
    texts = split_texts(data, delimiters)
    rows = zip(count(first_segment), map(str.split, texts, repeat(delimiters.element)))
    return _Parser(delimiters).run(rows, len(texts))
