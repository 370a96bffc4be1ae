"""TrytonSink, TrytonRPC and setup_erp against a real Tryton 8.2 server."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from revbridge.domain.journal import Journal, JournalLine
from revbridge.errors import BusinessError, IndeterminateError, OutageError
from revbridge.post.erp_tryton import TrytonSink
from revbridge.post.tryton_rpc import (
    AnswerLost,
    HttpClientTransport,
    TrytonRPC,
    decode,
    encode,
)
from revbridge.post.tryton_server import free_port
from revbridge.post.tryton_setup import setup_erp

if TYPE_CHECKING:
    from tests.tryton.conftest import TrytonEnv

pytestmark = pytest.mark.tryton

ADMIN = "admin"
PASSWORD = "revbridge-test-admin"  # as in conftest.py

ZERO = Decimal("0.00")


def line(account: str, debit: str, credit: str, description: str = "") -> JournalLine:
    return JournalLine(account, Decimal(debit), Decimal(credit), description)


def era_journal(key: str, entity: str = "HOSP1", day: int = 3) -> Journal:
    """J1 of domain.md §5.6: ACCT1001 payment, CO-45 and patient responsibility."""
    return Journal(
        key=key,
        entity=entity,
        date=dt.date(2025, 1, day),
        description=f"ERA EFT20250106A {key}",
        lines=(
            line("1005", "600.00", "0", "ACCT1001 payment"),
            line("1115", "0", "600.00", "ACCT1001 payment"),
            line("5140", "250.00", "0", "CO-45"),
            line("1115", "0", "250.00", "CO-45"),
            line("1117", "150.00", "0", "PR-1 + PR-2"),
            line("1115", "0", "150.00", "PR-1 + PR-2"),
        ),
        rule_version="test-1",
    )


def small_journal(key: str, entity: str, amount: str, day: int) -> Journal:
    return Journal(
        key=key,
        entity=entity,
        date=dt.date(2025, 1 + day % 12, 1 + day % 28),
        description=f"PLB L6 interest {key}",
        lines=(line("1005", amount, "0", "interest"), line("6810", "0", amount, "interest")),
        rule_version="test-1",
    )


def move_count(rpc: TrytonRPC, domain: list[object] | None = None) -> int:
    return int(rpc.model("account.move", "search_count", domain or [], {}))


def test_json_dialect_round_trip() -> None:
    value = {"amount": Decimal("12.50"), "date": dt.date(2025, 1, 3), "items": [Decimal("0.01")]}
    payload = encode(value)
    assert b'{"__class__":"Decimal","decimal":"12.50"}' in payload
    assert b'"__class__":"date","year":2025,"month":1,"day":3' in payload
    assert decode(payload) == value


def test_setup_is_idempotent(tryton: TrytonEnv) -> None:
    before = move_count(tryton.rpc)
    report = setup_erp(
        tryton.rpc,
        entities=tryton.entities,
        accounts=tryton.accounts,
        fiscal_year=tryton.fiscal_year,
    )
    assert not report.changed, (report.created, report.updated)
    assert report.companies == tryton.report.companies
    assert report.accounts == tryton.report.accounts
    assert report.fiscal_years == tryton.report.fiscal_years
    assert set(report.companies) == {"HOSP1", "CLIN2"}
    assert all(len(codes) == len(tryton.accounts) for codes in report.accounts.values())
    periods = tryton.rpc.model(
        "account.period", "search_count", [["fiscalyear", "=", report.fiscal_years["HOSP1"]]], {}
    )
    assert periods == 12
    assert move_count(tryton.rpc) == before


def test_post_balanced_journal_and_read_back(tryton: TrytonEnv) -> None:
    sink = TrytonSink(tryton.rpc)
    journal = era_journal("era-835-J1")
    result = sink.post([journal])
    assert set(result) == {journal.key}
    move_id = int(result[journal.key])

    rpc = tryton.rpc
    (move,) = rpc.model(
        "account.move",
        "read",
        [move_id],
        ["state", "revbridge_key", "company", "date", "description", "lines", "number", "period"],
        {},
    )
    assert move["state"] == "posted"
    assert move["number"]
    assert move["revbridge_key"] == journal.key
    assert move["company"] == tryton.report.companies["HOSP1"]
    assert move["date"] == dt.date(2025, 1, 3)
    assert move["description"] == journal.description
    lines = rpc.model(
        "account.move.line",
        "read",
        move["lines"],
        ["account.code", "debit", "credit", "description"],
        {},
    )
    got = sorted(
        (row["account."]["code"], row["debit"], row["credit"], row["description"]) for row in lines
    )
    want = sorted((ln.account, ln.debit, ln.credit, ln.description) for ln in journal.lines)
    assert got == want
    assert all(isinstance(row["debit"], Decimal) for row in lines)
    assert (
        sum(row["debit"] for row in lines)
        == sum(row["credit"] for row in lines)
        == Decimal("1000.00")
    )
    sink.close()


def test_duplicate_key_is_refused_by_the_erp_and_returns_existing_id(tryton: TrytonEnv) -> None:
    assert TrytonSink.idempotent, "the sink declares the contract this test shows"
    journal = era_journal("era-835-dup")
    first = TrytonSink(tryton.rpc).post([journal])
    before = move_count(tryton.rpc)

    # The ERP itself refuses a second move with the same key in the same company.
    company = tryton.report.companies["HOSP1"]
    values = {
        "company": company,
        "journal": tryton.rpc.model(
            "account.journal", "search", [["code", "=", "MISC"]], 0, 1, None, {}
        )[0],
        "period": tryton.rpc.model(
            "account.period",
            "search",
            [["company", "=", company], ["start_date", "=", dt.date(2025, 1, 1)]],
            0,
            None,
            None,
            {},
        )[0],
        "date": dt.date(2025, 1, 3),
        "revbridge_key": journal.key,
        "lines": [
            [
                "create",
                [
                    {
                        "account": tryton.report.accounts["HOSP1"]["1005"],
                        "debit": Decimal("1.00"),
                        "credit": ZERO,
                    },
                    {
                        "account": tryton.report.accounts["HOSP1"]["1115"],
                        "debit": ZERO,
                        "credit": Decimal("1.00"),
                    },
                ],
            ]
        ],
    }
    with pytest.raises(BusinessError) as refused:
        tryton.rpc.model("account.move", "revbridge_create_post", [values], {"company": company})
    assert refused.value.code == "duplicate_key"
    with pytest.raises(BusinessError) as refused_plain:
        tryton.rpc.model("account.move", "create", [values], {"company": company})
    assert refused_plain.value.code == "duplicate_key"

    # A fresh sink (nothing cached, e.g. after a timeout and a restart) posts it again,
    # alone and inside a batch with new journals: the existing move is returned.
    again = TrytonSink(tryton.new_rpc()).post([journal])
    assert again == first
    other = era_journal("era-835-new", day=4)
    batch = TrytonSink(tryton.new_rpc(), batch_size=10).post([other, journal])
    assert batch[journal.key] == first[journal.key]
    assert batch[other.key] != first[journal.key]
    assert move_count(tryton.rpc) == before + 1
    assert move_count(tryton.rpc, [["revbridge_key", "=", journal.key]]) == 1


def test_same_key_in_two_companies_is_two_moves(tryton: TrytonEnv) -> None:
    sink = TrytonSink(tryton.rpc)
    hosp = sink.post([era_journal("shared-key", "HOSP1")])
    clin = sink.post([era_journal("shared-key", "CLIN2")])
    assert hosp["shared-key"] != clin["shared-key"]


def test_lookup(tryton: TrytonEnv) -> None:
    sink = TrytonSink(tryton.rpc)
    posted = sink.post([era_journal("look-1"), era_journal("look-2", "CLIN2")])
    assert sink.lookup(["look-1", "look-2", "never-posted"]) == posted
    assert sink.lookup([]) == {}
    assert TrytonSink(tryton.new_rpc()).lookup(["never-posted"]) == {}


def test_relogin_after_the_session_is_invalidated(tryton: TrytonEnv) -> None:
    rpc = tryton.rpc
    rpc.login()
    assert rpc.logins == 1
    old_session = rpc.session
    rpc.call("common.db.logout")  # the server forgets the session; the client still holds it
    sink = TrytonSink(rpc)
    result = sink.post([era_journal("after-relogin")])
    assert rpc.logins == 2
    assert rpc.session != old_session
    assert sink.lookup(["after-relogin"]) == result


def test_unknown_account_and_entity_are_business_errors(tryton: TrytonEnv) -> None:
    sink = TrytonSink(tryton.rpc)
    bad = Journal(
        key="bad-account",
        entity="HOSP1",
        date=dt.date(2025, 1, 3),
        description="unknown account",
        lines=(line("1005", "10.00", "0"), line("9999", "0", "10.00")),
        rule_version="test-1",
    )
    with pytest.raises(BusinessError) as err:
        sink.post([era_journal("good-before-bad"), bad])
    assert "9999" in str(err.value)
    assert err.value.code == "bad-account"
    with pytest.raises(BusinessError) as err_entity:
        sink.post([era_journal("bad-entity", entity="NOPE")])
    assert "NOPE" in str(err_entity.value)
    # Validation happens before anything is sent: nothing was booked.
    assert sink.lookup(["good-before-bad", "bad-account", "bad-entity"]) == {}


def test_no_open_period_is_a_business_error(tryton: TrytonEnv) -> None:
    sink = TrytonSink(tryton.rpc)
    journal = Journal(
        key="out-of-year",
        entity="HOSP1",
        date=dt.date(2031, 1, 3),
        description="no fiscal year",
        lines=(line("1005", "10.00", "0"), line("6810", "0", "10.00")),
        rule_version="test-1",
    )
    with pytest.raises(BusinessError, match="no open period"):
        sink.post([journal])


def test_batch_of_50_across_two_companies(tryton: TrytonEnv) -> None:
    sink = TrytonSink(tryton.rpc, batch_size=20)
    journals = [
        small_journal(f"batch-{n:03d}", tryton.entities[n % 2].code, f"{n + 1}.25", n)
        for n in range(50)
    ]
    before = move_count(tryton.rpc)
    result = sink.post(journals)
    assert set(result) == {j.key for j in journals}
    assert len(set(result.values())) == 50
    assert move_count(tryton.rpc) == before + 50
    for entity in tryton.entities:
        company = tryton.report.companies[entity.code]
        assert (
            move_count(
                tryton.rpc,
                [
                    ["company", "=", company],
                    ["state", "=", "posted"],
                    ["revbridge_key", "like", "batch-%"],
                ],
            )
            == 25
        )
    assert sink.lookup([j.key for j in journals]) == result
    # The same 50 again: every key is already booked, nothing new is created.
    assert TrytonSink(tryton.new_rpc(), batch_size=20).post(journals) == result
    assert move_count(tryton.rpc) == before + 50


def test_connection_refused_is_an_outage() -> None:
    rpc = TrytonRPC(f"http://127.0.0.1:{free_port()}", "test", "admin", "x", timeout=2)
    with pytest.raises(OutageError):
        rpc.login()


class LoseAnswers:
    """Real HTTP to the real server, but the answer to chosen methods is lost afterwards."""

    def __init__(self, methods: set[str]) -> None:
        self.methods = methods
        self.inner = HttpClientTransport()
        self.lost = 0

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        answer = self.inner(url, body, headers, timeout)
        if json.loads(body)["method"] in self.methods:
            self.lost += 1
            raise AnswerLost("read timed out (simulated after the server answered)")
        return answer


def test_answer_lost_after_commit_is_indeterminate_then_lookup_finds_it(
    tryton: TrytonEnv,
) -> None:
    transport = LoseAnswers({"model.account.move.revbridge_create_post"})
    rpc = TrytonRPC(tryton.server.base_url, tryton.database, ADMIN, PASSWORD, transport=transport)
    journal = era_journal("lost-answer")
    before = move_count(tryton.rpc)
    with pytest.raises(IndeterminateError):
        TrytonSink(rpc).post([journal])
    assert transport.lost == 1
    # Tryton committed: the key is there, and posting again books nothing new.
    sink = TrytonSink(tryton.rpc)
    found = sink.lookup([journal.key])
    assert set(found) == {journal.key}
    assert sink.post([journal]) == found
    assert move_count(tryton.rpc) == before + 1
    rpc.close()


def test_currency_mismatch_is_a_business_error(tryton: TrytonEnv) -> None:
    journal = Journal(
        key="eur-journal",
        entity="HOSP1",
        date=dt.date(2025, 1, 3),
        description="wrong currency",
        lines=(line("1005", "10.00", "0"), line("6810", "0", "10.00")),
        rule_version="test-1",
        currency="EUR",
    )
    with pytest.raises(BusinessError, match="EUR"):
        TrytonSink(tryton.rpc).post([journal])
