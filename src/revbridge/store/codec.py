"""Encoding shared by the SQL store backends: JSON columns, instants, events, journal lines.

Rules (every backend follows them, the contract suite checks them):

- JSON columns hold plain JSON. ``Decimal`` values are written as strings and come back as
  strings (the store does not know which strings were amounts). ``float`` is refused with
  ``TypeError`` anywhere in a stored document: money must never be binary floating point.
  Mapping keys must be strings; tuples are written as lists.
- Instants are timezone-aware. They are stored as integer microseconds since the Unix epoch
  (UTC) and come back as ``datetime`` in ``UTC``: the same instant, exactly. A naive datetime
  is refused with ``ValueError``.
- Amounts in columns are ``str(Decimal)``, which round-trips exactly (``Decimal("10.00")``
  comes back as ``Decimal("10.00")``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from revbridge.domain.events import SourceRef
from revbridge.domain.journal import JournalLine

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# ------------------------------------------------------------------------------ JSON


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def _unencodable(value: object) -> object:
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def _make_encoder() -> Callable[[Any], str]:
    """A compact JSON encoder, reused: building one per call costs more than encoding."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - interpreters without the C accelerator
        encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return encoder.encode
    iterencode = c_make_encoder(
        None, _unencodable, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    return encode


_encode = _make_encoder()


def to_json(value: Any) -> str:
    """Compact JSON text of ``value``; Decimals become strings, floats are refused."""
    return _encode(plain(value))


def from_json(text: str) -> Any:
    return json.loads(text)


def plain(value: Any) -> Any:
    """``value`` as plain JSON types; raises ``TypeError`` for floats and unknown types."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    if kind is Decimal:
        return str(value)
    if kind is dict:
        return _plain_object(value)
    if kind is list or kind is tuple:
        return [item if type(item) in _PLAIN_SCALARS else plain(item) for item in value]
    return _plain_other(value)


def _plain_other(value: Any) -> Any:
    if isinstance(value, float):
        raise TypeError(f"refusing to store float {value!r}: use Decimal (or str) for amounts")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return _plain_object(value)
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, str | int):  # str and int enums; bool is an int
        return value
    return _unencodable(value)


def _plain_object(value: Mapping[Any, Any]) -> dict[str, Any]:
    for key in value:
        if type(key) is not str:
            raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
    return {
        key: item if type(item) in _PLAIN_SCALARS else plain(item) for key, item in value.items()
    }


def json_object(text: str) -> dict[str, Any]:
    """Decode a JSON column that must hold an object."""
    value = from_json(text)
    if not isinstance(value, dict):
        raise ValueError("stored JSON is not an object")
    return value


# -------------------------------------------------------------------------- instants


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact integer arithmetic)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs aware UTC times")
    return (value - EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def optional_micros(value: datetime | None) -> int | None:
    return None if value is None else to_micros(value)


def optional_datetime(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


# ---------------------------------------------------------------------------- events


def source_to_json(source: SourceRef) -> str:
    return _encode(source.as_dict())  # typed fields only: nothing to convert


def source_from_json(text: str) -> SourceRef:
    value = json_object(text)
    return SourceRef(
        channel=value["channel"],
        raw_id=value["raw_id"],
        unit_id=value["unit_id"],
        segment=value.get("segment"),
        path=value.get("path"),
    )


def string_map(text: str) -> dict[str, str]:
    """A JSON object of strings (event keys, dimensions, source references), as stored."""
    return cast("dict[str, str]", json_object(text))


# -------------------------------------------------------------------------- journals


def amount_to_text(value: Decimal) -> str:
    if not isinstance(value, Decimal):
        raise TypeError(f"amounts must be Decimal, not {type(value).__name__}")
    return str(value)


def line_values(line: JournalLine) -> tuple[str, str, str, str, str, str]:
    """(account, debit, credit, description, dimensions JSON, source JSON) of a line."""
    return (
        line.account,
        amount_to_text(line.debit),
        amount_to_text(line.credit),
        line.description,
        to_json(line.dimensions),
        to_json(line.source),
    )


def line_from_values(values: Sequence[str]) -> JournalLine:
    """The inverse of ``line_values``."""
    account, debit, credit, description, dimensions, source = values
    return JournalLine(
        account=account,
        debit=Decimal(debit),
        credit=Decimal(credit),
        description=description,
        dimensions=string_map(dimensions),
        source=string_map(source),
    )
