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
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import chain, compress, count, repeat
from operator import attrgetter, eq, is_, itemgetter, methodcaller
from typing import Annotated, Any, NamedTuple, cast

import msgspec

from revbridge.domain.events import Event, SourceRef, new_event, new_source
from revbridge.domain.journal import JournalLine, JournalLines
from revbridge.store.base import StoredEvent, new_stored_event
from revbridge.store.stored_data import StoredData, json_object

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# ------------------------------------------------------------------------------ JSON


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})
_FAST_SCALARS = frozenset({str, int, bool, type(None), Decimal})
_STR = frozenset({str})


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
_FAST_ENCODER = msgspec.json.Encoder(decimal_format="string")
_fast_encode = _FAST_ENCODER.encode


def to_json(value: Any) -> str:
    """Compact JSON text of ``value``; Decimals become strings, floats are refused.

    Documents of plain types only (``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
    ``bool``, ``None``, ``Decimal``), which is what the store writes in bulk, go straight to
    msgspec's encoder after a check that copies nothing (``_is_plain``); anything else
    (other mappings, tuples, enums, floats to refuse) goes through ``plain`` and the
    standard library. Both paths write the same text for the same value.
    """
    if _is_plain(value):
        try:
            return _fast_encode(value).decode()
        except (TypeError, ValueError):  # e.g. a lone surrogate: the standard path decides
            pass
    return _encode(plain(value))


def _plain_value(value: Any) -> bool:
    """Whether ``value`` holds only the plain types above: the pure Python reference of
    ``_plain_json.is_plain`` (which also answers False past 64 levels of nesting)."""
    return (  # the usual document, a flat object of scalars, tested here without a call
        type(value) is dict
        and _STR.issuperset(map(type, value))
        and _FAST_SCALARS.issuperset(map(type, value.values()))
    ) or _fast_ok(value)


def _fast_ok(value: Any) -> bool:
    """Whether ``value`` holds only types the fast encoder writes as ``plain`` would."""
    kind = type(value)
    if kind is dict:
        return _fast_object(value)
    if kind is list:
        return _fast_array(value)
    return kind in _FAST_SCALARS


def _fast_object(value: dict[Any, Any]) -> bool:
    if not _STR.issuperset(map(type, value)):
        return False
    return _FAST_SCALARS.issuperset(map(type, value.values())) or all(
        type(item) in _FAST_SCALARS or _fast_ok(item) for item in value.values()
    )


def _fast_array(value: list[Any]) -> bool:
    return (
        _FAST_SCALARS.issuperset(map(type, value))
        or all(  # the usual nested array: flat objects (a claim's lines, its adjustments)
            type(item) is dict
            and _STR.issuperset(map(type, item))
            and _FAST_SCALARS.issuperset(map(type, item.values()))
            for item in value
        )
        or all(_fast_ok(item) for item in value)
    )


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


_SOURCE_TYPES = frozenset({str, int, type(None)})
_decode_source = msgspec.json.Decoder(SourceRef).decode


def source_to_json(source: SourceRef) -> str:
    """The source as a JSON object, its fields in declaration order (as ``as_dict``)."""
    fields = (source.channel, source.raw_id, source.unit_id, source.segment, source.path)
    if _SOURCE_TYPES.issuperset(map(type, fields)):  # as typed: msgspec writes it directly
        return _fast_encode(source).decode()
    return to_json(source.as_dict())


_SOURCE_REF = frozenset({SourceRef})
_source_fields = attrgetter("channel", "raw_id", "unit_id", "segment", "path")


def sources_json(sources: list[SourceRef]) -> list[str]:
    """``source_to_json`` of each source, the same text: sources typed as declared (what
    the normalisers make) are checked in two passes and encoded in one msgspec call."""
    if _SOURCE_REF.issuperset(map(type, sources)) and _SOURCE_TYPES.issuperset(
        map(type, chain.from_iterable(map(_source_fields, sources)))
    ):
        try:
            return _FAST_ENCODER.encode_lines(sources).decode().split("\n")[:-1]
        except (TypeError, ValueError):  # e.g. a lone surrogate: each as it would be alone
            pass
    return list(map(source_to_json, sources))


def source_from_json(text: str) -> SourceRef:
    try:
        return _decode_source(text)  # straight into a SourceRef when the types are as declared
    except msgspec.DecodeError:  # anything else as it was stored, as before
        value = json_object(text)
        return new_source(
            value["channel"],
            value["raw_id"],
            value["unit_id"],
            value.get("segment"),
            value.get("path"),
        )


def event_rows(
    events: Sequence[Event], instant: Callable[[datetime], Any]
) -> list[tuple[Any, ...]]:
    """The event columns after ``position`` of an append, in both backends' column order;
    ``instant`` stores a datetime the backend's way. Keys and data are encoded as one batch,
    so encoding problems raise before anything is sent."""
    keys = documents_json([event.keys for event in events])
    data = documents_json([event.data for event in events])
    sources = sources_json([event.source for event in events])
    return [
        (
            event.id,
            event.type,
            event.schema_version,
            instant(event.occurred_at),
            instant(event.recorded_at),
            event.entity,
            event.facility,
            keys_text,
            event.correlation_id,
            event.causation_id,
            source_text,
            data_text,
        )
        for event, keys_text, source_text, data_text in zip(
            events, keys, sources, data, strict=True
        )
    ]


def documents_json(documents: Sequence[Mapping[str, Any]]) -> list[str]:
    """``to_json`` of each document (the data or keys of an append's events), the same text.

    A batch of plain documents (``_are_plain``: one C walk of the whole batch, or without
    the C extension a few passes over the usual shapes) is encoded by msgspec in one call,
    a line per document (a line of compact JSON holds no newline: it is escaped), as
    ``to_json`` would send each document; any other batch goes through ``to_json``.
    """
    if _are_plain(documents):
        try:
            return _FAST_ENCODER.encode_lines(documents).decode().split("\n")[:-1]
        except (TypeError, ValueError):  # e.g. a lone surrogate: the standard path decides
            pass
    return [to_json(document) for document in documents]


def _plain_documents(documents: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the batch is plain: the pure Python check, which takes the usual batch
    (objects whose values are scalars or arrays of scalars or of flat objects, what the
    normalisers write) in a few passes with no Python call per document or value."""
    if not _DICT.issuperset(map(type, documents)):
        return False
    if not _STR.issuperset(map(type, chain.from_iterable(documents))):
        return False
    objects = cast("Sequence[dict[str, Any]]", documents)  # as just checked
    values: list[Any] = list(chain.from_iterable(map(dict.values, objects)))
    kinds = set(map(type, values))
    if _FAST_SCALARS.issuperset(kinds):
        return True
    if not _FAST_OR_LIST.issuperset(kinds):
        return False
    arrays = compress(values, map(is_, map(type, values), repeat(list)))
    return _plain_items(list(chain.from_iterable(arrays)))


def _plain_items(items: list[Any]) -> bool:
    """Whether the items of the documents' arrays are scalars or flat objects of scalars."""
    kinds = set(map(type, items))
    if _FAST_SCALARS.issuperset(kinds):
        return True
    if not _FAST_OR_DICT.issuperset(kinds):
        return False
    objects = list(compress(items, map(is_, map(type, items), repeat(dict))))
    return _STR.issuperset(map(type, chain.from_iterable(objects))) and _FAST_SCALARS.issuperset(
        map(type, chain.from_iterable(map(dict.values, objects)))
    )


_DICT = frozenset({dict})
_FAST_OR_LIST = _FAST_SCALARS | {list}
_FAST_OR_DICT = _FAST_SCALARS | {dict}

try:
    from revbridge.store._plain_json import is_plain
except ImportError:  # installed without the C extension: the checks above, in Python
    _is_plain: Callable[[Any], bool] = _plain_value
    _are_plain: Callable[[Sequence[Mapping[str, Any]]], bool] = _plain_documents
else:  # one C walk, for a value and for a batch (a list of documents) alike
    _is_plain = _are_plain = is_plain


def string_map(text: str) -> dict[str, str]:
    """A JSON object of strings (event keys, dimensions, source references), as stored."""
    return cast("dict[str, str]", json_object(text))


# -------------------------------------------------------------------------- journals


def amount_to_text(value: Decimal) -> str:
    if not isinstance(value, Decimal):
        raise TypeError(f"amounts must be Decimal, not {type(value).__name__}")
    return str(value)


class EncodedLines(NamedTuple):
    """A journal's lines as stored: the document, and the values to index its lines by."""

    text: str
    refs: list[str]


POSITIONAL_REFS = frozenset({"raw_id", "unit_id", "segment"})
"""Source references not indexed for ``keys_by_source``: numbers that mean nothing alone
(a segment ``17`` is in every unit); a line is traced by its business keys, the events
carry these."""


def encode_lines(lines: Sequence[JournalLine]) -> EncodedLines:
    """A journal's lines as one JSON document (one column of its row, not a row per line)::

        {"dimensions": [{...}, ...], "source_columns": [block, ...],
         "line_columns": {"accounts": [values, indices], "debits": [amount, ...],
                          "credits": [amount, ...], "descriptions": [values, indices],
                          "dimensions": [dimensions no, ...], "sources": [source no, ...]}}

    Written by column, each a C-level pass: a journal has thousands of lines and they
    repeat a few accounts, a description per posting pair, a few dimension sets and a
    source per pair or CAS segment. Amounts are ``str(Decimal)``; a dimension set or source
    several lines hold (the very same mapping) is written once and named by its number.
    ``values, indices``: the distinct values and each line's index among them, no indices
    if there is one value (``_by_value``). Sources go by blocks of columns
    (``_source_blocks``): they differ in a reference or two (the segment, the claim), so
    each distinct value of a reference is written once.

    The layout before: ``"sources": [{...}, ...]`` (each source whole) and ``"lines":
    [[account, debit, credit, description, dimensions no, source no], ...]`` (rows).
    Readers take either part of either layout, and it is still written for what the
    columns do not hold: sources that are not plain string maps, accounts or descriptions
    that are not strings (``to_json`` writes them as it would anywhere). ``refs``: the
    distinct values of the sources, but for ``POSITIONAL_REFS``, in order.
    """
    if type(lines) is JournalLines:  # as the ledger builds them and the store reads them
        accounts, debits, credits = lines.accounts, lines.debits, lines.credits
        descriptions, dimensions, sources = lines.descriptions, lines.dimensions, lines.sources
    else:
        accounts, debits, credits, descriptions, dimensions, sources = (
            list(map(column, lines)) for column in _LINE_COLUMNS
        )
    dimension_no, dimension_maps = _numbered(dimensions)
    source_ids = list(map(id, sources))
    distinct = dict(zip(source_ids, sources, strict=True))  # by identity, in order of use
    source_maps = list(distinct.values())
    blocks = _source_blocks(source_maps)
    if blocks is None:
        names = set(chain.from_iterable(source_maps))  # the few keys of many sources
        written_sources = f'"sources":{_maps_json(source_maps, names)}'
        refs = _refs(source_maps, names)
        numbers = dict(zip(distinct, count()))
    else:
        written_sources = f'"source_columns":{_fast_encode(blocks.blocks).decode()}'
        refs = blocks.refs
        numbers = dict(zip(map(id, blocks.order), count()))
    source_no = map(numbers.__getitem__, source_ids)
    if not (_DECIMAL.issuperset(map(type, debits)) and _DECIMAL.issuperset(map(type, credits))):
        for amount in (*debits, *credits):
            amount_to_text(amount)  # refuses what is not a Decimal
    columns = _line_columns(accounts, debits, credits, descriptions)
    if columns is None:
        rows = zip(accounts, debits, credits, descriptions, dimension_no, source_no, strict=True)
        written_lines = f'"lines":{to_json(list(rows))}'
    else:
        columns["dimensions"] = list(dimension_no)
        columns["sources"] = list(source_no)
        written_lines = f'"line_columns":{_fast_encode(columns).decode()}'
    text = f'{{"dimensions":{_maps_json(dimension_maps)},{written_sources},{written_lines}}}'
    return EncodedLines(text, refs)


def _line_columns(
    accounts: list[str], debits: list[Decimal], credits: list[Decimal], descriptions: list[str]
) -> dict[str, Any] | None:
    """The lines by column (``line_columns``): accounts and descriptions as their distinct
    values and each line's index among them (``_by_value``), each side's amounts as text
    (the Decimals, checked by the caller, written as ``str``); the dimension and source
    numbers are added by the caller. None (write the lines as rows) unless accounts and
    descriptions are strings."""
    account_column, description_column = _by_value(accounts), _by_value(descriptions)
    if account_column is None or description_column is None:
        return None
    return {
        "accounts": account_column,
        "debits": debits,
        "credits": credits,
        "descriptions": description_column,
    }


_LINE_COLUMNS = tuple(map(itemgetter, range(len(JournalLine._fields))))


def _numbered(
    maps: list[Mapping[str, str]],
) -> tuple[Iterable[int], list[Mapping[str, str]]]:
    """Each map's number among the distinct ones (the very same object: lines share them),
    and those, in order of first use."""
    ids = list(map(id, maps))
    by_id = dict(zip(ids, maps, strict=True))
    number = dict(zip(by_id, count()))
    return map(number.__getitem__, ids), list(by_id.values())


class _SourceBlocks(NamedTuple):
    """Sources written by column: ``blocks`` as stored, ``order`` the sources in the order
    the blocks hold them (their numbers), ``refs`` as ``EncodedLines.refs``."""

    blocks: list[dict[str, Any]]
    order: list[Mapping[str, str]]
    refs: list[str]


def _source_blocks(sources: list[Mapping[str, str]]) -> _SourceBlocks | None:
    """The sources as blocks of columns, one block per distinct key sequence (most journals
    have one or two: claim lines and PLB lines), each key a column of its distinct values
    and each source's index among them; a column of one value has no indices::

        {"count": sources, "keys": [key, ...], "columns": [[[value, ...], [index, ...]], ...]}

    Keys keep their order in each source, so a source reads back equal and in order. None
    (write them whole) unless every source is a ``dict`` of strings to strings. Each pass
    is a C-level one over a column; Python runs per block and key, not per source.
    """
    if not _DICT.issuperset(map(type, sources)):
        return None
    shapes = list(map(tuple, sources))
    distinct_shapes = list(dict.fromkeys(shapes))
    if not _STR.issuperset(map(type, chain.from_iterable(distinct_shapes))):
        return None
    blocks: list[dict[str, Any]] = []
    order: list[Mapping[str, str]] = []
    refs: set[str] = set()
    for shape in distinct_shapes:
        members = (
            sources
            if len(distinct_shapes) == 1
            else list(compress(sources, map(eq, shapes, repeat(shape))))
        )
        columns = [_by_value(list(map(itemgetter(key), members))) for key in shape]
        if None in columns:
            return None
        for key, (values, _indices) in zip(shape, cast("list[_Column]", columns), strict=True):
            if key not in POSITIONAL_REFS:
                refs.update(values)
        blocks.append({"count": len(members), "keys": list(shape), "columns": columns})
        order += members
    return _SourceBlocks(blocks, order, sorted(refs))


_Column = tuple[list[str], list[int]]


def _by_value(column: list[Any]) -> _Column | None:
    """A column's distinct values and each row's index among them (none if one value);
    None if a value is not a string."""
    try:
        values = dict.fromkeys(column)
    except TypeError:  # an unhashable value: not a string
        return None
    if not _STR.issuperset(map(type, values)):
        return None
    if len(values) == 1:
        return list(values), []
    number = dict(zip(values, count()))
    return list(values), list(map(number.__getitem__, column))


def _refs(sources: list[Mapping[str, str]], names: set[str]) -> list[str]:
    """The distinct values of ``sources`` held under any of their key ``names`` but
    ``POSITIONAL_REFS``: one pass over the sources per key (a journal's lines have a few
    keys, and many sources)."""
    values: set[str | None] = set()
    for name in names - POSITIONAL_REFS:
        values.update(map(methodcaller("get", name), sources))
    values.discard(None)  # from a source without that key
    return sorted(cast("set[str]", values))


_DECIMAL = frozenset({Decimal})


def _maps_json(maps: list[Mapping[str, str]], names: set[str] | None = None) -> str:
    """``to_json`` of a list of string maps, checked without the general walk; ``names``:
    their keys, if known."""
    if (
        _DICT.issuperset(map(type, maps))
        and _STR.issuperset(map(type, chain.from_iterable(maps) if names is None else names))
        and _STR.issuperset(map(type, chain.from_iterable(map(dict.values, cast(_Maps, maps)))))
    ):
        return _fast_encode(maps).decode()
    return to_json(maps)


_DICT = frozenset({dict})
_Maps = list[dict[str, str]]


# ---------------------------------------------------------------- many rows at once


class Reading:
    """One read of many rows: each distinct stored string map (event keys, line dimensions
    and sources) and each instant is decoded once, then shared by the rows that repeat it.

    Shared values are read-only, as the events and journal lines holding them are: a claim's
    adjustments repeat its keys, a journal's lines repeat a few dimension sets, and the two
    lines of a posting pair share their source.
    """

    __slots__ = ("_amounts", "_instants", "_maps")

    def __init__(self) -> None:
        self._maps: dict[str, dict[str, str]] = {}
        self._instants: dict[int, datetime] = {}
        self._amounts: dict[str, Decimal] = {}

    def string_map(self, text: str) -> dict[str, str]:
        found = self._maps.get(text)
        if found is None:
            found = self._maps[text] = string_map(text)
        return found

    def instant(self, micros: int) -> datetime:
        found = self._instants.get(micros)
        if found is None:
            found = self._instants[micros] = from_micros(micros)
        return found

    def amount(self, text: str) -> Decimal:
        found = self._amounts.get(text)
        if found is None:
            found = self._amounts[text] = Decimal(text)
        return found

    def events(self, rows: Iterable[Sequence[Any]], *, micros: bool) -> list[StoredEvent]:
        """Stored events from rows of ``position, id, type, schema_version, occurred_at,
        recorded_at, entity, facility, keys, correlation_id, causation_id, source, data``;
        instants as integer microseconds (``micros``) or as datetimes. Written out like
        ``lines``: this runs for every event read."""
        maps, instants = self._maps, self._instants
        built = []
        for row in rows:
            position, event_id, kind, version, occurred, recorded, entity, facility = row[:8]
            keys_text, correlation_id, causation_id, source, data = row[8:]
            if micros:
                occurred = instants.get(occurred) or self.instant(occurred)
                recorded = instants.get(recorded) or self.instant(recorded)
            keys = maps.get(keys_text)
            if keys is None:
                keys = self.string_map(keys_text)
            event = new_event(
                event_id,
                kind,
                version,
                occurred,
                recorded,
                entity,
                facility,
                keys,
                correlation_id,
                causation_id,
                source_from_json(source),
                StoredData(data),
            )
            built.append(new_stored_event(position, event))
        return built

    def lines(self, text: str) -> JournalLines:
        """The lines of an ``encode_lines`` document, by column, sharing repeated amounts
        (and, as written, dimension sets and sources). Built by C-level maps over the
        decoded columns: this runs for every line of every journal read."""
        document = _lines_document(text)
        if document.line_columns is not None and document.lines:
            raise ValueError("stored journal lines are written both as rows and by column")
        try:
            if document.line_columns is None:
                return self._rows(document)
            return self._columns(document, document.line_columns)
        except IndexError as exc:
            raise ValueError(f"stored journal lines name a missing value: {exc}") from exc

    def _rows(self, document: _LinesDocument) -> JournalLines:
        """Lines written as rows (``lines``), as before ``line_columns``."""
        rows = document.lines
        amounts = self._amounts_of(map(_DEBIT_TEXT, rows), map(_CREDIT_TEXT, rows))
        dimensions: list[Mapping[str, str]] = list(
            map(document.dimensions.__getitem__, map(_DIMENSIONS_NO, rows))
        )
        distinct = document.sources + _block_sources(document.source_columns)
        sources: list[Mapping[str, str]] = list(map(distinct.__getitem__, map(_SOURCE_NO, rows)))
        return JournalLines(
            list(map(_ACCOUNT_TEXT, rows)),
            list(map(amounts.__getitem__, map(_DEBIT_TEXT, rows))),
            list(map(amounts.__getitem__, map(_CREDIT_TEXT, rows))),
            list(map(_DESCRIPTION_TEXT, rows)),
            dimensions,
            sources,
        )

    def _amounts_of(self, *columns: Iterable[str]) -> dict[str, Decimal]:
        """The reading's amounts by text, with those of ``columns`` (each text once)."""
        amounts = self._amounts
        missing = [text for text in set(chain.from_iterable(columns)) if text not in amounts]
        amounts.update(zip(missing, map(Decimal, missing), strict=True))
        return amounts

    def _columns(self, document: _LinesDocument, lines: _LineColumns) -> JournalLines:
        """Lines written by column (``line_columns``): a C-level pass per column."""
        count = len(lines.debits)
        amounts = self._amounts_of(lines.debits, lines.credits)
        distinct = len(document.sources) + sum(map(_checked_count, document.source_columns))
        if len(lines.sources) != count or (lines.sources and max(lines.sources) >= distinct):
            raise ValueError("stored journal lines name a missing source")
        dimensions: list[Mapping[str, str]] = list(
            map(document.dimensions.__getitem__, lines.dimensions)
        )
        return JournalLines(
            _column_values(*lines.accounts, count),
            list(map(amounts.__getitem__, lines.debits)),
            list(map(amounts.__getitem__, lines.credits)),
            _column_values(*lines.descriptions, count),
            dimensions,
            partial(_line_sources, document, lines.sources),  # checked; built if read
        )


_Index = Annotated[int, msgspec.Meta(ge=0)]


class _SourceBlock(msgspec.Struct):
    """Sources written by column (``_source_blocks``)."""

    count: _Index
    keys: list[str]
    columns: list[tuple[list[str], list[_Index]]]


class _LineColumns(msgspec.Struct):
    """Lines written by column (``_line_columns``)."""

    accounts: tuple[list[str], list[_Index]]
    debits: list[str]
    credits: list[str]
    descriptions: tuple[list[str], list[_Index]]
    dimensions: list[_Index]
    sources: list[_Index]


class _LinesDocument(msgspec.Struct):
    """An ``encode_lines`` document, its types checked by the decoder. Its sources are those
    of ``sources`` (written whole: the only layout before ``source_columns``), then those
    of each block of ``source_columns``; its lines are ``line_columns``, or else ``lines``
    (rows: the only layout before ``line_columns``)."""

    dimensions: list[dict[str, str]]
    lines: list[tuple[str, str, str, str, _Index, _Index]] = []
    line_columns: _LineColumns | None = None
    sources: list[dict[str, str]] = []
    source_columns: list[_SourceBlock] = []


def _line_sources(document: _LinesDocument, numbers: list[int]) -> list[Mapping[str, str]]:
    """Each line's source, by its number among the document's (``_checked_count``)."""
    distinct = document.sources + _block_sources(document.source_columns)
    return list(map(distinct.__getitem__, numbers))


def _checked_count(block: _SourceBlock) -> int:
    """How many sources ``block`` holds, once its columns are checked as ``_block`` would
    (so that building them later cannot fail): without building any."""
    if len(block.columns) != len(block.keys):
        raise ValueError("stored journal sources: a column per key is needed")
    for values, indices in block.columns:
        _check_column(values, indices, block.count)
    return block.count


def _block_sources(blocks: list[_SourceBlock]) -> list[dict[str, str]]:
    """The sources of ``source_columns``, each a new dict."""
    sources: list[dict[str, str]] = []
    for block in blocks:
        _checked_count(block)
        sources += _block(block)
    return sources


def _block(block: _SourceBlock) -> list[dict[str, str]]:
    """A block's sources: copies of the first, then each column of more than one value set
    in every copy (a key set again keeps its place). C-level passes per column: most of a
    block's columns hold one value, and copying a dict costs less than building one."""
    if not block.count:
        return []
    columns = [_column_values(values, at, block.count) for values, at in block.columns]
    first = dict(zip(block.keys, [column[0] for column in columns], strict=True))
    sources = list(map(dict.copy, repeat(first, block.count)))
    for key, (_values, at), column in zip(block.keys, block.columns, columns, strict=True):
        if at:  # one value a source: set in each (the map is consumed for its effect)
            deque(map(dict.__setitem__, sources, repeat(key), column), maxlen=0)
    return sources


def _column_values(values: list[str], indices: list[int], rows: int) -> list[str]:
    """A column's value in each of ``rows`` rows."""
    _check_column(values, indices, rows)
    return list(map(values.__getitem__, indices)) if indices else values * rows


def _check_column(values: list[str], indices: list[int], rows: int) -> None:
    if not indices:
        if len(values) != 1 and rows:
            raise ValueError("stored journal sources: a column without indices has one value")
    elif len(indices) != rows:
        raise ValueError("stored journal sources: a column's length is not its block's")
    elif max(indices) >= len(values):
        raise ValueError("stored journal lines name a missing value")


_decode_lines = msgspec.json.Decoder(_LinesDocument).decode
_ACCOUNT_TEXT, _DEBIT_TEXT, _CREDIT_TEXT, _DESCRIPTION_TEXT, _DIMENSIONS_NO, _SOURCE_NO = (
    itemgetter(n) for n in range(6)
)


def _lines_document(text: str) -> _LinesDocument:
    try:
        return _decode_lines(text)
    except msgspec.ValidationError as exc:
        raise ValueError(f"stored journal lines are malformed: {exc}") from exc
    except msgspec.DecodeError:  # what msgspec refuses, e.g. an escaped lone surrogate
        return _converted(json.loads(text))


def _converted(value: Any) -> _LinesDocument:
    try:
        return msgspec.convert(value, _LinesDocument)
    except msgspec.ValidationError as exc:
        raise ValueError(f"stored journal lines are malformed: {exc}") from exc


class Writing:
    """One write of many rows: an instant several rows hold (the very same object, as the
    events of a batch share theirs) is converted once. Only for the duration of one write."""

    __slots__ = ("_micros",)

    def __init__(self) -> None:
        # id -> (the value, kept alive so that its id cannot be reused; its microseconds)
        self._micros: dict[int, tuple[Any, int]] = {}

    def micros(self, value: datetime) -> int:
        """``to_micros``, once per datetime object (the events of a batch share theirs)."""
        found = self._micros.get(id(value))
        if found is None or found[0] is not value:
            found = self._micros[id(value)] = (value, to_micros(value))
        return found[1]
