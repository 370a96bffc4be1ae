"""Golden test: domain.md §1.10's 835 gives exactly §5.6's journals J1–J6."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from revbridge.domain.master import MasterData
from revbridge.formats.x12.envelope import scan
from revbridge.ledger.posting_rules import PostingRules
from revbridge.ledger.remittance import LedgerResult, build_remittance_journals
from revbridge.normalise.x12_835 import Normalised, UnitInput, normalise_835
from tests.conftest import WORKED_EXAMPLE

KEY = "835:1999999999:EFT20250106A:RHS"


def worked_example_unit() -> UnitInput:
    data = WORKED_EXAMPLE.read_bytes()
    with WORKED_EXAMPLE.open("rb") as stream:
        tx = scan(stream).transactions[0]
    return UnitInput(
        data[tx.start : tx.end],
        tx.delimiters.encode(),
        tx.first_segment,
        raw_id=1,
        unit_id=1,
        channel="test",
        content_hash=tx.content_hash,
    )


def journals_for_worked_example(master: MasterData, rules: PostingRules) -> LedgerResult:
    result = normalise_835(worked_example_unit(), datetime(2025, 1, 3, 9, 15, tzinfo=UTC))
    assert isinstance(result, Normalised)
    return build_remittance_journals(result.events, master, rules)


def pairs(lines: object) -> dict[tuple[str, str], Decimal]:
    """Net movement per (debit account, credit account), summed over the lines."""
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    it = iter(lines)  # type: ignore[call-overload]
    for debit, credit in zip(it, it, strict=True):
        totals[(debit.account, credit.account)] += debit.debit
    return dict(totals)


def test_journals_match_domain_reference(master: MasterData, rules: PostingRules) -> None:
    result = journals_for_worked_example(master, rules)
    by_kind = {j.kind: j for j in result.journals}
    assert sorted(by_kind) == ["correction", "remittance", "reversal"]
    assert pairs(by_kind["remittance"].lines) == {
        ("1005", "1115"): Decimal("600.00"),  # J1 payment
        ("5140", "1115"): Decimal("250.00"),  # J1 CO-45 220 + 30
        ("1117", "1115"): Decimal("150.00"),  # J1 PR-1 60 + PR-2 90
        ("1005", "6810"): Decimal("12.50"),  # J5 PLB L6 interest
        ("2110", "1005"): Decimal("75.00"),  # J6 PLB WO recoupment
    }
    assert pairs(by_kind["reversal"].lines) == {
        ("1115", "1005"): Decimal("480.00"),  # J3 reversal: payment
        ("1115", "5140"): Decimal("320.00"),  # J3 reversal: CO-45
    }
    assert pairs(by_kind["correction"].lines) == {
        ("1005", "1115"): Decimal("520.00"),  # J4 correction: payment
        ("5140", "1115"): Decimal("280.00"),  # J4 correction: CO-45
    }


def test_cash_clearing_equals_bpr02(master: MasterData, rules: PostingRules) -> None:
    result = journals_for_worked_example(master, rules)
    net = sum(
        (line.net for j in result.journals for line in j.lines if line.account == "1005"),
        Decimal(0),
    )
    assert net == Decimal("577.50")


def test_denial_opens_a_work_item_and_posts_nothing(
    master: MasterData, rules: PostingRules
) -> None:
    result = journals_for_worked_example(master, rules)
    assert [x.reason for x in result.exceptions] == ["claim_denied"]
    assert result.exceptions[0].subject["patient_control_number"] == "ACCT1002"
    lines = [line for j in result.journals for line in j.lines]
    assert all(line.source.get("patient_control_number") != "ACCT1002" for line in lines)


def test_keys_dimensions_and_sources(master: MasterData, rules: PostingRules) -> None:
    result = journals_for_worked_example(master, rules)
    assert sorted(j.key for j in result.journals) == [
        f"{KEY}:correction",
        f"{KEY}:remittance",
        f"{KEY}:reversal",
    ]
    line = result.journals[0].lines[0]
    assert line.dimensions == {
        "entity": "RHS",
        "facility": "H01",
        "payer": "ACME01",
        "financial_class": "commercial",
    }
    assert line.source["trn"] == "EFT20250106A"
    assert line.source["patient_control_number"] == "ACCT1001"
    assert line.source["payer_claim_number"] == "ICN-A-1001"
    assert line.source["segment"] == "15"
    assert all(j.rule_version == "2025.1" for j in result.journals)


def test_replay_is_deterministic(master: MasterData, rules: PostingRules) -> None:
    first = normalise_835(worked_example_unit(), datetime(2025, 1, 3, tzinfo=UTC))
    again = normalise_835(worked_example_unit(), datetime(2026, 6, 1, tzinfo=UTC))
    assert isinstance(first, Normalised) and isinstance(again, Normalised)
    assert [(e.id, e.type, e.keys, e.data) for e in first.events] == [
        (e.id, e.type, e.keys, e.data) for e in again.events
    ]
    assert journals_for_worked_example(master, rules) == journals_for_worked_example(master, rules)
