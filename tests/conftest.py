"""Shared fixtures: a sample deployment in a temp folder, on real SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.domain.master import MasterData
from revbridge.ledger.master_data import load_master_data
from revbridge.ledger.posting_rules import PostingRules, load_posting_rules
from revbridge.sample import write_sample

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = Path(__file__).parents[1] / "src" / "revbridge" / "sample"
WORKED_EXAMPLE = FIXTURES / "x12" / "835_worked_example_reversal_denial_plb.txt"


@pytest.fixture
def master() -> MasterData:
    return load_master_data(SAMPLE / "master-data.yaml")


@pytest.fixture
def rules() -> PostingRules:
    return load_posting_rules(SAMPLE / "posting-rules.yaml")


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A sample deployment booking to GL CSV files; returns the config path."""
    return write_sample(tmp_path / "deploy", target="gl")


@pytest.fixture
def app(deployment: Path) -> Iterator[bootstrap.App]:
    application = bootstrap.build(load_config(deployment, bootstrap.SPECS))
    yield application
    application.close()
