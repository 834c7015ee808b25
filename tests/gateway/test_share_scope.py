"""Writing into someone's session needs write power (insider review F1): a read-scope token of
the owner cannot upload into the workspace, share (with typing) or take a share back, a user
whose roles give no write power is refused a typing grant, and an auditor who somehow holds
one still cannot type into the owner's shell (checked on every key, on the real cluster)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from casemate.gateway.service import Gateway
from casemate.server.app import create_app
from tests.gateway.conftest import PASSWORD, Bastion, principal
from tests.gateway.helpers import in_thread, login, served_gateway

pytestmark = [pytest.mark.k8s]

UPLOAD = {"name": "evil.yaml", "content": "a2luZDogUG9kCg=="}


def _drive(app: Any, gateway: Gateway) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with TestClient(app, raise_server_exceptions=False) as c:
        alice = login(c, "alice", PASSWORD)
        dave = login(c, "dave", PASSWORD)
        r = c.post("/api/v1/tokens", headers=alice, json={"name": "ro", "scopes": ["read"]})
        ro = {"Authorization": "Bearer " + r.json()["token"]}
        with c.websocket_connect("/api/v1/clusters/test/terminal?cols=1000", headers=alice) as ws:
            text = ""
            while "$ " not in text:
                text += ws.receive_json().get("data", "")
            found = re.search(r"Casemate session (\S+) ", text)
            assert found is not None, text
            sid = found.group(1)
            base = f"/api/v1/sessions/{sid}"
            out["ro_upload"] = c.post(f"{base}/files", headers=ro, json=UPLOAD).status_code
            out["ro_share"] = c.post(
                f"{base}/share", headers=ro, json={"user": "dave", "typing": True}
            ).status_code
            out["share_auditor_typing"] = c.post(
                f"{base}/share", headers=alice, json={"user": "dave", "typing": True}
            ).status_code
            out["share_auditor"] = c.post(
                f"{base}/share", headers=alice, json={"user": "dave"}
            ).status_code
            out["ro_unshare"] = c.delete(f"{base}/share/dave", headers=ro).status_code
            out["ro_untype"] = c.delete(f"{base}/share/dave/typing", headers=ro).status_code
            out["owner_upload"] = c.post(f"{base}/files", headers=alice, json=UPLOAD).status_code
            out["listed"] = [f["path"] for f in c.get(f"{base}/files", headers=alice).json()]
            # a typing grant the API would refuse (an older grant, a role changed since)
            gateway.get(sid).sharing.grant("dave", typing=True)
            with c.websocket_connect(f"{base}/watch", headers=dave) as w:
                w.send_text(json.dumps({"type": "input", "data": "echo DAVE-TYPED\r"}))
                # refused too, but differently: were the keys let through, this came first
                w.send_text(json.dumps({"type": "resize", "cols": 80, "rows": 24}))
                while (msg := w.receive_json()).get("type") != "error":
                    pass
                out["dave_error"] = msg["detail"]
    return out


async def test_a_read_token_or_an_auditor_cannot_write_into_a_session(bastion: Bastion) -> None:
    b = bastion
    admin = principal(b.rt, "admin")
    b.rt.identity.create_user("dave", by=admin, password=PASSWORD, roles=["auditor"])
    gateway = served_gateway(b.rt, b.clusters)
    app = create_app(b.rt, gateway)
    out = await asyncio.wait_for(in_thread(lambda: _drive(app, gateway)), 200)
    assert out == {
        "ro_upload": 403,
        "ro_share": 403,
        "share_auditor_typing": 422,
        "share_auditor": 204,
        "ro_unshare": 403,
        "ro_untype": 403,
        "owner_upload": 204,
        "listed": ["evil.yaml"],
        "dave_error": "you may not type in this session",
    }, out
