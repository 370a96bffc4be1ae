"""End to end into a real Tryton: 835 files -> posted moves whose totals equal the 835s'."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from revbridge import bootstrap
from revbridge.cli import main
from revbridge.config import load_config
from revbridge.demo.remittance_day import write_day
from revbridge.domain.events import EventType
from revbridge.domain.journal import JournalStatus
from revbridge.ingest.x12_files import ingest_file
from revbridge.ledger.master_data import load_master_data
from revbridge.post.tryton_rpc import TrytonRPC
from revbridge.post.tryton_setup import AccountSpec, EntitySpec, setup_erp
from revbridge.sample import write_sample
from tests.conftest import SAMPLE, WORKED_EXAMPLE
from tests.tryton.conftest import ADMIN_PASSWORD, TrytonEnv

pytestmark = pytest.mark.tryton


@pytest.fixture
def erp_app(
    tryton: TrytonEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[bootstrap.App]:
    master = load_master_data(SAMPLE / "master-data.yaml")
    for year in (2025, 2026):
        setup_erp(
            tryton.rpc,
            entities=[EntitySpec(e.code, e.name) for e in master.entities.values()],
            accounts=[AccountSpec(a.code, a.name, a.kind) for a in master.accounts.values()],
            fiscal_year=year,
        )
    monkeypatch.setenv("REVBRIDGE_ERP_PASSWORD", ADMIN_PASSWORD)
    config = write_sample(
        tmp_path / "deploy",
        target="erp",
        erp_url=tryton.server.base_url,
        erp_database=tryton.database,
    )
    app = bootstrap.build(load_config(config, bootstrap.SPECS))
    yield app
    app.close()


def moves(rpc: TrytonRPC) -> list[dict[str, object]]:
    return list(
        rpc.model(
            "account.move",
            "search_read",
            [("revbridge_key", "!=", None)],
            0,
            None,
            None,
            ["revbridge_key", "state", "company.party.code"],
            {},
        )
    )


def clearing_by_company(rpc: TrytonRPC) -> dict[str, Decimal]:
    lines = rpc.model(
        "account.move.line",
        "search_read",
        [("account.code", "=", "1005"), ("move.revbridge_key", "!=", None)],
        0,
        None,
        None,
        ["debit", "credit", "move.company.party.code"],
        {},
    )
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        totals[line["move."]["company."]["party."]["code"]] += line["debit"] - line["credit"]
    return dict(totals)


def run(app: bootstrap.App, *paths: Path) -> None:
    for path in paths:
        ingest_file(app.store, path)
    app.worker().run_until_idle(max_wait_seconds=5)


def test_worked_example_posts_once_into_tryton(
    erp_app: bootstrap.App, tryton: TrytonEnv, tmp_path: Path
) -> None:
    run(erp_app, WORKED_EXAMPLE)
    posted = moves(tryton.rpc)
    assert sorted(str(m["revbridge_key"]).rsplit(":", 1)[1] for m in posted) == [
        "correction",
        "remittance",
        "reversal",
    ]
    assert {m["state"] for m in posted} == {"posted"}
    assert clearing_by_company(tryton.rpc) == {"RHS": Decimal("577.50")}  # = BPR02
    with erp_app.store.unit_of_work() as uow:
        records = uow.journals.all()
    assert {r.status for r in records} == {JournalStatus.POSTED}
    assert sorted(r.erp_document_id or "" for r in records) == sorted(str(m["id"]) for m in posted)

    resend = tmp_path / "resend.835"
    resend.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004712"))
    run(erp_app, WORKED_EXAMPLE, resend)
    assert len(moves(tryton.rpc)) == 3  # re-ingesting the same file: no new moves


def test_a_remittance_day_balances_to_the_835_totals(
    erp_app: bootstrap.App, tryton: TrytonEnv, tmp_path: Path
) -> None:
    files = write_day(tmp_path / "in", date(2026, 3, 2), volume_claims=120)
    run(erp_app, *files)
    expected: dict[str, Decimal] = defaultdict(Decimal)
    facilities = {f.npi: f.entity for f in erp_app.services.master.facilities}
    with erp_app.store.unit_of_work() as uow:
        for stored in uow.events.read_from(0, 100000):
            data = stored.event.data
            if (
                stored.event.type == EventType.REMITTANCE_RECEIVED
                and data["payee_id"] in facilities
            ):
                expected[facilities[data["payee_id"]]] += Decimal(data["total_paid"])
        records = uow.journals.all()
    assert {r.status for r in records} == {JournalStatus.POSTED}
    assert len(moves(tryton.rpc)) == len(records)
    assert clearing_by_company(tryton.rpc) == dict(expected)


def test_erp_setup_command_is_idempotent(
    tryton: TrytonEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVBRIDGE_ERP_PASSWORD", ADMIN_PASSWORD)
    config = write_sample(
        tmp_path / "deploy",
        target="erp",
        erp_url=tryton.server.base_url,
        erp_database=tryton.database,
    )
    runner = CliRunner()
    first = runner.invoke(main, ["erp", "setup", "--config", str(config), "--year", "2026"])
    assert first.exit_code == 0, first.output
    assert "'RHS'" in first.output and "'RPG'" in first.output
    again = runner.invoke(main, ["erp", "setup", "--config", str(config), "--year", "2026"])
    assert again.exit_code == 0, again.output
    assert "nothing (already set up)" in again.output
