"""Deterministic synthetic 835s: balanced, realistic mix, no PHI.

Mix per claim: paid primary (CO-45 + PR-1/2/3 at line level), denials (CLP02=4
with CO-50/CO-197), reversal+correction pairs (CLP02=22 negated, then CLP02=1
with REF*F8), secondary (CLP02=2 with OA-23).  PLB L6 interest and WO
recoupments; FB forwarding balance when the payment would go negative.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import BinaryIO

from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    Party,
    ProviderAdjustment,
    Remittance835,
    ServiceLine,
)
from revbridge.formats.x12.write835 import iter_render_835

DEFAULT_PAYER_IDS = ("ACME01", "BLUEPLAN02", "MEDICARE03", "MEDICAID04")
DEFAULT_PAYEE_NPIS = ("1234567893", "1245319599", "1003000126")
ZERO = Decimal(0)
_BASE_DAY = date(2024, 1, 1)
_DAY = date(2025, 1, 3)  # default production date (DTM*405)
_WHEN = datetime(2025, 1, 3, 9, 15)
_PROCEDURES = (
    ("HC:99284", "0450"),
    ("HC:99285", "0450"),
    ("HC:71046", "0324"),
    ("HC:80053", "0301"),
    ("HC:85025", "0305"),
    ("HC:93005", "0730"),
    ("HC:74177", "0352"),
    ("NU:0250", "0250"),
)


def _money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def _ein(payer_id: str) -> str:
    return "1" + str(sum(ord(c) * 7919**i for i, c in enumerate(payer_id)) % 10**9).zfill(9)


class _Generator:
    def __init__(
        self, seed: int, payer_ids: Sequence[str], payee_npis: Sequence[str], day: date = _DAY
    ) -> None:
        self.day = day
        self.rng = random.Random(seed)
        self.seed = seed
        self.payer_ids = payer_ids
        self.payee_npis = payee_npis
        self.counter = 0

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    # -- lines ------------------------------------------------------------------------------

    def paid_line(self, pcn: str, index: int, day: date, number: int) -> ServiceLine:
        rng = self.rng
        procedure, revenue = rng.choice(_PROCEDURES)
        charge = rng.randint(2_000, 400_000)
        allowed = charge * rng.randint(35, 95) // 100
        adjustments = []
        if charge > allowed:
            adjustments.append(Adjustment("CO", "45", _money(charge - allowed), None, number))
        patient = 0
        for reason, chance, share in (("1", 25, 50), ("2", 50, 20), ("3", 20, 10)):
            if rng.randint(1, 100) <= chance and allowed - patient > 100:
                part = (allowed - patient) * rng.randint(1, share) // 100
                if part:
                    patient += part
                    adjustments.append(Adjustment("PR", reason, _money(part), None, number))
        return ServiceLine(
            procedure,
            _money(charge),
            _money(allowed - patient),
            revenue,
            Decimal(rng.randint(1, 3)),
            f"{pcn}-{index}",
            day,
            _money(allowed),
            tuple(adjustments),
            number,
        )

    def denied_line(self, pcn: str, index: int, day: date, reason: str) -> ServiceLine:
        procedure, revenue = self.rng.choice(_PROCEDURES)
        charge = _money(self.rng.randint(2_000, 300_000))
        adjustment = Adjustment("CO", reason, charge, None, 0)
        return ServiceLine(
            procedure,
            charge,
            ZERO,
            revenue,
            Decimal(1),
            f"{pcn}-{index}",
            day,
            None,
            (adjustment,),
            0,
        )

    def secondary_line(self, pcn: str, index: int, day: date) -> ServiceLine:
        line = self.paid_line(pcn, index, day, 0)
        prior = _money(int(line.paid * 100) * self.rng.randint(50, 80) // 100)
        adjustments = (*line.adjustments, Adjustment("OA", "23", prior, None, 0))
        return replace(line, paid=line.paid - prior, adjustments=adjustments)

    # -- claims -----------------------------------------------------------------------------

    def claim(
        self,
        status: str,
        lines: Sequence[ServiceLine],
        pcn: str,
        *,
        adjustments: tuple[Adjustment, ...] = (),
        original: str | None = None,
    ) -> ClaimPayment:
        charge = sum((x.charge for x in lines), ZERO) + sum((a.amount for a in adjustments), ZERO)
        paid = sum((x.paid for x in lines), ZERO)
        patient = sum((a.amount for x in lines for a in x.adjustments if a.group == "PR"), ZERO)
        day = lines[0].service_date if lines else _BASE_DAY
        return ClaimPayment(
            pcn,
            status,
            charge,
            paid,
            patient,
            self.rng.choice(("12", "13", "MA", "MB", "MC", "HM")),
            f"ICN{self.seed}X{self.next_id():09d}",
            self.rng.choice(("13", "11", "14")),
            "1",
            original,
            day,
            day,
            adjustments,
            tuple(lines),
            0,
        )

    def claims_for(self, count: int) -> Iterator[ClaimPayment]:
        produced = 0
        while produced < count:
            kind = self.rng.randint(1, 100)
            if kind <= 8 and count - produced >= 2:
                yield from self.reversal_pair()
                produced += 2
                continue
            if kind <= 18:
                yield self.denial()
            elif kind <= 28:
                yield self.secondary()
            else:
                yield self.primary()
            produced += 1

    def _lines(self, pcn: str, make: str) -> list[ServiceLine]:
        day = _BASE_DAY + timedelta(days=self.rng.randint(0, 360))
        n = self.rng.randint(1, 6)
        if make == "secondary":
            return [self.secondary_line(pcn, i + 1, day) for i in range(n)]
        return [self.paid_line(pcn, i + 1, day, 0) for i in range(n)]

    def pcn(self) -> str:
        return f"PCN{self.seed}-{self.next_id():08d}"

    def primary(self) -> ClaimPayment:
        pcn = self.pcn()
        return self.claim(self.rng.choice(("1", "1", "1", "19")), self._lines(pcn, "primary"), pcn)

    def secondary(self) -> ClaimPayment:
        pcn = self.pcn()
        return self.claim("2", self._lines(pcn, "secondary"), pcn)

    def denial(self) -> ClaimPayment:
        pcn = self.pcn()
        reason = self.rng.choice(("50", "197"))
        day = _BASE_DAY + timedelta(days=self.rng.randint(0, 360))
        if self.rng.randint(0, 1):
            lines = [
                self.denied_line(pcn, i + 1, day, reason) for i in range(self.rng.randint(1, 3))
            ]
            return self.claim("4", lines, pcn)
        charge = _money(self.rng.randint(5_000, 900_000))
        adjustment = Adjustment("CO", reason, charge, None, 0)
        return self.claim("4", [], pcn, adjustments=(adjustment,))

    def reversal_pair(self) -> list[ClaimPayment]:
        original = self.primary()
        reversal = reversal_of(original)
        pcn = original.patient_control_number
        correction = self.claim(
            "1",
            self._lines(pcn, "primary"),
            pcn,
            original=original.payer_claim_number,
        )
        return [reversal, correction]

    # -- remittance -------------------------------------------------------------------------

    def provider_adjustments(
        self, npi: str, claims: Sequence[ClaimPayment]
    ) -> list[ProviderAdjustment]:
        rng = self.rng
        period = date(self.day.year, 12, 31)
        items = []
        if rng.randint(1, 100) <= 40:
            items.append(
                ProviderAdjustment(npi, period, "L6", None, -_money(rng.randint(1, 9_999)), 0)
            )
        if rng.randint(1, 100) <= 25 and claims:
            icn = rng.choice(claims).payer_claim_number
            items.append(
                ProviderAdjustment(npi, period, "WO", icn, _money(rng.randint(100, 50_000)), 0)
            )
        return items

    def remittance(self, control: str, claims: Sequence[ClaimPayment]) -> Remittance835:
        rng = self.rng
        payer_id = rng.choice(self.payer_ids)
        npi = rng.choice(self.payee_npis)
        ein = _ein(payer_id)
        plb = self.provider_adjustments(npi, claims)
        total = sum((c.paid for c in claims), ZERO) - sum((p.amount for p in plb), ZERO)
        if total < ZERO:
            plb.append(
                ProviderAdjustment(
                    npi, date(self.day.year, 12, 31), "FB", f"FWD{control}", total, 0
                )
            )
            total = ZERO
        return payment(
            control,
            Party(f"PAYER {payer_id}", "XV", payer_id),
            Party(f"HOSPITAL {npi}", "XX", npi, f"36{npi[-7:]}"),
            trace=f"EFT{self.seed}{control}",
            payer_ein=ein,
            claims=claims,
            plbs=plb,
            day=self.day,
            receiver_account=f"{rng.randint(10**8, 10**9 - 1)}",
        )


def payment(
    control: str,
    payer: Party,
    payee: Party,
    *,
    trace: str,
    payer_ein: str,
    claims: Sequence[ClaimPayment],
    plbs: Sequence[ProviderAdjustment],
    day: date,
    receiver_account: str = "987654321",
) -> Remittance835:
    """A balanced payment: BPR02 = ΣCLP04 − ΣPLB; ACH with bank data when it pays,
    notification only (H / NON) when it does not."""
    total = sum((c.paid for c in claims), ZERO) - sum((p.amount for p in plbs), ZERO)
    ach = total > 0
    return Remittance835(
        control_number=control,
        handling="I" if ach else "H",
        total_paid=total,
        credit_debit="C",
        method="ACH" if ach else "NON",
        payment_format="CCP" if ach else "",
        payer_identifier=payer_ein,
        receiver_account=receiver_account if ach else "",
        effective_date=day + timedelta(days=3),
        trace_type="1",
        trace_number=trace,
        trace_payer=payer_ein,
        trace_supplemental="",
        production_date=day,
        payer=payer,
        payee=payee,
        claims=tuple(claims),
        provider_adjustments=tuple(plbs),
        first_segment=0,
        segment_count=0,
        sender_dfi_qualifier="01" if ach else "",
        sender_dfi_id="021000021" if ach else "",
        sender_account_qualifier="DA" if ach else "",
        sender_account="123456789" if ach else "",
        receiver_dfi_qualifier="01" if ach else "",
        receiver_dfi_id="071000013" if ach else "",
        receiver_account_qualifier="DA" if ach else "",
    )


def _negate_adjustments(items: tuple[Adjustment, ...]) -> tuple[Adjustment, ...]:
    return tuple(replace(a, amount=-a.amount) for a in items)


def reversal_of(c: ClaimPayment) -> ClaimPayment:
    """CLP02 22: the original adjudication with every amount negated (5010 §1.10.2.8)."""
    lines = tuple(
        replace(
            x,
            charge=-x.charge,
            paid=-x.paid,
            allowed=None if x.allowed is None else -x.allowed,
            adjustments=_negate_adjustments(x.adjustments),
        )
        for x in c.lines
    )
    return replace(
        c,
        status="22",
        charge=-c.charge,
        paid=-c.paid,
        patient_responsibility=None
        if c.patient_responsibility is None
        else -c.patient_responsibility,
        adjustments=_negate_adjustments(c.adjustments),
        lines=lines,
    )


def synthetic_remittances(
    *,
    seed: int,
    claims: int,
    claims_per_transaction: int = 500,
    payer_ids: Sequence[str] = DEFAULT_PAYER_IDS,
    payee_npis: Sequence[str] = DEFAULT_PAYEE_NPIS,
    start_control: int = 1,
    day: date = _DAY,
) -> Iterator[Remittance835]:
    """The models behind :func:`synthetic_835` (balanced, deterministic for a seed)."""
    gen = _Generator(seed, payer_ids, payee_npis, day)
    left = claims
    control = start_control
    while left > 0:
        batch = list(gen.claims_for(min(left, max(1, claims_per_transaction))))
        left -= len(batch)
        yield gen.remittance(f"{control:04d}", batch)
        control += 1


def synthetic_835(
    *,
    seed: int,
    claims: int,
    claims_per_transaction: int = 500,
    payer_ids: Sequence[str] = DEFAULT_PAYER_IDS,
    payee_npis: Sequence[str] = DEFAULT_PAYEE_NPIS,
    start_control: int = 1,
    day: date = _DAY,
) -> bytes:
    """One interchange (one GS) whose STs carry ``claims`` claims in total."""
    remittances = list(
        synthetic_remittances(
            seed=seed,
            claims=claims,
            claims_per_transaction=claims_per_transaction,
            payer_ids=payer_ids,
            payee_npis=payee_npis,
            start_control=start_control,
            day=day,
        )
    )
    text = "".join(
        iter_render_835(
            remittances,
            sender_id="PAYERSUBMIT01",
            receiver_id="REGIONALHLTH01",
            interchange_control=start_control,
            group_control=start_control,
            when=_WHEN,
        )
    )
    return text.encode("latin-1")


def synthetic_835_stream(
    out: BinaryIO, *, seed: int, target_bytes: int, claims_per_transaction: int = 2000
) -> int:
    """Write interchanges (one ST each) until ``target_bytes``; returns claims written."""
    gen = _Generator(seed, DEFAULT_PAYER_IDS, DEFAULT_PAYEE_NPIS)
    written = 0
    claims = 0
    control = 1
    while written < target_bytes:
        batch = list(gen.claims_for(max(1, claims_per_transaction)))
        remittance = gen.remittance(f"{control:04d}", batch)
        for piece in iter_render_835(
            [remittance],
            sender_id="PAYERSUBMIT01",
            receiver_id="REGIONALHLTH01",
            interchange_control=control % 1_000_000_000,
            group_control=control,
            when=_WHEN,
        ):
            data = piece.encode("latin-1")
            out.write(data)
            written += len(data)
        claims += len(batch)
        control += 1
    return claims
