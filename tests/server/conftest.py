from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.server.app import create_app

ADMIN_PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(
        data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD, max_body_bytes=64 * 1024
    )
    rt = open_runtime(settings, create=True)
    assert rt.identity.ensure_first_admin(settings) is None  # password came from settings
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        yield c


def login(
    client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD
) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return login(client)


def problem_of(r: Any) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == r.status_code
    assert body["title"] and body["detail"] and body["type"]
    return body
