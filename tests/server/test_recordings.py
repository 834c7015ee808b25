"""The recordings API end to end: real app, real database, real files."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from casemate.bastion.recording import ACCESS_EVENT, RecordingStore, read_cast
from casemate.core.runtime import Runtime
from casemate.server.app import API_PREFIX, create_app
from casemate.server.routes import recordings
from tests.server.conftest import login, problem_of

API = "/api/v1"
PASSWORD = "quartz-lantern-meadow-58"
TOKEN = "system-account-token-0123456789abcdef"


def with_routes(app: FastAPI) -> FastAPI:
    """Register the router unless the app already does (it is wired in by server/app.py)."""
    if not any(getattr(r, "path", "").startswith(f"{API}/recordings") for r in app.routes):
        app.include_router(recordings.router, prefix=API_PREFIX)
    return app


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(with_routes(create_app(runtime)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def people(runtime: Runtime, client: TestClient) -> dict[str, dict[str, str]]:
    roles = {"alice": ["operator"], "bob": ["operator"], "audrey": ["auditor"]}
    for name, granted in roles.items():
        runtime.identity.create_user(name, by=None, password=PASSWORD, roles=granted)
    found = {name: login(client, name, PASSWORD) for name in roles}
    found["admin"] = login(client)
    return found


@pytest.fixture
def store(runtime: Runtime) -> RecordingStore:
    return RecordingStore.from_runtime(runtime)


def record(store: RecordingStore, session_id: str, user: str, cluster: str = "prod") -> bytes:
    with store.start(session_id, user=user, cluster=cluster, secrets=[TOKEN]) as w:
        w.output(b"$ kubectl get pods\r\n")
        w.output(("token: " + TOKEN[:12]).encode())
        w.output((TOKEN[12:] + "\r\n").encode())
        w.output("ünïcödé ✓ \x1b[32mRunning\x1b[0m\r\n".encode())
    return (store.directory / f"{session_id}.cast").read_bytes()


def test_download_returns_exactly_the_file(
    client: TestClient, runtime: Runtime, store: RecordingStore, people: dict[str, dict[str, str]]
) -> None:
    data = record(store, "s-1", "alice")
    assert TOKEN.encode() not in data
    r = client.get(f"{API}/recordings/s-1/download", headers=people["audrey"])
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"] == "application/x-asciicast"
    assert r.headers["content-length"] == str(len(data))
    assert 'filename="s-1.cast"' in r.headers["content-disposition"]
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert r.headers["repr-digest"] == f"sha-256=:{digest}:"
    assert "token: ***\r\n" in "".join(e.data for e in read_cast(r.content).events)
    (access,) = runtime.audit.query(kind=ACCESS_EVENT)
    assert access.actor == "audrey" and access.details["session_id"] == "s-1"
    assert access.details["purpose"] == "download"


def test_listing_and_access_rules(
    client: TestClient, store: RecordingStore, people: dict[str, dict[str, str]]
) -> None:
    record(store, "a-1", "alice")
    record(store, "b-1", "bob", cluster="staging")
    record(store, "a-2", "alice", cluster="staging")
    admin = client.get(f"{API}/recordings", headers=people["admin"])
    assert [r["session_id"] for r in admin.json()] == ["a-2", "b-1", "a-1"]
    first = admin.json()[2]
    assert first["user"] == "alice" and first["status"] == "closed" and first["cluster"] == "prod"
    assert first["size"] > 0 and len(first["sha256"]) == 64 and first["format_version"] == 2
    staging = client.get(
        f"{API}/recordings", params={"cluster": "staging"}, headers=people["audrey"]
    )
    assert [r["session_id"] for r in staging.json()] == ["a-2", "b-1"]
    # Users see and download their own recordings only.
    own = client.get(f"{API}/recordings", headers=people["alice"])
    assert [r["session_id"] for r in own.json()] == ["a-2", "a-1"]
    assert (
        client.get(f"{API}/recordings", params={"user": "bob"}, headers=people["alice"]).status_code
        == 403
    )
    assert client.get(f"{API}/recordings/a-1/download", headers=people["alice"]).status_code == 200
    for path in ("b-1", "b-1/download"):
        r = client.get(f"{API}/recordings/{path}", headers=people["alice"])
        assert r.status_code == 403 and problem_of(r)["title"] == "Forbidden"
    assert client.get(f"{API}/recordings/b-1", headers=people["bob"]).json()["user"] == "bob"
    paged = client.get(
        f"{API}/recordings", params={"before": "a-2", "limit": 1}, headers=people["admin"]
    )
    assert [r["session_id"] for r in paged.json()] == ["b-1"]
    assert client.get(f"{API}/recordings/nope/download", headers=people["admin"]).status_code == 404
    assert client.get(f"{API}/recordings").status_code == 401
    bad = client.get(f"{API}/recordings", params={"status": "weird"}, headers=people["admin"])
    assert bad.status_code == 422


def test_tampered_recording_is_refused(
    client: TestClient, store: RecordingStore, people: dict[str, dict[str, str]]
) -> None:
    data = record(store, "s-1", "alice")
    path = store.directory / "s-1.cast"
    path.write_bytes(data.replace(b"kubectl", b"kubectx"))
    r = client.get(f"{API}/recordings/s-1/download", headers=people["admin"])
    assert r.status_code == 500 and "SHA-256" in problem_of(r)["detail"]


def test_recording_in_progress_is_served_as_far_as_written(
    client: TestClient, store: RecordingStore, people: dict[str, dict[str, str]]
) -> None:
    w = store.start("live", user="alice")
    w.output(b"first\r\n")
    r = client.get(f"{API}/recordings/live/download", headers=people["admin"])
    assert r.status_code == 200 and "repr-digest" not in r.headers
    assert [e.data for e in read_cast(r.content).events] == ["first\r\n"]
    info = client.get(f"{API}/recordings/live", headers=people["admin"]).json()
    assert info["status"] == "open" and info["sha256"] is None and info["ended_at"] is None
    w.close()
