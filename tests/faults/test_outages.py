"""Outages say what they are: with the data directory full, the API answers 503 naming the
cause (not a 500 with a traceback, not a 502 "database error"), ``/readyz`` fails, and both
recover without a restart once there is room again."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from casemate.server.app import create_app
from tests.faults.conftest import Disk
from tests.gateway.conftest import PASSWORD, Bastion
from tests.gateway.helpers import in_thread, login, served_gateway

pytestmark = [pytest.mark.k8s, pytest.mark.faults]


async def test_a_full_disk_is_named_and_readyz_fails_until_there_is_room(
    bastion: Bastion, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    b = bastion
    app = create_app(b.rt, served_gateway(b.rt, b.clusters))
    db = b.rt.settings.data_dir / "casemate.db"
    caplog.set_level(logging.ERROR)

    def scenario() -> None:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.get("/readyz").status_code == 200
            headers = login(c, "alice", PASSWORD)
            disk.fill(db)
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert "the data directory is full" in ready.json()["detail"]
            ran = c.post(
                f"/api/v1/clusters/{b.cluster}/exec",
                json={"line": "kubectl get configmaps"},
                headers=headers,
            )
            assert ran.status_code == 503, ran.text
            assert ran.json()["detail"].startswith("the data directory is full")
            again = c.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
            assert again.status_code == 503, again.text
            assert again.json()["detail"].startswith("the data directory is full")
            disk.free()
            assert c.get("/readyz").status_code == 200
            ran = c.post(
                f"/api/v1/clusters/{b.cluster}/exec",
                json={"line": "kubectl get configmaps"},
                headers=headers,
            )
            assert ran.status_code == 200 and '"type": "exit"' in ran.text

    await in_thread(scenario)
    assert "Traceback" not in caplog.text
    assert "the data directory is full" in caplog.text
