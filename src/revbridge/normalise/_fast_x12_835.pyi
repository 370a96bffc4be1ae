"""C fast path of the ``x12_835/2`` claim events of :mod:`revbridge.normalise.x12_835`."""

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from revbridge.domain.events import Event, SourceRef
from revbridge.formats.x12.model835 import Adjustment, ClaimPayment, ServiceLine

def configure(
    event: type[Event],
    source_ref: type[SourceRef],
    claim_payment: type[ClaimPayment],
    service_line: type[ServiceLine],
    adjustment: type[Adjustment],
    money_str: Callable[[Decimal], str],
    decimal: type[Decimal],
    status_kinds: dict[str, str],
    unknown_kind: str,
    secondary_statuses: frozenset[str],
    adjudicated: str,
    reversed: str,
    schema_version: int,
    id_stride: int,
    direct: bool = True,
    /,
) -> bool: ...
def claim_events(
    claims: tuple[ClaimPayment, ...],
    first_ordinal: int,
    unix_ms: int,
    base: int,
    occurred_at: datetime,
    recorded_at: datetime,
    correlation_id: str,
    channel: str,
    raw_id: int,
    unit_id: int,
    payment: str,
    trace_number: str,
    /,
) -> list[Event] | None: ...
