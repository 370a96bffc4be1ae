"""Streaming X12 tokenizer.

Bytes are decoded as latin-1, which is lossless and maps one byte to one
character, so string positions are byte offsets.  Delimiters are read from
each ISA by position.  CR/LF after a terminator belongs to the segment before
it (``Segment.end``); blank pieces are not segments.

The hot path splits whole chunks with ``str.split`` and computes offsets with
``itertools.accumulate``; per-segment Python work is kept to a minimum.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, count
from operator import add
from typing import BinaryIO

from revbridge.formats.x12.issues import fail

ISA_LENGTH = 106
BOM = b"\xef\xbb\xbf"
NEWLINES = "\r\n"
# Positions (0-based) of the element separator inside the fixed-width ISA.
_ISA_SEPARATORS = (3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103)


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The four X12 delimiters, as declared by an ISA."""

    element: str = "*"
    component: str = ":"
    repetition: str = "^"
    segment: str = "~"

    def encode(self) -> str:
        """The four characters (element, component, repetition, segment) for storage."""
        return self.element + self.component + self.repetition + self.segment

    @classmethod
    def decode(cls, text: str) -> Delimiters:
        """Inverse of :meth:`encode`."""
        if len(text) != 4:
            raise ValueError(f"delimiters must be 4 characters, got {text!r}")
        return cls(text[0], text[1], text[2], text[3])


DEFAULT_DELIMITERS = Delimiters()


class Segment:
    """One segment: its file position and its elements (``elements[0]`` is the id)."""

    __slots__ = ("elements", "end", "number", "offset")

    def __init__(self, number: int, offset: int, end: int, elements: list[str]) -> None:
        self.number = number
        self.offset = offset
        self.end = end
        self.elements = elements

    @property
    def id(self) -> str:
        return self.elements[0]

    def get(self, i: int) -> str:
        """Element ``i`` (``get(1)`` is CLP01), or ``""`` when absent."""
        els = self.elements
        return els[i] if i < len(els) else ""

    def _key(self) -> tuple[int, int, int, tuple[str, ...]]:
        return (self.number, self.offset, self.end, tuple(self.elements))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Segment({self.number}, {self.offset}, {self.end}, {self.elements!r})"


def delimiters_from_isa(text: str, number: int = 1) -> Delimiters:
    """Read the delimiters of the ISA that starts ``text`` (at least 106 characters)."""
    if not text.startswith("ISA"):
        raise fail("no_isa", "expected an ISA segment", number, None)
    if len(text) < ISA_LENGTH:
        raise fail(
            "truncated_isa",
            f"ISA is {len(text)} characters, expected {ISA_LENGTH}",
            number,
            "ISA",
        )
    element = text[3]
    for position in _ISA_SEPARATORS:
        if text[position] != element:
            raise fail(
                "bad_isa",
                f"ISA is not fixed-width: expected {element!r} at offset {position}",
                number,
                "ISA",
            )
    found = Delimiters(element, text[104], text[82], text[105])
    if element.isalnum() or len({element, found.component, found.segment}) != 3:
        raise fail("bad_isa", f"ISA declares unusable delimiters {found.encode()!r}", number, "ISA")
    return found


class Split:
    """Complete segments found at the start of a buffer, up to ``carry``.

    Slow path: ``texts`` and ``starts`` are known.  Fast path (every terminator followed by
    exactly ``sep``): everything is derived on demand with C-level string methods, so a
    scan that only needs the envelope segments never splits the buffer.
    """

    __slots__ = (
        "_ends",
        "_size",
        "_starts",
        "_texts",
        "buf",
        "carry",
        "cut_at_isa",
        "dangling",
        "sep",
        "term",
        "truncated",
    )

    def __init__(
        self,
        texts: list[str] | None,
        starts: list[int] | None,
        carry: int,
        sep: str = "",
        *,
        buf: str = "",
        term: str = "",
        dangling: bool = False,
        cut_at_isa: bool = False,
        truncated: bool = False,
    ) -> None:
        self._texts = texts
        self._starts = starts
        self._ends: list[int] | None = None
        self._size = -1 if texts is None else len(texts)
        self.carry = carry  # where unconsumed text starts (= end of the last segment)
        self.sep = sep
        self.buf = buf
        self.term = term
        self.dangling = dangling  # last segment has a terminator but no newline (at EOF)
        self.cut_at_isa = cut_at_isa
        self.truncated = truncated

    @property
    def size(self) -> int:
        if self._size < 0:  # fast path: one terminator per segment (see _terminators)
            self._size = self._terminators(self.buf, 0, self.carry)
        return self._size

    @property
    def texts(self) -> list[str]:
        if self._texts is None:
            texts = self.buf[: self.carry].split(self.sep)
            last = texts.pop()
            if self.dangling:
                body = last if self.term in NEWLINES else last.rstrip(NEWLINES)
                texts.append(body[: -len(self.term)])
            self._texts = texts
        return self._texts

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            step = len(self.sep)
            texts = self.texts
            lengths = accumulate(map(len, texts[:-1]))
            self._starts = [0, *map(add, lengths, count(step, step))] if texts else []
        return self._starts

    @property
    def ends(self) -> list[int]:
        if self._ends is None:
            self._ends = [*self.starts[1:], self.carry] if self.size else []
        return self._ends

    def text_at(self, index: int, start: int) -> str:
        """The text of segment ``index`` that starts at ``start``."""
        if self._texts is not None:
            return self._texts[index]
        end = self.buf.find(self.term, start, self.carry)
        return self.buf[start : end if end != -1 else self.carry]

    def candidates(self, buf: str, needles: Iterable[str]) -> list[int]:
        """Sorted start positions of segments that may begin with one of ``needles``."""
        limit = self.carry
        prefix = self.sep if self._texts is None else ""
        found = [0] if self._texts is None and buf.startswith(tuple(needles)) else []
        skip = len(prefix)
        pattern = _needle_pattern(prefix, tuple(needles))
        if pattern is not None:  # one pass instead of one per needle
            found.extend([m.start() + skip for m in pattern.finditer(buf, 0, limit)])
            return found
        for needle in needles:
            position = buf.find(prefix + needle, 0, limit)
            while position != -1:
                found.append(position + skip)
                position = buf.find(prefix + needle, position + 1, limit)
        found.sort()
        return found

    def locate(self, buf: str, positions: list[int]) -> list[tuple[int, int]]:
        """(index, position) of the segments starting exactly at the given sorted positions."""
        if self._starts is not None or self._texts is not None:
            return self._locate_sorted(positions)
        found: list[tuple[int, int]] = []
        sep, step = self.sep, len(self.sep)
        index, previous = 0, 0
        for position in positions:
            index += self._terminators(buf, previous, position)
            previous = position
            if position == 0 or buf.startswith(sep, position - step):
                found.append((index, position))
        if self._size < 0:
            self._size = index + self._terminators(buf, previous, self.carry)
        return found

    def _terminators(self, buf: str, start: int, end: int) -> int:
        """Segments ending in ``buf[start:end]`` (fast path only).

        There every terminator ends one segment: it is followed by ``sep``, or it is the
        dangling last one.  A one-character count is ~3x cheaper than counting ``sep``.
        """
        return buf.count(self.term, start, end)

    def _locate_sorted(self, positions: list[int]) -> list[tuple[int, int]]:
        starts = self.starts
        found: list[tuple[int, int]] = []
        for position in positions:
            index = bisect_left(starts, position)
            if index < len(starts) and starts[index] == position:
                found.append((index, position))
        return found

    def end_of(self, index: int, start: int) -> int:
        """End (past terminator and newline) of segment ``index`` that starts at ``start``."""
        if index == self.size - 1:
            return self.carry
        if self._ends is not None or not self.sep:
            return self.ends[index]
        return start + len(self.text_at(index, start)) + len(self.sep)


@lru_cache(maxsize=64)
def _needle_pattern(prefix: str, needles: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex finding every ``prefix + needle``, when that equals the per-needle ``find``.

    Only with a prefix (the regex engine then scans for it as a literal), and only when no
    occurrence can start inside another one, so non-overlapping matches miss nothing.
    """
    full = [prefix + needle for needle in needles]
    overlap = any(
        a[k:].startswith(b) or b.startswith(a[k:])
        for a in full
        for b in full
        for k in range(1, len(a))
    )
    if not prefix or overlap:
        return None
    return re.compile(re.escape(prefix) + "(?:" + "|".join(map(re.escape, needles)) + ")")


# A batch: (delimiters, number of the first segment, byte offset of buffer[0], buffer, split).
Batch = tuple[Delimiters, int, int, str, Split]


def _split_fast(buf: str, sep: str, term: str, eof: bool) -> Split:
    """Every terminator is followed by exactly ``sep``: nothing is split yet."""
    last_sep = buf.rfind(sep)
    rest_start = last_sep + len(sep) if last_sep != -1 else 0
    rest = buf[rest_start:]
    if eof:
        if not rest:
            return Split(None, None, len(buf), sep, buf=buf, term=term)
        body = rest if term in NEWLINES else rest.rstrip(NEWLINES)
        if body.endswith(term):
            return Split(None, None, len(buf), sep, buf=buf, term=term, dangling=True)
        return Split(None, None, rest_start, sep, buf=buf, term=term, truncated=True)
    if rest or last_sep == -1:
        return Split(None, None, rest_start, sep, buf=buf, term=term)
    previous = buf.rfind(sep, 0, last_sep)
    carry = previous + len(sep) if previous != -1 else 0
    return Split(None, None, carry, sep, buf=buf, term=term)


def _split_slow(buf: str, delims: Delimiters, eof: bool, watch_isa: bool) -> Split:
    """General case: leading CR/LF, blank pieces, embedded ISAs."""
    pieces = buf.split(delims.segment)
    rest = pieces.pop()
    texts: list[str] = []
    starts: list[int] = []
    pos = 0
    for raw in pieces:
        start = pos
        pos += len(raw) + 1
        text = raw.lstrip(NEWLINES) if raw[:1] in NEWLINES else raw
        if not text:
            continue
        start += len(raw) - len(text)
        if watch_isa and start and text.startswith("ISA") and _isa_differs(buf, start, delims):
            return Split(texts, starts, start, cut_at_isa=True)
        texts.append(text)
        starts.append(start)
    stripped = rest.lstrip(NEWLINES)
    rest_start = pos + len(rest) - len(stripped)
    if eof or stripped:
        if (
            watch_isa
            and stripped.startswith("ISA")
            and (texts or rest_start)
            and _isa_differs(buf, rest_start, delims)
        ):
            return Split(texts, starts, rest_start, cut_at_isa=True)
        return Split(texts, starts, rest_start, truncated=eof and bool(stripped))
    if not texts:
        return Split([], [], 0)
    carry = starts.pop()
    texts.pop()
    return Split(texts, starts, carry)


def _isa_differs(buf: str, start: int, delims: Delimiters) -> bool:
    """True when the ISA at ``start`` needs its own delimiters (or is incomplete)."""
    if start + ISA_LENGTH > len(buf):
        return True
    return (
        buf[start + 3] != delims.element
        or buf[start + 104] != delims.component
        or buf[start + 82] != delims.repetition
        or buf[start + 105] != delims.segment
    )


def _fast_separator(buf: str, term: str) -> str | None:
    """What follows every terminator in ``buf`` (``~``, ``~\n``, ``~\r\n``), or None."""
    if term in NEWLINES:
        other = "\r" if term == "\n" else "\n"
        return None if other in buf or term + term in buf else term
    return _separator_after(buf, term)


def _python_separator_after(buf: str, term: str) -> str | None:
    """:func:`_fast_separator` for a terminator that is not CR or LF (pure Python).

    The reference of ``_fast835.separator_after``, which does it in one pass.
    """
    newlines = buf.count("\n")
    returns = buf.count("\r") if "\r" in buf else 0  # "in" is a memchr, count is not
    if not newlines and not returns:
        sep = term
    elif not returns and buf.count(term + "\n") == newlines:
        sep = term + "\n"
    elif returns == newlines and buf.count(term + "\r\n") == newlines:
        sep = term + "\r\n"
    else:
        return None
    dangling = buf.endswith((term, term + "\r"))
    if sep != term and buf.count(term) != newlines + dangling:
        return None
    if sep + sep in buf or buf.startswith(term):
        return None
    return sep


_separator_after: Callable[[str, str], str | None] = _python_separator_after
try:
    from revbridge.formats.x12 import _fast835
except ImportError:  # installed without the C extension
    pass
else:
    _separator_after = _fast835.separator_after


def _isa_changes(buf: str, sep: str, delims: Delimiters) -> bool:
    """True when an ISA after the start of ``buf`` declares other delimiters."""
    needle = sep + "ISA"
    position = buf.find(needle)
    while position != -1:
        if _isa_differs(buf, position + len(sep), delims):
            return True
        position = buf.find(needle, position + 1)
    return False


def split_buffer(buf: str, delims: Delimiters, eof: bool, watch_isa: bool = True) -> Split:
    """Find the complete segments at the start of ``buf`` (which starts at a segment)."""
    term = delims.segment
    sep = _fast_separator(buf, term)
    if sep is None or (watch_isa and _isa_changes(buf, sep, delims)):
        return _split_slow(buf, delims, eof, watch_isa)
    return _split_fast(buf, sep, term, eof)


class _Reader:
    """Chunked latin-1 reader that keeps an unconsumed buffer and its byte offset."""

    def __init__(self, stream: BinaryIO, chunk_size: int) -> None:
        self.stream = stream
        self.chunk_size = max(1, chunk_size)
        self.buf = ""
        self.base = 0
        self.eof = False
        self._started = False

    def fill(self) -> bool:
        """Append one chunk; False at end of stream."""
        if self.eof:
            return False
        data = self.stream.read(self.chunk_size)
        if not self._started:
            data = self._strip_bom(data)
        if not data:
            self.eof = True
            return False
        self.buf += data.decode("latin-1")
        return True

    def _strip_bom(self, data: bytes) -> bytes:
        while len(data) < len(BOM) and BOM.startswith(data) and data:
            more = self.stream.read(self.chunk_size)
            if not more:
                break
            data += more
        self._started = True
        if data.startswith(BOM):
            self.base = len(BOM)
            return data[len(BOM) :]
        return data

    def consume(self, n: int) -> None:
        self.buf = self.buf[n:]
        self.base += n

    def skip_newlines(self) -> None:
        while True:
            stripped = self.buf.lstrip(NEWLINES)
            self.consume(len(self.buf) - len(stripped))
            if self.buf or not self.fill():
                return


def _read_isa(reader: _Reader, number: int) -> Delimiters:
    while len(reader.buf) < ISA_LENGTH and reader.fill():
        pass
    head = reader.buf[:ISA_LENGTH]
    if not head.startswith("ISA"):
        what = "no ISA segment at the start of the interchange"
        if number == 1 and not head.isprintable():
            what = "not X12: binary data where an ISA segment was expected"
        raise fail("no_isa", what, number, None)
    return delimiters_from_isa(head, number)


def iter_batches(stream: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[Batch]:
    """Yield batches of complete segments; raises :class:`X12Error` on garbage."""
    reader = _Reader(stream, chunk_size)
    number = 1
    delims: Delimiters | None = None
    reader.skip_newlines()
    if not reader.buf:
        raise fail("empty", "empty file: no X12 data")
    while True:
        reader.skip_newlines()
        if not reader.buf:
            return
        if delims is None or reader.buf.startswith("ISA"):
            delims = _read_isa(reader, number)
        split = split_buffer(reader.buf, delims, reader.eof)
        size = split.size
        if size:
            yield (delims, number, reader.base, reader.buf, split)
            number += split.size
        if split.truncated:
            raise fail(
                "truncated",
                f"file ends inside a segment (no {delims.segment!r} terminator)",
                number,
                reader.buf[split.carry :].split(delims.element, 1)[0][:3],
            )
        reader.consume(split.carry)
        if not split.cut_at_isa and not size:
            reader.fill()


def iter_segments(
    stream: BinaryIO, chunk_size: int = 1 << 20
) -> Iterator[tuple[Segment, Delimiters]]:
    """Stream every segment of an X12 file with the delimiters in force for it."""
    for delims, number, base, _buf, split in iter_batches(stream, chunk_size):
        elem = delims.element
        texts, starts, ends = split.texts, split.starts, split.ends
        for num, (text, start, end) in enumerate(zip(texts, starts, ends, strict=True), number):
            yield Segment(num, base + start, base + end, text.split(elem)), delims


def _split_data(data: bytes, delimiters: Delimiters) -> tuple[Split, int]:
    buf = data.decode("latin-1")
    stripped = buf.lstrip(NEWLINES)
    lead = len(buf) - len(stripped)
    split = split_buffer(stripped, delimiters, True, watch_isa=False)
    if split.truncated:
        raise fail(
            "truncated",
            f"data ends inside a segment (no {delimiters.segment!r} terminator)",
        )
    return split, lead


def split_texts(data: bytes, delimiters: Delimiters) -> list[str]:
    """The segment texts (elements not split) of bytes whose delimiters are known."""
    return _split_data(data, delimiters)[0].texts


def split_segments(data: bytes, delimiters: Delimiters) -> tuple[list[str], list[int], list[int]]:
    """Segment texts and their start/end positions in ``data`` (known delimiters)."""
    split, lead = _split_data(data, delimiters)
    if lead:
        return split.texts, [s + lead for s in split.starts], [e + lead for e in split.ends]
    return split.texts, split.starts, split.ends


def segments_from_bytes(
    data: bytes, delimiters: Delimiters, first_number: int = 1, base_offset: int = 0
) -> Iterator[Segment]:
    """Segments of a byte slice (e.g. one ST..SE) whose delimiters are already known."""
    texts, starts, ends = split_segments(data, delimiters)
    elem = delimiters.element
    for num, (text, start, end) in enumerate(zip(texts, starts, ends, strict=True), first_number):
        yield Segment(num, base_offset + start, base_offset + end, text.split(elem))
