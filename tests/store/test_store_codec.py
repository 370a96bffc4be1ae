"""The shared encoding rules (JSON columns, instants, amounts) every SQL backend uses."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType

import pytest

from revbridge.domain.journal import JournalLine
from revbridge.store import codec


class Color(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({}, "{}"),
        (
            {"a": None, "b": True, "c": 7, "d": 'é\u2028"x"'},
            '{"a":null,"b":true,"c":7,"d":"é\u2028\\"x\\""}',
        ),
        ({"amounts": (Decimal("0.10"), Decimal("-1E+3"))}, '{"amounts":["0.10","-1E+3"]}'),
        (MappingProxyType({"k": [Color.RED, [1, {"n": 2}]]}), '{"k":["red",[1,{"n":2}]]}'),
    ],
)
def test_to_json(value: object, text: str) -> None:
    assert codec.to_json(value) == text


@pytest.mark.parametrize(
    "value",
    [1.5, {"a": 0.0}, [float("inf")], {"a": {"b": [1, 2.5]}}, {"a": object()}, {("t",): 1}, {1: 1}],
)
def test_to_json_refuses(value: object) -> None:
    with pytest.raises(TypeError):
        codec.to_json(value)


@pytest.mark.parametrize(
    "at",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2025, 3, 14, 4, 26, 53, 1, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_instants_round_trip(at: datetime) -> None:
    back = codec.from_micros(codec.to_micros(at))
    assert back == at
    assert back.tzinfo is UTC


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError):
        codec.to_micros(datetime(2025, 1, 1))


def test_journal_lines_round_trip() -> None:
    dims, source = {"payer": "X"}, {"c": "1"}
    lines = (
        JournalLine("1200", Decimal("10.50"), Decimal("0.00"), "cash", dims, source),
        JournalLine("1100", Decimal("0.00"), Decimal("10.50"), "cash", dims, source),
        JournalLine("4000", Decimal("0"), Decimal("2"), "", {}, {"c": "2"}),
    )
    text = codec.encode_lines(lines).text
    back = codec.Reading().lines(text)
    assert back == lines
    assert [str(line.debit) for line in back] == ["10.50", "0.00", "0"]
    assert text.count('"payer"') == 1  # a dimension set the lines share is written once


def test_journal_lines_refuse_float_amounts() -> None:
    line = JournalLine("1200", 10.5, Decimal("0"), "cash")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.encode_lines([line])


def test_amounts_must_be_decimal() -> None:
    with pytest.raises(TypeError):
        codec.amount_to_text(10.5)  # type: ignore[arg-type]
