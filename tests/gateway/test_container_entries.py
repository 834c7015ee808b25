"""``kubectl exec -it`` into a busybox pod on the real node through each interactive entry:
the web terminal's websocket and SSH with a pty (asyncssh's client). Review first, then typed
input reaches the container, a resize changes ``stty size``, Ctrl-C interrupts, the exit status
comes back; the audit holds the typed lines and the token leaks nowhere."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from casemate.bastion.review import TicketState
from casemate.gateway.ssh import HOST_KEY_NAME, SshGateway
from casemate.server.app import create_app
from casemate.testenv.node import RealNode
from tests.gateway.conftest import PASSWORD, Bastion
from tests.gateway.helpers import (
    assert_nowhere,
    audit_details,
    in_thread,
    login,
    served_gateway,
)
from tests.gateway.test_container_terminal import busybox_pod
from tests.gateway.test_ssh import connect, read_until

pytestmark = [pytest.mark.k8s, pytest.mark.node]


def approve_sync(b: Bastion) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = b.gateway.reviews.list_tickets(user="alice", states=(TicketState.PENDING,))
        if found:
            b.gateway.reviews.approve(found[0].id, b.approver)
            return
        time.sleep(0.05)
    raise AssertionError("no pending ticket")


def ws_wait(ws: WebSocketTestSession, needle: str, seen: list[str]) -> str:
    text = ""
    while needle not in text:
        msg = ws.receive_json()
        if msg.get("type") == "output":
            text += msg["data"]
            seen.append(msg["data"])
    return text


def typed_lines(b: Bastion) -> list[str]:
    return [d["line"] for d in audit_details(b.rt, "bastion.container.input")]


async def test_exec_it_through_the_web_terminal_websocket(
    bastion: Bastion, real_node: RealNode
) -> None:
    b = bastion
    pod = busybox_pod(b, real_node)
    app = create_app(b.rt, served_gateway(b.rt, b.clusters))
    seen: list[str] = []

    def send(ws: WebSocketTestSession, data: str) -> None:
        ws.send_text(json.dumps({"type": "input", "data": data}))

    def drive() -> None:
        with TestClient(app, raise_server_exceptions=False) as client:
            auth = login(client, "alice", PASSWORD)
            url = "/api/v1/clusters/test/terminal?cols=80&rows=24"
            with client.websocket_connect(url, headers=auth) as ws:
                ws_wait(ws, f"alice@test:{b.ns_a}$ ", seen)
                send(ws, f"kubectl exec -it {pod} -- sh\r")
                ws_wait(ws, "waiting for approval", seen)
                approve_sync(b)
                ws_wait(ws, "/ # ", seen)
                send(ws, "echo $((6*7))\r")
                ws_wait(ws, "\r\n42\r\n", seen)
                ws.send_text(json.dumps({"type": "resize", "cols": 90, "rows": 27}))
                send(ws, "stty size\r")
                ws_wait(ws, "27 90", seen)
                send(ws, "sleep 30; echo DONE-SLEEPING\r")
                time.sleep(0.5)
                send(ws, "\x03")
                send(ws, "echo after-$((1+1))\r")
                ws_wait(ws, "after-2", seen)
                send(ws, "exit 7\r")
                ws_wait(ws, "[exit 7]", seen)
                send(ws, "exit\r")

    await asyncio.wait_for(in_thread(drive), 300)
    screen = "".join(seen)
    assert "\nDONE-SLEEPING" not in screen
    assert {"echo $((6*7))", "stty size", "exit 7"} <= set(typed_lines(b))
    assert_nowhere(b.rt, b.token, also=[("the websocket", screen)])


async def test_exec_it_through_ssh_with_a_pty(bastion: Bastion, real_node: RealNode) -> None:
    b = bastion
    pod = busybox_pod(b, real_node)
    ssh = SshGateway(b.gateway, host_key_path=b.rt.settings.data_dir / HOST_KEY_NAME)
    await ssh.start("127.0.0.1", 0)
    try:
        conn, _ = await connect(ssh.address[1], password=PASSWORD)
        async with conn:
            proc = await conn.create_process(
                term_type="xterm-256color", term_size=(80, 24), encoding=None
            )
            out: list[bytes] = []

            async def until(needle: bytes) -> None:
                out.append(await read_until(proc.stdout, needle))

            await until(f"alice@test:{b.ns_a}$ ".encode())
            proc.stdin.write(f"kubectl exec -it {pod} -- sh\r".encode())
            await until(b"waiting for approval")
            await asyncio.to_thread(approve_sync, b)
            await until(b"/ # ")
            proc.stdin.write(b"echo $((6*7))\r")
            await until(b"\r\n42\r\n")
            proc.change_terminal_size(111, 44)
            await asyncio.sleep(0.2)
            proc.stdin.write(b"stty size\r")
            await until(b"44 111")
            proc.stdin.write(b"sleep 30; echo DONE-SLEEPING\r")
            await asyncio.sleep(0.5)
            proc.stdin.write(b"\x03")
            proc.stdin.write(b"echo after-$((1+1))\r")
            await until(b"after-2")
            proc.stdin.write(b"exit 5\r")
            await until(b"[exit 5]")
            proc.stdin.write(b"exit\r")
            result: Any = await asyncio.wait_for(proc.wait(), 30)
            assert result.exit_status == 0
    finally:
        await ssh.close()
    screen = b"".join(out)
    assert b"\nDONE-SLEEPING" not in screen
    assert {"echo $((6*7))", "stty size", "exit 5"} <= set(typed_lines(b))
    assert_nowhere(b.rt, b.token, also=[("the ssh channel", screen)])
