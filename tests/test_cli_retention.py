"""The ``retention`` config section and ``revbridge retention`` (on the sample deployment).

What the job decides, on both backends, is tested in ``tests/store/test_store_retention.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from revbridge import bootstrap
from revbridge.cli import main
from revbridge.config import load_config
from revbridge.errors import ConfigurationError
from revbridge.orchestrate.retention import RetentionPolicy
from revbridge.sample import write_sample
from revbridge.store.base import Family, month_of
from tests.conftest import WORKED_EXAMPLE


def with_retention(path: Path, section: str) -> Path:
    path.write_text(path.read_text(encoding="utf-8") + "retention:\n" + section, encoding="utf-8")
    return path


def test_without_a_section_nothing_is_configured(deployment: Path) -> None:
    config = load_config(deployment, bootstrap.SPECS)
    assert config.retention is None


def test_defaults_keep_seven_years(tmp_path: Path) -> None:
    path = with_retention(write_sample(tmp_path), "  archive: analytics\n")
    policy = RetentionPolicy.from_config(load_config(path, bootstrap.SPECS).retention or {})
    assert (policy.keep_raw_months, policy.keep_event_months, policy.minimum_months) == (84, 84, 84)
    assert (policy.archive, policy.allow_below_minimum, policy.run_every_hours) == (
        "analytics",
        False,
        24.0,
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("  keep_raw_months: 12\n", "retention.keep_raw_months: 12 months is below minimum"),
        ("  keep_event_months: 0\n", "retention.keep_event_months: must be at least 1"),
        ("  archive: gl\n", "retention.archive: no parquet_export output named 'gl'"),
        ("  keep_months: 3\n", "retention.keep_months: unknown field"),
        ("  run_every_hours: 0\n", "retention.run_every_hours: must be more than 0"),
    ],
)
def test_bad_settings_are_refused_with_their_line(
    tmp_path: Path, section: str, message: str
) -> None:
    path = with_retention(write_sample(tmp_path), section)
    line = len(path.read_text().splitlines())
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_config(path, bootstrap.SPECS)
    assert f"revbridge.yaml:{line}:" in str(caught.value)


def test_below_the_minimum_when_allowed(tmp_path: Path) -> None:
    section = "  keep_raw_months: 12\n  allow_below_minimum: true\n"
    path = with_retention(write_sample(tmp_path), section)
    assert (load_config(path, bootstrap.SPECS).retention or {})["keep_raw_months"] == 12


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    with_retention(tmp_path / "revbridge.yaml", "  archive: analytics\n")
    return runner


def test_dry_run_lists_every_month_with_what_happens_to_it(cli: CliRunner) -> None:
    assert cli.invoke(main, ["ingest", str(WORKED_EXAMPLE)]).exit_code == 0
    result = cli.invoke(main, ["retention", "--dry-run", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dry_run"] is True and report["configured"] is True
    assert report["keep_months"] == {"raw": 84, "events": 84}
    assert report["archive"] == "analytics"
    this = f"{month_of(datetime.now(UTC)):%Y-%m}"
    assert [(m["family"], m["month"]) for m in report["months"]] == [
        (Family.RAW, this),
        (Family.EVENTS, this),
    ]
    raw = report["months"][0]
    assert (raw["action"], raw["rows"], raw["low"]) == ("keep", 1, 1)
    assert raw["reason"] == "current: new rows go here"


def test_the_text_report_says_why_months_are_kept(cli: CliRunner) -> None:
    result = cli.invoke(main, ["retention"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("retention at ") and "dry run" not in lines[0]
    assert "raw kept 84 months" in lines[1] and "archived to 'analytics'" in lines[1]
    assert any(line.startswith("raw ") and "keep: current" in line for line in lines)


def test_without_a_section_the_command_drops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    result = runner.invoke(main, ["retention", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "policy: none (no retention section): every month is kept" in result.output
