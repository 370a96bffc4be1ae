"""The one error tree (DESIGN.md §8). Every failure revbridge handles is one of these.

- ``TransientError``: retry with backoff and jitter.
- ``ThrottledError``: the target asks us to slow down; retry after ``retry_after``; never park.
- ``BusinessError``: the target refused the content; park with a reason, one attempt only.
- ``IndeterminateError``: the target may have committed; look the key up before resending.
- ``OutageError``: the target is down; retry later (circuit breaker territory).
- ``ConfigurationError``: refuse to start, and say where.
"""

from __future__ import annotations


class RevbridgeError(Exception):
    """Base of every error revbridge raises on purpose."""


class ConfigurationError(RevbridgeError):
    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location


class DeliveryError(RevbridgeError):
    """A call to an outside target did not succeed."""

    def __init__(self, message: str, *, target: str, code: str | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.code = code


class TransientError(DeliveryError):
    pass


class ThrottledError(DeliveryError):
    def __init__(
        self,
        message: str,
        *,
        target: str,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, target=target, code=code)
        self.retry_after = retry_after


class BusinessError(DeliveryError):
    pass


class IndeterminateError(DeliveryError):
    pass


class OutageError(DeliveryError):
    pass


class StoreError(RevbridgeError):
    pass


class LeaseLost(StoreError):
    """A worker tried to commit work for a job whose lease (fencing token) it no longer holds."""


class ActionRefused(RevbridgeError):
    """A person's action is not allowed: approving one's own request, acting on a closed
    item, an action that does not apply to the item's reason. The message says why."""
