"""Money: always ``Decimal``, always two places, never binary float."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


class InvalidAmount(ValueError):
    """Raised when text is not a decimal amount."""


def parse_amount(text: str) -> Decimal:
    """Parse an X12-style decimal (``577.5``, ``-480``, ``.5``) exactly."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise InvalidAmount(f"not a decimal amount: {text!r}") from exc
    if not value.is_finite():
        raise InvalidAmount(f"not a finite amount: {text!r}")
    return value


def cents(value: Decimal) -> Decimal:
    """Quantize to cents (banker's rounding; exact for well-formed input)."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def money_str(value: Decimal) -> str:
    """Render an amount as a plain two-place decimal string (``577.5`` -> ``577.50``).

    Decimal's own formatting rounds half-even in the default context, like ``cents``. Most
    amounts already have two places or none, and ``str`` is three times faster than that
    formatting (this runs for every amount): a text with a point third from its end is in
    plain notation with two places (scientific notation ends in an exponent), and one of
    digits only is a whole non-negative amount; anything else is formatted.
    """
    text = str(value)
    if len(text) > 2 and text[-3] == ".":
        return text
    if text.isdigit():
        return text + ".00"
    return f"{value:.2f}"
