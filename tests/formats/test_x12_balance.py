from __future__ import annotations

import io
from dataclasses import replace
from decimal import Decimal

from revbridge.formats.x12.balance import check_835
from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.model835 import Remittance835
from revbridge.formats.x12.parse835 import parse_835_bytes
from revbridge.formats.x12.tokenizer import Delimiters


def parse_file(data: bytes) -> Remittance835:
    [tx] = scan(io.BytesIO(data)).transactions
    return parse_835_bytes(data[tx.start : tx.end], tx.delimiters, tx.first_segment)


def codes(r: Remittance835) -> list[tuple[str, str]]:
    return [(i.code, i.severity) for i in check_835(r)]


def test_line_unbalanced(worked_example: bytes) -> None:
    r = parse_file(worked_example.replace(b"SVC*HC:99284*700*420", b"SVC*HC:99284*700*421"))
    issues = check_835(r)
    assert [i.code for i in issues] == ["line_unbalanced"]  # rule 2 uses CAS, not SVC03
    assert (issues[0].segment_number, issues[0].element) == (19, "SVC03")
    assert "421" in issues[0].message and "420" in issues[0].message


def test_bpr_rules(worked_example: bytes) -> None:
    r = parse_file(worked_example)
    assert codes(replace(r, handling="H")) == [("bpr_handling_method", "error")]
    assert codes(replace(r, method="NON")) == [("bpr_handling_method", "error")]
    assert codes(replace(r, sender_account="", receiver_dfi_id="")) == [
        ("bpr_ach_incomplete", "error")
    ]
    assert "BPR09, BPR13" in check_835(replace(r, sender_account="", receiver_dfi_id=""))[0].message
    assert codes(replace(r, trace_payer="1888888888")) == [("bpr_trn_payer_mismatch", "warning")]
    zero = replace(r, claims=(), provider_adjustments=(), total_paid=Decimal(0))
    assert codes(zero) == [("bpr_zero_payment", "error")]
    assert codes(replace(zero, handling="H", method="NON")) == []
    assert codes(replace(zero, handling="P")) == []


def test_claim_status_and_patient_responsibility(worked_example: bytes) -> None:
    r = parse_file(worked_example)
    first = r.claims[0]
    bad_status = replace(r, claims=(replace(first, status="5"), *r.claims[1:]))
    assert codes(bad_status) == [("bad_claim_status", "error")]
    bad_pr = replace(r, claims=(replace(first, patient_responsibility=Decimal(1)), *r.claims[1:]))
    assert codes(bad_pr) == [("patient_responsibility_mismatch", "warning")]


def test_line_adjustments_feed_the_claim_sums_and_legacy_warnings() -> None:
    segments = [
        "ST*835*0042",
        "BPR*I*60*C*ACH*CCP*01*021000021*DA*123*1999999999**01*071000013*DA*987*20250106",
        "TRN*1*T1*1999999999",
        "CLP*A*1*100*60*31.50*12*ICN",
        "CAS*PR*3*1.50",
        "SVC*HC:1*70*41",
        "CAS*CR*45*20",
        "CAS*PR*2*10.00",
        "SVC*HC:2*30*20",
        "CAS*PR*1*8",
        "SE*11*0042",
    ]
    r = parse_835_bytes(("~".join(segments) + "~").encode(), Delimiters())
    issues = check_835(r)
    assert [(i.code, i.segment_number) for i in issues] == [
        ("line_unbalanced", 6),  # 70 - 30.00 != 41
        ("legacy_cas_cr", 7),
        ("line_unbalanced", 9),  # 30 - 8 != 20
        ("claim_unbalanced", 4),  # 100 - (1.50 + 30.00 + 8) = 60.50
        ("patient_responsibility_mismatch", 4),  # PR: 1.50 + 10.00 + 8 = 19.50
    ]
    assert "adjustments 30.00 = 40.00" in issues[0].message
    assert "adjustments 39.50 = 60.50" in issues[3].message
    assert "PR adjustments total 19.50" in issues[4].message
