from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "x12"


@pytest.fixture
def worked_example() -> bytes:
    return (FIXTURES / "835_worked_example_reversal_denial_plb.txt").read_bytes()
