"""The fast JSON path of the codec writes and reads exactly what the standard library does,
with its plain check in C (``_plain_json``) and in pure Python alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from revbridge.domain.events import SourceRef
from revbridge.store import _plain_json, codec, stored_data


@pytest.fixture(autouse=True, scope="module", params=["c", "python"])
def plain_check(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of this module runs with the C check and with the pure Python one."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "c":
            patch.setattr(codec, "_is_plain", _plain_json.is_plain)
            patch.setattr(codec, "_are_plain", _plain_json.is_plain)
        else:
            patch.setattr(codec, "_is_plain", codec._plain_value)
            patch.setattr(codec, "_are_plain", codec._plain_documents)
        yield request.param


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),  # beyond 64 bits too
    st.text(),  # any code point, control characters and lone surrogates included
    st.decimals(allow_nan=True, allow_infinity=True),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


def standard(value: Any) -> str:
    """What the codec wrote before the fast path: plain() then the standard encoder."""
    return json.dumps(codec.plain(value), ensure_ascii=False, separators=(",", ":"))


@given(documents)
def test_fast_path_writes_what_the_standard_library_writes(value: Any) -> None:
    assert codec.to_json(value) == standard(value)


@given(documents)
def test_reads_back_what_the_standard_library_reads(value: Any) -> None:
    text = standard(value)
    assert stored_data.from_json(text) == json.loads(text)


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, {"b": 2.5}]},
        [Decimal("1"), 0.1],
        {"k": {"n": [float("nan")]}},
    ],
)
def test_floats_anywhere_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        codec.to_json(value)


def test_big_integers_round_trip_exactly() -> None:
    value = {"n": 2**70, "m": -(2**65)}
    assert stored_data.from_json(codec.to_json(value)) == value


def test_lone_surrogates_take_the_standard_path() -> None:
    assert codec.to_json({"s": "\ud800"}) == '{"s":"\ud800"}'
    assert stored_data.from_json('{"s":"\\ud800"}') == {"s": "\ud800"}


class _Shape(msgspec.Struct):
    s: str


def test_stored_data_msgspec_refuses_is_decoded_as_from_json_does() -> None:
    data = stored_data.StoredData('{"s":"\\ud800","t":1}')
    assert stored_data.data_as(data, _Shape) == _Shape("\ud800")  # not decoded yet: from the text
    assert data == {"s": "\ud800", "t": 1}


def test_str_subclass_keys_are_refused_as_before() -> None:
    class Name(str):
        pass

    with pytest.raises(TypeError):
        codec.to_json({Name("k"): 1})


@given(st.lists(st.dictionaries(st.text(), documents, max_size=5), max_size=5))
def test_a_batch_of_documents_is_written_as_each_alone(batch: list[dict[str, Any]]) -> None:
    assert codec.documents_json(batch) == [codec.to_json(document) for document in batch]


@pytest.mark.parametrize(
    "batch",
    [
        [{"a": 1}, {"a": [{"b": 2.5}]}],  # in an array's flat object
        [{"a": [1, 0.1]}],  # in an array
        [{"a": "x"}, {"b": float("nan")}],  # at the top
        [{"a": [{"b": {"c": 1.0}}]}],  # deeper
    ],
)
def test_floats_anywhere_in_a_batch_are_refused(batch: list[dict[str, Any]]) -> None:
    with pytest.raises(TypeError):
        codec.documents_json(batch)


@pytest.mark.parametrize(
    "batch",
    [
        [{"a": [{1: "x"}]}],  # a key that is not a str, in an array's object
        [{"a": "x"}, {2: "y"}],  # at the top
    ],
)
def test_keys_not_str_in_a_batch_are_refused(batch: list[Any]) -> None:
    with pytest.raises(TypeError):
        codec.documents_json(batch)


def test_a_batch_of_other_types_goes_the_standard_way() -> None:
    batch = [{"t": ("a", Decimal("1.50"))}, {"m": [{"d": Decimal("2")}, "x", [1]]}]
    assert codec.documents_json(batch) == ['{"t":["a","1.50"]}', '{"m":[{"d":"2"},"x",[1]]}']


anything = st.recursive(
    st.one_of(scalars, st.floats(), st.binary(max_size=3), st.just(float("nan"))),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), children, max_size=4),
    ),
    max_leaves=25,
)


@given(anything)
def test_the_c_check_answers_as_the_python_reference(value: Any) -> None:
    assert _plain_json.is_plain(value) == codec._plain_value(value)
    assert _plain_json.is_plain([value]) == codec._plain_value([value])


class Name(str):
    pass


class Number(Decimal):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {Name("k"): "v"},
        {"k": Name("v")},
        [Number("1")],
        {"k": [1, (2,)]},
        {"k": {"j": {"i": [float("inf")]}}},
        {"k": {1, 2}},
    ],
)
def test_the_c_check_takes_only_the_exact_plain_types(value: Any) -> None:
    assert not _plain_json.is_plain(value)
    assert not codec._plain_value(value)


def test_nesting_past_the_c_walks_depth_takes_the_standard_path() -> None:
    deep: Any = {"leaf": Decimal("1.50")}
    for _ in range(100):
        deep = [{"k": deep}]
    assert not _plain_json.is_plain(deep)
    assert codec.to_json(deep) == standard(deep)
    assert codec.documents_json([{"d": deep}, {"e": 1}]) == [
        standard({"d": deep}),
        '{"e":1}',
    ]


sources = st.builds(
    SourceRef,
    st.text(),
    st.one_of(st.integers(), st.text(max_size=3)),  # as declared, or not
    st.integers(min_value=-(2**70), max_value=2**70),
    st.one_of(st.none(), st.integers()),
    st.one_of(st.none(), st.text(), st.decimals(allow_nan=False)),
)


@given(st.lists(sources, max_size=6))
def test_a_batch_of_sources_is_written_as_each_alone(batch: list[SourceRef]) -> None:
    assert codec.sources_json(batch) == [codec.source_to_json(source) for source in batch]
