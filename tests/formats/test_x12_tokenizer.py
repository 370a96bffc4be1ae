from __future__ import annotations

import io
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revbridge.formats.x12 import _fast835, tokenizer
from revbridge.formats.x12.issues import X12Error
from revbridge.formats.x12.tokenizer import (
    Delimiters,
    Segment,
    Split,
    delimiters_from_isa,
    iter_segments,
    segments_from_bytes,
)


def isa(element: str = "*", repetition: str = "^", component: str = ":", term: str = "~") -> str:
    e = element
    fields = [
        "ISA", "00", " " * 10, "00", " " * 10, "ZZ", "SENDER".ljust(15), "ZZ",
        "RECEIVER".ljust(15), "250103", "0915", repetition, "00501", "000000001", "0", "P",
        component,
    ]  # fmt: skip
    return e.join(fields) + term


def interchange(element: str = "*", component: str = ":", term: str = "~", nl: str = "") -> str:
    e, t = element, term + nl
    body = [
        f"GS{e}HP{e}S{e}R{e}20250103{e}0915{e}1{e}X{e}005010X221A1",
        f"ST{e}835{e}0001",
        f"SVC{e}HC{component}99284{e}700{e}420",
        f"SE{e}3{e}0001",
        f"GE{e}1{e}1",
        f"IEA{e}1{e}000000001",
    ]
    return isa(element, "^", component, term) + nl + t.join(body) + t


def segments(data: bytes, chunk_size: int = 1 << 20) -> list[Segment]:
    return [s for s, _ in iter_segments(io.BytesIO(data), chunk_size)]


def assert_exact_offsets(data: bytes, segs: list[Segment], d: Delimiters) -> None:
    for s in segs:
        raw = data[s.offset : s.end].decode("latin-1").rstrip("\r\n")
        if d.segment not in "\r\n":
            assert raw.endswith(d.segment)
            raw = raw[: -len(d.segment)]
        assert raw.split(d.element) == s.elements
    for a, b in itertools.pairwise(segs):
        assert a.end == b.offset


def test_isa_is_106_chars_and_declares_delimiters() -> None:
    text = isa("|", "^", ">", "\n")
    assert len(text) == 106
    assert delimiters_from_isa(text) == Delimiters("|", ">", "^", "\n")


def test_delimiters_encode_roundtrip() -> None:
    d = Delimiters("|", ">", "^", "~")
    assert d.encode() == "|>^~"
    assert Delimiters.decode(d.encode()) == d
    with pytest.raises(ValueError):
        Delimiters.decode("**")


@pytest.mark.parametrize(
    ("element", "component", "term", "nl"),
    [
        ("*", ":", "~", ""),
        ("*", ":", "~", "\n"),
        ("*", ":", "~", "\r\n"),
        ("|", ">", "~", "\n"),
        ("^", ">", "~", ""),
        ("*", ">", "\n", ""),
        ("*", ":", "\r", "\n"),
    ],
)
def test_delimiters_and_newlines(element: str, component: str, term: str, nl: str) -> None:
    data = interchange(element, component, term, nl).encode()
    segs = segments(data)
    assert [s.id for s in segs] == ["ISA", "GS", "ST", "SVC", "SE", "GE", "IEA"]
    assert segs[3].get(1) == f"HC{component}99284"
    assert segs[3].get(9) == ""
    assert [s.number for s in segs] == list(range(1, 8))
    assert segs[-1].end == len(data)
    assert_exact_offsets(data, segs, Delimiters(element, component, "^", term))


@pytest.mark.parametrize("nl", ["", "\n", "\r\n"])
def test_chunk_boundaries_give_identical_segments(worked_example: bytes, nl: str) -> None:
    data = worked_example.replace(b"~\n", b"~" + nl.encode())
    reference = segments(data)
    assert len(reference) == 44
    for size in (1, 2, 7, 64, 105, 106, 107):
        assert segments(data, size) == reference
    assert_exact_offsets(data, reference, Delimiters())


def test_bom_is_skipped_and_offsets_stay_exact(worked_example: bytes) -> None:
    data = b"\xef\xbb\xbf" + worked_example
    segs = segments(data, 7)
    assert segs[0].offset == 3
    assert segs[0].id == "ISA"
    assert_exact_offsets(data, segs, Delimiters())


def test_several_interchanges_with_different_delimiters() -> None:
    first = interchange("*", ":", "~", "\n")
    second = interchange("|", ">", "\n", "")
    third = interchange("^", "!", "~", "\r\n")
    data = (first + second + third).encode()
    for size in (7, 1 << 20):
        pairs = list(iter_segments(io.BytesIO(data), size))
        assert len(pairs) == 21
        assert [p[0].number for p in pairs] == list(range(1, 22))
        assert pairs[3][1] == Delimiters("*", ":", "^", "~")
        assert pairs[10][1] == Delimiters("|", ">", "^", "\n")
        assert pairs[10][0].elements == ["SVC", "HC>99284", "700", "420"]
        assert pairs[17][1].element == "^"
        for seg, d in pairs:
            raw = data[seg.offset : seg.end].decode().rstrip("\r\n")
            raw = raw[:-1] if d.segment not in "\r\n" else raw
            assert raw.split(d.element) == seg.elements


def test_empty_file_raises() -> None:
    with pytest.raises(X12Error) as info:
        segments(b"")
    assert info.value.issue.code == "empty"
    with pytest.raises(X12Error):
        segments(b"\r\n\n")


def test_binary_garbage_raises() -> None:
    with pytest.raises(X12Error) as info:
        segments(bytes(range(256)) * 4)
    assert info.value.issue.code == "no_isa"
    assert "ISA" in str(info.value)


def test_truncated_isa_raises() -> None:
    with pytest.raises(X12Error) as info:
        segments(isa()[:60].encode())
    assert info.value.issue.code == "truncated_isa"


def test_isa_not_fixed_width_raises() -> None:
    bad = isa().replace("SENDER   ", "SENDER", 1) + "GS*HP~"
    with pytest.raises(X12Error) as info:
        segments(bad.encode())
    assert info.value.issue.code == "bad_isa"


def test_unterminated_last_segment_raises_after_complete_segments(worked_example: bytes) -> None:
    data = worked_example[:-5]
    got: list[Segment] = []
    with pytest.raises(X12Error) as info:
        for seg, _ in iter_segments(io.BytesIO(data), 64):
            got.append(seg)
    assert info.value.issue.code == "truncated"
    assert len(got) == 43
    assert info.value.issue.segment_number == 44


def test_final_terminator_without_newline(worked_example: bytes) -> None:
    data = worked_example.rstrip(b"\n")
    segs = segments(data, 5)
    assert segs[-1].elements == ["IEA", "1", "000004711"]
    assert segs[-1].end == len(data)


def test_segments_from_bytes_numbers_and_offsets(worked_example: bytes) -> None:
    start = worked_example.index(b"ST*835")
    end = worked_example.index(b"GE*")
    segs = list(segments_from_bytes(worked_example[start:end], Delimiters(), 3, start))
    assert segs[0].number == 3
    assert segs[-1].id == "SE"
    assert segs[-1].number == 42
    assert_exact_offsets(worked_example, segs, Delimiters())


def test_segment_equality_and_repr() -> None:
    a = Segment(1, 0, 4, ["LX", "1"])
    assert a == Segment(1, 0, 4, ["LX", "1"])
    assert a != Segment(2, 0, 4, ["LX", "1"])
    assert hash(a) == hash(Segment(1, 0, 4, ["LX", "1"]))
    assert "LX" in repr(a)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="~\n\r*:SETIAGX", max_size=80),
    sep=st.sampled_from(["~", "~\n", "~\r\n"]),
    elem=st.sampled_from(["*", ":", "S"]),
)
def test_candidates_find_every_needle_occurrence(text: str, sep: str, elem: str) -> None:
    """The one-regex scan of Split.candidates equals one str.find loop per needle."""
    needles = [sid + elem for sid in ("ISA", "IEA", "GS", "GE", "ST", "SE")]
    split = Split(None, None, len(text), sep, buf=text, term="~")
    expected = [0] if text.startswith(tuple(needles)) else []
    for needle in needles:
        position = text.find(sep + needle)
        while position != -1:
            expected.append(position + len(sep))
            position = text.find(sep + needle, position + 1)
    assert split.candidates(text, needles) == sorted(expected)


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet="~~~\n\r*aé\u0100\U0001f600", max_size=40),
    term=st.sampled_from(["~", "*", "é", "\u0100", "\U0001f600"]),
)
def test_c_separator_scan_equals_the_python_one(text: str, term: str) -> None:
    assert tokenizer._separator_after is _fast835.separator_after  # the extension is built
    assert _fast835.separator_after(text, term) == tokenizer._python_separator_after(text, term)


def test_c_separator_scan_on_typical_buffers() -> None:
    for body in ("ISA~GS~ST~", "ISA~\nGS~\nST~\n", "ISA~\r\nGS~\r\nST~", "A~\nB~\n~\nC~\n", "A~B"):
        for text in (body, body + "\r", "~" + body, body.replace("S", "\n")):
            expected = tokenizer._python_separator_after(text, "~")
            assert _fast835.separator_after(text, "~") == expected
