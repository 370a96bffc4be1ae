"""Canonical business events: immutable, versioned envelopes (DESIGN.md §4)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from revbridge.domain.values import slot_constructor


class EventType:
    """The event catalogue used so far (names are stable; data evolves by schema_version)."""

    REMITTANCE_RECEIVED = "remittance.received"
    CLAIM_ADJUDICATED = "claim.adjudicated"
    CLAIM_REVERSED = "claim.reversed"
    ADJUSTMENT_BOOKED = "adjustment.booked"
    PROVIDER_ADJUSTMENT_BOOKED = "provider_adjustment.booked"
    JOURNAL_PREPARED = "journal.prepared"
    JOURNAL_POSTED = "journal.posted"
    JOURNAL_FAILED = "journal.failed"
    EXCEPTION_OPENED = "exception.opened"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where an event came from: channel, stored raw message, location inside it."""

    channel: str
    raw_id: int
    unit_id: int
    segment: int | None = None
    path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "raw_id": self.raw_id,
            "unit_id": self.unit_id,
            "segment": self.segment,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    entity: str | None
    facility: str | None
    keys: Mapping[str, str]
    correlation_id: str
    causation_id: str | None
    source: SourceRef
    data: Mapping[str, Any] = field(default_factory=dict)


new_source = slot_constructor(SourceRef)
"""``SourceRef(channel, raw_id, unit_id, segment, path)`` for hot paths (all positional)."""

new_event = slot_constructor(Event)
"""``Event(...)`` for hot paths: every field positionally, in declaration order."""


def uuid7(unix_ms: int | None = None, rand: bytes | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit milliseconds, version, 74 random bits."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    return uuid7_from_int(ms, int.from_bytes(rand if rand is not None else os.urandom(10), "big"))


def uuid7_from_int(unix_ms: int, tail: int) -> str:
    """A UUIDv7 from milliseconds and 80 bits (74 used): cheap enough for every event."""
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((tail >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= tail & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def deterministic_id(namespace: str, *parts: object) -> str:
    """A stable id for something derived from inputs (replay gives the same id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, namespace + ":" + "|".join(map(str, parts))))


def utcnow() -> datetime:
    return datetime.now(UTC)
