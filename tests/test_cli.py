"""The command line: names, exit codes and the stable ``--format json`` shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from revbridge.cli import main
from tests.conftest import WORKED_EXAMPLE


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    return runner


def invoke(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_init_writes_a_working_deployment(cli: CliRunner, tmp_path: Path) -> None:
    assert {p.name for p in tmp_path.iterdir()} >= {
        "revbridge.yaml",
        "master-data.yaml",
        "posting-rules.yaml",
        "revbridge.db",
        "inbox",
    }
    assert "ok" in invoke(cli, "check-config")


def test_ingest_run_journals_exceptions_trace(cli: CliRunner, tmp_path: Path) -> None:
    out = json.loads(invoke(cli, "ingest", str(WORKED_EXAMPLE), "--format", "json"))
    assert [f["status"] for f in out["files"]] == ["accepted"]
    assert "duplicate" in invoke(cli, "ingest", str(WORKED_EXAMPLE))
    assert "processed" in invoke(cli, "run", "--until-idle")

    journals = json.loads(invoke(cli, "journals", "--format", "json"))["journals"]
    assert len(journals) == 3
    first = journals[0]
    assert {"key", "status", "erp_document_id", "lines"} <= set(first)
    assert first["status"] == "posted"
    assert {"account", "debit", "credit", "dimensions", "source"} <= set(first["lines"][0])
    assert first["lines"][0]["debit"] == "600.00"

    items = json.loads(invoke(cli, "exceptions", "--format", "json"))["exceptions"]
    assert [(i["reason"], i["status"]) for i in items] == [("claim_denied", "open")]
    assert {"id", "reason", "status", "source"} <= set(items[0])

    traced = json.loads(invoke(cli, "trace", "EFT20250106A", "--format", "json"))
    assert {"segments", "events", "journals"} <= set(traced)
    assert len(traced["journals"]) == 3
    assert "CLP*ACCT1001" in invoke(cli, "trace", "ACCT1001")
    invoke(cli, "trace", "NO-SUCH-KEY", code=1)


def test_unreadable_path_exits_non_zero(cli: CliRunner) -> None:
    out = invoke(cli, "ingest", "does-not-exist.835", code=1)
    assert "does-not-exist.835" in out


def test_config_env_var_is_honoured(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("REVBRIDGE_CONFIG", str(tmp_path / "revbridge.yaml"))
    assert "ok" in invoke(cli, "check-config")


def test_check_config_names_the_line(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "revbridge.yaml"
    config.write_text(config.read_text().replace("type: gl_file", "type: gl_fil"))
    out = invoke(cli, "check-config", code=1)
    assert "revbridge.yaml:" in out and "outputs[0].type" in out


def test_demo_without_erp(cli: CliRunner, tmp_path: Path) -> None:
    out = invoke(
        cli, "demo", "--workdir", str(tmp_path / "demo"), "--no-erp", "--date", "2026-03-02"
    )
    assert "=== summary" in out
    assert "duplicate 1" in out
    assert "trace ACCT0900" in out and "CLP*ACCT0900*22" in out
