"""Cross-site websocket hijacking (insider review H9): a page on another site can open a
websocket to the gateway, and the browser sends the gateway's cookie with it. A terminal opened
that way would type as the victim, so a cookie is taken only from our own pages (``Origin`` /
``Sec-Fetch-Site``); a bearer token (which another site's page cannot add) still works."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from casemate.server.app import create_app
from casemate.server.deps import SESSION_COOKIE
from tests.gateway.conftest import PASSWORD, Bastion
from tests.gateway.helpers import in_thread, login, served_gateway

pytestmark = [pytest.mark.k8s]

TERMINAL = "/api/v1/clusters/test/terminal"


def _first(c: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    with c.websocket_connect(TERMINAL, headers=headers) as ws:
        msg: dict[str, Any] = ws.receive_json()
        return msg


def _session(c: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    """A terminal from our own page: its prompt, then ``exit`` ends the session cleanly (the
    gateway closes its connections before the test client goes)."""
    with c.websocket_connect(TERMINAL, headers=headers) as ws:
        text = ""
        while "$ " not in text:
            msg: dict[str, Any] = ws.receive_json()
            assert msg.get("type") == "output", (msg, text)
            text += msg["data"]
        ws.send_text(json.dumps({"type": "input", "data": "exit\r"}))
        while (msg := ws.receive_json()).get("type") != "exit":
            pass
        return msg


def _drive(app: Any) -> dict[str, Any]:
    with TestClient(app, raise_server_exceptions=False) as c:
        token = login(c, "alice", PASSWORD)["Authorization"].removeprefix("Bearer ")
        cookie = f"{SESSION_COOKIE}={token}"
        return {
            "evil_origin": _first(c, {"cookie": cookie, "origin": "https://evil.example"}),
            "cross_site": _first(c, {"cookie": cookie, "sec-fetch-site": "cross-site"}),
            "ours": _session(c, {"cookie": cookie, "origin": "http://testserver"}),
        }


async def test_a_cookie_opens_a_terminal_only_from_our_own_pages(bastion: Bastion) -> None:
    app = create_app(bastion.rt, served_gateway(bastion.rt, bastion.clusters))
    out = await asyncio.wait_for(in_thread(lambda: _drive(app)), 200)
    refused = {
        "type": "exit",
        "reason": "cross-site websocket refused; send the token as 'Authorization: Bearer'",
    }
    assert out["evil_origin"] == refused
    assert out["cross_site"] == refused
    assert "cross-site" not in out["ours"].get("reason", ""), out["ours"]
