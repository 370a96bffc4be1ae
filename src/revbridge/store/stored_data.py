"""Stored JSON read back: decoding a column's text, and an event's data decoded when it
is first read (``StoredData``) or straight into the fields a caller declares (``data_as``).

Stages use ``data_as`` through ``store.base``; the backends and ``codec`` use the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import msgspec

_fast_decode = msgspec.json.Decoder().decode


def from_json(text: str) -> Any:
    """The value of a JSON text (numbers exactly: integers of any size stay integers)."""
    try:
        return _fast_decode(text)
    except msgspec.DecodeError:  # what msgspec refuses, e.g. an escaped lone surrogate
        return json.loads(text)


def json_object(text: str) -> dict[str, Any]:
    """Decode a JSON column that must hold an object."""
    value = from_json(text)
    if not isinstance(value, dict):
        raise ValueError("stored JSON is not an object")
    return value


class StoredData(Mapping[str, Any]):
    """An event's data as read from the store: its JSON object text, decoded when the
    mapping is first read (then as ``json_object`` decodes it), so events read only for
    their envelope (type, keys, source) cost no decoding. ``data_as`` decodes just the
    fields a caller declares, without building the rest (the ledger reads a few fields
    of every claim event). Read-only, as every event's data."""

    __slots__ = ("_text", "_value")

    def __init__(self, text: str) -> None:
        self._text = text
        self._value: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._value is None:
            self._value = json_object(self._text)
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __contains__(self, key: object) -> bool:
        return key in self._data()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StoredData):
            return self._data() == other._data()
        return self._data() == other if isinstance(other, Mapping) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a mapping, like dict

    def __repr__(self) -> str:
        return repr(self._data())


_Shape = TypeVar("_Shape")
_shape_decoders: dict[type[Any], Callable[[str], Any]] = {}


def data_as(data: Mapping[str, Any], shape: type[_Shape]) -> _Shape:
    """``data`` (an event's) as ``shape``, a ``msgspec.Struct`` type: stored data not yet
    decoded goes straight from its text into ``shape``, skipping what ``shape`` does not
    declare; any other mapping is converted. Raises ``ValueError`` if the data does not
    fit the shape."""
    try:
        if type(data) is StoredData:
            if data._value is None:
                try:
                    return cast("_Shape", _shape_decoder(shape)(data._text))
                except msgspec.ValidationError:
                    raise
                except msgspec.DecodeError:  # refused by msgspec, e.g. a lone surrogate:
                    pass  # converted from the mapping, decoded as ``from_json`` does
            data = data._data()
        return msgspec.convert(data if type(data) is dict else dict(data), shape)
    except msgspec.ValidationError as exc:
        raise ValueError(f"event data is not a {shape.__name__}: {exc}") from exc


def _shape_decoder(shape: type[Any]) -> Callable[[str], Any]:
    decode = _shape_decoders.get(shape)
    if decode is None:
        decode = _shape_decoders[shape] = msgspec.json.Decoder(shape).decode
    return decode
