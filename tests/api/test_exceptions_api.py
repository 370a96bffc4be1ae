"""The HTTP API over the work queue (FastAPI TestClient, real SQLite)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from revbridge import bootstrap
from revbridge.api import create_app
from revbridge.config import load_config
from revbridge.errors import ConfigurationError
from revbridge.ingest.x12_files import ingest_file
from tests.conftest import WORKED_EXAMPLE

ANA = "ana-token-0123456789"
BEN = "ben-token-0123456789"
USERS = """
api:
  users:
    - {name: ana, token: "${RB_TEST_TOKEN_ANA}"}
    - {name: ben, token: "${RB_TEST_TOKEN_BEN}"}
"""
PROBLEM_KEYS = {"type", "title", "status", "detail"}


@pytest.fixture
def app(deployment: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bootstrap.App]:
    monkeypatch.setenv("RB_TEST_TOKEN_ANA", ANA)
    monkeypatch.setenv("RB_TEST_TOKEN_BEN", BEN)
    deployment.write_text(
        deployment.read_text() + USERS + 'exceptions:\n  write_off_approval_above: "100.00"\n'
    )
    application = bootstrap.build(load_config(deployment, bootstrap.SPECS))
    ingest_file(application.store, WORKED_EXAMPLE)
    application.worker().run_until_idle(max_wait_seconds=0)
    yield application
    application.close()


@pytest.fixture
def client(app: bootstrap.App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status
    return body


def denied_id(client: TestClient) -> int:
    found = client.get("/v1/exceptions", params={"reason": "claim_denied"}, headers=auth(ANA))
    (item,) = found.json()["exceptions"]
    return int(item["id"])


def test_every_route_needs_a_valid_bearer_token(client: TestClient) -> None:
    for method, path in (
        ("get", "/v1/exceptions"),
        ("get", "/v1/exceptions/1"),
        ("post", "/v1/exceptions/1/retry"),
        ("get", "/v1/approvals"),
        ("post", "/v1/approvals/1/approve"),
    ):
        missing = problem(getattr(client, method)(path), 401)
        assert missing["title"] == "Unauthorized"
        bad = client.request(method.upper(), path, headers=auth("not-a-token-at-all"))
        assert problem(bad, 401)["detail"] == "the bearer token is not valid"
        assert bad.headers["www-authenticate"].startswith("Bearer")


def test_list_and_show_with_filters_and_audited_reads(client: TestClient) -> None:
    listed = client.get("/v1/exceptions", headers=auth(ANA))
    assert listed.status_code == 200
    (item,) = listed.json()["exceptions"]
    assert {"id", "reason", "status", "source", "sla_due", "overdue", "age_hours"} <= set(item)
    assert client.get("/v1/exceptions?status=resolved", headers=auth(ANA)).json() == {
        "exceptions": []
    }
    assert client.get("/v1/exceptions?overdue=true", headers=auth(ANA)).json()["exceptions"] == []
    problem(client.get("/v1/exceptions?status=closed", headers=auth(ANA)), 422)
    shown = client.get(f"/v1/exceptions/{item['id']}", headers=auth(BEN)).json()
    assert shown["id"] == item["id"] and shown["raw"]["id"] == int(item["source"]["raw_id"])
    assert [(e["actor"], e["action"]) for e in shown["audit"]] == [("ben", "exception.read")]
    assert problem(client.get("/v1/exceptions/999", headers=auth(ANA)), 404)["detail"] == (
        "no exception item 999"
    )
    problem(client.get("/v1/exceptions/abc", headers=auth(ANA)), 422)


def test_assign_note_resolve(client: TestClient) -> None:
    item_id = denied_id(client)
    assigned = client.post(
        f"/v1/exceptions/{item_id}/assign", json={"assignee": "ben"}, headers=auth(ANA)
    )
    assert assigned.status_code == 200 and assigned.json()["item"]["assignee"] == "ben"
    noted = client.post(
        f"/v1/exceptions/{item_id}/notes", json={"text": "called payer"}, headers=auth(BEN)
    )
    assert noted.status_code == 201
    problem(client.post(f"/v1/exceptions/{item_id}/notes", json={}, headers=auth(BEN)), 422)
    resolved = client.post(
        f"/v1/exceptions/{item_id}/resolve", json={"note": "appeal won"}, headers=auth(BEN)
    )
    body = resolved.json()
    assert (body["item"]["resolution"], body["item"]["resolved_by"]) == ("resolved", "ben")
    again = client.post(f"/v1/exceptions/{item_id}/resolve", json={}, headers=auth(BEN))
    assert problem(again, 409)["title"] == "Action refused"


def test_write_off_above_the_limit_and_its_approval(client: TestClient) -> None:
    item_id = denied_id(client)
    problem(
        client.post(f"/v1/exceptions/{item_id}/write-off", json={"amount": 5.5}, headers=auth(ANA)),
        422,
    )
    problem(
        client.post(
            f"/v1/exceptions/{item_id}/write-off", json={"amount": "900.00"}, headers=auth(ANA)
        ),
        422,  # more than the denied amount
    )
    asked = client.post(f"/v1/exceptions/{item_id}/write-off", json={}, headers=auth(ANA))
    assert asked.status_code == 202
    approval_id = asked.json()["detail"]["approval_id"]
    pending = client.get("/v1/approvals?status=pending", headers=auth(BEN)).json()["approvals"]
    assert [a["id"] for a in pending] == [approval_id]
    own = client.post(f"/v1/approvals/{approval_id}/approve", headers=auth(ANA))
    assert "second person" in problem(own, 409)["detail"]
    done = client.post(f"/v1/approvals/{approval_id}/approve", headers=auth(BEN))
    assert done.status_code == 200
    assert done.json()["outcome"]["journal"].endswith(f":writeoff:{item_id}")
    shown = client.get(f"/v1/exceptions/{item_id}", headers=auth(ANA)).json()
    assert (shown["resolution"], shown["resolved_by"]) == ("written_off", "ben")
    problem(client.post("/v1/approvals/999/approve", headers=auth(BEN)), 404)


def test_a_small_write_off_is_done_at_once(client: TestClient) -> None:
    item_id = denied_id(client)
    done = client.post(
        f"/v1/exceptions/{item_id}/write-off", json={"amount": "75.25"}, headers=auth(ANA)
    )
    assert done.status_code == 200
    assert (done.json()["action"], done.json()["detail"]["amount"]) == ("write_off", "75.25")


def test_refuse_reject_retry_resubmit(client: TestClient) -> None:
    item_id = denied_id(client)
    retry = client.post(f"/v1/exceptions/{item_id}/retry", headers=auth(ANA))
    assert "write it off" in problem(retry, 409)["detail"]
    bad = client.post(
        f"/v1/exceptions/{item_id}/resubmit",
        json={"content_base64": "@@not base64@@"},
        headers=auth(ANA),
    )
    problem(bad, 422)
    wrong_kind = client.post(
        f"/v1/exceptions/{item_id}/resubmit",
        json={"content_base64": base64.b64encode(b"ISA*00~").decode()},
        headers=auth(ANA),
    )
    assert "resubmit applies" in problem(wrong_kind, 409)["detail"]
    asked = client.post(
        f"/v1/exceptions/{item_id}/write-off", json={"amount": "400"}, headers=auth(ANA)
    )
    approval_id = asked.json()["detail"]["approval_id"]
    problem(client.post(f"/v1/approvals/{approval_id}/refuse", json={}, headers=auth(BEN)), 422)
    refused = client.post(
        f"/v1/approvals/{approval_id}/refuse", json={"reason": "appeal open"}, headers=auth(BEN)
    )
    assert refused.json()["status"] == "refused"
    problem(client.post(f"/v1/exceptions/{item_id}/reject", json={}, headers=auth(ANA)), 422)
    rejected = client.post(
        f"/v1/exceptions/{item_id}/reject", json={"reason": "duplicate"}, headers=auth(ANA)
    )
    assert rejected.json()["item"]["resolution"] == "rejected"


def test_resubmit_through_the_api(
    deployment: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RB_TEST_TOKEN_ANA", ANA)
    monkeypatch.setenv("RB_TEST_TOKEN_BEN", BEN)
    deployment.write_text(deployment.read_text() + USERS)
    app = bootstrap.build(load_config(deployment, bootstrap.SPECS))
    bad = tmp_path / "bad.835"
    bad.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"005010X221A1", b"004010X091A1"))
    ingest_file(app.store, bad)
    with TestClient(create_app(app)) as client:
        found = client.get("/v1/exceptions?reason=rejected_transaction", headers=auth(ANA))
        item_id = found.json()["exceptions"][0]["id"]
        fixed = WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004799")
        body = {"content_base64": base64.b64encode(fixed).decode(), "comment": "GS08"}
        done = client.post(f"/v1/exceptions/{item_id}/resubmit", json=body, headers=auth(ANA))
        assert done.status_code == 200
        assert done.json()["item"]["resolution"] == "resubmitted"
        assert done.json()["detail"]["new_raw_id"] == 2
    app.close()


def test_tokens_come_from_the_config_and_are_checked(
    deployment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RB_TEST_TOKEN_ANA", "short")
    monkeypatch.setenv("RB_TEST_TOKEN_BEN", "short")
    deployment.write_text(deployment.read_text() + USERS)
    with pytest.raises(ConfigurationError) as caught:
        load_config(deployment, bootstrap.SPECS)
    assert "api.users[0].token: must be at least 16 characters" in str(caught.value)
    assert "two users share this token" in str(caught.value)
    assert "short" not in str(caught.value)
