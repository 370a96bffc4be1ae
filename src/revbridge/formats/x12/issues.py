"""Issues and errors reported by the X12 layer.

Every problem names where it happened: the 1-based segment number within the
file, the segment id, the element (``SE01``) and the transaction (ST02).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class X12Issue:
    """One problem found in an X12 stream."""

    code: str
    message: str
    segment_number: int | None = None
    segment_id: str | None = None
    element: str | None = None
    transaction: str | None = None
    severity: str = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class X12Error(Exception):
    """A structural X12 problem that stops parsing; carries an :class:`X12Issue`."""

    def __init__(self, issue: X12Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue

    def __str__(self) -> str:
        return self.issue.message


def where(
    segment_number: int | None,
    segment_id: str | None,
    element: str | None = None,
    transaction: str | None = None,
) -> str:
    """Human text for a location, e.g. ``segment 40 (SE), element SE01, transaction 0001``."""
    parts: list[str] = []
    if segment_number is not None:
        parts.append(f"segment {segment_number}" + (f" ({segment_id})" if segment_id else ""))
    elif segment_id:
        parts.append(f"segment {segment_id}")
    if element:
        parts.append(f"element {element}")
    if transaction:
        parts.append(f"transaction {transaction}")
    return ", ".join(parts)


def make_issue(
    code: str,
    what: str,
    segment_number: int | None = None,
    segment_id: str | None = None,
    element: str | None = None,
    *,
    transaction: str | None = None,
    severity: str = "error",
) -> X12Issue:
    """Build an issue whose message is ``what`` followed by its location."""
    loc = where(segment_number, segment_id, element, transaction)
    message = f"{what} at {loc}" if loc else what
    return X12Issue(code, message, segment_number, segment_id, element, transaction, severity)


def fail(
    code: str,
    what: str,
    segment_number: int | None = None,
    segment_id: str | None = None,
    element: str | None = None,
    *,
    transaction: str | None = None,
) -> X12Error:
    """Build (not raise) an :class:`X12Error`; use ``raise fail(...)``."""
    return X12Error(
        make_issue(code, what, segment_number, segment_id, element, transaction=transaction)
    )
