from __future__ import annotations

import io
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from revbridge.formats.x12.balance import check_835
from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    Party,
    ProviderAdjustment,
    Remittance835,
    ServiceLine,
)
from revbridge.formats.x12.parse835 import parse_835_bytes
from revbridge.formats.x12.synthetic import (
    synthetic_835,
    synthetic_835_stream,
    synthetic_remittances,
)
from revbridge.formats.x12.tokenizer import DEFAULT_DELIMITERS, Delimiters
from revbridge.formats.x12.write835 import render_835

WHEN = datetime(2025, 1, 3, 9, 15)


def strip_numbers(r: Remittance835) -> Remittance835:
    """The model without file positions (segment numbers, first_segment, segment_count)."""

    def adjs(items: tuple[Adjustment, ...]) -> tuple[Adjustment, ...]:
        return tuple(replace(a, segment_number=0) for a in items)

    claims = tuple(
        replace(
            c,
            segment_number=0,
            adjustments=adjs(c.adjustments),
            lines=tuple(
                replace(x, segment_number=0, adjustments=adjs(x.adjustments)) for x in c.lines
            ),
        )
        for c in r.claims
    )
    plb = tuple(replace(p, segment_number=0) for p in r.provider_adjustments)
    return replace(r, claims=claims, provider_adjustments=plb, first_segment=0, segment_count=0)


def parse_all(data: bytes) -> list[Remittance835]:
    report = scan(io.BytesIO(data))
    assert report.issues == []
    out = []
    for tx in report.transactions:
        assert tx.issues == ()
        out.append(parse_835_bytes(data[tx.start : tx.end], tx.delimiters, tx.first_segment))
    return out


def render(rs: list[Remittance835], delimiters: Delimiters = DEFAULT_DELIMITERS) -> bytes:
    return render_835(
        rs,
        sender_id="PAYER",
        receiver_id="HOSP",
        interchange_control=12,
        group_control=34,
        when=WHEN,
        delimiters=delimiters,
    )


def test_render_worked_example_roundtrip(worked_example: bytes) -> None:
    [original] = parse_all(worked_example)
    data = render([original, replace(original, control_number="0002")])
    lines = data.decode().splitlines()
    assert len(lines[0]) == 106
    assert lines[1] == "GS*HP*PAYER*HOSP*20250103*0915*34*X*005010X221A1~"
    assert lines[-2:] == ["GE*2*34~", "IEA*1*000000012~"]
    again = parse_all(data)
    assert [strip_numbers(r) for r in again] == [
        strip_numbers(original),
        strip_numbers(replace(original, control_number="0002")),
    ]
    assert check_835(again[0]) == []


def test_render_other_delimiters_and_no_newline(worked_example: bytes) -> None:
    [original] = parse_all(worked_example)
    d = Delimiters("|", ">", "^", "~")
    data = render_835(
        [original],
        sender_id="P",
        receiver_id="R",
        interchange_control=1,
        group_control=1,
        when=WHEN,
        delimiters=d,
        newline=False,
    )
    assert b"\n" not in data
    assert b"SVC|HC>99284|700|420|0450|1~" in data
    [again] = parse_all(data)
    assert strip_numbers(again) == strip_numbers(original)


# -- hypothesis ------------------------------------------------------------------------------

codes = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-", min_size=1, max_size=12)
money = st.decimals(min_value=-99_999_999, max_value=99_999_999, places=2, allow_nan=False)
quantity = st.none() | st.decimals(min_value=0, max_value=9999, places=1, allow_nan=False)
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
opt_dates = st.none() | dates
opt_codes = st.none() | codes


@st.composite
def adjustments(draw: st.DrawFn) -> tuple[Adjustment, ...]:
    items = draw(
        st.lists(
            st.tuples(st.sampled_from(["CO", "PR", "OA", "PI"]), codes, money, quantity),
            max_size=9,
        )
    )
    items.sort(key=lambda t: t[0])
    return tuple(Adjustment(g, r, a, q, 0) for g, r, a, q in items)


lines = st.builds(
    ServiceLine,
    procedure=st.builds(lambda a, b: f"{a}:{b}", st.sampled_from(["HC", "NU"]), codes),
    charge=money,
    paid=money,
    revenue_code=opt_codes,
    units=quantity,
    control_number=opt_codes,
    service_date=opt_dates,
    allowed=st.none() | money,
    adjustments=adjustments(),
    segment_number=st.just(0),
)
claims = st.builds(
    ClaimPayment,
    patient_control_number=codes,
    status=st.sampled_from(["1", "2", "4", "22"]),
    charge=money,
    paid=money,
    patient_responsibility=st.none() | money,
    filing_indicator=st.sampled_from(["12", "MA", "MB"]),
    payer_claim_number=st.just("") | codes,
    facility_type=st.just("") | codes,
    frequency=st.just("") | st.sampled_from(["1", "7"]),
    original_payer_claim_number=opt_codes,
    statement_from=opt_dates,
    statement_to=opt_dates,
    adjustments=adjustments(),
    lines=st.lists(lines, max_size=3).map(tuple),
    segment_number=st.just(0),
)
plbs = st.builds(
    ProviderAdjustment,
    provider_id=st.just("1234567893"),
    fiscal_period_end=st.just(date(2025, 12, 31)),
    reason=st.sampled_from(["L6", "WO", "FB", "CS"]),
    reference=opt_codes,
    amount=money,
    segment_number=st.just(0),
)
parties = st.builds(Party, name=codes, id_qualifier=st.just("XV"), id=codes, tin=opt_codes)
remittances = st.builds(
    Remittance835,
    control_number=st.integers(1, 9999).map(lambda n: f"{n:04d}"),
    handling=st.sampled_from(["I", "C", "H"]),
    total_paid=money,
    credit_debit=st.just("C"),
    method=st.sampled_from(["ACH", "CHK", "NON"]),
    payment_format=st.just("") | st.just("CCP"),
    payer_identifier=st.just("1999999999"),
    receiver_account=st.just("") | codes,
    effective_date=opt_dates,
    trace_type=st.just("1"),
    trace_number=codes,
    trace_payer=st.just("1999999999"),
    trace_supplemental=st.just("") | codes,
    production_date=opt_dates,
    payer=parties,
    payee=parties,
    claims=st.lists(claims, max_size=4).map(tuple),
    provider_adjustments=st.lists(plbs, max_size=8).map(tuple),
    first_segment=st.just(0),
    segment_count=st.just(0),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(remittances, min_size=1, max_size=3))
def test_render_parse_roundtrip(rs: list[Remittance835]) -> None:
    rs = [replace(r, control_number=f"{i + 1:04d}") for i, r in enumerate(rs)]
    again = parse_all(render(rs))
    assert [strip_numbers(r) for r in again] == rs


# -- synthetic ------------------------------------------------------------------------------


def test_synthetic_is_deterministic() -> None:
    assert synthetic_835(seed=7, claims=25) == synthetic_835(seed=7, claims=25)
    assert synthetic_835(seed=7, claims=25) != synthetic_835(seed=8, claims=25)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 15))
def test_synthetic_transactions_balance(seed: int, count: int, per: int) -> None:
    rs = list(synthetic_remittances(seed=seed, claims=count, claims_per_transaction=per))
    assert sum(len(r.claims) for r in rs) == count
    for r in rs:
        assert check_835(r) == []


def test_synthetic_file_parses_and_balances_with_realistic_mix() -> None:
    data = synthetic_835(seed=3, claims=800, claims_per_transaction=40)
    rs = parse_all(data)
    assert sum(len(r.claims) for r in rs) == 800
    statuses = {c.status for r in rs for c in r.claims}
    assert {"1", "2", "4", "22"} <= statuses
    groups = {
        (a.group, a.reason) for r in rs for c in r.claims for x in c.lines for a in x.adjustments
    }
    assert {("CO", "45"), ("OA", "23")} <= groups
    assert any(c.original_payer_claim_number for r in rs for c in r.claims)
    assert {p.reason for r in rs for p in r.provider_adjustments} >= {"L6", "WO"}
    for r in rs:
        assert check_835(r) == []


def test_synthetic_stream_reaches_target() -> None:
    out = io.BytesIO()
    claims = synthetic_835_stream(out, seed=1, target_bytes=200_000, claims_per_transaction=50)
    data = out.getvalue()
    assert len(data) >= 200_000
    rs = parse_all(data)
    assert sum(len(r.claims) for r in rs) == claims
    assert all(check_835(r) == [] for r in rs)
    assert Decimal(0) <= min(r.total_paid for r in rs)
