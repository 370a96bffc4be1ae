"""What every output that receives journals provides.

A sink posts journals under their deterministic ``key`` and can look keys up, so that a
call whose outcome is unknown (timeout after the target committed, a killed worker) is
checked before anything is sent again. Sinks raise only the ``revbridge.errors`` tree.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from revbridge.domain.journal import Journal


class JournalSink(abc.ABC):
    """An output that books journals (an ERP, a GL file)."""

    name: str
    #: Idempotent by key: posting a key the target already holds creates nothing and
    #: returns the first document's id, even when the two calls overlap. A worker may then
    #: send keys whose earlier call, by a holder that lost its lease, may still commit;
    #: for any other sink those keys are left to a person (``erp_indeterminate``).
    idempotent: bool = False

    @abc.abstractmethod
    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        """Book the journals; returns key -> document id in the target.

        All-or-nothing per call where the target allows it. Raises a ``DeliveryError``
        subclass on failure (``BusinessError`` names the refused key in ``code`` when known).
        """

    @abc.abstractmethod
    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        """Key -> document id for the keys the target already holds (missing keys absent)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""
