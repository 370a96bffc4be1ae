"""check_balanced says what is wrong with the first bad line, whichever way it is bad."""

from __future__ import annotations

from decimal import Decimal

import pytest

from revbridge.domain.journal import JournalLine, UnbalancedJournal, check_balanced

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


def test_a_sub_cent_amount_with_trailing_zeros_is_fine() -> None:
    lines = (
        JournalLine("1", Decimal("5.000"), Decimal("0")),
        JournalLine("2", Decimal("0"), Decimal("5.00")),
    )
    check_balanced("J", lines)
