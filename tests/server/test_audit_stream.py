"""``GET /audit/export`` (a streamed, offline-verifiable NDJSON export with filters) and
``GET /audit/events`` (server-sent events of new records, resumable with Last-Event-ID),
against a running gateway (uvicorn, SQLite)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from casemate.core.audit import verify_jsonl
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.server.app import create_app
from casemate.server.routes import audit as audit_routes
from tests.server.test_web import serve

ADMIN_PASSWORD = "correct-horse-battery-staple-42"
USER_PASSWORD = "a-long-user-password-for-tests-7"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Runtime, dict[str, str]]]:
    settings = load_settings(data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD)
    runtime = open_runtime(settings, create=True)
    runtime.identity.ensure_first_admin(settings)
    try:
        with serve(create_app(runtime)) as base:
            r = httpx.post(
                f"{base}/api/v1/auth/login",
                json={"username": "admin", "password": ADMIN_PASSWORD},
            )
            assert r.status_code == 200, r.text
            yield base + "/api/v1", runtime, {"authorization": f"Bearer {r.json()['token']}"}
    finally:
        runtime.close()


def _add_user(api: str, auth: dict[str, str], name: str, roles: list[str]) -> None:
    body = {"username": name, "password": USER_PASSWORD, "roles": roles}
    r = httpx.post(f"{api}/users", json=body, headers=auth)
    assert r.status_code == 201, r.text


def test_the_export_streams_a_chain_that_verifies_offline(
    gateway: tuple[str, Runtime, dict[str, str]],
) -> None:
    api, runtime, auth = gateway
    for name in ("ann", "bob", "cem"):
        _add_user(api, auth, name, ["operator"])

    r = httpx.get(f"{api}/audit/export", headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = r.text.splitlines()
    assert len(lines) == runtime.audit.head_seq() >= 4
    report = verify_jsonl(lines)
    assert report.ok and report.checked == len(lines), report
    # the same bytes as the server-side command writes
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, len(lines) + 1))

    # a modified record does not verify: the export carries the stored body and hashes
    bad = lines[1].replace("admin", "eve", 1)
    assert bad != lines[1] and not verify_jsonl([lines[0], bad, *lines[2:]]).ok

    # filters: kind prefix, actor, after; a filtered export proves each record by itself
    r = httpx.get(f"{api}/audit/export", params={"kind": "identity.*"}, headers=auth)
    kinds = [json.loads(json.loads(x)["body"])["kind"] for x in r.text.splitlines()]
    assert "identity.user" in kinds and all(k.startswith("identity.") for k in kinds), kinds
    assert verify_jsonl(r.text.splitlines(), contiguous=False).ok
    after = runtime.audit.head_seq() - 2
    r = httpx.get(f"{api}/audit/export", params={"after": after}, headers=auth)
    assert [json.loads(x)["seq"] for x in r.text.splitlines()] == [after + 1, after + 2]

    # hostile or wrong input: a clear 4xx
    r = httpx.get(f"{api}/audit/export", params={"since": "2026-01-01T00:00:00"}, headers=auth)
    assert r.status_code in (400, 422) and "time zone" in r.text, r.text
    r = httpx.get(f"{api}/audit/export", params={"after": -1}, headers=auth)
    assert r.status_code == 422
    # an operator may not read the audit log
    tok = httpx.post(
        f"{api}/auth/login", json={"username": "ann", "password": USER_PASSWORD}
    ).json()["token"]
    for path in ("/audit/export", "/audit/events"):
        r = httpx.get(f"{api}{path}", headers={"authorization": f"Bearer {tok}"})
        assert r.status_code == 403, (path, r.text)
    assert httpx.get(f"{api}/audit/export").status_code == 401


def _events(response: httpx.Response, count: int) -> list[tuple[int, dict[str, object]]]:
    """The next ``count`` record events of an SSE answer: (id, record)."""
    found: list[tuple[int, dict[str, object]]] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if fields.get("event") == "record":
                found.append((int(fields["id"]), json.loads(fields["data"])))
                if len(found) == count:
                    return found
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return found


def test_the_event_feed_sends_new_records_and_resumes(
    gateway: tuple[str, Runtime, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, runtime, auth = gateway
    monkeypatch.setattr(audit_routes, "EVENTS_MAX_SECONDS", 8.0)  # a wrong test ends, not hangs
    start = runtime.audit.head_seq()
    timeout = httpx.Timeout(20.0)
    params = {"kind": "identity.user"}
    with httpx.stream(
        "GET", f"{api}/audit/events", params=params, headers=auth, timeout=timeout
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")

        def add_two() -> None:
            for name in ("dan", "eli"):
                _add_user(api, auth, name, [])

        adder = threading.Timer(0.3, add_two)
        adder.start()
        got = _events(r, 2)
        adder.join()
    assert [rec["details"]["username"] for _, rec in got] == ["dan", "eli"], got  # type: ignore[index]
    assert all(rec["kind"] == "identity.user" for _, rec in got)
    assert all(rec["details"]["action"] == "created" for _, rec in got)  # type: ignore[index]
    first_id = got[0][0]
    assert first_id > start and got[1][0] > first_id

    # reconnecting with Last-Event-ID continues after that record (nothing is lost or repeated)
    headers = {**auth, "last-event-id": str(first_id)}
    with httpx.stream(
        "GET", f"{api}/audit/events", params=params, headers=headers, timeout=timeout
    ) as r:
        again = _events(r, 1)
    assert again == [got[1]]
