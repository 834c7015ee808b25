"""Interactive container terminals through the bastion, against the real node (issue 11):
``kubectl exec -it`` after review, keystrokes and output, resize, Ctrl-C, exit status,
termination, the recording and the audit of typed lines, and the attacks on it (typing during
the review, a second exec on one approval, a paste that tries to leave the container shell).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from casemate.bastion.recording import read_cast
from casemate.bastion.review import TicketState
from casemate.gateway.service import BastionSession
from casemate.gateway.terminal import TerminalShell
from casemate.kubeproxy.classify import classify
from casemate.testenv.kube import LocalCluster
from casemate.testenv.node import BUSYBOX_IMAGE, RealNode, real_node_placement
from tests.gateway.conftest import Bastion, principal
from tests.gateway.helpers import (
    Collect,
    assert_nowhere,
    audit_details,
    decided_for,
    wait_for,
)

pytestmark = [pytest.mark.k8s, pytest.mark.node]

PROMPT = b"/ # "


class Screen:
    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, data: bytes) -> None:
        self.data += data

    async def wait_for(self, text: bytes, start: int = 0, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in self.data[start:]:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not shown; screen: {self.data[-1500:]!r}")
            await asyncio.sleep(0.02)


def busybox_pod(b: Bastion, node: RealNode, namespace: str | None = None) -> str:
    """A running busybox pod on the real node in ``namespace`` (default: the granted one)."""
    return make_pod(b.kube, node, namespace or b.ns_a)


def make_pod(kube: LocalCluster, node: RealNode, ns: str) -> str:
    del node  # started by the fixture
    name = f"box-{secrets.token_hex(3)}"
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            **real_node_placement(),
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "box",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }
    resp = kube.http.post(f"/api/v1/namespaces/{ns}/pods", json=pod)
    assert resp.status_code == 201, resp.text
    kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    return name


async def approve_pending(b: Bastion) -> int:
    def pending() -> Any:
        found = b.gateway.reviews.list_tickets(user="alice", states=(TicketState.PENDING,))
        return found[0] if found else None

    ticket = await wait_for(pending, what="a pending ticket")
    await asyncio.to_thread(b.gateway.reviews.approve, ticket.id, b.approver)
    return int(ticket.id)


async def open_exec(
    b: Bastion, pod: str, *, cols: int = 80, rows: int = 24
) -> tuple[BastionSession, TerminalShell, Screen]:
    session = await b.gateway.open_session(
        b.alice, b.cluster, channel="web", term="xterm", width=cols, height=rows
    )
    screen = Screen()
    shell = TerminalShell(session, screen)
    await shell.start()
    await shell.feed(f"kubectl exec -it {pod} -- sh\r".encode())
    await screen.wait_for(b"waiting for approval")
    return session, shell, screen


async def test_exec_it_after_review_types_resizes_interrupts_and_exits(
    bastion: Bastion, real_node: RealNode
) -> None:
    b = bastion
    pod = busybox_pod(b, real_node)
    session, shell, screen = await open_exec(b, pod)
    # typed while the review is pending: reaches nothing, now or later
    await shell.feed(b"echo TYPED$((20+1))AHEAD\r")
    await approve_pending(b)
    await screen.wait_for(PROMPT)
    await shell.feed(b"echo $((6*7))\r")
    await screen.wait_for(b"\r\n42\r\n")
    # the window follows a resize
    mark = len(screen.data)
    session.resize(101, 33)
    await shell.feed(b"stty size\r")
    await screen.wait_for(b"33 101", start=mark)
    # Ctrl-C reaches the container's foreground process
    mark = len(screen.data)
    await shell.feed(b"sleep 30; echo NOT-INTERRUPTED\r")
    await asyncio.sleep(0.5)
    started = asyncio.get_running_loop().time()
    await shell.feed(b"\x03")
    await screen.wait_for(PROMPT, start=mark + 10, timeout=10)
    assert asyncio.get_running_loop().time() - started < 5
    await shell.feed(b"echo back-$((2+3))\r")
    await screen.wait_for(b"back-5", start=mark)
    assert b"\nNOT-INTERRUPTED" not in screen.data[mark:]  # only its echo
    # a secret typed or shown inside the container is masked in the screen, recording, audit
    # (on a terminal wide enough that the shell's echo does not wrap the line: a secret
    # broken by the wrapping is not recognised, as anywhere else)
    session.resize(1000, 33)
    await asyncio.sleep(0.3)
    mark = len(screen.data)
    await shell.feed(f"echo {b.token} | wc -c\r".encode())
    await screen.wait_for(f"{len(b.token) + 1}\r\n".encode(), start=mark)
    assert b"***" in screen.data[mark:]
    # the exit status comes back; the restricted shell prompt returns
    await shell.feed(b"exit 3\r")
    await asyncio.wait_for(shell.wait_idle(), 30)
    await screen.wait_for(b"[exit 3]")
    assert b"TYPED21AHEAD" not in screen.data
    # the restricted shell is usable again and the typed-ahead line was not run there
    await shell.feed(b"kubectl get pods -o name\r")
    await asyncio.wait_for(shell.wait_idle(), 30)
    await screen.wait_for(f"pod/{pod}".encode())
    lines = [d["line"] for d in decided_for(b.rt, session.id)]
    assert not any("TYPED" in line for line in lines), lines
    await session.close()
    # audit: each line typed in the container, with its echo
    typed = [
        d for d in audit_details(b.rt, "bastion.container.input") if d["session_id"] == session.id
    ]
    entered = [d["line"] for d in typed]
    assert "echo $((6*7))" in entered and "stty size" in entered and "exit 3" in entered
    six = next(d for d in typed if d["line"] == "echo $((6*7))")
    assert "echo $((6*7))" in six["echo"] and six["pod"] == pod and six["namespace"] == b.ns_a
    assert not any("TYPED" in line for line in entered)
    finished = [
        d
        for d in audit_details(b.rt, "bastion.command.finished")
        if d["session_id"] == session.id and "exec" in d["line"]
    ]
    assert finished[0]["exit_code"] == 3 and finished[0]["approver"] == "bob"
    # the recording replays it: input and output
    assert b.gateway.recordings is not None
    cast = b.gateway.recordings.open_for_replay(session.id).read()
    shown = "".join(e.data for e in cast.events if e.code == "o")
    keys = "".join(e.data for e in cast.events if e.code == "i")
    assert "42" in shown and "33 101" in shown
    assert "echo $((6*7))" in keys
    assert any(e.code == "r" and e.data == "101x33" for e in cast.events)
    assert read_cast  # the format reader is the one replay uses
    # nothing leaks the system account's token
    assert_nowhere(b.rt, b.token, also=[("the screen", screen.data)])


async def test_terminate_ends_the_container_shell_and_watchers_see_it(
    bastion: Bastion, real_node: RealNode
) -> None:
    b = bastion
    pod = busybox_pod(b, real_node)
    session, shell, screen = await open_exec(b, pod)
    await approve_pending(b)
    await screen.wait_for(PROMPT)
    b.gateway.share(session.id, "bob", b.alice)
    watched = b.gateway.may_watch(session.id, b.approver)
    queue = watched.watch()
    await shell.feed(b"echo WATCH-$((3*3))\r")
    await screen.wait_for(b"WATCH-9")
    seen = b""
    while b"WATCH-9" not in seen:
        item = await asyncio.wait_for(queue.get(), 10)
        assert item is not None
        seen += item
    admin = principal(b.rt, "admin")
    await b.gateway.terminate(session.id, admin)
    assert shell.done.is_set() or session.closed
    while (item := await asyncio.wait_for(queue.get(), 10)) is not None:
        pass  # the watcher's stream ends

    def no_shell() -> bool:
        ps = b.kube.kubectl("exec", "-n", b.ns_a, pod, "--", "ps", check=False).stdout
        return " sh" not in ps

    await wait_for(no_shell, 15, "the container shell to end")
    ended = audit_details(b.rt, "bastion.session.ended")
    assert any(d["session_id"] == session.id and d["terminated_by"] == "admin" for d in ended)


async def test_exec_outside_the_grant_and_without_a_terminal_are_refused(
    bastion: Bastion, real_node: RealNode
) -> None:
    b = bastion
    pod = busybox_pod(b, real_node, namespace=b.ns_b)
    session, shell, screen = (
        await b.gateway.open_session(b.alice, b.cluster, channel="web", term="xterm"),
        None,
        Screen(),
    )
    del shell
    term = TerminalShell(session, screen)
    await term.start()
    await term.feed(f"kubectl exec -it -n {b.ns_b} {pod} -- sh\r".encode())
    await asyncio.wait_for(term.wait_idle(), 30)
    await screen.wait_for(b"refused")
    assert b"waiting for approval" not in screen.data
    await session.close()
    # a non-interactive entry (HTTP POST /exec, casemate exec) refuses -t and says why
    other = await b.gateway.open_session(b.alice, b.cluster, channel="exec")
    out = Collect()
    result = await other.run(f"kubectl exec -it {pod} -- sh", out)
    assert result.exit_code == 126
    assert "needs an interactive terminal" in out.text
    await other.close()


async def test_one_approval_releases_exactly_one_exec(
    bastion: Bastion, real_node: RealNode
) -> None:
    """At the API layer: while the approved exec runs, a second exec connection (or one into
    another pod) is refused, whatever the command line said."""
    b = bastion
    pod = busybox_pod(b, real_node)
    session, shell, screen = await open_exec(b, pod)
    await approve_pending(b)
    await screen.wait_for(PROMPT)
    assert session.releasing
    again = classify("POST", f"/api/v1/namespaces/{b.ns_a}/pods/{pod}/exec?command=sh&stdin=true")
    other = classify("POST", f"/api/v1/namespaces/{b.ns_a}/pods/x{pod}/exec?command=sh")
    assert not session.release_api(again)  # the one release was used by kubectl
    assert not session.release_api(other)
    create = classify("POST", f"/api/v1/namespaces/{b.ns_a}/pods")
    assert not session.release_api(create)  # an exec's release holds nothing else
    # the real effect: a second kubectl exec with the session's own credential, while the
    # approved one runs, is refused by the API proxy
    proc = await asyncio.create_subprocess_exec(
        b.gateway.runner.tools.kubectl,
        "exec",
        pod,
        "--",
        "echo",
        "SECOND-EXEC",
        env=dict(session.env.env),
        cwd=session.env.workspace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and b"SECOND-EXEC" not in out, out
    assert b"reviewed command" in out or b"Forbidden" in out, out
    await shell.feed(b"exit\r")
    await asyncio.wait_for(shell.wait_idle(), 30)
    assert not session.releasing
    await session.close()


async def test_a_paste_cannot_leave_the_container_shell(
    bastion: Bastion, real_node: RealNode
) -> None:
    """Bracketed paste and escape sequences go to the container, and what follows an 'exit'
    in a paste is not run by the restricted shell."""
    b = bastion
    pod = busybox_pod(b, real_node)
    session, shell, screen = await open_exec(b, pod)
    await approve_pending(b)
    await screen.wait_for(PROMPT)
    await shell.feed(b"echo ready\r")
    await screen.wait_for(b"\r\nready\r\n")
    await asyncio.sleep(0.3)
    await shell.feed(b"\x1b[200~echo pasted-$((5*5))\r\x1b[201~")
    # busybox's line editor reads an escape sequence as its cursor report's answer and eats
    # part of the paste: what matters is that the container got it, not the restricted shell
    await screen.wait_for(b"-25")
    await shell.feed(b"exit\r")
    await shell.feed(b"kubectl delete pod " + pod.encode() + b"\r")
    await asyncio.wait_for(shell.wait_idle(), 30)
    await asyncio.sleep(0.3)
    await asyncio.wait_for(shell.wait_idle(), 30)
    lines = [d["line"] for d in decided_for(b.rt, session.id)]
    assert not any("delete" in line for line in lines), lines
    await session.close()
    still = b.kube.kubectl("get", "-n", b.ns_a, f"pod/{pod}", "-o", "name", check=False)
    assert still.returncode == 0


async def test_attach_it_and_debug_it_on_the_real_node(
    bastion: Bastion, real_node: RealNode
) -> None:
    """``kubectl attach -it`` to a pod's terminal and ``kubectl debug -it`` (an ephemeral
    container) run on the pty after their review, like exec."""
    b = bastion
    name = f"tty-{secrets.token_hex(3)}"
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": b.ns_a},
        "spec": {
            **real_node_placement(),
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh"],
                    "stdin": True,
                    "tty": True,
                }
            ],
        },
    }
    resp = b.kube.http.post(f"/api/v1/namespaces/{b.ns_a}/pods", json=pod)
    assert resp.status_code == 201, resp.text
    b.kube.kubectl("wait", "-n", b.ns_a, "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    session = await b.gateway.open_session(b.alice, b.cluster, channel="web", term="xterm")
    screen = Screen()
    shell = TerminalShell(session, screen)
    await shell.start()
    await shell.feed(f"kubectl attach -it {name} -c main\r".encode())
    await screen.wait_for(b"waiting for approval")
    await approve_pending(b)
    await screen.wait_for(b"approved by")
    await asyncio.sleep(1.0)
    mark = len(screen.data)
    await shell.feed(b"echo attached-$((4*4))\r")
    await screen.wait_for(b"attached-16", start=mark)
    await shell.feed(b"exit 0\r")  # the container's own shell ends: so does the attach
    await asyncio.wait_for(shell.wait_idle(), 60)
    assert b"[exit" not in screen.data[mark:]
    await session.close()
    typed = {d["line"] for d in audit_details(b.rt, "bastion.container.input")}
    assert "echo attached-$((4*4))" in typed


async def test_a_secret_typed_slowly_never_reaches_the_live_screen_whole(
    bastion: Bastion, real_node: RealNode
) -> None:
    """The container's shell echoes every key on its own, with more than the early-release
    quiet between them: the live screen may show the first few bytes of the secret (held
    output is released after 3 ms only while fewer than EARLY_FLUSH_MAX bytes are held), the
    rest is held until the secret completes and is masked."""
    b = bastion
    pod = busybox_pod(b, real_node)
    session, shell, screen = await open_exec(b, pod, cols=1000)
    await approve_pending(b)
    await screen.wait_for(PROMPT)
    mark = len(screen.data)
    await shell.feed(b"echo ")
    for char in b.token:
        await shell.feed(char.encode())
        await asyncio.sleep(0.01)
    await shell.feed(b" | wc -c\r")
    await screen.wait_for(f"{len(b.token) + 1}\r\n".encode(), start=mark)
    shown = screen.data[mark:]
    assert b"***" in shown
    assert b.token[:8].encode() not in shown, shown[:300]
    await shell.feed(b"exit\r")
    await asyncio.wait_for(shell.wait_idle(), 30)
    await session.close()
    assert assert_nowhere(b.rt, b.token) > 0
