"""check_balanced says what is wrong with the first bad line, whichever way it is bad."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal

import pytest

from revbridge.domain.journal import (
    Journal,
    JournalLine,
    JournalLines,
    UnbalancedJournal,
    check_balanced,
)
from revbridge.domain.money import ZERO

OK = JournalLine("1", Decimal("5.00"), Decimal("0.00"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (JournalLine("2", Decimal("0.00"), Decimal("0.00")), "line 2: needs exactly one side"),
        (JournalLine("2", Decimal("1.00"), Decimal("1.00")), "line 2: needs exactly one side"),
        (JournalLine("2", Decimal("-5.00"), Decimal("0")), "line 2: bad amount -5.00"),
        (JournalLine("2", Decimal("0"), Decimal("4.999")), "line 2: bad amount 4.999"),
        (JournalLine("2", Decimal("1.001"), Decimal("1.00")), "line 2: bad amount 1.001"),
        (JournalLine("", Decimal("0"), Decimal("5.00")), "line 2: no account"),
    ],
)
def test_the_first_bad_line_is_named(line: JournalLine, message: str) -> None:
    with pytest.raises(UnbalancedJournal, match=message):
        check_balanced("J", (OK, line, OK))
    with pytest.raises(UnbalancedJournal, match=message):  # the same lines held by column
        check_balanced("J", _by_column((OK, line, OK)))


def _by_column(lines: tuple[JournalLine, ...]) -> JournalLines:
    return JournalLines(*(list(column) for column in zip(*lines, strict=True)))


def test_lines_by_column_are_the_lines() -> None:
    lines = (
        JournalLine("1", Decimal("5.00"), Decimal("0.00"), "a", {"d": "1"}, {"s": "1"}),
        JournalLine("2", Decimal("0.00"), Decimal("5.00"), "a", {"d": "1"}, {"s": "2"}),
    )
    held = _by_column(lines)
    assert held == lines and lines == held and held == list(lines) and held != lines[:1]
    assert len(held) == 2 and held[1] == lines[1] and held[:1] == lines[:1]
    assert tuple(held) == lines and repr(held) == f"JournalLines{lines!r}"
    journal = Journal("J", "E", date(2025, 1, 3), "d", held, "v1")
    assert journal == Journal("J", "E", date(2025, 1, 3), "d", lines, "v1")
    assert journal.total == Decimal("5.00")
    unbalanced = _by_column((lines[0], lines[1]._replace(credit=Decimal("4.99"))))
    with pytest.raises(UnbalancedJournal, match=r"debits 5\.00 != credits 4\.99"):
        check_balanced("J", unbalanced)
    with pytest.raises(UnbalancedJournal, match="columns of different lengths"):
        JournalLines(["1"], [], [], [], [], [])


def test_sources_given_as_a_function_are_made_when_first_read() -> None:
    made: list[int] = []

    def sources() -> list[Mapping[str, str]]:
        made.append(1)
        return [{"s": "1"}, {"s": "1"}]

    columns = (["1", "2"], [Decimal("5.00"), ZERO], [ZERO, Decimal("5.00")], ["a", "a"])
    held = JournalLines(*columns, [{}, {}], sources)
    check_balanced("J", held)
    assert len(held) == 2 and made == []
    assert held[0].source == {"s": "1"} and held.sources[1] == {"s": "1"} and made == [1]


def test_a_sub_cent_amount_with_trailing_zeros_is_fine() -> None:
    lines = (
        JournalLine("1", Decimal("5.000"), Decimal("0")),
        JournalLine("2", Decimal("0"), Decimal("5.00")),
    )
    check_balanced("J", lines)
