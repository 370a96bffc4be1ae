"""Render :class:`Remittance835` models as a 5010 835 interchange (ISA/GS/ST..SE/GE/IEA)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from itertools import groupby

from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    Party,
    ProviderAdjustment,
    Remittance835,
    ServiceLine,
)
from revbridge.formats.x12.tokenizer import DEFAULT_DELIMITERS, Delimiters

VERSION_835 = "005010X221A1"
MAX_TRIPLETS = 6
MAX_PAIRS = 6


def _amount(value: Decimal) -> str:
    return format(value, "f")


def _opt_amount(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def _date(value: date | None) -> str:
    return "" if value is None else value.strftime("%Y%m%d")


class _Segments:
    """Collects the segments of one transaction, checking values for delimiters."""

    def __init__(self, delimiters: Delimiters) -> None:
        self.d = delimiters
        self.reserved = set(delimiters.encode())
        self.items: list[str] = []

    def text(self, value: str) -> str:
        if self.reserved.intersection(value):
            raise ValueError(f"value {value!r} contains an X12 delimiter")
        return value

    def add(self, *elements: str) -> None:
        values = list(elements)
        while values and not values[-1]:
            values.pop()
        self.items.append(self.d.element.join(values))

    def composite(self, *parts: str) -> str:
        values = [self.text(p) for p in parts]
        while values and not values[-1]:
            values.pop()
        return self.d.component.join(values)


def _render_header(s: _Segments, r: Remittance835) -> None:
    t = s.text
    s.add("ST", "835", t(r.control_number))
    s.add(
        "BPR",
        t(r.handling),
        _amount(r.total_paid),
        t(r.credit_debit),
        t(r.method),
        t(r.payment_format),
        t(r.sender_dfi_qualifier),
        t(r.sender_dfi_id),
        t(r.sender_account_qualifier),
        t(r.sender_account),
        t(r.payer_identifier),
        t(r.payer_supplemental),
        t(r.receiver_dfi_qualifier),
        t(r.receiver_dfi_id),
        t(r.receiver_account_qualifier),
        t(r.receiver_account),
        _date(r.effective_date),
    )
    s.add("TRN", t(r.trace_type), t(r.trace_number), t(r.trace_payer), t(r.trace_supplemental))
    if r.production_date is not None:
        s.add("DTM", "405", _date(r.production_date))
    _render_party(s, "PR", r.payer)
    _render_party(s, "PE", r.payee)


def _render_party(s: _Segments, code: str, p: Party) -> None:
    s.add("N1", code, s.text(p.name), s.text(p.id_qualifier), s.text(p.id))
    if p.tin is not None:
        s.add("REF", "TJ", s.text(p.tin))


def _render_adjustments(s: _Segments, adjustments: Sequence[Adjustment]) -> None:
    """Consecutive adjustments of one group share a CAS (at most six triplets each)."""
    for group, run in groupby(adjustments, key=lambda a: a.group):
        items = list(run)
        for i in range(0, len(items), MAX_TRIPLETS):
            elements = ["CAS", s.text(group)]
            for a in items[i : i + MAX_TRIPLETS]:
                elements += [s.text(a.reason), _amount(a.amount), _opt_amount(a.quantity)]
            s.add(*elements)


def _render_line(s: _Segments, line: ServiceLine) -> None:
    procedure = s.composite(*line.procedure.split(":"))
    s.add(
        "SVC",
        procedure,
        _amount(line.charge),
        _amount(line.paid),
        s.text(line.revenue_code or ""),
        _opt_amount(line.units),
    )
    if line.service_date is not None:
        s.add("DTM", "472", _date(line.service_date))
    _render_adjustments(s, line.adjustments)
    if line.control_number is not None:
        s.add("REF", "6R", s.text(line.control_number))
    if line.allowed is not None:
        s.add("AMT", "B6", _amount(line.allowed))


def _render_claim(s: _Segments, c: ClaimPayment) -> None:
    t = s.text
    s.add(
        "CLP",
        t(c.patient_control_number),
        t(c.status),
        _amount(c.charge),
        _amount(c.paid),
        _opt_amount(c.patient_responsibility),
        t(c.filing_indicator),
        t(c.payer_claim_number),
        t(c.facility_type),
        t(c.frequency),
    )
    _render_adjustments(s, c.adjustments)
    if c.original_payer_claim_number is not None:
        s.add("REF", "F8", t(c.original_payer_claim_number))
    if c.statement_from is not None:
        s.add("DTM", "232", _date(c.statement_from))
    if c.statement_to is not None:
        s.add("DTM", "233", _date(c.statement_to))
    for line in c.lines:
        _render_line(s, line)


def _render_plb(s: _Segments, items: Sequence[ProviderAdjustment]) -> None:
    """Consecutive pairs of one provider/period share a PLB (at most six pairs each)."""
    for (provider, period), run in groupby(
        items, key=lambda p: (p.provider_id, p.fiscal_period_end)
    ):
        pairs = list(run)
        for i in range(0, len(pairs), MAX_PAIRS):
            elements = ["PLB", s.text(provider), _date(period)]
            for p in pairs[i : i + MAX_PAIRS]:
                elements += [s.composite(p.reason, p.reference or ""), _amount(p.amount)]
            s.add(*elements)


def render_transaction(r: Remittance835, delimiters: Delimiters = DEFAULT_DELIMITERS) -> list[str]:
    """The segments (without terminators) of one ST..SE."""
    s = _Segments(delimiters)
    _render_header(s, r)
    if r.claims:
        s.add("LX", "1")
    for claim in r.claims:
        _render_claim(s, claim)
    _render_plb(s, r.provider_adjustments)
    s.add("SE", str(len(s.items) + 1), r.control_number)
    return s.items


def render_isa(
    *,
    sender_id: str,
    receiver_id: str,
    interchange_control: int,
    when: datetime,
    usage: str,
    delimiters: Delimiters,
) -> str:
    """The fixed-width ISA (106 characters including its terminator)."""
    e = delimiters.element
    fields = [
        "ISA",
        "00",
        " " * 10,
        "00",
        " " * 10,
        "ZZ",
        f"{sender_id:<15}"[:15],
        "ZZ",
        f"{receiver_id:<15}"[:15],
        when.strftime("%y%m%d"),
        when.strftime("%H%M"),
        delimiters.repetition,
        "00501",
        f"{interchange_control:09d}",
        "0",
        usage,
        delimiters.component,
    ]
    return e.join(fields) + delimiters.segment


def iter_render_835(
    remittances: Sequence[Remittance835],
    *,
    sender_id: str,
    receiver_id: str,
    interchange_control: int,
    group_control: int,
    when: datetime,
    usage: str = "P",
    delimiters: Delimiters = DEFAULT_DELIMITERS,
    newline: bool = True,
) -> Iterator[str]:
    """Yield the interchange text piece by piece (one ST..SE at a time)."""
    if not 0 <= interchange_control <= 999_999_999:
        raise ValueError("interchange_control must fit 9 digits")
    end = delimiters.segment + ("\n" if newline and delimiters.segment != "\n" else "")
    e = delimiters.element
    isa = render_isa(
        sender_id=sender_id,
        receiver_id=receiver_id,
        interchange_control=interchange_control,
        when=when,
        usage=usage,
        delimiters=delimiters,
    )
    yield isa + end[1:]
    gs = ["GS", "HP", sender_id, receiver_id, when.strftime("%Y%m%d"), when.strftime("%H%M")]
    yield e.join([*gs, str(group_control), "X", VERSION_835]) + end
    for r in remittances:
        yield end.join(render_transaction(r, delimiters)) + end
    yield e.join(["GE", str(len(remittances)), str(group_control)]) + end
    yield e.join(["IEA", "1", f"{interchange_control:09d}"]) + end


def render_835(
    remittances: Sequence[Remittance835],
    *,
    sender_id: str,
    receiver_id: str,
    interchange_control: int,
    group_control: int,
    when: datetime,
    usage: str = "P",
    delimiters: Delimiters = DEFAULT_DELIMITERS,
    newline: bool = True,
) -> bytes:
    """A complete 5010 835 interchange: one GS with one ST per remittance."""
    text = "".join(
        iter_render_835(
            remittances,
            sender_id=sender_id,
            receiver_id=receiver_id,
            interchange_control=interchange_control,
            group_control=group_control,
            when=when,
            usage=usage,
            delimiters=delimiters,
            newline=newline,
        )
    )
    return text.encode("latin-1")
