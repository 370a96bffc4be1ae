"""Balanced double-entry journals: the only thing revbridge sends to a ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from functools import partial
from operator import eq, itemgetter, methodcaller, ne, not_
from types import MappingProxyType
from typing import Any, NamedTuple, cast, overload

from revbridge.domain.money import CENT, ZERO, cents

_NONE: Mapping[str, str] = MappingProxyType({})  # a line's dimensions or source, if none


class UnbalancedJournal(ValueError):
    """A journal whose debits and credits differ, or with a malformed line."""


class JournalStatus(StrEnum):
    PREPARED = "prepared"
    POSTED = "posted"
    FAILED = "failed"


class JournalLine(NamedTuple):
    """One side of a posting. Exactly one of ``debit`` / ``credit`` is non-zero.

    A tuple: a journal has thousands of lines, built and read in bulk; a tuple of strings,
    amounts and string maps is made in C (``tuple.__new__``) and dropped from the garbage
    collector's watch, where an object with slots is neither. Its mappings are read-only.
    """

    account: str
    debit: Decimal
    credit: Decimal
    description: str = ""
    dimensions: Mapping[str, str] = _NONE
    source: Mapping[str, str] = _NONE

    @property
    def net(self) -> Decimal:
        return self.debit - self.credit


new_line = cast("Callable[[tuple[Any, ...]], JournalLine]", partial(tuple.__new__, JournalLine))
"""``JournalLine(*fields)`` for hot paths, made in C: one tuple of every field, in order
(``JournalLine._make`` without its length check)."""


class JournalLines(Sequence[JournalLine]):
    """A journal's lines held by column, as the ledger builds them and the store reads
    them: a ``JournalLine`` per line is made only when the lines are first read one by one
    (a sink writing them out), not to check the balance or count them (posting to a
    target that takes the journal by its key and total). ``sources`` may be given as a
    function that makes the column (of as many sources as lines), called when the sources
    are first read: a target that takes no source references never has them built.
    Read-only, and equal to any sequence of the same lines."""

    __slots__ = (
        "_lines",
        "_sources",
        "accounts",
        "credits",
        "debits",
        "descriptions",
        "dimensions",
    )

    def __init__(
        self,
        accounts: list[str],
        debits: list[Decimal],
        credits: list[Decimal],
        descriptions: list[str],
        dimensions: list[Mapping[str, str]],
        sources: list[Mapping[str, str]] | Callable[[], list[Mapping[str, str]]],
    ) -> None:
        columns: tuple[list[Any], ...] = (accounts, debits, credits, descriptions, dimensions)
        if isinstance(sources, list):
            columns += (sources,)
        if len({len(column) for column in columns}) != 1:
            raise UnbalancedJournal("journal lines: columns of different lengths")
        self.accounts, self.debits, self.credits = accounts, debits, credits
        self.descriptions, self.dimensions = descriptions, dimensions
        self._sources = sources
        self._lines: tuple[JournalLine, ...] | None = None

    @property
    def sources(self) -> list[Mapping[str, str]]:
        if not isinstance(self._sources, list):
            self._sources = self._sources()
        return self._sources

    def lines(self) -> tuple[JournalLine, ...]:
        """The lines, made once (C-level passes over the columns)."""
        if self._lines is None:
            columns = (
                self.accounts,
                self.debits,
                self.credits,
                self.descriptions,
                self.dimensions,
                self.sources,
            )
            self._lines = tuple(map(new_line, zip(*columns, strict=True)))
        return self._lines

    def __len__(self) -> int:
        return len(self.accounts)

    @overload
    def __getitem__(self, index: int) -> JournalLine: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[JournalLine, ...]: ...

    def __getitem__(self, index: int | slice) -> JournalLine | tuple[JournalLine, ...]:
        return self.lines()[index]

    def __iter__(self) -> Iterator[JournalLine]:
        return iter(self.lines())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JournalLines):
            return self.lines() == other.lines()
        return self.lines() == tuple(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # its lines hold mappings: unhashable

    def __repr__(self) -> str:
        return f"JournalLines{self.lines()!r}"


@dataclass(frozen=True, slots=True)
class Journal:
    """A balanced journal with a deterministic ``key`` (the ERP's external reference)."""

    key: str
    entity: str
    date: date
    description: str
    lines: Sequence[JournalLine]  # a tuple, or ``JournalLines`` as read from the store
    rule_version: str
    currency: str = "USD"
    kind: str = "remittance"

    def __post_init__(self) -> None:
        check_balanced(self.key, self.lines)

    @property
    def total(self) -> Decimal:
        lines = self.lines
        debits = lines.debits if type(lines) is JournalLines else map(_DEBIT, lines)
        return sum(debits, ZERO)


def check_balanced(key: str, lines: Sequence[JournalLine]) -> None:
    """Refuse a journal that does not balance to the cent, or has a bad line.

    This runs for every journal built and read, so the usual journal (every line with an
    account and exactly one side non-zero, every amount a Decimal in whole cents, not
    negative) is recognised by C-level passes over its columns; anything else goes line
    by line to ``_check_line``, which says what is wrong and where.
    """
    if not lines:
        raise UnbalancedJournal(f"journal {key}: no lines")
    if type(lines) is JournalLines:  # by column, as read
        accounts: Iterable[str] = lines.accounts
        debits, credits = lines.debits, lines.credits
    else:
        accounts = map(_ACCOUNT, lines)
        debits, credits = list(map(_DEBIT, lines)), list(map(_CREDIT, lines))
    if not (
        all(accounts)
        and _DECIMAL.issuperset(map(type, debits))
        and _DECIMAL.issuperset(map(type, credits))
        and all(map(ne, map(not_, debits), map(not_, credits)))
        and _whole_cents(debits, credits)
    ):
        for number, line in enumerate(lines, start=1):
            _check_line(key, number, line)
    debit, credit = sum(filter(None, debits), ZERO), sum(filter(None, credits), ZERO)
    if debit != credit:
        raise UnbalancedJournal(f"journal {key}: debits {debit} != credits {credit}")


def _whole_cents(debits: list[Decimal], credits: list[Decimal]) -> bool:
    """Whether every amount is whole cents and not negative, each non-zero amount object
    tested once (the lines of a pair, and amounts read back, share theirs; hashing a Decimal
    costs more than testing it). A zero is whole cents and not negative; every line has a
    zero side, so leaving zeros out halves the work."""
    nonzero = [*filter(None, debits), *filter(None, credits)]
    distinct = dict(zip(map(id, nonzero), nonzero, strict=True))
    amounts = distinct.values() or (ZERO,)
    return min(amounts) >= ZERO and all(map(eq, amounts, map(_IN_CENTS, amounts)))


_DECIMAL = frozenset({Decimal})
_ACCOUNT, _DEBIT, _CREDIT = (
    itemgetter(JournalLine._fields.index(n)) for n in ("account", "debit", "credit")
)
_IN_CENTS = methodcaller("quantize", CENT)  # what ``cents`` does, as a C-level call


def _check_line(key: str, number: int, line: JournalLine) -> None:
    for side in (line.debit, line.credit):
        if not isinstance(side, Decimal) or side < 0 or cents(side) != side:
            raise UnbalancedJournal(f"journal {key} line {number}: bad amount {side}")
    if (line.debit == 0) == (line.credit == 0):
        raise UnbalancedJournal(f"journal {key} line {number}: needs exactly one side")
    if not line.account:
        raise UnbalancedJournal(f"journal {key} line {number}: no account")


class LineColumns:
    """Lines being built by column, a posting pair at a time (``pair`` does what
    ``posting_pair`` does, without making the lines): a ledger builds thousands."""

    __slots__ = ("accounts", "credits", "debits", "descriptions", "dimensions", "sources")

    def __init__(self) -> None:
        self.accounts: list[str] = []
        self.debits: list[Decimal] = []
        self.credits: list[Decimal] = []
        self.descriptions: list[str] = []
        self.dimensions: list[Mapping[str, str]] = []
        self.sources: list[Mapping[str, str]] = []

    def pair(
        self,
        debit_account: str,
        credit_account: str,
        amount: Decimal,
        description: str,
        dimensions: Mapping[str, str],
        source: Mapping[str, str],
    ) -> None:
        """Two lines moving ``amount`` from credit to debit; a negative amount swaps sides."""
        value = amount.quantize(CENT, ROUND_HALF_EVEN)  # ``cents``, without a call
        if value < 0:
            debit_account, credit_account, value = credit_account, debit_account, -value
        self.accounts += (debit_account, credit_account)
        self.debits += (value, ZERO)
        self.credits += (ZERO, value)
        self.descriptions += (description, description)
        self.dimensions += (dimensions, dimensions)
        self.sources += (source, source)

    def __len__(self) -> int:
        return len(self.accounts)

    def lines(self) -> JournalLines:
        """The lines built so far (the columns are the builder's: build no more after)."""
        return JournalLines(
            self.accounts,
            self.debits,
            self.credits,
            self.descriptions,
            self.dimensions,
            self.sources,
        )


def posting_pair(
    debit_account: str,
    credit_account: str,
    amount: Decimal,
    *,
    description: str,
    dimensions: Mapping[str, str],
    source: Mapping[str, str],
) -> tuple[JournalLine, JournalLine]:
    """Two lines moving ``amount`` from credit to debit; a negative amount swaps sides."""
    value = amount.quantize(CENT, ROUND_HALF_EVEN)  # ``cents``, without a call: per pair
    if value < 0:
        debit_account, credit_account, value = credit_account, debit_account, -value
    return (
        new_line((debit_account, value, ZERO, description, dimensions, source)),
        new_line((credit_account, ZERO, value, description, dimensions, source)),
    )
