"""``revbridge exceptions`` and ``revbridge approvals`` end to end (CliRunner, real SQLite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from revbridge.cli import main
from tests.conftest import WORKED_EXAMPLE

KEY = "835:1999999999:EFT20250106A:RHS:writeoff"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REVBRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("REVBRIDGE_USER", "ana")
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    return runner


def invoke(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result.output


def as_json(cli: CliRunner, *args: str) -> Any:
    return json.loads(invoke(cli, *args, "--format", "json"))


def denied(cli: CliRunner) -> int:
    invoke(cli, "ingest", str(WORKED_EXAMPLE))
    invoke(cli, "run", "--until-idle")
    (item,) = as_json(cli, "exceptions")["exceptions"]
    return int(item["id"])


def test_bare_command_keeps_its_shape_and_gains_queue_fields(cli: CliRunner) -> None:
    item_id = denied(cli)
    items = as_json(cli, "exceptions")["exceptions"]
    assert [(i["reason"], i["status"]) for i in items] == [("claim_denied", "open")]
    assert {"id", "reason", "status", "detail", "source", "opened_at"} <= set(items[0])
    assert {"assignee", "age_hours", "sla_due", "overdue", "resolution"} <= set(items[0])
    assert items[0]["source"]["patient_control_number"] == "ACCT1002"
    assert as_json(cli, "exceptions", "--status", "resolved")["exceptions"] == []
    assert f"#{item_id}" in invoke(cli, "exceptions")
    listed = as_json(cli, "exceptions", "list", "--reason", "claim_denied")["exceptions"]
    assert [i["id"] for i in listed] == [item_id]
    assert as_json(cli, "exceptions", "list", "--overdue")["exceptions"] == []
    assert as_json(cli, "exceptions", "--format", "json", "list", "--status", "open")["exceptions"]


def test_people_work_an_item_and_every_step_is_audited(cli: CliRunner) -> None:
    item_id = str(denied(cli))
    out = as_json(cli, "exceptions", "assign", item_id, "ben", "--user", "lead")
    assert (out["action"], out["item"]["assignee"]) == ("assign", "ben")
    invoke(cli, "exceptions", "note", item_id, "appeal lost", "--user", "ben")
    assert "write_off: written_off" in invoke(cli, "exceptions", "write-off", item_id)
    shown = as_json(cli, "exceptions", "show", item_id)
    assert (shown["resolution"], shown["resolved_by"]) == ("written_off", "ana")
    assert [n["text"] for n in shown["notes"]] == ["appeal lost"]
    assert [(e["actor"], e["action"]) for e in shown["audit"]] == [
        ("lead", "exception.assign"),
        ("ben", "exception.note"),
        ("ana", "exception.write_off"),
    ]
    invoke(cli, "run", "--until-idle")
    journals = as_json(cli, "journals")["journals"]
    (write_off,) = [j for j in journals if j["key"] == f"{KEY}:{item_id}"]
    assert (write_off["status"], write_off["total"]) == ("posted", "500.00")
    assert "closed" in invoke(cli, "exceptions", "resolve", item_id, code=1)


def test_large_write_off_waits_for_a_second_person(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "revbridge.yaml"
    config.write_text(config.read_text() + 'exceptions:\n  write_off_approval_above: "100.00"\n')
    item_id = str(denied(cli))
    asked = as_json(cli, "exceptions", "write-off", item_id, "--amount", "450")
    assert asked["action"] == "write_off_requested"
    approval_id = str(asked["detail"]["approval_id"])
    (pending,) = as_json(cli, "approvals", "--status", "pending")["approvals"]
    assert (pending["id"], pending["requested_by"]) == (int(approval_id), "ana")
    assert pending["subject"]["amount"] == "450.00"
    assert "second person" in invoke(cli, "approvals", "approve", approval_id, code=1)
    done = as_json(cli, "approvals", "approve", approval_id, "--user", "ben")
    assert done["outcome"]["journal"] == f"{KEY}:{item_id}"
    assert as_json(cli, "approvals", "list")["approvals"][0]["decided_by"] == "ben"
    assert as_json(cli, "exceptions", "show", item_id)["resolution"] == "written_off"


def test_refuse_needs_a_reason(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "revbridge.yaml"
    config.write_text(config.read_text() + 'exceptions:\n  write_off_approval_above: "0.00"\n')
    item_id = str(denied(cli))
    approval_id = str(as_json(cli, "exceptions", "write-off", item_id)["detail"]["approval_id"])
    invoke(cli, "approvals", "refuse", approval_id, "--user", "ben", code=2)
    refused = as_json(cli, "approvals", "refuse", approval_id, "--user", "ben", "--reason", "no")
    assert (refused["status"], refused["decided_by"]) == ("refused", "ben")


def test_resubmit_reject_resolve_and_refusals(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.835"
    bad.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"005010X221A1", b"004010X091A1"))
    invoke(cli, "ingest", str(bad))
    (item,) = as_json(cli, "exceptions", "list", "--reason", "rejected_transaction")["exceptions"]
    fixed = tmp_path / "fixed.835"
    fixed.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004799"))
    out = as_json(
        cli, "exceptions", "resubmit", str(item["id"]), str(fixed), "--comment", "GS08 fixed"
    )
    assert out["item"]["resolution"] == "resubmitted"
    assert out["detail"]["original_raw_id"] == item["source"]["raw_id"]
    raw = as_json(cli, "exceptions", "show", str(item["id"]))["raw"]
    assert [r["new_raw_id"] for r in raw["resubmissions"]] == [out["detail"]["new_raw_id"]]

    invoke(cli, "run", "--until-idle")
    (denial,) = as_json(cli, "exceptions", "--reason", "claim_denied")["exceptions"]
    denial_id = str(denial["id"])
    assert "write it off" in invoke(cli, "exceptions", "retry", denial_id, code=1)
    invoke(cli, "exceptions", "reject", denial_id, code=2)  # --reason is required
    rejected = as_json(cli, "exceptions", "reject", denial_id, "--reason", "duplicate claim")
    assert rejected["item"]["resolution"] == "rejected"
    assert "no exception item 999" in invoke(cli, "exceptions", "show", "999", code=1)
    assert "amount" in invoke(cli, "exceptions", "write-off", denial_id, "--amount", "x", code=2)


def test_resolve_with_note_and_user_from_the_environment(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    item_id = str(denied(cli))
    monkeypatch.setenv("REVBRIDGE_USER", "carol")
    out = as_json(cli, "exceptions", "resolve", item_id, "--note", "appeal won")
    assert (out["item"]["resolved_by"], out["item"]["resolution"]) == ("carol", "resolved")
    assert as_json(cli, "exceptions", "show", item_id)["notes"][0]["text"] == "appeal won"
    assert "unassign" in invoke(cli, "exceptions", "--help")


def test_api_command_needs_users(cli: CliRunner) -> None:
    assert "no api.users" in invoke(cli, "api", "--port", "0", code=1)
    assert "--port" in invoke(cli, "api", "--help")
