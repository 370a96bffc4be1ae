"""Denial write-offs (E9): what the denial item records, and the journal built from it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from revbridge.demo.remittance_day import MEDICARE, clp, svc
from revbridge.domain.master import MasterData
from revbridge.ledger.posting_rules import PostingRules
from revbridge.ledger.write_off import (
    NotWritable,
    build_write_off,
    check_amount,
    denial_from_subject,
    write_off_key,
)
from tests.ledger.test_posting_rules import book

DAY = date(2025, 4, 30)


def test_a_claim_level_denial_records_the_sum_of_its_denial_adjustments(
    master: MasterData, rules: PostingRules
) -> None:
    claim = clp(
        "A9",
        "4",
        "I9",
        charge="300",
        claim_adjustments=[("CO", "50", "250"), ("CO", "16", "50")],
    )
    (item,) = book(master, rules, [claim], payer=MEDICARE).exceptions
    subject = item.subject
    assert (subject["denied_amount"], subject["code"]) == ("300.00", "CO-50")
    assert (subject["ar_account"], subject["denial_account"]) == ("1111", "5230")
    assert (subject["entity"], subject["financial_class"]) == ("RHS", "medicare")


def test_a_line_denial_records_its_own_amount(master: MasterData, rules: PostingRules) -> None:
    claim = clp(
        "A1",
        "1",
        "I1",
        [svc("HC:1", "100", [("CO", "45", "40")]), svc("HC:2", "70", [("CO", "50", "70")])],
    )
    (item,) = book(master, rules, [claim]).exceptions
    assert (item.subject["denied_amount"], item.subject["code"]) == ("70.00", "CO-50")
    denial = denial_from_subject(item.subject)
    journal = build_write_off(
        denial, exception_id=7, amount=Decimal("70"), on=DAY, rule_version="v"
    )
    assert journal.key == write_off_key(denial, 7) == "835:1999999999:T1:RHS:writeoff:7"
    assert [(x.account, x.debit, x.credit) for x in journal.lines] == [
        ("5230", Decimal("70.00"), Decimal("0.00")),
        ("1115", Decimal("0.00"), Decimal("70.00")),
    ]
    assert journal.date == DAY and journal.kind == "writeoff" and journal.rule_version == "v"
    assert journal.lines[1].dimensions["adjustment_reason"] == "CO-50"
    assert journal.lines[1].source["patient_control_number"] == "A1"


def test_amounts_are_checked(master: MasterData, rules: PostingRules) -> None:
    claim = clp("A1", "4", "I1", charge="80", claim_adjustments=[("CO", "50", "80")])
    denial = denial_from_subject(book(master, rules, [claim]).exceptions[0].subject)
    assert check_amount(denial, None) == Decimal("80.00")
    assert check_amount(denial, Decimal("12.5")) == Decimal("12.50")
    for bad in ("80.01", "0", "-1", "1.001", "NaN"):
        with pytest.raises(ValueError):
            check_amount(denial, Decimal(bad))


def test_an_item_without_the_denial_facts_cannot_be_written_off() -> None:
    with pytest.raises(NotWritable, match="ar_account"):
        denial_from_subject({"payment": "P", "denied_amount": "5.00"})
