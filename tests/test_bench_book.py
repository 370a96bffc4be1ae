"""The performance book (bench/book.py): row shape, the one table, the doc markers.

Runs one cheap section for real in quick mode; no figure is asserted, only the shape.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import book  # noqa: E402


def cells(line: str) -> list[str]:
    """A Markdown table line's cells (escaped pipes stay inside their cell)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip() for c in inner.replace("\\|", "\0").split("|")]


def test_a_quick_section_gives_rows_of_the_book_shape() -> None:
    rows = book.parse_rows(quick=True)
    assert rows
    assert all(isinstance(row, book.Row) and row.section == "parse" for row in rows)
    measured = [row for row in rows if row.figure is not None]
    assert measured, "the section measured nothing"
    for row in measured:
        assert row.figure is not None and math.isfinite(row.figure) and row.figure > 0
        assert row.unit
        if row.beside_figure is not None:
            assert row.beside and row.kind in ("limit", "peer") and row.ratio is not None
    assert any(row.kind == "peer" for row in rows)  # revbridge beside pyx12
    for row in rows:
        if row.figure is None:
            assert row.note  # why it was not measured

    text = book.table([list(book.HEADER), *(row.cells() for row in rows)])
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(len(cells(line)) == len(book.HEADER) for line in lines)


def test_collect_prints_one_table_and_a_crash_is_a_failed_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fine(quick: bool) -> list[book.Row]:
        return [book.Row("fine", "a | figure", 1234.5, "x/s", "limit", 2469.0, kind="limit")]

    def broken(quick: bool) -> list[book.Row]:
        raise RuntimeError("boom")

    sections = [book.Section("fine", "fine", fine), book.Section("broken", "broken", broken)]
    result = book.collect(sections, quick=True, echo=lambda _text: None)
    assert result.failed == ["broken"]
    assert [row.section for row in result.rows] == ["fine", "broken"]
    assert result.rows[1].figure is None
    assert "boom" in capsys.readouterr().err  # the traceback

    text = book.markdown(result)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2
    assert cells(table[2])[2:6] == ["1,234", "x/s", "limit: 2,469 x/s", "50%"]
    assert "Failed sections:** broken" in text
    for name in ("cores", "cpu", "memory", "disk", "python", "sqlite", "postgresql"):
        assert result.machine[name]

    data: dict[str, Any] = json.loads(book.as_json(result))
    assert data["failed"] == ["broken"]
    assert data["rows"][0]["ratio"] == 0.5
    assert set(data["rows"][0]) >= {"section", "what", "figure", "unit", "beside", "goal", "met"}


def test_rows_of_other_bench_modules() -> None:
    missing = book.foreign_rows("workers", "no_such_bench_module", "rows", quick=True)
    assert [(r.section, r.figure) for r in missing] == [("workers", None)]
    assert "missing" in missing[0].note

    row = book.from_mapping(
        "end to end",
        {"group": "e2e", "name": "normalise", "value": 12.5, "unit": "claims/s", "runs": 3},
    )
    assert (row.what, row.figure, row.unit, row.note) == (
        "e2e: normalise",
        12.5,
        "claims/s",
        "runs: 3",
    )


def test_write_keeps_the_prose_around_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(
        f"# Performance\n\nprose before\n\n{book.START_MARKER}\nold table\n{book.END_MARKER}\n"
        "\nprose after\n",
        encoding="utf-8",
    )
    book.write_between_markers(doc, "new table\n")
    book.write_between_markers(doc, "newer table\n")  # again: idempotent around the markers
    assert doc.read_text(encoding="utf-8") == (
        f"# Performance\n\nprose before\n\n{book.START_MARKER}\nnewer table\n{book.END_MARKER}\n"
        "\nprose after\n"
    )
