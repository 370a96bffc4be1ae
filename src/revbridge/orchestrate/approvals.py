"""Four-eyes approvals: a request by one person, carried out only when another approves.

Large write-offs and bulk replays need a second person. The kind of a request names the
``Executor`` that carries it out; the approval, its execution and their audit entries are
one transaction, so an approved request is never left undone (or done twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from revbridge.errors import ActionRefused
from revbridge.orchestrate.clock import Clock
from revbridge.store.base import Approval, ApprovalStatus, Store, UnitOfWork

Executor = Callable[[UnitOfWork, Approval, str], Mapping[str, Any]]
"""Carries out an approved request inside the caller's transaction; returns what it did."""


class Approvals:
    def __init__(self, store: Store, clock: Clock, executors: Mapping[str, Executor]) -> None:
        self.store, self.clock, self.executors = store, clock, executors

    def request(self, kind: str, subject: Mapping[str, Any], actor: str) -> Approval:
        with self.store.unit_of_work() as uow:
            return self.request_in(uow, kind, subject, actor)

    def request_in(
        self, uow: UnitOfWork, kind: str, subject: Mapping[str, Any], actor: str
    ) -> Approval:
        """``request`` inside the caller's transaction, so the request commits together with
        what asked for it (e.g. the audit entry of the exception item it concerns)."""
        if kind not in self.executors:
            raise ActionRefused(f"no approval kind {kind!r} (known: {sorted(self.executors)})")
        approval = uow.approvals.request(kind, subject, actor, self.clock.now())
        uow.audit.record(actor, "approval.requested", "approval", str(approval.id), {"kind": kind})
        return approval

    def approve(self, approval_id: int, actor: str) -> Mapping[str, Any]:
        """Approve and carry out the request; the requester may not approve it."""
        with self.store.unit_of_work() as uow:
            approval = self._pending(uow, approval_id, actor)
            uow.approvals.decide(approval_id, actor, self.clock.now(), approve=True)
            outcome = self.executors[approval.kind](uow, approval, actor)
            uow.audit.record(
                actor,
                "approval.approved",
                "approval",
                str(approval_id),
                {"kind": approval.kind, "outcome": dict(outcome)},
            )
        return outcome

    def refuse(self, approval_id: int, actor: str, reason: str) -> None:
        with self.store.unit_of_work() as uow:
            approval = self._pending(uow, approval_id, actor)
            uow.approvals.decide(approval_id, actor, self.clock.now(), approve=False)
            uow.audit.record(
                actor,
                "approval.refused",
                "approval",
                str(approval_id),
                {"kind": approval.kind, "reason": reason},
            )

    def all(self, status: str | None = None) -> list[Approval]:
        with self.store.unit_of_work() as uow:
            return uow.approvals.all(status)

    @staticmethod
    def _pending(uow: UnitOfWork, approval_id: int, actor: str) -> Approval:
        approval = uow.approvals.get(approval_id)
        if approval.status != ApprovalStatus.PENDING:
            raise ActionRefused(f"approval {approval_id} is already {approval.status}")
        if approval.requested_by == actor:
            raise ActionRefused(
                f"approval {approval_id} was requested by {actor}; a second person must decide"
            )
        return approval
