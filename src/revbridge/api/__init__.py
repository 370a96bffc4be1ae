"""The HTTP API (versioned under ``/v1``): the exception work queue and approvals.

Nothing in revbridge imports this package; it is an entry point like the CLI.
"""

from __future__ import annotations

from revbridge.api.app import Backend, create_app

__all__ = ["Backend", "create_app"]
