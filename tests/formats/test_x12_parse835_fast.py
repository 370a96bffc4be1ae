"""Differential test: the C fast path of ``parse_835_bytes`` against the pure-Python reference.

Both must give the identical model (same values, same Decimal exponents, same None/"" choices)
or the identical error (same code, message, segment, element).  Valid inputs must really take
the fast path, so the comparison is not vacuous.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revbridge.formats.x12 import parse835
from revbridge.formats.x12.balance import VALID_CLAIM_STATUS, check_835, check_835_reference
from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.issues import X12Error
from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    ProviderAdjustment,
    ServiceLine,
)
from revbridge.formats.x12.parse835 import parse_835_bytes, parse_835_bytes_reference
from revbridge.formats.x12.synthetic import synthetic_835
from revbridge.formats.x12.tokenizer import Delimiters

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "x12"
D = Delimiters()

# Element values that sit on the edges of the reference's rules.
TRICKY = [
    "",
    "0",
    "-0",
    "-0.00",
    "007.50",
    ".5",
    "-.5",
    "5.",
    ".",
    "-",
    ".-5",
    "1.2.3",
    "5-",
    "1e5",
    " 5",
    "１２",
    "1234567890",
    "12345678901",
    "12345678.90",
    "123456789012345",
    "1234567890123456",
    "20240229",
    "20230229",
    "00000101",
    "20241301",
    "2024010",
    "CO",
    "PR",
    "CR",
    "XX",
    "45",
    "472",
    "150",
    "232",
    "233",
    "405",
    "6R",
    "F8",
    "TJ",
    "B6",
    "PE",
    "835",
    "HC:99213",
    "WO:ABC:1",
    "é",
]
SEGMENT_IDS = ["CLP", "SVC", "CAS", "DTM", "REF", "AMT", "PLB", "N1", "LX", "BPR", "TRN", "SE"]


def outcome(parse: object, data: bytes, delimiters: Delimiters, first: int) -> tuple[str, str]:
    assert callable(parse)
    try:
        model = parse(data, delimiters, first)
    except X12Error as exc:
        return ("error", repr(exc.issue))
    except Exception as exc:  # noqa: BLE001 - whatever the reference does, the fast path must too
        return ("exception", f"{type(exc).__name__}: {exc}")
    return ("ok", repr(model))


def assert_same(data: bytes, delimiters: Delimiters = D, first: int = 1) -> tuple[str, str]:
    fast = outcome(parse_835_bytes, data, delimiters, first)
    assert fast == outcome(parse_835_bytes_reference, data, delimiters, first)
    return fast


def assert_fast(data: bytes, delimiters: Delimiters, first: int) -> None:
    """Valid input: the extension itself (not the fallback) gives the reference's model."""
    found = parse835._fast835.parse(
        data, delimiters.element, delimiters.component, delimiters.segment, first
    )
    assert found is not None
    assert assert_same(data, delimiters, first)[0] == "ok"
    fast, ref = (
        parse_835_bytes(data, delimiters, first),
        parse_835_bytes_reference(data, delimiters, first),
    )
    assert fast == ref


def transactions(data: bytes) -> list[tuple[bytes, Delimiters, int]]:
    report = scan(io.BytesIO(data))
    return [(data[t.start : t.end], t.delimiters, t.first_segment) for t in report.transactions]


def small_835(seed: int, claims: int) -> bytes:
    return synthetic_835(seed=seed, claims=claims, claims_per_transaction=3)


def test_fast_path_is_built() -> None:
    # pip install -e . compiles the extension; without it this whole file would be vacuous.
    assert parse835.FAST


def test_fixtures() -> None:
    for path in sorted(FIXTURES.glob("835_*.txt")):
        for data, delimiters, first in transactions(path.read_bytes()):
            assert_fast(data, delimiters, first)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), claims=st.integers(1, 7))
def test_synthetic(seed: int, claims: int) -> None:
    for data, delimiters, first in transactions(small_835(seed, claims)):
        assert_fast(data, delimiters, first)


DELIMITER_SETS = [("|", ">", "~"), ("!", "<", "'"), ("*", ":", "\n"), ("^", "\\", "~")]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    delimiters=st.sampled_from(DELIMITER_SETS),
    newline=st.sampled_from(["", "\n", "\r\n", "\r"]),
    lead=st.sampled_from(["", "\n", "\r\n\n"]),
)
def test_delimiter_and_newline_variants(
    seed: int, delimiters: tuple[str, str, str], newline: str, lead: str
) -> None:
    element, component, segment = delimiters
    for data, _, first in transactions(small_835(seed, 2)):
        text = data.decode("latin-1").replace("~\n", "\0")
        text = text.translate(str.maketrans({"*": element, ":": component}))
        body = lead + text.replace("\0", segment + (newline if segment != "\n" else ""))
        found = Delimiters(element, component, "^", segment)
        outcome_ = assert_same(body.encode("latin-1"), found, first)
        assert outcome_[0] == "ok"


def mutate(segments: list[list[str]], draw: st.DrawFn) -> list[list[str]]:
    """Apply a few random edits (values, ids, dropped or repeated segments)."""
    segments = [list(s) for s in segments]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(segments) - 1))
        kind = draw(st.sampled_from(["value", "id", "drop", "repeat", "shorten", "extend"]))
        seg = segments[i]
        if kind == "value":
            j = draw(st.integers(1, len(seg)))
            value = draw(st.sampled_from(TRICKY))
            seg[j : j + 1] = [value]
        elif kind == "id":
            seg[0] = draw(st.sampled_from([*SEGMENT_IDS, "ST", "", "ZZZ"]))
        elif kind == "drop" and len(segments) > 1:
            del segments[i]
        elif kind == "repeat":
            segments.insert(i, list(seg))
        elif kind == "shorten":
            del seg[draw(st.integers(1, max(1, len(seg)))) :]
        elif kind == "extend":
            seg.extend(draw(st.lists(st.sampled_from(TRICKY), max_size=6)))
    return segments


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    seed = draw(st.integers(0, 1000))
    [(data, _, _)] = transactions(synthetic_835(seed=seed, claims=2, claims_per_transaction=2))
    segments = [t.split("*") for t in data.decode("latin-1").split("~\n") if t]
    text = "".join("*".join(s) + "~\n" for s in mutate(segments, draw))
    if draw(st.integers(0, 4)) == 0:  # sometimes truncated
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode()  # UTF-8: non-ASCII values become several latin-1 characters


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=malformed(), first=st.integers(1, 50))
def test_malformed_inputs_give_identical_results(data: bytes, first: int) -> None:
    assert_same(data, D, first)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    assert_same(data)
    assert_same(b"ST*835*1~BPR*I*1~TRN*1*2~" + data)


def test_hand_picked_edges() -> None:
    cases = [
        b"",
        b"~~~",
        b"\r\n",
        b"ST*835*1",
        b"ST*835~",
        b"ST*810*1~",
        b"ST~",
        b"ST*835*1~BPR*I*1~TRN*1*2~",
        b"ST*835*1~BPR*I*1~TRN*1*2~CLP*A*1*1*1**12~SVC*HC>1*1*1~",
        b"ST*835*1~BPR*I*1~TRN*1*2~CLP*A*1*1*1**12~CAS*CO*~CAS*CO**5~",
        b"ST*835*1~BPR*I*1~TRN*1*2~PLB*P*20240101*WO:X*5*:Y*6**~SE*5*1~",
        b"ST*835*1~BPR*I*1~TRN*1*2~PLB*P**WO*5*~",
        b"ST*835*1~BPR*I*1~TRN*1*2~N1*PE*N*XX*1~REF*TJ~N1*PR~REF*TJ*9~DTM*405~",
        b"ST*835*1~BPR*I*-0*C*NON***********20240230~TRN*1*2~",
    ]
    for data in cases:
        assert_same(data)


def test_segment_numbers_beyond_a_c_long_use_the_reference() -> None:
    [(data, delimiters, _)] = transactions(small_835(1, 2))
    for first in (2**62, 2**63 - 2, 2**70, -5):
        assert_same(data, delimiters, first)


# -- Decimals built directly (see "direct Decimals" in _fast835.c) ---------------------------


@contextmanager
def decimals(direct: bool) -> Iterator[bool]:
    """Configure the extension to build Decimals directly or by calling make_decimal."""
    classes = (Adjustment, ServiceLine, ClaimPayment, ProviderAdjustment)
    try:
        yield parse835._fast835.configure(parse835._EXACT.create_decimal, *classes, direct)
    finally:
        parse835._fast835.configure(parse835._EXACT.create_decimal, *classes)


def test_decimals_are_built_directly_on_this_python() -> None:
    with decimals(direct=True) as direct:
        assert direct
    with decimals(direct=False) as direct:
        assert not direct


def test_called_decimals_match_the_reference() -> None:
    with decimals(direct=False):
        for path in sorted(FIXTURES.glob("835_*.txt")):
            for data, delimiters, first in transactions(path.read_bytes()):
                assert_fast(data, delimiters, first)
        for data, delimiters, first in transactions(small_835(7, 5)):
            assert_fast(data, delimiters, first)


AMOUNT = st.from_regex(r"-?[0-9]{0,5}(\.[0-9]{0,5})?", fullmatch=True)
QUANTITY = st.from_regex(r"-?[0-9]{0,8}(\.[0-9]{0,7})?", fullmatch=True)


def amounts_835(amount: str, quantity: str) -> bytes:
    return (
        f"ST*835*1~BPR*I*{amount}*C*NON~TRN*1*2~CLP*A*1*{amount}*{amount}*{amount}*12~"
        f"SVC*HC:1*{amount}*{amount}**{quantity}~CAS*CO*45*{amount}*{quantity}~"
        f"AMT*B6*{amount}~SE*7*1~"
    ).encode()


@settings(max_examples=300, deadline=None)
@given(amount=AMOUNT, quantity=QUANTITY)
def test_direct_decimals_behave_as_parsed_ones(amount: str, quantity: str) -> None:
    # The model's repr shows every Decimal's sign, coefficient and exponent; the values must
    # also hash, compare and compute like Decimals made from their text.
    for direct in (True, False):
        with decimals(direct):
            kind, _ = assert_same(amounts_835(amount, quantity))
            if kind != "ok":
                continue
            model = parse_835_bytes(amounts_835(amount, quantity), D)
            line = model.claims[0].lines[0]
            for value, text in ((line.charge, amount), (line.units, quantity)):
                if not text:
                    continue
                expected = Decimal(text)
                assert type(value) is Decimal
                assert value.as_tuple() == expected.as_tuple()
                assert hash(value) == hash(expected)
                assert value + value == expected + expected
                assert str(-value) == str(-expected)


# -- balance pre-check (_fast835.claims_clean) against balance.check_835_reference -------------


def assert_same_checks(data: bytes, delimiters: Delimiters = D, first: int = 1) -> bool:
    """Both parsers' models get the reference's issues; returns claims_clean's answer."""
    model = parse_835_bytes(data, delimiters, first)
    issues = repr(check_835_reference(model))
    assert repr(check_835(model)) == issues
    assert repr(check_835(parse_835_bytes_reference(data, delimiters, first))) == issues
    return parse835._fast835.claims_clean(model.claims, VALID_CLAIM_STATUS)


def test_balanced_files_take_the_c_check() -> None:
    for path in sorted(FIXTURES.glob("835_*.txt")):
        for data, delimiters, first in transactions(path.read_bytes()):
            assert_same_checks(data, delimiters, first)
    for data, delimiters, first in transactions(small_835(3, 6)):
        assert assert_same_checks(data, delimiters, first)


MONEY = ["0", "1", "2", "1.00", "0.50", "-1", "-0.00", "0.000001", "0.0000001", "99999.99"]
GROUPS = ["CO", "PR", "OA", "PI", "CO", "PR", "CR"]


def balanced(draw: st.DrawFn, paid: str, adjusted: list[Decimal]) -> str:
    """Mostly the charge that balances paid and adjusted, sometimes any amount."""
    if draw(st.integers(0, 4)):
        return f"{sum(adjusted, Decimal(paid)):f}"
    return draw(st.sampled_from(MONEY))


@st.composite
def claim_835(draw: st.DrawFn) -> bytes:
    """A claim whose sums balance or not, with the values claims_clean must read exactly."""
    money = st.sampled_from(MONEY)
    segments = []
    claim_adjusted: list[Decimal] = []
    patient = Decimal(0)
    for _ in range(draw(st.integers(0, 3))):
        cas = [(draw(st.sampled_from(GROUPS)), draw(money)) for _ in range(draw(st.integers(1, 2)))]
        paid = draw(money)
        charge = balanced(draw, paid, [Decimal(amount) for _, amount in cas])
        segments.append(f"SVC*HC:1*{charge}*{paid}")
        segments += [f"CAS*{group}*45*{amount}" for group, amount in cas]
        claim_adjusted.append(Decimal(charge) - Decimal(paid))
        patient += sum((Decimal(amount) for group, amount in cas if group == "PR"), Decimal(0))
    paid = draw(money)
    charge = balanced(draw, paid, claim_adjusted)
    responsibility = draw(st.sampled_from(["", f"{patient:f}", f"{patient:f}", "1"]))
    status = draw(st.sampled_from(["1", "2", "4", "22", "5"]))
    clp = f"CLP*A*{status}*{charge}*{paid}*{responsibility}*12"
    body = ["ST*835*1", "BPR*I*1*C*NON", "TRN*1*2", clp, *segments, "SE*9*1"]
    return "".join(s + "~" for s in body).encode()


@settings(max_examples=300, deadline=None)
@given(data=claim_835())
def test_claim_checks_give_identical_issues(data: bytes) -> None:
    if assert_same(data)[0] == "ok":
        assert_same_checks(data)


def test_claims_clean_declines_what_it_cannot_read() -> None:
    [(data, delimiters, first)] = transactions(small_835(5, 2))
    model = parse_835_bytes(data, delimiters, first)
    claim = model.claims[0]
    assert parse835._fast835.claims_clean(model.claims, VALID_CLAIM_STATUS)
    for odd in (
        replace(claim, charge=claim.charge + Decimal("1E-7") - Decimal("1E-7")),  # same value
        replace(claim, paid=Decimal("Infinity")),
        replace(claim, charge=claim.charge * Decimal(10) ** 30),
        replace(claim, lines=list(claim.lines)),  # type: ignore[arg-type]
        replace(claim, status="bad"),
    ):
        model_odd = replace(model, claims=(odd, *model.claims[1:]))
        assert repr(check_835(model_odd)) == repr(check_835_reference(model_odd))
