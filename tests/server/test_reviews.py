"""The review API end to end: real app, real database, identity and audit log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from casemate.bastion.review import ReviewService, Ticket, command_hash
from casemate.core.runtime import Runtime
from casemate.server.app import API_PREFIX, create_app
from casemate.server.routes import reviews
from tests.server.conftest import login, problem_of

API = "/api/v1"
PASSWORD = "quartz-lantern-meadow-58"


def with_routes(app: FastAPI) -> FastAPI:
    """Register the router unless the app already does (it is wired in by server/app.py)."""
    if not any(getattr(r, "path", "").startswith(f"{API}/reviews") for r in app.routes):
        app.include_router(reviews.router, prefix=API_PREFIX)
    return app


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(with_routes(create_app(runtime)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def people(runtime: Runtime, client: TestClient) -> dict[str, dict[str, str]]:
    """Logged-in users: alice and carol (operators), bob (approver), audrey (auditor)."""
    roles = {
        "alice": ["operator"],
        "carol": ["operator"],
        "bob": ["approver"],
        "audrey": ["auditor"],
    }
    for name, granted in roles.items():
        runtime.identity.create_user(name, by=None, password=PASSWORD, roles=granted)
    found = {name: login(client, name, PASSWORD) for name in roles}
    found["admin"] = login(client)
    return found


def chash(user: str = "alice") -> str:
    return command_hash(
        ("kubectl", "scale", "deploy/web", "--replicas=0"),
        cluster="prod",
        account="ops",
        namespace="shop",
        user=user,
    )


def hold(runtime: Runtime, user: str = "alice", **kw: Any) -> Ticket:
    args: dict[str, Any] = {
        "command_hash": chash(user),
        "command_display": "kubectl scale deploy/web --replicas=0",
        "cluster": "prod",
        "account": "ops",
        "namespace": "shop",
        "rule_id": "scale-to-zero",
        "preview": {"deployment/web": {"spec.replicas": [3, 0]}},
        "expires_at": datetime.now(UTC) + timedelta(minutes=10),
    }
    args.update(kw)
    return ReviewService.from_runtime(runtime).submit(user, **args)


def test_approver_sees_and_approves_and_the_command_runs_once(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    t = hold(runtime)
    listing = client.get(f"{API}/reviews", params={"state": "pending"}, headers=people["bob"])
    assert listing.status_code == 200, listing.text
    (item,) = listing.json()
    assert item["id"] == t.id and item["user"] == "alice" and item["state"] == "pending"
    assert item["command"] == "kubectl scale deploy/web --replicas=0"
    assert item["has_preview"] and item["preview"] is None  # previews on the single ticket
    assert item["message"] == f"waiting for approval (ticket {t.id})"
    one = client.get(f"{API}/reviews/{t.id}", headers=people["bob"]).json()
    assert one["preview"] == {"deployment/web": {"spec.replicas": [3, 0]}}
    r = client.post(
        f"{API}/reviews/{t.id}/approve", json={"note": "maintenance window"}, headers=people["bob"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved" and r.json()["decided_by"] == "bob"
    service = ReviewService.from_runtime(runtime)
    assert service.consume(t.id, chash(), "alice") is True
    assert service.consume(t.id, chash(), "alice") is False
    assert (
        client.get(f"{API}/reviews/{t.id}", headers=people["alice"]).json()["state"] == "consumed"
    )
    approved = runtime.audit.query(kind="bastion.review.decided", outcome="approved")[0]
    assert approved.actor == "bob" and approved.source == "testclient"
    assert approved.details["reason"] == "maintenance window"
    # Deciding again is a conflict.
    again = client.post(f"{API}/reviews/{t.id}/approve", headers=people["bob"])
    assert again.status_code == 409 and problem_of(again)["title"] == "Conflict"


def test_users_see_only_their_own_tickets(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    mine = hold(runtime, "alice")
    theirs = hold(runtime, "carol")
    alice = client.get(f"{API}/reviews", headers=people["alice"]).json()
    assert [t["id"] for t in alice] == [mine.id]
    assert client.get(f"{API}/reviews/{mine.id}", headers=people["alice"]).status_code == 200
    problem_of(forbidden := client.get(f"{API}/reviews/{theirs.id}", headers=people["alice"]))
    assert forbidden.status_code == 403
    other = client.get(f"{API}/reviews", params={"user": "carol"}, headers=people["alice"])
    assert other.status_code == 403
    everyone = client.get(f"{API}/reviews", headers=people["audrey"]).json()
    assert [t["id"] for t in everyone] == [theirs.id, mine.id]
    only_carol = client.get(f"{API}/reviews", params={"user": "carol"}, headers=people["bob"])
    assert [t["id"] for t in only_carol.json()] == [theirs.id]
    assert client.get(f"{API}/reviews").status_code == 401


@pytest.mark.parametrize("who", ["alice", "carol", "audrey"])
def test_non_approvers_get_403(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]], who: str
) -> None:
    t = hold(runtime)
    before = runtime.audit.head_seq()
    for action in ("approve", "deny"):
        r = client.post(f"{API}/reviews/{t.id}/{action}", headers=people[who])
        assert r.status_code == 403 and "approver" in problem_of(r)["detail"]
    assert runtime.audit.head_seq() == before
    state = client.get(f"{API}/reviews/{t.id}", headers=people["bob"]).json()["state"]
    assert state == "pending"


def test_four_eyes_over_the_api(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    own = hold(runtime, "bob")
    r = client.post(f"{API}/reviews/{own.id}/approve", headers=people["bob"])
    assert r.status_code == 403 and "four-eyes" in problem_of(r)["detail"]
    admin_own = hold(runtime, "admin")
    r = client.post(f"{API}/reviews/{admin_own.id}/approve", headers=people["admin"])
    assert r.status_code == 403 and "four-eyes" in problem_of(r)["detail"]
    # Someone else may.
    assert (
        client.post(f"{API}/reviews/{own.id}/approve", headers=people["admin"]).status_code == 200
    )


def test_read_only_token_cannot_approve(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    t = hold(runtime)
    issued = client.post(
        f"{API}/tokens", json={"name": "ro", "scopes": ["read"]}, headers=people["bob"]
    )
    assert issued.status_code == 201, issued.text
    token = {"Authorization": f"Bearer {issued.json()['token']}"}
    assert client.post(f"{API}/reviews/{t.id}/approve", headers=token).status_code == 403
    writer = client.post(
        f"{API}/tokens", json={"name": "rw", "scopes": ["read", "write"]}, headers=people["bob"]
    )
    token = {"Authorization": f"Bearer {writer.json()['token']}"}
    assert client.post(f"{API}/reviews/{t.id}/approve", headers=token).status_code == 200


def test_deny_and_cancel(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    t = hold(runtime)
    r = client.post(
        f"{API}/reviews/{t.id}/deny", json={"reason": "not on a Friday"}, headers=people["bob"]
    )
    assert r.status_code == 200 and r.json()["state"] == "denied"
    assert r.json()["decision_note"] == "not on a Friday"
    assert ReviewService.from_runtime(runtime).consume(t.id, chash(), "alice") is False
    denied = runtime.audit.query(kind="bastion.review.decided", outcome="denied")[0]
    assert denied.actor == "bob" and denied.details["reason"] == "not on a Friday"
    u = hold(runtime)
    assert client.post(f"{API}/reviews/{u.id}/cancel", headers=people["carol"]).status_code == 403
    r = client.post(f"{API}/reviews/{u.id}/cancel", headers=people["alice"])
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


def test_bad_requests(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    t = hold(runtime)
    r = client.post(
        f"{API}/reviews/{t.id}/deny", json={"reason": "x", "extra": 1}, headers=people["bob"]
    )
    assert r.status_code == 422 and problem_of(r)["errors"][0]["message"] == "unknown field"
    r = client.post(
        f"{API}/reviews/{t.id}/deny", json={"reason": "x" * 1001}, headers=people["bob"]
    )
    assert r.status_code == 422
    assert client.post(f"{API}/reviews/999999/approve", headers=people["bob"]).status_code == 404
    assert client.get(f"{API}/reviews/999999", headers=people["bob"]).status_code == 404
    assert client.get(f"{API}/reviews/abc", headers=people["bob"]).status_code == 422
    r = client.get(f"{API}/reviews", params={"state": "bogus"}, headers=people["bob"])
    assert r.status_code == 422
    expired = hold(runtime, expires_at=datetime.now(UTC) + timedelta(seconds=1))
    time.sleep(1.1)
    r = client.post(f"{API}/reviews/{expired.id}/approve", headers=people["bob"])
    assert r.status_code == 409 and "expired" in problem_of(r)["detail"]
    listed = client.get(f"{API}/reviews", params={"state": "expired"}, headers=people["bob"])
    assert [x["id"] for x in listed.json()] == [expired.id]
