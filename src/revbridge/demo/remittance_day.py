"""A synthetic remittance day for a multi-facility provider (no real patient data).

Payers: ACME (commercial; domain.md §1.10 claims: paid, denied, reversal + correction,
PLB interest and recoupment), Medicare (many claims, sequestration, a line denial,
interest), a Medigap secondary (OA-23), Medicaid (reversals larger than payments, so a
forward balance keeps the 835 at zero), an unmapped payer, and a commercial volume file.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    Party,
    ProviderAdjustment,
    Remittance835,
    ServiceLine,
)
from revbridge.formats.x12.synthetic import payment, reversal_of, synthetic_835
from revbridge.formats.x12.write835 import render_835

H01 = Party("REGIONAL MEDICAL CENTER", "XX", "1234567893", "361234567")
H02 = Party("LAKESIDE COMMUNITY HOSPITAL", "XX", "1245319599", "361234567")
C01 = Party("REGIONAL PHYSICIANS CLINIC", "XX", "1679576722", "362222222")
ACME = Party("ACME HEALTH PLAN", "XV", "ACME01")
MEDICARE = Party("MEDICARE PART A AND B", "XV", "MCARE")
MEDIGAP = Party("MEDIGAP SUPPLEMENT", "XV", "MEDIGAP1")
MEDICAID = Party("STATE MEDICAID", "XV", "MCAID")
NEWPAYER = Party("NEW REGIONAL PLAN", "XV", "NEWPAYER9")

Adj = tuple[str, str, str]  # group, reason, amount


def _d(text: str) -> Decimal:
    return Decimal(text)


def _adjustments(items: Sequence[Adj]) -> tuple[Adjustment, ...]:
    return tuple(Adjustment(g, r, _d(a), None, 0) for g, r, a in items)


def svc(
    procedure: str,
    charge: str,
    adjustments: Sequence[Adj],
    *,
    revenue: str | None = None,
    control: str | None = None,
    day: date | None = None,
) -> ServiceLine:
    adjs = _adjustments(adjustments)
    paid = _d(charge) - sum((a.amount for a in adjs), Decimal(0))
    return ServiceLine(procedure, _d(charge), paid, revenue, None, control, day, None, adjs, 0)


def clp(
    account: str,
    status: str,
    icn: str,
    lines: Sequence[ServiceLine] = (),
    claim_adjustments: Sequence[Adj] = (),
    *,
    charge: str | None = None,
    filing: str = "12",
    original: str | None = None,
    day: date | None = None,
) -> ClaimPayment:
    adjs = _adjustments(claim_adjustments)
    total = _d(charge) if charge is not None else sum((s.charge for s in lines), Decimal(0))
    adjusted = sum((a.amount for a in adjs), Decimal(0)) + sum(
        (a.amount for s in lines for a in s.adjustments), Decimal(0)
    )
    pr = sum(
        (a.amount for a in (*adjs, *(a for s in lines for a in s.adjustments)) if a.group == "PR"),
        Decimal(0),
    )
    return ClaimPayment(
        account,
        status,
        total,
        total - adjusted,
        pr or None,
        filing,
        icn,
        "13",
        "1",
        original,
        day,
        day,
        adjs,
        tuple(lines),
        0,
    )


def plb(
    provider: Party, reason: str, reference: str | None, amount: str, year: int
) -> ProviderAdjustment:
    return ProviderAdjustment(provider.id, date(year, 12, 31), reason, reference, _d(amount), 0)


def acme(day: date) -> Remittance835:
    """The §1.10 worked example, on the demo's day, plus two more paid claims."""
    original = clp(
        "ACCT0900", "1", "ICN-A-0900", charge="800", claim_adjustments=[("CO", "45", "320")]
    )
    claims = [
        clp(
            "ACCT1001",
            "1",
            "ICN-A-1001",
            [
                svc(
                    "HC:99284",
                    "700",
                    [("CO", "45", "220"), ("PR", "1", "60")],
                    revenue="0450",
                    control="1001-1",
                    day=day - timedelta(days=24),
                ),
                svc(
                    "HC:71046",
                    "300",
                    [("CO", "45", "30"), ("PR", "2", "90")],
                    revenue="0324",
                    control="1001-2",
                    day=day - timedelta(days=24),
                ),
            ],
        ),
        clp("ACCT1002", "4", "ICN-A-1002", charge="500", claim_adjustments=[("CO", "50", "500")]),
        reversal_of(original),
        clp(
            "ACCT0900",
            "1",
            "ICN-A-0900B",
            charge="800",
            claim_adjustments=[("CO", "45", "280")],
            original="ICN-A-0900",
        ),
        clp(
            "ACCT1003",
            "1",
            "ICN-A-1003",
            [svc("HC:80053", "180", [("CO", "45", "120"), ("PR", "3", "20")], control="1003-1")],
        ),
        clp(
            "ACCT1004",
            "1",
            "ICN-A-1004",
            [
                svc("HC:36415", "40", [("CO", "45", "25")], control="1004-1"),
                svc("HC:85025", "60", [("CO", "45", "38")], control="1004-2"),
            ],
        ),
    ]
    plbs = [plb(H01, "L6", None, "-12.5", day.year), plb(H01, "WO", "ICN-A-0777", "75", day.year)]
    return payment(
        "0001",
        ACME,
        H01,
        trace=f"EFT{day:%Y%m%d}A",
        payer_ein="1999999999",
        claims=claims,
        plbs=plbs,
        day=day,
    )


def medicare(day: date, rng: random.Random, count: int = 60) -> Remittance835:
    claims = []
    for n in range(count):
        lines = [_medicare_line(rng, n, k) for k in range(rng.randint(1, 4))]
        claims.append(clp(f"ACCT2{n:04d}", "1", f"MCR{day:%y%m%d}{n:05d}", lines, filing="MA"))
    plbs = [plb(H02, "L6", None, "-48.21", day.year)]
    return payment(
        "0001",
        MEDICARE,
        H02,
        trace=f"MCR{day:%Y%m%d}01",
        payer_ein="1MCARE0001",
        claims=claims,
        plbs=plbs,
        day=day,
    )


def _medicare_line(rng: random.Random, claim: int, k: int) -> ServiceLine:
    charge = Decimal(rng.randint(80, 2400))
    if claim % 17 == 5 and k == 0:  # a line denial on a paid claim: stays in AR, work item
        return svc(
            "HC:97110", f"{charge}", [("CO", "50", f"{charge}")], control=f"2{claim:04d}-{k}"
        )
    allowed = (charge * Decimal("0.38")).quantize(Decimal("0.01"))
    coins = (allowed * Decimal("0.20")).quantize(Decimal("0.01"))
    seq = ((allowed - coins) * Decimal("0.02")).quantize(Decimal("0.01"))
    adjs: list[Adj] = [
        ("CO", "45", f"{charge - allowed}"),
        ("CO", "253", f"{seq}"),
        ("PR", "2", f"{coins}"),
    ]
    return svc(
        rng.choice(["HC:99213", "HC:93000", "HC:71046", "HC:80053"]),
        f"{charge}",
        adjs,
        control=f"2{claim:04d}-{k}",
    )


def medigap(day: date) -> Remittance835:
    """Secondary payer: OA-23 carries the primary's impact and must not post (E8)."""
    claims = [
        clp(
            f"ACCT2{n:04d}",
            "2",
            f"MGP{n:05d}",
            charge="400",
            claim_adjustments=[("OA", "23", "320")],
            filing="16",
        )
        for n in range(0, 12, 3)
    ]
    return payment(
        "0002",
        MEDIGAP,
        H02,
        trace=f"MGP{day:%Y%m%d}",
        payer_ein="1MEDIGAP01",
        claims=claims,
        plbs=[],
        day=day,
    )


def medicaid(day: date) -> Remittance835:
    """Reversals exceed payments: a forward balance (FB) keeps BPR02 at zero."""
    originals = [
        clp(
            f"ACCT3{n:03d}",
            "1",
            f"MCD{n:04d}",
            charge="350",
            claim_adjustments=[("CO", "45", "150")],
            filing="MC",
        )
        for n in range(3)
    ]
    paid = clp(
        "ACCT3100",
        "1",
        "MCD0100",
        charge="300",
        claim_adjustments=[("CO", "45", "180")],
        filing="MC",
    )
    claims = [*map(reversal_of, originals), paid]
    net = sum((c.paid for c in claims), Decimal(0))
    plbs = [plb(C01, "FB", f"FB{day:%Y%m%d}", f"{net}", day.year)]
    return payment(
        "0001",
        MEDICAID,
        C01,
        trace=f"MCD{day:%Y%m%d}",
        payer_ein="1MCAID0001",
        claims=claims,
        plbs=plbs,
        day=day,
    )


def new_payer(day: date) -> Remittance835:
    claims = [clp("ACCT4001", "1", "NP0001", charge="250", claim_adjustments=[("CO", "45", "90")])]
    return payment(
        "0001",
        NEWPAYER,
        H01,
        trace=f"NP{day:%Y%m%d}",
        payer_ein="1NEWPAYER9",
        claims=claims,
        plbs=[],
        day=day,
    )


def write_day(folder: Path, day: date, *, seed: int = 7, volume_claims: int = 300) -> list[Path]:
    """Write the day's 835 files (and one resend of the ACME file) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    when = datetime(day.year, day.month, day.day, 6, 0, tzinfo=UTC)
    files = {
        "era-acme.835": ([acme(day)], "ACMEEDI", 4711),
        "era-medicare.835": ([medicare(day, rng)], "MEDICAREEDI", 9101),
        "era-medigap.835": ([medigap(day)], "MEDIGAPEDI", 301),
        "era-medicaid.835": ([medicaid(day)], "MEDICAIDEDI", 5501),
        "era-newpayer.835": ([new_payer(day)], "NEWPAYEREDI", 12),
    }
    paths = []
    for name, (remits, sender, control) in files.items():
        data = render_835(
            remits,
            sender_id=sender,
            receiver_id="REGIONALHLTH01",
            interchange_control=control,
            group_control=control,
            when=when,
        )
        paths.append(_write(folder / name, data))
    volume = synthetic_835(
        seed=seed,
        claims=volume_claims,
        claims_per_transaction=100,
        payer_ids=["BLUE01"],
        day=day,
        payee_npis=[H01.id, H02.id],
    )
    paths.append(_write(folder / "era-blue-volume.835", volume))
    paths.append(_write(folder / "era-acme-resend.835", paths[0].read_bytes()))
    return paths


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
