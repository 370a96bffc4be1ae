"""Fixtures of the fault suite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import scratch

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in tests/faults carries the ``faults`` marker (``-m faults``)."""
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """Where a scenario keeps its deployment, store, ERP book and messages: tmpfs in the
    short run (``harness.scratch``), the real disk in the long run."""
    folder = scratch()
    if folder is None:
        yield tmp_path
        return
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
