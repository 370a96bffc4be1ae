"""End to end on real SQLite: 835 file -> ingest -> normalise -> journals -> GL file."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

from revbridge import bootstrap
from revbridge.domain.journal import JournalStatus
from revbridge.ingest.x12_files import ingest_file
from revbridge.observe.trace import trace
from revbridge.store.base import UnitStatus
from tests.conftest import WORKED_EXAMPLE


def run(app: bootstrap.App, *paths: Path) -> list[str]:
    statuses = [ingest_file(app.store, p).status for p in paths]
    app.worker().run_until_idle(max_wait_seconds=0)
    return statuses


def gl_rows(app: bootstrap.App) -> list[dict[str, str]]:
    folder = Path(app.config.output("gl").options["path"])
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("gl-*.csv")):
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def test_worked_example_posts_balanced_journals(app: bootstrap.App) -> None:
    assert run(app, WORKED_EXAMPLE) == ["accepted"]
    with app.store.unit_of_work() as uow:
        records = uow.journals.all()
        reasons = [x.reason for x in uow.exceptions.all()]
    assert len(records) == 3
    assert {r.status for r in records} == {JournalStatus.POSTED}
    assert all(r.erp_document_id for r in records)
    assert reasons == ["claim_denied"]
    rows = gl_rows(app)
    debits = sum(Decimal(r["debit"]) for r in rows)
    assert debits == sum(Decimal(r["credit"]) for r in rows) == Decimal("2687.50")
    clearing = sum(
        Decimal(r["debit"]) - Decimal(r["credit"]) for r in rows if r["account"] == "1005"
    )
    assert clearing == Decimal("577.50")  # BPR02


def test_same_file_again_is_a_duplicate_with_no_effect(app: bootstrap.App) -> None:
    run(app, WORKED_EXAMPLE)
    before = gl_rows(app)
    assert run(app, WORKED_EXAMPLE) == ["duplicate"]
    assert gl_rows(app) == before


def test_resend_with_new_control_numbers_is_recognised(app: bootstrap.App, tmp_path: Path) -> None:
    resend = tmp_path / "resend.835"
    resend.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004712"))
    assert run(app, WORKED_EXAMPLE, resend) == ["accepted", "accepted"]
    with app.store.unit_of_work() as uow:
        statuses = [u.status for u in uow.units.by_raw(2)]
        assert len(uow.journals.all()) == 3
    assert statuses == [UnitStatus.DUPLICATE]


def test_reused_control_numbers_with_other_bytes_are_processed_and_flagged(
    app: bootstrap.App, tmp_path: Path
) -> None:
    other = tmp_path / "reused.835"
    other.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"EFT20250106A", b"EFT20250107B"))
    assert run(app, WORKED_EXAMPLE, other) == ["accepted", "accepted"]
    with app.store.unit_of_work() as uow:
        reasons = sorted(x.reason for x in uow.exceptions.all())
        journals = uow.journals.all()
    assert "control_number_reused" in reasons
    assert len(journals) == 6  # the second payment is real money: never dropped


def test_trace_from_claim_to_segments_events_and_lines(app: bootstrap.App) -> None:
    run(app, WORKED_EXAMPLE)
    with app.store.unit_of_work() as uow:
        result = trace(uow, "ICN-A-0900B")
        back = trace(uow, "835:1999999999:EFT20250106A:RHS:correction")
    assert [s["text"] for s in result.segments][:2] == [
        "CLP*ACCT0900*1*800*520**12*ICN-A-0900B*13*1",
        "CAS*CO*45*280",
    ]
    [claim] = [e for e in result.events if e["type"] == "claim.adjudicated"]
    assert [(a["group"], a["reason"], a["amount"]) for a in claim["data"]["adjustments"]] == [
        ("CO", "45", "280.00")
    ]
    assert [j["key"] for j in result.journals] == ["835:1999999999:EFT20250106A:RHS:correction"]
    assert back.journals[0]["erp_document_id"]
    assert any(s["text"].startswith("CLP*ACCT0900*1") for s in back.segments)


def test_unknown_payer_posts_under_other_and_opens_an_item(
    app: bootstrap.App, tmp_path: Path
) -> None:
    path = tmp_path / "unknown.835"
    path.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"XV*ACME01", b"XV*NEWPLAN7"))
    run(app, path)
    with app.store.unit_of_work() as uow:
        items = [x for x in uow.exceptions.all() if x.reason == "unknown_payer"]
        journal = uow.journals.all()[0].journal
    assert items and items[0].subject["payer"] == "NEWPLAN7"
    assert journal.lines[0].dimensions["financial_class"] == "other"
    assert journal.lines[1].account == "1116"
