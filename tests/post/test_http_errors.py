"""HTTP answers into the error tree: the class decides wait, retry, look up, or park."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from revbridge.errors import (
    BusinessError,
    DeliveryError,
    IndeterminateError,
    OutageError,
    ThrottledError,
    TransientError,
)
from revbridge.post.http_errors import (
    classify_exchange_failure,
    classify_response,
    retry_after_seconds,
)
from revbridge.post.tryton_rpc import TrytonRPC

NOW = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
NETSUITE_LIMIT = (
    b'{"type":"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1","title":"Bad Request",'
    b'"status":400,"o:errorDetails":[{"detail":"Concurrent request limit exceeded. Request '
    b'blocked.","o:errorCode":"SSS_REQUEST_LIMIT_EXCEEDED"}]}'
)


def classify(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> object:
    return classify_response("erp", status, headers or {}, body, what="post", now=NOW)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_is_no_error(status: int) -> None:
    assert classify(status) is None


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_timeouts_and_server_errors_are_transient(status: int) -> None:
    error = classify(status, body=b"upstream hiccup")
    assert type(error) is TransientError
    assert error.code == f"http_{status}" and error.target == "erp"
    assert "upstream hiccup" in str(error)


def test_429_is_throttled_with_its_retry_after() -> None:
    error = classify(429, {"Retry-After": "7"})
    assert isinstance(error, ThrottledError) and error.retry_after == 7.0


def test_429_without_retry_after_is_still_throttled() -> None:
    error = classify(429)
    assert isinstance(error, ThrottledError) and error.retry_after is None


def test_503_with_retry_after_is_throttled_not_transient() -> None:
    error = classify(503, {"retry-after": "Sat, 01 Mar 2025 08:00:30 GMT"})
    assert isinstance(error, ThrottledError) and error.retry_after == 30.0


def test_netsuite_request_limit_400_is_throttling_not_a_business_error() -> None:
    error = classify(400, {"Content-Type": "application/json"}, NETSUITE_LIMIT)
    assert isinstance(error, ThrottledError)
    assert not isinstance(error, BusinessError)


@pytest.mark.parametrize("status", [400, 403, 409, 422])
def test_other_client_errors_are_business(status: int) -> None:
    error = classify(status, body=b'{"error":"account 1200 is closed"}')
    assert type(error) is BusinessError and error.code == f"http_{status}"


@pytest.mark.parametrize("status", [100, 302, 304])
def test_odd_statuses_are_no_verdict_on_the_content(status: int) -> None:
    assert type(classify(status)) is TransientError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("-5", 0.0),
        ("1.5", 1.5),
        ("Sat, 01 Mar 2025 08:02:00 GMT", 120.0),
        ("Sat, 01 Mar 2025 07:00:00 GMT", 0.0),  # a date in the past: now
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_seconds_or_http_date(value: str, seconds: float | None) -> None:
    assert retry_after_seconds({"Retry-After": value}, NOW) == seconds


def test_retry_after_absent() -> None:
    assert retry_after_seconds({"Content-Type": "text/plain"}, NOW) is None


def test_body_is_quoted_short_in_the_message() -> None:
    error = classify(500, body=b"x" * 10_000)
    assert len(str(error)) < 300


@pytest.mark.parametrize(("sent", "kind"), [(False, OutageError), (True, IndeterminateError)])
def test_exchange_failures(sent: bool, kind: type[DeliveryError]) -> None:
    error = classify_exchange_failure("erp", ConnectionRefusedError(111, "refused"), sent=sent)
    assert type(error) is kind and error.target == "erp"


class _Tryton:
    """A transport that logs in, then answers every call with one fixed status."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        if b"common.db.login" in body:
            return 200, {}, b'{"id": 1, "result": [1, "token", null]}'
        return self.status, self.headers, b"busy"


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (429, {"retry-after": "3"}, ThrottledError),
        (503, {"retry-after": "3"}, ThrottledError),
        (503, {}, TransientError),
        (500, {}, TransientError),
        (403, {}, BusinessError),
        (404, {}, OutageError),  # Tryton: no such database
    ],
)
def test_tryton_client_classifies_http_statuses_with_the_shared_rules(
    status: int, headers: dict[str, str], kind: type[DeliveryError]
) -> None:
    rpc = TrytonRPC("http://erp.invalid", "db", "admin", "pw", transport=_Tryton(status, headers))
    with pytest.raises(kind) as raised:
        rpc.model("account.move", "search", [])
    assert type(raised.value) is kind
