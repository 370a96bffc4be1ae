"""The hot-path constructors build the same immutable values as the classes' own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from revbridge.domain.events import Event, SourceRef, new_event, new_source
from revbridge.domain.journal import Journal, JournalLine, new_line
from revbridge.domain.values import slot_constructor
from revbridge.store import codec


def test_events_and_sources_equal_the_regular_ones() -> None:
    at = datetime(2025, 1, 6, tzinfo=UTC)
    source = new_source("x12", 1, 2, 15, None)
    assert source == SourceRef("x12", 1, 2, 15)
    fields = ("e-1", "claim.adjudicated", 1, at, at, None, "H01", {"k": "v"}, "c", None)
    event = new_event(*fields, source, {"paid": "1.00"})
    assert event == Event(*fields, source, {"paid": "1.00"})  # type: ignore[arg-type]
    assert type(event) is Event


def test_lines_equal_the_regular_ones_and_stay_frozen() -> None:
    line = new_line(("1005", Decimal("1.00"), Decimal("0.00"), "cash", {"a": "b"}, {"c": "d"}))
    assert line == JournalLine(
        "1005", Decimal("1.00"), Decimal("0.00"), "cash", {"a": "b"}, {"c": "d"}
    )
    assert type(line) is JournalLine and line.source == {"c": "d"}
    with pytest.raises(AttributeError):
        line.account = "9999"  # type: ignore[misc]


def test_stored_lines_need_every_field() -> None:
    short = '{"dimensions":[{}],"sources":[{}],"lines":[["1005","1.00","0.00","cash",0]]}'
    with pytest.raises(ValueError):
        codec.Reading().lines(short)


def test_refuses_classes_it_would_build_wrongly() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError):
        slot_constructor(NoSlots)
    with pytest.raises(TypeError):
        slot_constructor(Journal)  # its __post_init__ checks the balance
