"""Errors as problem details (RFC 9457): ``type``, ``title``, ``status``, ``detail``.

The detail says what was wrong with the request; it never echoes what was sent (a body
may hold PHI), and an unexpected failure says nothing of its cause.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from revbridge.errors import ActionRefused
from revbridge.orchestrate.work_queue import NotFound

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://revbridge.dev/problems/"


class Problem(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}


def problem_response(problem: Problem) -> JSONResponse:
    body = {
        "type": TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    return JSONResponse(body, problem.status, headers=problem.headers, media_type=MEDIA_TYPE)


def unauthorized(detail: str) -> Problem:
    challenge = {"WWW-Authenticate": 'Bearer realm="revbridge"'}
    return Problem(401, "unauthorized", "Unauthorized", detail, challenge)


def install(app: FastAPI) -> None:
    """Answer every error, expected or not, with a problem document."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_refused(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(Problem(409, "action-refused", "Action refused", _text(exc)))

    async def on_not_found(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(Problem(404, "not-found", "Not found", _text(exc)))

    async def on_bad_value(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(Problem(422, "invalid-input", "Invalid input", _text(exc)))

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        where = [
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
            for error in exc.errors()
        ]
        return problem_response(Problem(422, "invalid-input", "Invalid input", "; ".join(where)))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        slug = title.lower().replace(" ", "-")
        return problem_response(
            Problem(exc.status_code, slug, title, str(exc.detail), dict(exc.headers or {}))
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return problem_response(
            Problem(500, "internal-error", "Internal error", "the request could not be completed")
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(ActionRefused, on_refused)
    app.add_exception_handler(NotFound, on_not_found)
    app.add_exception_handler(ValueError, on_bad_value)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _text(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__
