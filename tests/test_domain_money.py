"""money_str writes what Decimal's own two-place formatting writes, for any amount."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from revbridge.domain.money import money_str


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_any_decimal_is_written_as_its_two_place_format(value: Decimal) -> None:
    assert money_str(value) == f"{value:.2f}"


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("0", "0.00"),
        ("577.5", "577.50"),
        ("-480", "-480.00"),
        ("-0", "-0.00"),
        ("1.005", "1.00"),  # half-even, as cents()
        ("1.015", "1.02"),
        ("1E+2", "100.00"),
        ("1.2E-7", "0.00"),
        (".05", "0.05"),
    ],
)
def test_amounts_in_any_notation(text: str, written: str) -> None:
    assert money_str(Decimal(text)) == written
