"""Messages for the fault scenarios: generated 835 files, resends, a big file.

Everything is deterministic for a seed. Payees are mostly in the sample master data (one
in six is not: an ``unknown_payee`` item, nothing posted); payers are a mix of mapped and
unmapped ones; the generator's own mix brings denials, secondaries, reversal+correction
pairs and PLB adjustments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from revbridge.formats.x12.model835 import ClaimPayment, ProviderAdjustment, Remittance835
from revbridge.formats.x12.synthetic import payment, reversal_of, synthetic_remittances
from revbridge.formats.x12.write835 import iter_render_835

PAYEE_NPIS = ("1234567893", "1245319599", "1679576722", "1234567893", "1245319599", "1003000126")
PAYER_IDS = ("ACME01", "MCARE", "MCAID", "BLUE01", "MADV01", "NEWPAYER9")
WHEN = datetime(2025, 1, 3, 9, 15)


def remittances(seed: int, count: int, claims: int = 3) -> list[Remittance835]:
    """``count`` payments (one ST each) of ``claims`` claims, all with distinct TRNs."""
    return list(
        synthetic_remittances(
            seed=seed,
            claims=count * claims,
            claims_per_transaction=claims,
            payer_ids=PAYER_IDS,
            payee_npis=PAYEE_NPIS,
        )
    )


def render(items: Sequence[Remittance835], control: int) -> bytes:
    """One interchange; ``control`` numbers the ISA and GS (a resend uses a new one), the
    STs are numbered in order."""
    numbered = [replace(r, control_number=f"{n:04d}") for n, r in enumerate(items, start=1)]
    return "".join(
        iter_render_835(
            numbered,
            sender_id="PAYERSUBMIT01",
            receiver_id="REGIONALHLTH01",
            interchange_control=control,
            group_control=control,
            when=WHEN,
        )
    ).encode("latin-1")


def reversal_payment(original: Remittance835, trace: str) -> Remittance835:
    """A later payment (its own TRN) that takes back every claim of ``original``; what it
    takes back is forwarded (PLB FB) so that BPR02 stays at zero."""
    claims: list[ClaimPayment] = [reversal_of(c) for c in original.claims]
    net = sum((c.paid for c in claims), Decimal(0))
    year = (original.production_date or WHEN.date()).year
    plbs = (
        [ProviderAdjustment(original.payee.id, date(year, 12, 31), "FB", f"FB{trace}", net, 0)]
        if net < 0
        else []
    )
    return payment(
        original.control_number,
        original.payer,
        original.payee,
        trace=trace,
        payer_ein=original.trace_payer,
        claims=claims,
        plbs=plbs,
        day=original.production_date or WHEN.date(),
    )


def write_corpus(
    folder: Path,
    *,
    seed: int,
    files: int,
    payments_per_file: int = 2,
    claims: int = 3,
    resend_every: int = 4,
) -> list[Path]:
    """``files`` files of new payments, plus a resend (new control numbers, same payments)
    of every ``resend_every``-th file."""
    folder.mkdir(parents=True, exist_ok=True)
    items = remittances(seed, files * payments_per_file, claims)
    paths: list[Path] = []
    control = seed * 1000
    for number in range(files):
        chunk = items[number * payments_per_file : (number + 1) * payments_per_file]
        control += 1
        path = folder / f"era-{seed}-{number:03d}.835"
        path.write_bytes(render(chunk, control))
        paths.append(path)
        if resend_every and number % resend_every == resend_every - 1:
            control += 1
            again = folder / f"era-{seed}-{number:03d}-resend.835"
            again.write_bytes(render(chunk, control))
            paths.append(again)
    return paths


def write_big_file(path: Path, *, megabytes: float, seed: int) -> int:
    """A file with two 835 payments and, between them, one huge 837 (a transaction revbridge
    does not read: one rejected unit, no processing), so ingest takes a while but the work
    after it does not. Returns the size in bytes."""
    pair = remittances(seed, 2, 3)
    head = render(pair[:1], 900_000 + seed)
    tail = render(pair[1:], 900_100 + seed)
    filler_segment = b"NTE*ADD*" + b"X" * 70 + b"~\n"
    count = int(megabytes * (1 << 20)) // len(filler_segment)
    with path.open("wb") as out:
        out.write(head)
        out.write(
            b"ISA*00*          *00*          *ZZ*PAYERSUBMIT01  *ZZ*REGIONALHLTH01 *250103*0915*"
            b"^*00501*%09d*0*P*:~\n" % (900_200 + seed)
        )
        out.write(b"GS*HC*PAYERSUBMIT01*REGIONALHLTH01*20250103*0915*7*X*005010X222A1~\n")
        out.write(b"ST*837*0001*005010X222A1~\n")
        block = filler_segment * 4096
        for _ in range(count // 4096):
            out.write(block)
        out.write(filler_segment * (count % 4096))
        out.write(b"SE*%d*0001~\nGE*1*7~\nIEA*1*%09d~\n" % (count + 2, 900_200 + seed))
        out.write(tail)
        out.flush()
        os.fsync(out.fileno())
    return path.stat().st_size
