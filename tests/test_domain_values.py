"""slot_constructor builds the same immutable values as the dataclasses' own __init__."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from revbridge.domain.events import Event, SourceRef, new_event, new_source
from revbridge.domain.journal import Journal, JournalLine, new_line
from revbridge.domain.values import slot_constructor


def test_events_and_sources_equal_the_regular_ones() -> None:
    at = datetime(2025, 1, 6, tzinfo=UTC)
    source = new_source("x12", 1, 2, 15, None)
    assert source == SourceRef("x12", 1, 2, 15)
    fields = ("e-1", "claim.adjudicated", 1, at, at, None, "H01", {"k": "v"}, "c", None)
    event = new_event(*fields, source, {"paid": "1.00"})
    assert event == Event(*fields, source, {"paid": "1.00"})  # type: ignore[arg-type]
    assert type(event) is Event


def test_lines_equal_the_regular_ones_and_stay_frozen() -> None:
    line = new_line("1005", Decimal("1.00"), Decimal("0.00"), "cash", {"a": "b"}, {"c": "d"})
    assert line == JournalLine(
        "1005", Decimal("1.00"), Decimal("0.00"), "cash", {"a": "b"}, {"c": "d"}
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        line.account = "9999"  # type: ignore[misc]


def test_every_field_is_required_in_declaration_order() -> None:
    with pytest.raises(TypeError):
        new_line("1005", Decimal("1.00"))


def test_refuses_classes_it_would_build_wrongly() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError):
        slot_constructor(NoSlots)
    with pytest.raises(TypeError):
        slot_constructor(Journal)  # its __post_init__ checks the balance
