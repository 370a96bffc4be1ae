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


def test_journal_sources_are_written_by_column_and_read_back_in_order() -> None:
    head = {"trn": "T1", "raw_id": "1"}
    claim = [{**head, "segment": str(n), "claim": "C1"} for n in (4, 5, 6)]
    plb = {"trn": "T1", "raw_id": "1", "segment": "9"}  # another key sequence: its own block
    reordered = {"claim": "C2", "segment": "7", "raw_id": "1", "trn": "T1"}
    lines = tuple(
        JournalLine("1200", Decimal("1.00"), Decimal("0.00"), "x", {}, source)
        for source in (*claim, plb, reordered)
    )
    encoded = codec.encode_lines(lines)
    back = codec.Reading().lines(encoded.text)
    assert back == lines
    assert [list(line.source) for line in back] == [list(line.source) for line in lines]
    assert '"sources":[{' not in encoded.text and encoded.text.count('"T1"') == 3  # once a block
    assert encoded.refs == ["C1", "C2", "T1"]  # not the positional raw_id and segment


def test_journal_sources_not_plain_string_maps_are_written_whole() -> None:
    lines = (
        JournalLine("1200", Decimal("1.00"), Decimal("0.00"), "x", {}, {"c": "1"}),
        JournalLine("1100", Decimal("0.00"), Decimal("1.00"), "x", {}),  # no source: read-only
    )
    encoded = codec.encode_lines(lines)
    assert '"sources":[{"c":"1"},{}]' in encoded.text and encoded.refs == ["1"]
    assert codec.Reading().lines(encoded.text) == lines


def test_journal_lines_of_the_earlier_layout_are_read() -> None:
    text = (
        '{"dimensions":[{"payer":"X"}],"sources":[{"c":"1","segment":"3"}],'
        '"lines":[["1200","1.00","0.00","cash",0,0],["1100","0.00","1.00","cash",0,0]]}'
    )
    source = {"c": "1", "segment": "3"}
    assert codec.Reading().lines(text) == (
        JournalLine("1200", Decimal("1.00"), Decimal("0.00"), "cash", {"payer": "X"}, source),
        JournalLine("1100", Decimal("0.00"), Decimal("1.00"), "cash", {"payer": "X"}, source),
    )


@pytest.mark.parametrize(
    "blocks",
    [
        '[{"count":2,"keys":["c"],"columns":[[["1","2"],[0]]]}]',  # an index short
        '[{"count":1,"keys":["c"],"columns":[[["1"],[1]]]}]',  # an index past the values
        '[{"count":1,"keys":["c"],"columns":[[["1"],[-1]]]}]',  # a negative index
        '[{"count":1,"keys":["c"],"columns":[[["1","2"],[]]]}]',  # no indices, two values
        '[{"count":1,"keys":["c","d"],"columns":[[["1"],[]]]}]',  # a key without a column
        '[{"count":1,"keys":["c"],"columns":[[["1"],[]]]}]',  # fine, but line 0 names source 1
    ],
)
def test_malformed_source_columns_are_refused(blocks: str) -> None:
    text = (
        f'{{"dimensions":[{{}}],"source_columns":{blocks},'
        '"lines":[["1200","1.00","0.00","x",0,0],["1100","0.00","1.00","x",0,1]]}'
    )
    with pytest.raises(ValueError):
        codec.Reading().lines(text)
    by_column = (  # refused when read, though the sources are built only when first asked
        f'{{"dimensions":[{{}}],"source_columns":{blocks},"line_columns":{{'
        '"accounts":[["1200","1100"],[0,1]],"debits":["1.00","0.00"],"credits":["0.00","1.00"],'
        '"descriptions":[["x"],[]],"dimensions":[0,0],"sources":[0,1]}}'
    )
    with pytest.raises(ValueError):
        codec.Reading().lines(by_column)


def test_journal_lines_are_written_by_column_unless_accounts_are_not_strings() -> None:
    by_column = codec.encode_lines([JournalLine("1200", Decimal("1"), Decimal("0"), "x")]).text
    assert '"line_columns":{"accounts":[["1200"],[]],"debits":["1"],"credits":["0"]' in by_column
    enum_account = JournalLine(Color.RED, Decimal("1"), Decimal("0"), "x")  # type: ignore[arg-type]
    as_rows = codec.encode_lines([enum_account]).text
    assert '"lines":[["red","1","0","x",0,0]]' in as_rows
    assert codec.Reading().lines(as_rows)[0].account == "red"


@pytest.mark.parametrize(
    "columns",
    [
        '"accounts":[["1200"],[0,0]],"debits":["1.00"]',  # accounts longer than the amounts
        '"accounts":[["1200"],[]],"debits":["1.00","0.00"]',  # debits longer than credits
        '"accounts":[["1200"],[1]],"debits":["1.00"]',  # an account index past the values
    ],
)
def test_malformed_line_columns_are_refused(columns: str) -> None:
    text = (
        f'{{"dimensions":[{{}}],"sources":[{{}}],"line_columns":{{{columns},'
        '"credits":["0.00"],"descriptions":[["x"],[]],"dimensions":[0],"sources":[0]}}'
    )
    with pytest.raises(ValueError):
        codec.Reading().lines(text)


def test_lines_written_both_as_rows_and_by_column_are_refused() -> None:
    text = (
        '{"dimensions":[{}],"sources":[{}],"lines":[["1200","1.00","0.00","x",0,0]],'
        '"line_columns":{"accounts":[["1200"],[]],"debits":["1.00"],"credits":["0.00"],'
        '"descriptions":[["x"],[]],"dimensions":[0],"sources":[0]}}'
    )
    with pytest.raises(ValueError):
        codec.Reading().lines(text)


def test_journal_lines_refuse_float_amounts() -> None:
    line = JournalLine("1200", 10.5, Decimal("0"), "cash")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.encode_lines([line])


def test_amounts_must_be_decimal() -> None:
    with pytest.raises(TypeError):
        codec.amount_to_text(10.5)  # type: ignore[arg-type]
