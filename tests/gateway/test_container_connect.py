"""``kubectl exec -it`` into a busybox pod on the real node through ``casemate connect`` (the
real CLI on a pseudo-terminal, raw mode, against a server in this process): review first,
then typed input, resize, Ctrl-C and the exit status, and the typed lines in the audit."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from casemate.bastion.review import TicketState
from casemate.testenv.node import RealNode
from tests.cli.test_remote import Pty, Remote, client_env, remote
from tests.gateway.conftest import bastion_namespaces, principal
from tests.gateway.helpers import assert_nowhere, audit_details
from tests.gateway.test_container_terminal import make_pod

__all__ = ["bastion_namespaces", "remote"]  # the module-scoped fixtures used here

pytestmark = [pytest.mark.k8s, pytest.mark.node]


def test_exec_it_through_casemate_connect(
    remote: Remote, real_node: RealNode, tmp_path: Path
) -> None:
    pod = make_pod(remote.kube, real_node, remote.ns_a)
    tty = Pty("connect", "test", env=client_env(tmp_path, remote.url, remote.alice))
    try:
        prompt = f"alice@test:{remote.ns_a}$ ".encode()
        tty.read_until(prompt)
        tty.write(f"kubectl exec -it {pod} -- sh\r".encode())
        tty.read_until(b"waiting for approval")
        deadline = time.monotonic() + 30
        while not (
            found := remote.gateway.reviews.list_tickets(
                user="alice", states=(TicketState.PENDING,)
            )
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        remote.gateway.reviews.approve(found[0].id, principal(remote.rt, "admin"))
        tty.read_until(b"/ # ", after=b"approved by")
        tty.write(b"echo $((6*7))\r")
        tty.read_until(b"\r\n42\r\n", after=b"approved by")
        tty.resize(123, 41)
        tty.proc.send_signal(signal.SIGWINCH)
        time.sleep(0.3)
        tty.write(b"stty size\r")
        tty.read_until(b"41 123", after=b"approved by")
        tty.write(b"sleep 30; echo DONE-SLEEPING\r")
        time.sleep(0.5)
        tty.write(b"\x03")
        tty.write(b"echo after-$((1+1))\r")
        tty.read_until(b"after-2", after=b"approved by")
        tty.write(b"exit 9\r")
        tty.read_until(b"[exit 9]", after=b"approved by")
        tty.write(b"exit\r")
    except BaseException:
        tty.proc.kill()
        tty.finish()
        raise
    assert tty.finish() == 0, tty.text()
    assert b"\nDONE-SLEEPING" not in tty.screen
    typed = {d["line"] for d in audit_details(remote.rt, "bastion.container.input")}
    assert {"echo $((6*7))", "stty size", "exit 9"} <= typed
    token_of = remote.gateway.clusters.account_credential
    access = remote.gateway.clusters.resolve_access(principal(remote.rt, "alice"), "test")
    assert_nowhere(remote.rt, token_of(access).token, also=[("the terminal", tty.screen)])
