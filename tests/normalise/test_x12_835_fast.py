"""Differential test: the C fast path of the ``x12_835/2`` claim events against the Python
builder, its reference (``normalise_835_reference``).

Both must give equal events (``==``) that the store encodes to identical JSON, for parsed
files and for models no parser produces (amounts in odd forms, unknown statuses, odd types).
Valid models must really take the fast path, so the comparison is not vacuous.
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revbridge.domain.events import Event, EventType
from revbridge.domain.money import money_str
from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    Remittance835,
)
from revbridge.formats.x12.synthetic import synthetic_835, synthetic_remittances
from revbridge.normalise import x12_835
from revbridge.normalise.x12_835 import (
    MAPPING_VERSION,
    Normalised,
    UnitInput,
    normalise_835,
    normalise_835_reference,
)
from revbridge.store.codec import event_rows, to_micros

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "x12"
RECORDED = datetime(2025, 1, 3, 9, 15, 30, 123456, tzinfo=UTC)
UNIT = UnitInput(b"ST*835*1~BPR*I~SE*3*1~", "*:^~", 7, 11, 12, "test", "c0ffee")


def units(data: bytes) -> Iterator[UnitInput]:
    for tx in scan(io.BytesIO(data)).transactions:
        yield UnitInput(
            data[tx.start : tx.end],
            tx.delimiters.encode(),
            tx.first_segment,
            raw_id=3,
            unit_id=4,
            channel="sftp",
            content_hash=tx.content_hash,
        )


def rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """The events as the store writes them (JSON of keys, data and source)."""
    return event_rows(events, to_micros)


def assert_same_events(fast: list[Event], reference: list[Event]) -> None:
    assert fast == reference
    assert rows(fast) == rows(reference)
    for mine, theirs in zip(fast, reference, strict=True):  # key order is part of the JSON
        assert list(mine.keys) == list(theirs.keys)
        assert list(mine.data) == list(theirs.data)


def assert_same_normalised(unit: UnitInput) -> None:
    fast, reference = normalise_835(unit, RECORDED), normalise_835_reference(unit, RECORDED)
    if isinstance(reference, Normalised):
        assert isinstance(fast, Normalised)
        assert_same_events(fast.events, reference.events)
    assert fast == reference


def events(r: Remittance835, *, fast: bool) -> list[Event]:
    return x12_835._events(r, UNIT, RECORDED, [], MAPPING_VERSION, fast=fast).events


def assert_fast(r: Remittance835) -> None:
    """The extension itself (not the fallback) gives the reference's events."""
    built = x12_835._Builder(r, UNIT, RECORDED, MAPPING_VERSION).claim_events(r)
    assert built is not None
    reference = events(r, fast=False)
    assert_same_events(built, reference[1 : 1 + len(r.claims)])
    assert_same_events(events(r, fast=True), reference)


def assert_declined(r: Remittance835) -> None:
    """A model the fast path was not written for: it declines, the reference builds it."""
    assert x12_835._Builder(r, UNIT, RECORDED, MAPPING_VERSION).claim_events(r) is None
    assert_same_events(events(r, fast=True), events(r, fast=False))


def remittance(seed: int, claims: int = 12) -> Remittance835:
    [r] = synthetic_remittances(seed=seed, claims=claims, claims_per_transaction=claims)
    return r


def with_claim(r: Remittance835, index: int, **changes: Any) -> Remittance835:
    claims = list(r.claims)
    claims[index] = replace(claims[index], **changes)
    return replace(r, claims=tuple(claims))


def first_line_with_adjustments(claim: ClaimPayment) -> int:
    return next(i for i, line in enumerate(claim.lines) if line.adjustments)


def test_fast_path_is_built() -> None:
    # pip install -e . compiles the extension; without it this whole file would be vacuous.
    assert x12_835.FAST


# -- parsed files ------------------------------------------------------------------------


def test_fixtures() -> None:
    paths = sorted(FIXTURES.glob("835_*.txt"))
    assert paths
    for path in paths:
        for unit in units(path.read_bytes()):
            assert_same_normalised(unit)


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2024])
def test_synthetic_files(seed: int) -> None:
    data = synthetic_835(seed=seed, claims=120, claims_per_transaction=40)
    for unit in units(data):
        assert_same_normalised(unit)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), claims=st.integers(1, 30))
def test_synthetic_models(seed: int, claims: int) -> None:
    assert_fast(remittance(seed, claims))


def test_the_mix_is_covered() -> None:
    """The synthetic mix has most of what the mapping distinguishes (the tests below add the
    rest), so the tests above see it."""
    claims = [c for seed in range(5) for c in remittance(seed, 40).claims]
    assert {"1", "2", "4", "22"} <= {c.status for c in claims}
    assert any(c.original_payer_claim_number for c in claims)
    lines = [line for c in claims for line in c.lines]
    everywhere = [
        *(a for c in claims for a in c.adjustments),
        *(a for x in lines for a in x.adjustments),
    ]
    assert any(a.group == "OA" and a.reason == "23" for a in everywhere)
    assert any(c.adjustments for c in claims)
    assert any(line.adjustments and line.control_number for line in lines)
    # lines without REF*6R, amounts in other forms: test_line_variants, test_amounts_in_any_form
    assert any(not c.lines for c in claims)


# -- models no parser gives ----------------------------------------------------------------

AMOUNTS = [
    "0",
    "-0",
    "0.00",
    "-0.00",
    "7.5",
    "-7.5",
    ".05",
    "-.05",
    "100",
    "-480",
    "1234567890",
    "-12345678.90",
    "5.125",
    "5.135",
    "-5.125",
    "0.005",
    "1E+2",
    "-1E+2",
    "1.5E+3",
    "0E-7",
    "123456789012345678901234567890",
    "1234567890123456789.5",
    "NaN",
    "Infinity",
]


@pytest.mark.parametrize("text", AMOUNTS)
def test_amounts_in_any_form(text: str) -> None:
    amount = Decimal(text)
    r = remittance(3)
    claim = r.claims[0]
    line = replace(claim.lines[0], charge=amount, paid=-amount) if claim.lines else None
    r = with_claim(
        r,
        0,
        charge=amount,
        paid=amount,
        patient_responsibility=amount,
        adjustments=(Adjustment("CO", "45", amount, amount, 9),),
        lines=(line, *claim.lines[1:]) if line else (),
    )
    assert_fast(r)
    [event] = events(r, fast=True)[1:2]
    assert event.data["charge"] == money_str(amount)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "99"},  # unknown: status kind "unknown"
        {"status": "3"},  # secondary
        {"status": "22", "original_payer_claim_number": "X1"},
        {"patient_responsibility": None},  # CLP05 absent
        {"payer_claim_number": ""},
        {"original_payer_claim_number": ""},  # falsy, but not None: a correction
        {"lines": ()},
        {"adjustments": ()},
        {"statement_from": None, "statement_to": date(1, 1, 1)},
        {"statement_from": date(9999, 12, 31)},
        {"patient_control_number": "PCN-é-✓"},
    ],
)
def test_claim_variants(changes: dict[str, Any]) -> None:
    assert_fast(with_claim(remittance(11), 1, **changes))


def test_line_variants() -> None:
    r = remittance(13, 30)
    index = next(i for i, c in enumerate(r.claims) if any(line.adjustments for line in c.lines))
    claim = r.claims[index]
    at = first_line_with_adjustments(claim)
    line = claim.lines[at]
    adjustments = (
        replace(line.adjustments[0], group="OA", reason="23", quantity=Decimal("2.50")),
        replace(line.adjustments[0], quantity=Decimal("1E+1")),
    )
    for changed in (
        replace(line, control_number=None),
        replace(line, control_number=""),
        replace(line, control_number="REF6R-1"),
        replace(line, adjustments=adjustments),
        replace(line, service_date=None, revenue_code=None),
        replace(line, adjustments=()),
    ):
        for status in ("1", "2", "22"):
            lines = (*claim.lines[:at], changed, *claim.lines[at + 1 :])
            assert_fast(with_claim(r, index, lines=lines, status=status))


def test_reversal_then_correction_of_the_same_account() -> None:
    r = remittance(17, 6)
    pcn = r.claims[1].patient_control_number
    r = with_claim(r, 1, status="22", original_payer_claim_number=None)
    for later in (2, 4):
        r = with_claim(r, later, patient_control_number=pcn, original_payer_claim_number=None)
    assert_fast(r)
    found = events(r, fast=True)
    assert [e.data["correction"] for e in found[2:6]] == [False, True, False, True]
    assert found[2].type == EventType.CLAIM_REVERSED


def test_many_claims_keep_ids_distinct() -> None:
    r = remittance(19, 600)
    assert_fast(r)
    assert len({e.id for e in events(r, fast=True)}) == 601


def test_remittance_dates_and_ids_at_the_edges() -> None:
    for day in (date(1970, 1, 1), date(9999, 12, 31), date(1969, 12, 31)):
        assert_fast(replace(remittance(23, 3), production_date=day))
    for content_hash in ("", "f" * 64):
        unit = replace(UNIT, content_hash=content_hash)
        r = remittance(29, 3)
        fast = x12_835._events(r, unit, RECORDED, [], MAPPING_VERSION, fast=True)
        reference = x12_835._events(r, unit, RECORDED, [], MAPPING_VERSION, fast=False)
        assert_same_events(fast.events, reference.events)


# -- what the fast path declines -------------------------------------------------------------


class Status(str):
    """A str subclass: ``==`` could mean anything, so the fast path declines it."""


class Day(date):
    """A date subclass: its ISO text could differ."""


def test_declines_odd_types() -> None:
    r = remittance(31, 4)
    claim = r.claims[0]
    assert_declined(with_claim(r, 0, status=Status("1")))
    assert_declined(with_claim(r, 0, statement_from=datetime(2024, 1, 2, tzinfo=UTC)))
    assert_declined(with_claim(r, 0, statement_to=Day(2024, 1, 2)))
    assert_declined(with_claim(r, 0, lines=list(claim.lines)))
    assert_declined(with_claim(r, 0, adjustments=list(claim.adjustments)))
    empty = replace(r, claims=(ClaimPayment.__new__(ClaimPayment),))  # no slot set
    assert x12_835._Builder(empty, UNIT, RECORDED, MAPPING_VERSION).claim_events(empty) is None
    with pytest.raises(AttributeError):
        events(empty, fast=True)
    if claim.lines:
        odd_line = replace(claim.lines[0], service_date=Day(2024, 1, 2))
        assert_declined(with_claim(r, 0, lines=(odd_line, *claim.lines[1:])))
    odd = replace(claim.adjustments[0], group=Status("OA")) if claim.adjustments else None
    if odd is not None:
        assert_declined(with_claim(r, 0, adjustments=(odd,)))


def test_errors_are_the_references() -> None:
    r = with_claim(remittance(37, 2), 1, charge=object())
    with pytest.raises(TypeError):
        events(r, fast=False)
    with pytest.raises(TypeError):
        events(r, fast=True)


# -- configuration ---------------------------------------------------------------------------


@contextmanager
def configured(direct: bool) -> Iterator[bool]:
    """Configure the extension to write amounts and dicts directly, or the general way."""
    arguments = x12_835.FAST_CONFIGURATION
    try:
        yield x12_835._fast_x12_835.configure(*arguments, direct)
    finally:
        x12_835._fast_x12_835.configure(*arguments)


def test_direct_writing_is_used_on_this_python() -> None:
    with configured(direct=True) as direct:
        assert direct
    with configured(direct=False) as direct:
        assert not direct


@pytest.mark.parametrize("seed", [2, 43])
def test_the_general_way_gives_the_same_events(seed: int) -> None:
    r = with_claim(remittance(seed), 0, charge=Decimal("5.125"), paid=Decimal("1E+2"))
    with configured(direct=False):
        assert_fast(r)


def test_configure_checks_the_classes() -> None:
    with pytest.raises(TypeError, match="slot"):
        x12_835._fast_x12_835.configure(
            Remittance835,  # not an Event
            *x12_835.FAST_CONFIGURATION[1:],
        )
    assert_fast(remittance(47, 3))  # a refused configuration leaves the last one in place


# -- memory ----------------------------------------------------------------------------------


def test_no_memory_is_kept_across_calls() -> None:
    """Every reference the fast path takes is given back: building and dropping the events
    of a remittance again and again leaves the traced memory where it was."""
    r = with_claim(remittance(53, 50), 0, charge=Decimal("1E+2"))
    declined = with_claim(r, 1, status=Status("1"))
    build = x12_835._Builder(r, UNIT, RECORDED, MAPPING_VERSION)

    def run(times: int) -> None:
        for _ in range(times):
            assert build.claim_events(r) is not None
            assert build.claim_events(declined) is None
            with pytest.raises(TypeError):
                build.claim_events(with_claim(r, 2, paid=object()))

    run(20)  # caches (ISO dates, interned names) are filled
    tracemalloc.start()
    try:
        run(5)
        before = tracemalloc.get_traced_memory()[0]
        run(200)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 10_000  # a leaked event per call would be > 200 kB
