"""Sessions never leak (issue 9 §6): a ``POST /exec`` client that goes away while its command
waits for review cancels the ticket and ends the session; shutdown ends every session; an
SSH exec line with a control character leaves a refused command record. Against the real
cluster, over a real HTTP server (uvicorn) and a real SSH client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncssh
import httpx
import pytest
import uvicorn

from casemate.bastion.review import TicketState
from casemate.bastion.runner import EXIT_REFUSED
from casemate.errors import CasemateError
from casemate.gateway.ssh import HOST_KEY_NAME, SshGateway
from casemate.server.app import create_app
from tests.gateway.conftest import PASSWORD, Bastion
from tests.gateway.helpers import Collect, audit_details, served_gateway

pytestmark = pytest.mark.k8s


async def until(check: Callable[[], bool], timeout: float = 30.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def ended(b: Bastion, session_id: str) -> list[str]:
    return [
        d["reason"]
        for d in audit_details(b.rt, "bastion.session.ended")
        if d["session_id"] == session_id
    ]


def replicas(b: Bastion, name: str) -> str:
    got = b.kube.kubectl("-n", b.ns_a, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}")
    return str(got.stdout).strip()


async def test_an_exec_client_leaving_while_held_cancels_the_ticket_and_ends_the_session(
    bastion: Bastion,
) -> None:
    b = bastion
    name = f"web-{secrets.token_hex(2)}"
    b.kube.kubectl("-n", b.ns_a, "create", "deployment", name,
                   "--image=registry.invalid/web:1", "--replicas=2")  # fmt: skip
    gateway = served_gateway(b.rt, b.clusters)
    app = create_app(b.rt, gateway)
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            r = await client.post(
                "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
            )
            headers = {"Authorization": f"Bearer {r.json()['token']}"}
            events: list[dict[str, Any]] = []
            async with client.stream(
                "POST",
                f"/api/v1/clusters/{b.cluster}/exec",
                json={"line": f"kubectl scale deployment {name} --replicas=0"},
                headers=headers,
            ) as stream:
                lines = stream.aiter_lines()
                while not events or events[-1]["type"] != "waiting":
                    events.append(json.loads(await lines.__anext__()))
                sid = events[0]["id"]
                ticket = events[-1]["ticket"]
                listed = await client.get("/api/v1/sessions", headers=headers)
                assert [s["session_id"] for s in listed.json()] == [sid]  # held: listed
                await asyncio.sleep(1)
                assert b.gateway.reviews.get(ticket).state is TicketState.PENDING
                await stream.aclose()
            # the client is gone (the stream closed without reading to the end)
            await until(lambda: ended(b, sid) == ["disconnected"], what="the session's end")
            assert b.gateway.reviews.get(ticket).state is TicketState.CANCELLED
            listed = await client.get("/api/v1/sessions", headers=headers)
            assert listed.json() == []
            assert not (gateway.work_dir / sid).exists()
            assert not any(p.name.startswith(sid) for p in gateway.work_dir.iterdir())
    with pytest.raises(CasemateError):
        b.gateway.reviews.approve(ticket, b.approver)  # nothing left to approve
    assert replicas(b, name) == "2"


async def test_shutdown_ends_every_session_and_cancels_held_commands(bastion: Bastion) -> None:
    b = bastion
    name = f"web-{secrets.token_hex(2)}"
    b.kube.kubectl("-n", b.ns_a, "create", "deployment", name,
                   "--image=registry.invalid/web:1", "--replicas=2")  # fmt: skip
    gateway = served_gateway(b.rt, b.clusters)
    await gateway.start()
    idle = await gateway.open_session(b.alice, b.cluster)
    held = await gateway.open_session(b.alice, b.cluster)
    tickets: list[int] = []

    async def on_ticket(ticket: Any) -> None:
        tickets.append(ticket.id)

    task = asyncio.ensure_future(
        held.run(f"kubectl scale deployment {name} --replicas=0", Collect(), on_ticket=on_ticket)
    )
    await until(lambda: bool(tickets), what="the ticket")
    started = time.monotonic()
    await gateway.close()
    assert time.monotonic() - started < 20  # did not wait for the review to expire
    assert ended(b, idle.id) == ["shutdown"] and ended(b, held.id) == ["shutdown"]
    assert b.gateway.reviews.get(tickets[0]).state is TicketState.CANCELLED
    assert task.done()
    assert gateway.live_sessions() == []
    assert replicas(b, name) == "2"


async def test_an_ssh_exec_line_with_a_control_character_is_a_refused_command(
    bastion: Bastion,
) -> None:
    b = bastion
    ssh = SshGateway(b.gateway, host_key_path=b.rt.settings.data_dir / HOST_KEY_NAME)
    await ssh.start("127.0.0.1", 0)
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            ssh.address[1],
            username="alice",
            password=PASSWORD,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            preferred_auth="password",
        ) as conn:
            result = await conn.run("kubectl get pods\x1b[2J", check=False, timeout=60)
    finally:
        await ssh.close()
    assert result.exit_status == EXIT_REFUSED, (result.stdout, result.stderr)
    [decided] = [
        d for d in audit_details(b.rt, "bastion.command.decided") if "kubectl get pods" in d["line"]
    ]
    assert decided["decision"] == "reject"
    assert decided["rule_id"] == "shell.refused"
    assert ended(b, decided["session_id"]) == ["exit"]
