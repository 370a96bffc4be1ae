"""The checker is the judge of every scenario: it must see loss, doubles and imbalance.

A clean run passes; then one fault at a time is planted in one of the three histories and
the checker must name it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from revbridge.store.base import NewException
from revbridge.store.sqlite import SQLiteStore
from tests.conftest import WORKED_EXAMPLE
from tests.faults.checker import Delivery, SenderHistory, sha256_of
from tests.faults.corpus import write_corpus
from tests.faults.harness import Deployment, FakeClock, ingest_all, make_deployment, run_until_quiet


@dataclass
class Run:
    deployment: Deployment
    senders: SenderHistory
    paths: list[Path]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    deployment = make_deployment(tmp_path / "deploy")
    paths = [*write_corpus(tmp_path / "msgs", seed=11, files=4), WORKED_EXAMPLE]
    clock = FakeClock()
    app, _erp = deployment.app(clock)
    senders = SenderHistory()
    try:
        ingest_all(app, paths + paths[:2], senders)
        run_until_quiet(app, clock)
    finally:
        app.close()
    return Run(deployment, senders, paths)


def erp_sql(run: Run, sql: str) -> None:
    conn = sqlite3.connect(run.deployment.erp_db)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def test_a_clean_run_passes(run: Run) -> None:
    report = run.deployment.check(run.senders).assert_ok()
    assert report.messages == len(run.paths)
    assert report.told == {"accepted": len(run.paths), "duplicate": 2}
    assert report.expected_journals == report.posted > 0
    assert report.erp_documents == report.store_journals == report.posted


def test_an_acknowledged_message_missing_from_the_store_is_lost(run: Run, tmp_path: Path) -> None:
    never = tmp_path / "never-stored.835"
    write_corpus(tmp_path / "other", seed=12, files=1)[0].rename(never)
    run.senders.deliveries.append(Delivery("liar", never, sha256_of(never), "accepted"))
    report = run.deployment.check(run.senders)
    assert [x for x in report.lost if "never-stored.835" in x and "not in the store" in x]


def test_a_journal_missing_from_the_erp_is_lost(run: Run) -> None:
    erp_sql(run, "DELETE FROM lines WHERE document_id = 1")
    erp_sql(run, "DELETE FROM documents WHERE id = 1")
    report = run.deployment.check(run.senders)
    assert len(report.lost) == 1 and "ERP holds nothing" in report.lost[0]
    assert any("store says posted" in x for x in report.mismatched)


def test_a_journal_booked_twice_is_a_double(run: Run) -> None:
    erp_sql(
        run,
        "INSERT INTO documents (key, entity, date, kind, currency, description, pid, call_no)"
        " SELECT key, entity, date, kind, currency, description, pid, call_no"
        " FROM documents WHERE id = 2",
    )
    erp_sql(
        run,
        "INSERT INTO lines SELECT (SELECT MAX(id) FROM documents), line_no, account, debit,"
        " credit, dimensions, source FROM lines WHERE document_id = 2",
    )
    report = run.deployment.check(run.senders)
    assert len(report.doubled) == 1 and "booked 2x" in report.doubled[0]


def test_the_same_content_under_another_key_is_a_double(run: Run) -> None:
    erp_sql(
        run,
        "INSERT INTO documents (key, entity, date, kind, currency, description, pid, call_no)"
        " SELECT key || ':again', entity, date, kind, currency, description, pid, call_no"
        " FROM documents WHERE id = 2",
    )
    erp_sql(
        run,
        "INSERT INTO lines SELECT (SELECT MAX(id) FROM documents), line_no, account, debit,"
        " credit, dimensions, source FROM lines WHERE document_id = 2",
    )
    report = run.deployment.check(run.senders)
    assert any("same content" in x for x in report.doubled)
    assert any("not in the store" in x for x in report.mismatched)


def test_an_unbalanced_erp_document_is_named(run: Run) -> None:
    erp_sql(run, "UPDATE lines SET debit = '999.99' WHERE document_id = 3 AND debit <> '0.00'")
    report = run.deployment.check(run.senders)
    assert report.unbalanced == [next(x for x in report.unbalanced if "DOC-3" in x)]
    assert report.lost  # its lines are no longer what the message says


def open_item(run: Run, reason: str, subject: dict[str, str]) -> None:
    store = SQLiteStore(run.deployment.store_path)
    try:
        with store.unit_of_work() as uow:
            uow.exceptions.open(
                NewException(reason, "planted", f"planted:{reason}:{subject}", subject)
            )
    finally:
        store.close()


def test_an_open_item_accounts_for_a_journal_not_posted(run: Run) -> None:
    conn = sqlite3.connect(run.deployment.erp_db)
    try:
        (key,) = conn.execute("SELECT key FROM documents WHERE id = 1").fetchone()
    finally:
        conn.close()
    erp_sql(run, "DELETE FROM lines WHERE document_id = 1")
    erp_sql(run, "DELETE FROM documents WHERE id = 1")
    open_item(run, "erp_rejected", {"journal": "another key"})
    open_item(run, "claim_denied", {"journal": key})
    report = run.deployment.check(run.senders)
    assert report.lost, "an item naming another journal, or only informing, excuses nothing"
    open_item(run, "erp_rejected", {"journal": key})
    report = run.deployment.check(run.senders)
    assert not report.lost and report.covered.get("erp_rejected") == 1


def test_told_rejected_needs_an_open_item(run: Run, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.835"
    garbage.write_bytes(b"not x12 at all")
    run.senders.add("liar", garbage, "rejected")
    report = run.deployment.check(run.senders)
    assert [x for x in report.lost if "garbage.835" in x]
