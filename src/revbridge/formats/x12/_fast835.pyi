"""C fast path of :func:`revbridge.formats.x12.parse835.parse_835_bytes` (_fast835.c)."""

from collections.abc import Callable
from datetime import date
from decimal import Decimal

from revbridge.formats.x12.model835 import (
    Adjustment,
    ClaimPayment,
    ProviderAdjustment,
    ServiceLine,
)

_Party = tuple[str, str, str, str | None]
_Parsed = tuple[
    str,  # ST02
    list[str],  # BPR elements
    list[str],  # TRN elements
    Decimal,  # BPR02
    date | None,  # BPR16
    date | None,  # DTM*405
    _Party,  # payer (name, id qualifier, id, tin)
    _Party,  # payee
    tuple[ClaimPayment, ...],
    tuple[ProviderAdjustment, ...],
    int,  # segment count
]

def configure(
    make_decimal: Callable[[str], Decimal],
    adjustment: type[Adjustment],
    service_line: type[ServiceLine],
    claim_payment: type[ClaimPayment],
    provider_adjustment: type[ProviderAdjustment],
    direct: bool = True,
    /,
) -> bool: ...
def parse(
    data: bytes, element: str, component: str, segment: str, first_segment: int
) -> _Parsed | None: ...
def claims_clean(claims: tuple[ClaimPayment, ...], valid_status: frozenset[str]) -> bool: ...
def separator_after(buf: str, term: str) -> str | None: ...
