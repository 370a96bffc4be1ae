"""A small JSON-RPC client for Tryton 8.2, stdlib only, with revbridge error classes.

Wire format (trytond/protocols/jsonrpc.py, dispatcher.py, wrappers.py):

- ``POST {base_url}/{database}/rpc/`` with ``{"id": n, "method": m, "params": [...]}``.
- ``common.db.login(login, {"password": pw}, language)`` answers ``[user_id, token, bus]``.
- Every other call carries ``Authorization: Session base64("login:user_id:token")``.
- ``Decimal`` travels as ``{"__class__": "Decimal", "decimal": "12.50"}``, dates as
  ``{"__class__": "date", "year": .., "month": .., "day": ..}`` (and datetime, time,
  timedelta, bytes likewise).
- A refused call answers HTTP 200 with ``"error": ["UserError", [message, description,
  domain]]`` (ValidationError, AccessError and SQL constraint errors are UserErrors); an
  unexpected server exception answers ``"error": [str(exception), traceback]``.
- An expired / unknown session answers HTTP 401 before anything is executed, so the call
  is retried once after a fresh login.

Classification into ``revbridge.errors``: nothing sent (refused, unreachable) →
``OutageError``; sent but no answer (timeout, reset) → ``IndeterminateError`` (Tryton may
have committed); other HTTP statuses as ``post.http_errors`` says (429, 503 with
Retry-After → ``ThrottledError``; 408, 5xx → ``TransientError``); a Tryton
user error → ``BusinessError`` (``code`` = the Tryton error type, or ``"duplicate_key"``
when the revbridge_key unique constraint refused the move).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import itertools
import json
import threading
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from revbridge.errors import (
    BusinessError,
    DeliveryError,
    OutageError,
    TransientError,
)
from revbridge.post.http_errors import classify_exchange_failure, classify_response

TARGET = "erp_tryton"

#: Text of the revbridge_erp module's ``msg_revbridge_key_unique`` message (lower-cased).
DUPLICATE_KEY_MARKER = "duplicate revbridge_key"

_TRANSIENT_SERVER_ERRORS = (
    "database is locked",
    "could not serialize",
    "deadlock detected",
    "could not obtain lock",
)


# -- transport -------------------------------------------------------------------------


class RequestNotSent(Exception):
    """The transport could not deliver the request: the server cannot have acted on it."""


class AnswerLost(Exception):
    """The request was (or may have been) sent but no complete answer came back."""


class HttpTransport(Protocol):
    """One HTTP POST. Raise ``RequestNotSent`` / ``AnswerLost`` (or ``OSError``) on failure."""

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]: ...


class HttpClientTransport:
    """The default transport: ``http.client``, one connection per call."""

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        path = parts.path or "/"
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(host, parts.port, timeout=timeout)
        else:
            connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        try:
            try:
                connection.connect()
            except OSError as exc:  # refused, unreachable, connect timeout
                raise RequestNotSent(f"cannot connect to {host}:{parts.port}: {exc}") from exc
            try:
                connection.request("POST", path, body=body, headers=dict(headers))
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise AnswerLost(f"no answer from {host}:{parts.port}: {exc!r}") from exc
            return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        finally:
            connection.close()


# -- JSON encoding ---------------------------------------------------------------------


def _encode_default(value: object) -> object:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dt.time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} for Tryton")


def _decode_hook(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind is None:
        return obj
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"],
            obj["month"],
            obj["day"],
            obj["hour"],
            obj["minute"],
            obj["second"],
            obj["microsecond"],
        )
    if kind == "time":
        return dt.time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def encode(value: object) -> bytes:
    """JSON bytes in Tryton's dialect (Decimal, date, datetime... as tagged objects)."""
    return json.dumps(value, default=_encode_default, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes) -> Any:
    """Parse Tryton's JSON dialect back into Python values (Decimal stays Decimal)."""
    return json.loads(payload.decode("utf-8"), object_hook=_decode_hook)


# -- client ----------------------------------------------------------------------------


class _Unauthorized(Exception):
    """HTTP 401: the session is unknown or expired (nothing was executed)."""


def _short(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()


class TrytonRPC:
    """A logged-in JSON-RPC session on one Tryton database."""

    def __init__(
        self,
        base_url: str,
        database: str,
        user: str,
        password: str,
        *,
        timeout: float = 30.0,
        transport: HttpTransport | None = None,
        language: str = "en",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.database = database
        self.user = user
        self._password = password
        self.timeout = timeout
        self.language = language
        self._transport: HttpTransport = transport or HttpClientTransport()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._user_id: int | None = None
        self._token: str | None = None
        self.logins = 0

    def __repr__(self) -> str:
        return f"TrytonRPC({self.base_url!r}, {self.database!r}, user={self.user!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{urllib.parse.quote(self.database)}/rpc/"

    @property
    def user_id(self) -> int | None:
        return self._user_id

    @property
    def session(self) -> str | None:
        """The current session token (None before login)."""
        return self._token

    # -- public API

    def login(self) -> int:
        """Open a session; returns the user id."""
        try:
            result = self._send(
                "common.db.login",
                [self.user, {"password": self._password}, self.language],
                authenticated=False,
            )
        except _Unauthorized:
            raise OutageError(
                f"Tryton login refused for user {self.user!r} on {self.database!r}",
                target=TARGET,
                code="login_failed",
            ) from None
        if not isinstance(result, list) or len(result) < 2:
            raise TransientError(f"unexpected login answer: {result!r}", target=TARGET)
        with self._lock:
            self._user_id = int(result[0])
            self._token = str(result[1])
            self.logins += 1
            return self._user_id

    def logout(self) -> None:
        """Close the session on the server (ignores an already expired one)."""
        if self._token is None:
            return
        try:
            self._send("common.db.logout", [], authenticated=True)
        except _Unauthorized:
            pass
        finally:
            with self._lock:
                self._token = None
                self._user_id = None

    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` (e.g. ``model.account.move.create``); logs in when needed.

        An expired session (HTTP 401) is renewed once and the call retried once: Tryton
        answers 401 before executing anything, so the retry cannot double an effect.
        """
        if self._token is None:
            self.login()
        try:
            return self._send(method, list(params), authenticated=True)
        except _Unauthorized:
            self.login()
        try:
            return self._send(method, list(params), authenticated=True)
        except _Unauthorized:
            raise OutageError(
                f"Tryton refused a fresh session for {method}", target=TARGET, code="unauthorized"
            ) from None

    def model(self, model: str, method: str, *params: Any) -> Any:
        """Shorthand: ``model("account.move", "search", domain, ...)``."""
        return self.call(f"model.{model}.{method}", *params)

    def close(self) -> None:
        """Log out, ignoring a server that is already gone."""
        with contextlib.suppress(DeliveryError):
            self.logout()

    # -- internals

    def _headers(self, authenticated: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authenticated:
            raw = f"{self.user}:{self._user_id}:{self._token}".encode()
            headers["Authorization"] = "Session " + base64.b64encode(raw).decode("ascii")
        return headers

    def _send(self, method: str, params: list[Any], *, authenticated: bool) -> Any:
        request_id = next(self._ids)
        body = encode({"id": request_id, "method": method, "params": params})
        headers = self._headers(authenticated)
        try:
            status, answer_headers, payload = self._transport(self.url, body, headers, self.timeout)
        except (RequestNotSent, ConnectionRefusedError) as exc:
            raise classify_exchange_failure(TARGET, exc, sent=False, what=method) from exc
        except (AnswerLost, TimeoutError, OSError) as exc:
            raise classify_exchange_failure(TARGET, exc, sent=True, what=method) from exc
        return self._answer(method, status, answer_headers, payload)

    def _answer(self, method: str, status: int, headers: Mapping[str, str], payload: bytes) -> Any:
        if status == 401:
            raise _Unauthorized()
        if status == 404:  # Tryton's answer for an unknown database, not a refused record
            raise OutageError(
                f"{method}: database {self.database!r} not found on {self.base_url}",
                target=TARGET,
                code="http_404",
            )
        if status != 200:
            error = classify_response(TARGET, status, headers, payload, what=method)
            raise error or TransientError(
                f"{method}: Tryton answered HTTP {status} instead of 200", target=TARGET
            )
        try:
            answer = decode(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TransientError(
                f"{method}: unreadable answer: {_short(payload)}", target=TARGET
            ) from exc
        if not isinstance(answer, dict):
            raise TransientError(f"{method}: unexpected answer {answer!r}", target=TARGET)
        if "error" in answer and answer["error"] is not None:
            raise _error(method, answer["error"])
        return answer.get("result")


def _error(method: str, error: Any) -> DeliveryError:
    """Map Tryton's ``error`` member to a revbridge error."""
    if isinstance(error, list | tuple) and error:
        kind = str(error[0])
        detail = error[1] if len(error) > 1 else None
        if kind in ("UserError", "UserWarning", "LoginException"):
            parts = detail if isinstance(detail, list | tuple) else [detail]
            texts = [str(p) for p in parts if isinstance(p, str) and p]
            if kind == "UserWarning" and len(texts) > 1:
                texts = texts[1:]  # first item is the warning name
            message = " - ".join(texts) or kind
            code = kind
            if DUPLICATE_KEY_MARKER in message.lower():
                code = "duplicate_key"
            return BusinessError(f"{method}: {message}", target=TARGET, code=code)
        if kind == "ConcurrencyException":
            return TransientError(f"{method}: {detail}", target=TARGET, code=kind)
        # An unexpected exception on the server: the transaction was rolled back.
        lowered = kind.lower()
        if any(marker in lowered for marker in _TRANSIENT_SERVER_ERRORS):
            return TransientError(f"{method}: {kind}", target=TARGET, code="server_busy")
        if "unique constraint failed" in lowered and "revbridge_key" in lowered:
            return BusinessError(f"{method}: {kind}", target=TARGET, code="duplicate_key")
        return TransientError(f"{method}: server error: {kind}", target=TARGET, code="server_error")
    return TransientError(f"{method}: unexpected error {error!r}", target=TARGET)
