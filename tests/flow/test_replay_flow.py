"""End to end on real SQLite and GL files: posted 835 -> replay under a new rule set ->
reversal + adjustment in the GL, whose net equals booking with the new rules from scratch."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from revbridge import bootstrap
from revbridge.cli import main
from revbridge.ledger.posting_rules import load_posting_rules
from revbridge.ledger.remittance import build_remittance_journals
from revbridge.normalise.x12_835 import Normalised, normalise_835
from revbridge.orchestrate.handlers import unit_input
from tests.conftest import SAMPLE, WORKED_EXAMPLE
from tests.orchestrate.replay_support import (
    CO45_TO_5150,
    KEY,
    L6_TO_6890,
    PAYMENT,
    dry_run,
    net_per_account,
    post,
    rules_file,
    second_payment,
)


def gl_rows(app: bootstrap.App) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(Path(app.config.output("gl").options["path"]).glob("gl-*.csv")):
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def gl_net(rows: list[dict[str, str]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        totals[row["account"]] += Decimal(row["debit"]) - Decimal(row["credit"])
    return {account: net for account, net in totals.items() if net}


def from_scratch(app: bootstrap.App, rules: Path) -> dict[str, Decimal]:
    """Net per account of booking the stored bytes with ``rules`` and nothing before."""
    with app.store.unit_of_work() as uow:
        source, _ = unit_input(uow, 1)
    result = normalise_835(source, datetime.now(UTC))
    assert isinstance(result, Normalised)
    built = build_remittance_journals(result.events, app.services.master, load_posting_rules(rules))
    return net_per_account(built.journals)


def test_replay_books_the_difference_and_only_the_difference(app: bootstrap.App) -> None:
    post(app, WORKED_EXAMPLE)
    posted = gl_rows(app)
    rules = rules_file(app, "2025.2", CO45_TO_5150, L6_TO_6890)

    result = dry_run(app, rules)
    [payment] = result.payments
    assert sorted(j.key for j in payment.to_post) == [
        f"{KEY}:correction",
        f"{KEY}:remittance",
        f"{KEY}:reversal",
    ]
    assert gl_rows(app) == posted  # a dry run posts nothing

    outcome = app.replayer().apply(result, "alice", app.work_queue().approvals)
    assert outcome.applied is not None and len(outcome.applied.journals) == 6
    app.worker().run_until_idle(max_wait_seconds=0)
    rows = gl_rows(app)
    by_journal: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_journal[row["journal_key"]].append(row)
    for key, lines in by_journal.items():  # every journal balances on its own
        debit = sum(Decimal(r["debit"]) for r in lines)
        assert debit == sum(Decimal(r["credit"]) for r in lines), key
    assert gl_net(rows) == from_scratch(app, rules)
    assert gl_net(rows)["1005"] == Decimal("577.50")  # cash clearing is still BPR02

    assert dry_run(app, rules).payments == ()
    app.replayer().apply(dry_run(app, rules), "alice", app.work_queue().approvals)
    app.worker().run_until_idle(max_wait_seconds=0)
    assert gl_rows(app) == rows  # applying again: nothing new


# ------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REVBRIDGE_USER", raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    text = (SAMPLE / "posting-rules.yaml").read_text().replace('"2025.1"', '"2025.2"')
    (tmp_path / "v2.yaml").write_text(text.replace(*L6_TO_6890))
    return runner


def invoke(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_cli_dry_run_apply_and_json_shape(cli: CliRunner) -> None:
    invoke(cli, "ingest", str(WORKED_EXAMPLE))
    invoke(cli, "run", "--until-idle")

    out = json.loads(
        invoke(cli, "replay", "--all", "--rules", "v2.yaml", "--dry-run", "--format", "json")
    )
    assert {"mapping_version", "rule_version", "rules_file", "rules_sha256", "selection"} <= set(
        out
    )
    assert {"summary", "payments", "skipped", "dry_run", "applied", "approval"} <= set(out)
    assert (out["mapping_version"], out["rule_version"], out["dry_run"]) == (
        "x12_835/2",
        "2025.2",
        True,
    )
    assert out["summary"]["journals_to_post"] == 2
    [payment] = out["payments"]
    assert payment["payment"] == PAYMENT
    assert {"raw_id", "unit_id", "blocked", "events", "journals", "exceptions"} <= set(payment)
    changed = [j for j in payment["journals"] if j["change"] == "changed"]
    assert [j["key"] for j in changed] == [f"{KEY}:remittance"]
    assert {"in_effect", "total_before", "total_after", "lines"} <= set(changed[0])
    assert [(line["account"], line["before"], line["after"]) for line in changed[0]["lines"]] == [
        ("6810", "-12.50", "0.00"),
        ("6890", "0.00", "-12.50"),
    ]

    text = invoke(cli, "replay", "--payment", "EFT20250106A", "--rules", "v2.yaml", "--dry-run")
    assert "changed" in text and "- " in text and "+ " in text and "nothing posted" in text

    out = json.loads(
        invoke(
            cli, "replay", "--raw", "1", "--rules", "v2.yaml", "--user", "alice", "--format", "json"
        )
    )
    assert out["applied"]["journals"] == [f"{KEY}:remittance~rev1", f"{KEY}:remittance~adj1"]
    assert out["approval"] is None
    again = invoke(cli, "replay", "--raw", "1", "--rules", "v2.yaml", "--user", "alice")
    assert "nothing to apply" in again


def test_cli_bulk_replay_is_approved_by_someone_else(cli: CliRunner, tmp_path: Path) -> None:
    invoke(cli, "ingest", str(WORKED_EXAMPLE), str(second_payment(tmp_path)))
    invoke(cli, "run", "--until-idle")
    out = json.loads(
        invoke(cli, "replay", "--all", "--rules", "v2.yaml", "--user", "alice", "--format", "json")
    )
    assert out["applied"] is None
    approval = out["approval"]
    assert (approval["kind"], approval["status"], approval["requested_by"]) == (
        "bulk_replay",
        "pending",
        "alice",
    )
    invoke(cli, "approvals", "approve", str(approval["id"]), "--user", "alice", code=1)
    invoke(cli, "approvals", "approve", str(approval["id"]), "--user", "bob")
    invoke(cli, "run", "--until-idle")
    journals = json.loads(invoke(cli, "journals", "--format", "json"))["journals"]
    assert len(journals) == 6 + 4
    assert {j["status"] for j in journals} == {"posted"}


def test_cli_refuses_an_unclear_selection_and_an_unknown_mapping(cli: CliRunner) -> None:
    assert "say what to replay" in invoke(cli, "replay", "--dry-run", code=1)
    out = invoke(cli, "replay", "--all", "--mapping-version", "x12_835/9", "--dry-run", code=1)
    assert "x12_835/1" in out
    assert "ISO" in invoke(cli, "replay", "--since", "yesterday", "--dry-run", code=2)
