"""``create_app``: the FastAPI application over the work queue.

Every route needs a bearer token from the config's ``api.users``; the token names the
person, and that name is what the audit log records for every action and every read.
Routes are plain functions: the store serialises its transactions, so FastAPI runs them
in its thread pool.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from revbridge.api.problems import install, unauthorized
from revbridge.config import Config
from revbridge.orchestrate.work_queue import ActionResult, WorkQueue, approval_view

AMOUNT = r"^[0-9]+(\.[0-9]{1,2})?$"


class Backend(Protocol):
    """What the API needs of the application (``bootstrap.App`` is one)."""

    config: Config

    def work_queue(self) -> WorkQueue: ...


# ------------------------------------------------------------------------------ bodies


class AssignBody(BaseModel):
    assignee: str | None = Field(None, description="User name; null takes the item back.")


class NoteBody(BaseModel):
    text: str = Field(min_length=1)


class ResubmitBody(BaseModel):
    content_base64: str = Field(min_length=1, description="The corrected file, base64.")
    comment: str = ""
    name: str | None = Field(None, description="File name (default: the original's).")


class WriteOffBody(BaseModel):
    amount: str | None = Field(
        None, pattern=AMOUNT, description="Default: the denied amount. A string: never float."
    )


class RejectBody(BaseModel):
    reason: str = Field(min_length=1)


class ResolveBody(BaseModel):
    note: str | None = None


class RefuseBody(BaseModel):
    reason: str = Field(min_length=1)


# ------------------------------------------------------------------------------- auth


class Tokens:
    """Bearer token -> user name, compared in constant time."""

    def __init__(self, users: list[Mapping[str, Any]]) -> None:
        self._users = [(u["token"].reveal().encode(), str(u["name"])) for u in users]

    def user(self, presented: str) -> str | None:
        found = None
        for token, name in self._users:
            if hmac.compare_digest(token, presented.encode()):
                found = name
        return found


_bearer = HTTPBearer(auto_error=False, description="A token from the config's api.users.")


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The user name the bearer token belongs to (401 without a valid token)."""
    if credentials is None:
        raise unauthorized("a bearer token is required")
    tokens: Tokens = request.app.state.tokens
    name = tokens.user(credentials.credentials)
    if name is None:
        raise unauthorized("the bearer token is not valid")
    return name


def work_queue(request: Request) -> WorkQueue:
    queue: WorkQueue = request.app.state.queue
    return queue


User = Annotated[str, Depends(caller)]
Queue = Annotated[WorkQueue, Depends(work_queue)]
router = APIRouter(prefix="/v1")


# -------------------------------------------------------------------------------- app


def create_app(app: Backend) -> FastAPI:
    """The API over ``app``'s work queue, authenticating ``app.config.api`` users."""
    api = FastAPI(
        title="revbridge",
        version="1",
        description="Exception work queue and approvals for revenue-cycle operations.",
    )
    install(api)
    api.state.tokens = Tokens(list(app.config.api.get("users", [])))
    api.state.queue = app.work_queue()
    api.include_router(router)
    return api


# ------------------------------------------------------------------------- exceptions


@router.get("/exceptions", tags=["exceptions"])
def list_exceptions(
    user: User,
    queue: Queue,
    status: Literal["open", "resolved"] | None = None,
    reason: str | None = None,
    assignee: str | None = None,
    overdue: bool | None = None,
) -> dict[str, Any]:
    entries = queue.items(status, reason=reason, assignee=assignee, overdue=overdue, reader=user)
    return {"exceptions": [e.view() for e in entries]}


@router.get("/exceptions/{item_id}", tags=["exceptions"])
def show_exception(item_id: int, user: User, queue: Queue) -> dict[str, Any]:
    return queue.show(item_id, reader=user).view()


@router.post("/exceptions/{item_id}/assign", tags=["exceptions"])
def assign(item_id: int, body: AssignBody, user: User, queue: Queue) -> dict[str, Any]:
    return queue.assign(item_id, body.assignee, user).view()


@router.post("/exceptions/{item_id}/notes", tags=["exceptions"], status_code=201)
def note(item_id: int, body: NoteBody, user: User, queue: Queue) -> dict[str, Any]:
    return queue.note(item_id, body.text, user).view()


@router.post("/exceptions/{item_id}/retry", tags=["exceptions"])
def retry(item_id: int, user: User, queue: Queue) -> dict[str, Any]:
    return queue.retry(item_id, user).view()


@router.post("/exceptions/{item_id}/resubmit", tags=["exceptions"])
def resubmit(item_id: int, body: ResubmitBody, user: User, queue: Queue) -> dict[str, Any]:
    data = _decode(body.content_base64)
    return queue.resubmit(item_id, data, user, comment=body.comment, name=body.name).view()


@router.post("/exceptions/{item_id}/write-off", tags=["exceptions"])
def write_off(
    item_id: int, body: WriteOffBody, user: User, queue: Queue, response: Response
) -> dict[str, Any]:
    """Done at once up to the configured amount; above it, 202 and an approval request."""
    amount = None if body.amount is None else Decimal(body.amount)
    result: ActionResult = queue.write_off(item_id, user, amount)
    if result.action == "write_off_requested":
        response.status_code = 202
    return result.view()


@router.post("/exceptions/{item_id}/reject", tags=["exceptions"])
def reject(item_id: int, body: RejectBody, user: User, queue: Queue) -> dict[str, Any]:
    return queue.reject(item_id, user, body.reason).view()


@router.post("/exceptions/{item_id}/resolve", tags=["exceptions"])
def resolve(item_id: int, body: ResolveBody, user: User, queue: Queue) -> dict[str, Any]:
    return queue.resolve(item_id, user, body.note).view()


# -------------------------------------------------------------------------- approvals


@router.get("/approvals", tags=["approvals"])
def list_approvals(
    user: User, queue: Queue, status: Literal["pending", "approved", "refused"] | None = None
) -> dict[str, Any]:
    del user
    return {"approvals": [approval_view(a) for a in queue.approval_list(status)]}


@router.post("/approvals/{approval_id}/approve", tags=["approvals"])
def approve(approval_id: int, user: User, queue: Queue) -> dict[str, Any]:
    outcome = dict(queue.approve(approval_id, user))
    return {"approval_id": approval_id, "status": "approved", "outcome": outcome}


@router.post("/approvals/{approval_id}/refuse", tags=["approvals"])
def refuse(approval_id: int, body: RefuseBody, user: User, queue: Queue) -> dict[str, Any]:
    return approval_view(queue.refuse(approval_id, user, body.reason))


def _decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("content_base64 is not valid base64") from exc
