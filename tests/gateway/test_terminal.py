"""The interactive restricted shell over a byte stream, against the real cluster; live
watching, sharing and termination of sessions."""

from __future__ import annotations

import asyncio

import pytest

from casemate.bastion.recording import read_cast
from casemate.errors import Denied, InvalidInput
from casemate.gateway.terminal import TerminalShell
from tests.gateway.conftest import Bastion, principal

pytestmark = pytest.mark.k8s


class Screen:
    def __init__(self) -> None:
        self.data = b""

    async def wait_count(self, text: bytes, count: int, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.data.count(text) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not shown {count} times: {self.data[-2000:]!r}")
            await asyncio.sleep(0.02)

    async def __call__(self, data: bytes) -> None:
        self.data += data

    async def wait_for(self, text: bytes, timeout: float = 30.0, start: int = 0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in self.data[start:]:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not shown; screen: {self.data[-2000:]!r}")
            await asyncio.sleep(0.02)


async def test_prompt_command_output_interrupt_and_exit(bastion: Bastion) -> None:
    b = bastion
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", "term-cm", "--from-literal=k=v")
    session = await b.gateway.open_session(b.alice, b.cluster, channel="web", term="xterm")
    screen = Screen()
    shell = TerminalShell(session, screen)
    await shell.start()
    prompt = f"alice@{b.cluster}:{b.ns_a}$ ".encode()
    await screen.wait_for(prompt)
    await shell.feed(b"kubectl get configmaps -o name\r")
    await screen.wait_for(b"configmap/term-cm")
    assert b"\r\n" in screen.data  # CRLF for the terminal
    await screen.wait_count(prompt, 3)  # first prompt, the echoed line, the next prompt
    # a watch runs until Ctrl-C
    mark = len(screen.data)
    await shell.feed(b"kubectl get configmaps -w\r")
    await screen.wait_for(b"term-cm", start=mark)
    assert shell.running
    await shell.feed(b"\x03")
    await shell.wait_idle()
    assert not shell.running
    await screen.wait_for(b"^C", start=mark)
    # refused lines say why and leave the session usable
    mark = len(screen.data)
    await shell.feed(b"kubectl get pods; rm -rf /\r")
    await screen.wait_for(b"refused", start=mark)
    await shell.wait_idle()
    await shell.feed(b"exit\r")
    assert shell.done.is_set()
    await session.close()
    assert b.gateway.recordings is not None
    replay = b.gateway.recordings.open_for_replay(session.id)
    cast = replay.read()
    shown = "".join(e.data for e in cast.events if e.code == "o")
    assert "configmap/term-cm" in shown


async def test_pasted_lines_and_type_ahead_run_in_order(bastion: Bastion) -> None:
    """A multi-line paste runs every line, one after another; what is typed while a command
    runs becomes the next line; Ctrl-C discards what was typed ahead, as a terminal does."""
    b = bastion
    for name in ("ahead-1", "ahead-2", "ahead-3"):
        b.kube.kubectl("-n", b.ns_a, "create", "configmap", name, "--from-literal=k=v")
    session = await b.gateway.open_session(b.alice, b.cluster, channel="web", term="xterm")
    screen = Screen()
    shell = TerminalShell(session, screen)
    await shell.start()
    prompt = f"alice@{b.cluster}:{b.ns_a}$ ".encode()
    await screen.wait_for(prompt)
    await shell.feed(
        b"kubectl get configmap ahead-1 -o name\r"
        b"kubectl get configmap ahead-2 -o name\rhelp\r"
        b"kubectl get configmap ahead-3 -o name\rkubectl get conf"
    )
    await screen.wait_for(b"configmap/ahead-3")
    await shell.wait_idle()
    text = screen.data
    first, second, third = (text.index(f"configmap/ahead-{i}".encode()) for i in (1, 2, 3))
    assert first < second < text.index(b"Casemate restricted shell") < third
    # each later line is shown after its prompt, and the half-typed line waits at the end
    assert prompt + b"kubectl get configmap ahead-2 -o name\r\n" in text
    assert text.endswith(prompt + b"kubectl get conf\x1b[K")
    await shell.feed(b"igmap ahead-1 -o name\r")
    await screen.wait_count(b"configmap/ahead-1", 2)
    await shell.wait_idle()

    # typed while a command runs: kept, then edited into the next line
    mark = len(screen.data)
    await shell.feed(b"kubectl get configmaps -w\r")
    await screen.wait_for(b"ahead-3", start=mark)
    assert shell.running
    await shell.feed(b"kubectl get configmap ahead-2 -o name\r")  # discarded: Ctrl-C follows
    await shell.feed(b"\x03")
    await shell.wait_idle()
    await asyncio.sleep(0.3)
    assert b"configmap/ahead-2" not in screen.data[mark:]
    mark = len(screen.data)
    await shell.feed(b"kubectl get configmaps -w\r")
    await screen.wait_for(b"ahead-3", start=mark)
    await shell.feed(b"kubectl get configmap ahead-2 -o name\r")  # typed ahead, kept
    await asyncio.sleep(0.3)
    assert b"configmap/ahead-2" not in screen.data[mark:]
    session.interrupt()  # the watch ends without Ctrl-C from the keyboard
    await screen.wait_for(b"configmap/ahead-2", start=mark)
    await shell.wait_idle()
    await shell.feed(b"exit\r")
    assert shell.done.is_set()
    await session.close()
    log = [d["line"] for d in audit_lines(b, session.id)]
    assert log == [
        "kubectl get configmap ahead-1 -o name",
        "kubectl get configmap ahead-2 -o name",
        "kubectl get configmap ahead-3 -o name",
        "kubectl get configmap ahead-1 -o name",
        "kubectl get configmaps -w",
        "kubectl get configmaps -w",
        "kubectl get configmap ahead-2 -o name",
    ]


def audit_lines(b: Bastion, session_id: str) -> list[dict[str, object]]:
    return [
        e.details
        for e in b.rt.audit.query(kind="bastion.command.decided", limit=1000)
        if e.details.get("session_id") == session_id
    ]


async def test_watch_share_and_terminate(bastion: Bastion) -> None:
    b = bastion
    session = await b.gateway.open_session(b.alice, b.cluster, channel="web")
    screen = Screen()
    shell = TerminalShell(session, screen)
    admin = principal(b.rt, "admin")
    # only admins and those the owner shared with may watch
    with pytest.raises(Denied):
        b.gateway.may_watch(session.id, b.approver)
    with pytest.raises(InvalidInput):
        b.gateway.share(session.id, "nobody", b.alice)
    b.gateway.share(session.id, "bob", b.alice)
    watched = b.gateway.may_watch(session.id, b.approver)
    queue = watched.watch()
    await shell.start()
    await shell.feed(b"help\r")
    seen = b""
    while b"restricted shell" not in seen:
        item = await asyncio.wait_for(queue.get(), 10)
        assert item is not None
        seen += item
    live = b.gateway.live_sessions()
    assert [s.session_id for s in live] == [session.id]
    assert live[0].shared_with == ("bob",)
    with pytest.raises(Denied):
        await b.gateway.terminate(session.id, b.alice)  # not an admin
    await b.gateway.terminate(session.id, admin)
    assert session.terminated.is_set() and session.ended_reason == "terminated"
    # the watcher's stream ends, the session is gone, its directory removed
    while (item := await asyncio.wait_for(queue.get(), 10)) is not None:
        pass
    assert b.gateway.live_sessions() == []
    assert not session.env.root.exists()
    with pytest.raises(Denied):
        await session.run("kubectl get pods", screen)
    assert read_cast is not None
