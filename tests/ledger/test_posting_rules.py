"""Every posting rule of the sample rule set, on small synthetic remittances."""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from revbridge.demo.remittance_day import ACME, C01, H01, MEDICARE, clp, plb, svc
from revbridge.domain.journal import JournalLine, UnbalancedJournal, check_balanced, posting_pair
from revbridge.domain.master import MasterData
from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.model835 import ClaimPayment, Party, ProviderAdjustment
from revbridge.formats.x12.synthetic import payment
from revbridge.formats.x12.write835 import render_835
from revbridge.ledger.posting_rules import PostingRules
from revbridge.ledger.remittance import LedgerResult, build_remittance_journals
from revbridge.normalise.x12_835 import Normalised, UnitInput, normalise_835

DAY = date(2025, 3, 3)


def book(
    master: MasterData,
    rules: PostingRules,
    claims: list[ClaimPayment],
    plbs: list[ProviderAdjustment] | None = None,
    payer: Party = ACME,
    payee: Party = H01,
) -> LedgerResult:
    r = payment(
        "0001",
        payer,
        payee,
        trace="T1",
        payer_ein="1999999999",
        claims=claims,
        plbs=plbs or [],
        day=DAY,
    )
    data = render_835(
        [r],
        sender_id="S",
        receiver_id="R",
        interchange_control=1,
        group_control=1,
        when=datetime(2025, 3, 3, tzinfo=UTC),
    )
    tx = scan(io.BytesIO(data)).transactions[0]
    unit = UnitInput(
        data[tx.start : tx.end],
        tx.delimiters.encode(),
        tx.first_segment,
        1,
        1,
        "test",
        tx.content_hash,
    )
    result = normalise_835(unit, datetime(2025, 3, 3, tzinfo=UTC))
    assert isinstance(result, Normalised), result
    return build_remittance_journals(result.events, master, rules)


def moves(result: LedgerResult) -> dict[tuple[str, str], Decimal]:
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for journal in result.journals:
        lines = iter(journal.lines)
        for debit, credit in zip(lines, lines, strict=True):
            totals[(debit.account, credit.account)] += debit.debit
    return dict(totals)


def reasons(result: LedgerResult) -> list[str]:
    return sorted(x.reason for x in result.exceptions)


def test_contractual_and_patient_responsibility(master: MasterData, rules: PostingRules) -> None:
    claim = clp("A1", "1", "I1", [svc("HC:1", "100", [("CO", "45", "30"), ("PR", "1", "20")])])
    assert moves(book(master, rules, [claim])) == {
        ("1005", "1115"): Decimal("50.00"),
        ("5140", "1115"): Decimal("30.00"),
        ("1117", "1115"): Decimal("20.00"),
    }


def test_financial_class_decides_the_accounts(master: MasterData, rules: PostingRules) -> None:
    claim = clp("A1", "1", "I1", charge="100", claim_adjustments=[("CO", "253", "2")])
    assert moves(book(master, rules, [claim], payer=MEDICARE)) == {
        ("1005", "1111"): Decimal("98.00"),
        ("5110", "1111"): Decimal("2.00"),
    }


def test_line_denial_on_a_paid_claim_stays_in_ar(master: MasterData, rules: PostingRules) -> None:
    claim = clp(
        "A1",
        "1",
        "I1",
        [svc("HC:1", "100", [("CO", "45", "40")]), svc("HC:2", "70", [("CO", "50", "70")])],
    )
    result = book(master, rules, [claim])
    assert moves(result) == {("1005", "1115"): Decimal("60.00"), ("5140", "1115"): Decimal("40.00")}
    assert reasons(result) == ["claim_denied"]


@pytest.mark.parametrize("status", ["2", "20"])
def test_oa23_on_a_secondary_is_information(
    master: MasterData, rules: PostingRules, status: str
) -> None:
    claim = clp("A1", status, "I1", charge="400", claim_adjustments=[("OA", "23", "320")])
    assert moves(book(master, rules, [claim])) == {("1005", "1115"): Decimal("80.00")}


def test_payer_initiated_reduction_goes_to_the_denial_workflow(
    master: MasterData, rules: PostingRules
) -> None:
    claim = clp("A1", "1", "I1", charge="100", claim_adjustments=[("PI", "204", "10")])
    result = book(master, rules, [claim])
    assert moves(result) == {("1005", "1115"): Decimal("90.00")}
    assert reasons(result) == ["claim_denied"]


def test_unmapped_code_books_to_suspense_and_opens_an_item(
    master: MasterData, rules: PostingRules
) -> None:
    claim = clp("A1", "1", "I1", charge="100", claim_adjustments=[("OA", "94", "10")])
    result = book(master, rules, [claim])
    assert moves(result) == {("1005", "1115"): Decimal("90.00"), ("2199", "1115"): Decimal("10.00")}
    assert reasons(result) == ["unmapped_code"]
    assert result.exceptions[0].subject["code"] == "OA-94"


@pytest.mark.parametrize(
    ("code", "amount", "expected"),
    [
        ("L6", "-5", {("1005", "6810"): Decimal("5.00")}),  # E21 interest
        ("WO", "25", {("2110", "1005"): Decimal("25.00")}),  # E18 recoupment
        ("WO", "-25", {("1005", "2120"): Decimal("25.00")}),  # E19 deferred recoupment
        ("72", "-25", {("1005", "2110"): Decimal("25.00")}),  # E20 refund acknowledged
        ("FB", "-30", {("1005", "2120"): Decimal("30.00")}),  # E22 forward balance
        ("FB", "30", {("2120", "1005"): Decimal("30.00")}),  # E22 applied
        ("PI", "-40", {("1005", "2120"): Decimal("40.00")}),  # E25 PIP
        ("L3", "15", {("7910", "1005"): Decimal("15.00")}),  # E26 penalty
    ],
)
def test_provider_level_adjustments(
    master: MasterData,
    rules: PostingRules,
    code: str,
    amount: str,
    expected: dict[tuple[str, str], Decimal],
) -> None:
    claim = clp("A1", "1", "I1", charge="100")
    result = book(master, rules, [claim], [plb(H01, code, "REF1", amount, 2025)])
    assert {k: v for k, v in moves(result).items() if k != ("1005", "1115")} == expected


def test_unmapped_plb_code_books_to_suspense(master: MasterData, rules: PostingRules) -> None:
    result = book(
        master, rules, [clp("A1", "1", "I1", charge="100")], [plb(H01, "CS", "X", "10", 2025)]
    )
    assert moves(result)[("2199", "1005")] == Decimal("10.00")
    assert reasons(result) == ["unmapped_code"]


def test_unknown_payee_posts_nothing_and_opens_an_item(
    master: MasterData, rules: PostingRules
) -> None:
    stranger = Party("ELSEWHERE CLINIC", "XX", "1999999976")
    result = book(master, rules, [clp("A1", "1", "I1", charge="100")], payee=stranger)
    assert result.journals == []
    assert reasons(result) == ["unknown_payee"]


def test_entity_comes_from_the_payee(master: MasterData, rules: PostingRules) -> None:
    result = book(master, rules, [clp("A1", "1", "I1", charge="100")], payee=C01)
    assert [j.entity for j in result.journals] == ["RPG"]
    assert result.journals[0].key == "835:1999999999:T1:RPG:remittance"


def test_negative_amount_swaps_sides() -> None:
    debit, credit = posting_pair(
        "5140", "1115", Decimal("-320"), description="", dimensions={}, source={}
    )
    assert (debit.account, debit.debit, credit.account, credit.credit) == (
        "1115",
        Decimal("320.00"),
        "5140",
        Decimal("320.00"),
    )


@pytest.mark.parametrize(
    "lines",
    [
        (
            JournalLine("1", Decimal("1.00"), Decimal(0)),
            JournalLine("2", Decimal(0), Decimal("0.99")),
        ),
        (
            JournalLine("1", Decimal("1.001"), Decimal(0)),
            JournalLine("2", Decimal(0), Decimal("1.001")),
        ),
        (JournalLine("1", Decimal("1"), Decimal("1")), JournalLine("2", Decimal(0), Decimal(0))),
        (JournalLine("1", Decimal("-1"), Decimal(0)), JournalLine("2", Decimal(0), Decimal("-1"))),
        (),
    ],
)
def test_unbalanced_or_malformed_journals_are_refused(lines: tuple[JournalLine, ...]) -> None:
    with pytest.raises(UnbalancedJournal):
        check_balanced("k", lines)
