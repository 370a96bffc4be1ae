from __future__ import annotations

import io
from dataclasses import FrozenInstanceError
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from revbridge.formats.x12.balance import check_835
from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.issues import X12Error
from revbridge.formats.x12.model835 import Adjustment, Remittance835
from revbridge.formats.x12.parse835 import parse_835, parse_835_bytes
from revbridge.formats.x12.tokenizer import Delimiters, iter_segments

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "x12"
D = Delimiters()


def parse_file(data: bytes) -> Remittance835:
    [tx] = scan(io.BytesIO(data)).transactions
    return parse_835_bytes(data[tx.start : tx.end], tx.delimiters, tx.first_segment)


def body(*segments: str) -> bytes:
    """A minimal 835 ST..SE around the given segments (numbered from 1)."""
    head = [
        "ST*835*0042",
        "BPR*I*100*C*ACH*CCP*01*021000021*DA*123*1999999999**01*071000013*DA*987*20250106",
        "TRN*1*T1*1999999999",
    ]
    segs = [*head, *segments]
    segs.append(f"SE*{len(segs) + 1}*0042")
    return ("~".join(segs) + "~").encode()


def error_of(data: bytes) -> X12Error:
    with pytest.raises(X12Error) as info:
        parse_835_bytes(data, D)
    return info.value


def adj(group: str, reason: str, amount: str, number: int) -> Adjustment:
    return Adjustment(group, reason, Decimal(amount), None, number)


def test_worked_example_header(worked_example: bytes) -> None:
    r = parse_file(worked_example)
    assert r.control_number == "0001"
    assert (r.handling, r.total_paid, r.credit_debit, r.method) == (
        "I",
        Decimal("577.50"),
        "C",
        "ACH",
    )
    assert (r.payment_format, r.payer_identifier, r.receiver_account) == (
        "CCP",
        "1999999999",
        "987654321",
    )
    assert r.effective_date == date(2025, 1, 6)
    assert (r.trace_type, r.trace_number, r.trace_payer, r.trace_supplemental) == (
        "1",
        "EFT20250106A",
        "1999999999",
        "",
    )
    assert r.production_date == date(2025, 1, 3)
    assert (r.payer.name, r.payer.id_qualifier, r.payer.id, r.payer.tin) == (
        "ACME HEALTH PLAN",
        "XV",
        "ACME01",
        None,
    )
    assert (r.payee.name, r.payee.id, r.payee.tin) == (
        "REGIONAL MEDICAL CENTER",
        "1234567893",
        "361234567",
    )
    assert (r.first_segment, r.segment_count) == (3, 40)


def test_worked_example_claims(worked_example: bytes) -> None:
    r = parse_file(worked_example)
    assert [c.patient_control_number for c in r.claims] == [
        "ACCT1001",
        "ACCT1002",
        "ACCT0900",
        "ACCT0900",
    ]
    paid, denied, reversal, correction = r.claims
    assert (paid.status, paid.charge, paid.paid, paid.patient_responsibility) == (
        "1",
        Decimal(1000),
        Decimal(600),
        Decimal(150),
    )
    assert (paid.filing_indicator, paid.payer_claim_number) == ("12", "ICN-A-1001")
    assert (paid.facility_type, paid.frequency, paid.segment_number) == ("13", "1", 15)
    assert (paid.statement_from, paid.statement_to) == (date(2024, 12, 10), date(2024, 12, 10))
    assert paid.adjustments == ()
    line1, line2 = paid.lines
    assert (line1.procedure, line1.charge, line1.paid) == ("HC:99284", Decimal(700), Decimal(420))
    assert (line1.revenue_code, line1.units, line1.control_number) == ("0450", Decimal(1), "1001-1")
    assert (line1.service_date, line1.allowed, line1.segment_number) == (
        date(2024, 12, 10),
        Decimal(480),
        19,
    )
    assert line1.adjustments == (adj("CO", "45", "220", 21), adj("PR", "1", "60", 22))
    assert line2.adjustments == (adj("CO", "45", "30", 27), adj("PR", "2", "90", 28))
    assert (line2.control_number, line2.allowed) == ("1001-2", Decimal(270))
    assert (denied.status, denied.paid, denied.lines) == ("4", Decimal(0), ())
    assert denied.adjustments == (adj("CO", "50", "500", 32),)
    assert (reversal.status, reversal.charge, reversal.paid) == ("22", Decimal(-800), Decimal(-480))
    assert reversal.patient_responsibility is None
    assert reversal.adjustments == (adj("CO", "45", "-320", 35),)
    assert reversal.original_payer_claim_number is None
    assert correction.adjustments == (adj("CO", "45", "280", 38),)
    assert correction.original_payer_claim_number == "ICN-A-0900"
    assert correction.payer_claim_number == "ICN-A-0900B"


def test_worked_example_plb_and_balance(worked_example: bytes) -> None:
    r = parse_file(worked_example)
    assert [
        (p.reason, p.reference, p.amount, p.segment_number) for p in r.provider_adjustments
    ] == [
        ("L6", None, Decimal("-12.5"), 41),
        ("WO", "ICN-A-0777", Decimal(75), 41),
    ]
    assert {p.provider_id for p in r.provider_adjustments} == {"1234567893"}
    assert {p.fiscal_period_end for p in r.provider_adjustments} == {date(2025, 12, 31)}
    assert check_835(r) == []


def test_model_is_frozen(worked_example: bytes) -> None:
    r = parse_file(worked_example)
    with pytest.raises(FrozenInstanceError):
        r.claims[0].paid = Decimal(1)  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        r.claims[0].lines[0].adjustments[0].amount = Decimal(1)  # type: ignore[misc]
    assert type(r.claims[0].lines[0].adjustments[0]) is Adjustment


def test_parse_835_from_segments_equals_bytes(worked_example: bytes) -> None:
    segs = [s for s, _ in iter_segments(io.BytesIO(worked_example)) if 3 <= s.number <= 42]
    assert parse_835(segs, D) == parse_file(worked_example)


def test_unbalanced_claim_fixture() -> None:
    r = parse_file((FIXTURES / "835_unbalanced_claim.txt").read_bytes())
    issues = check_835(r)
    assert [i.code for i in issues] == ["claim_unbalanced", "transaction_unbalanced"]
    claim = issues[0]
    assert (claim.segment_number, claim.segment_id, claim.element) == (31, "CLP", "CLP04")
    assert claim.transaction == "0001"
    assert "ACCT1002" in claim.message and "10" in claim.message
    assert "587.5" in issues[1].message and "577.5" in issues[1].message


def test_cas_with_six_triplets() -> None:
    data = body(
        "CLP*A*1*100*41**12*ICN",
        "CAS*CO*45*10*1*253*2**97*3*2*16*1**18*1**22*1",
        "CAS*PR*1*5*0.5*2*6**3*30",
    )
    r = parse_835_bytes(data, D)
    claim = r.claims[0]
    assert [(a.group, a.reason, a.amount, a.quantity) for a in claim.adjustments] == [
        ("CO", "45", Decimal(10), Decimal(1)),
        ("CO", "253", Decimal(2), None),
        ("CO", "97", Decimal(3), Decimal(2)),
        ("CO", "16", Decimal(1), None),
        ("CO", "18", Decimal(1), None),
        ("CO", "22", Decimal(1), None),
        ("PR", "1", Decimal(5), Decimal("0.5")),
        ("PR", "2", Decimal(6), None),
        ("PR", "3", Decimal(30), None),
    ]
    assert [a.segment_number for a in claim.adjustments] == [5] * 6 + [6] * 3
    assert [i.code for i in check_835(r) if i.severity == "error"] == ["transaction_unbalanced"]


def test_plb_with_several_pairs_and_segments() -> None:
    data = body(
        "CLP*A*1*100*100**12*ICN",
        "PLB*1234567893*20251231*L6*-1*WO:ICN9*2*FB:FWD1*3*CS*4*72:R1*-5*J1*6",
        "PLB*1234567893*20251231*IR*7",
        "PLB*999*20241231*50*8*90*9",
    )
    r = parse_835_bytes(data, D)
    pairs = [(p.provider_id, p.reason, p.reference, p.amount) for p in r.provider_adjustments]
    assert pairs == [
        ("1234567893", "L6", None, Decimal(-1)),
        ("1234567893", "WO", "ICN9", Decimal(2)),
        ("1234567893", "FB", "FWD1", Decimal(3)),
        ("1234567893", "CS", None, Decimal(4)),
        ("1234567893", "72", "R1", Decimal(-5)),
        ("1234567893", "J1", None, Decimal(6)),
        ("1234567893", "IR", None, Decimal(7)),
        ("999", "50", None, Decimal(8)),
        ("999", "90", None, Decimal(9)),
    ]
    assert [p.segment_number for p in r.provider_adjustments] == [5] * 6 + [6, 7, 7]
    # 100 - (sum of PLB = 34) = 66 != BPR02 100
    issues = check_835(r)
    assert [i.code for i in issues] == ["transaction_unbalanced"]


def test_legacy_cr_group_is_accepted_with_warning() -> None:
    data = body("CLP*A*22*-100*-100**12*ICN", "CAS*CR*45*0", "CLP*A*1*200*200**12*ICN2")
    r = parse_835_bytes(data, D)
    issues = check_835(r)
    assert [(i.code, i.severity, i.segment_number) for i in issues] == [
        ("legacy_cas_cr", "warning", 5)
    ]


def test_unknown_cas_group_is_an_error() -> None:
    err = error_of(body("CLP*A*1*100*100**12*ICN", "CAS*XX*45*1"))
    assert err.issue.code == "bad_cas_group"
    assert (err.issue.segment_number, err.issue.element, err.issue.transaction) == (
        5,
        "CAS01",
        "0042",
    )


@pytest.mark.parametrize(
    ("segment", "element"),
    [
        ("CLP*A*1*10O*100**12*ICN", "CLP03"),
        ("CLP*A*1*1e5*100**12*ICN", "CLP03"),
        ("CLP*A*1*100*12345678.901**12*ICN", "CLP04"),
        ("CLP*A*1*100*100*NaN*12*ICN", "CLP05"),
    ],
)
def test_bad_amount_names_segment_and_element(segment: str, element: str) -> None:
    err = error_of(body(segment))
    assert err.issue.code == "bad_amount"
    assert (err.issue.segment_number, err.issue.segment_id, err.issue.element) == (
        4,
        "CLP",
        element,
    )
    assert "segment 4" in str(err) and element in str(err) and "0042" in str(err)


def test_bad_date() -> None:
    err = error_of(body("DTM*405*20251340"))
    assert (err.issue.code, err.issue.element, err.issue.segment_number) == ("bad_date", "DTM02", 4)


def test_structural_errors() -> None:
    assert error_of(body("CLP*A*1*100*100")).issue.code == "clp_too_short"
    assert error_of(body("SVC*HC:1*10*10")).issue.code == "svc_outside_claim"
    assert error_of(body("CAS*CO*45*1")).issue.code == "cas_outside_claim"
    missing_trn = b"ST*835*1~BPR*I*0*C*NON~SE*3*1~"
    assert error_of(missing_trn).issue.code == "missing_trn"
    missing_bpr = b"ST*835*1~TRN*1*X*1~SE*3*1~"
    err = error_of(missing_bpr)
    assert (err.issue.code, err.issue.element, err.issue.transaction) == ("missing_bpr", "BPR", "1")
    assert error_of(b"ST*837*1~SE*2*1~").issue.code == "not_835"
    assert error_of(b"BPR*I~").issue.code == "no_st"


def test_unmodelled_segments_are_ignored_and_loops_respected() -> None:
    data = body(
        "CUR*PR*USD",
        "N1*PR*PAYER*XV*P1",
        "N3*STREET",
        "PER*BL*EDI",
        "REF*2U*X",
        "N1*PE*HOSP*XX*123",
        "REF*TJ*999",
        "RDM*X",
        "LX*1",
        "TS3*1*11*20251231*1*100",
        "CLP*A*1*100*90**12*ICN",
        "NM1*QC*1*DOE*J",
        "MIA*0",
        "MOA***MA01",
        "DTM*232*20240101",
        "AMT*AU*100",
        "REF*1L*GRP",
        "SVC*HC:99213:25*100*90",
        "DTM*150*20240102",
        "DTM*151*20240103",
        "CAS*CO*45*10",
        "REF*6R*L1",
        "REF*LU*X",
        "AMT*B6*90",
        "QTY*ZK*1",
        "LQ*HE*N130",
    )
    r = parse_835_bytes(data, D)
    assert r.payee.tin == "999"
    claim = r.claims[0]
    assert claim.statement_from == date(2024, 1, 1)
    [line] = claim.lines
    assert line.procedure == "HC:99213:25"
    assert line.service_date == date(2024, 1, 2)
    assert (line.control_number, line.allowed) == ("L1", Decimal(90))
    assert [i.code for i in check_835(r) if i.severity == "error"] == ["transaction_unbalanced"]


def test_component_separator_is_normalised() -> None:
    data = body("CLP*A*1*100*100**12*ICN", "SVC*HC>99213>25*100*100").replace(b"*", b"|")
    r = parse_835_bytes(data, Delimiters("|", ">", "^", "~"))
    assert r.claims[0].lines[0].procedure == "HC:99213:25"
