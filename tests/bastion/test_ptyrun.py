"""The pure parts of interactive container terminals: which commands get a pty, what an
approval releases at the API layer, and the typed-line tracker; plus the pty driver with a
local program (no cluster)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casemate.bastion.kubectl import parse_command
from casemate.bastion.ptyrun import (
    ApiRelease,
    InputLines,
    PtyTerminal,
    api_release,
    run_on_pty,
    tty_requested,
    wants_terminal,
)

WS = PurePosixPath("/ws")


def cmd(line: str):  # type: ignore[no-untyped-def]
    return parse_command(line.split(), workspace=WS)


@pytest.mark.parametrize(
    ("line", "tty", "pty"),
    [
        ("kubectl exec -it p -- sh", True, True),
        ("kubectl exec -i p -- sh", False, True),
        ("kubectl exec p -- ls", False, False),
        ("kubectl attach -it p", True, True),
        ("kubectl run -it --rm x --image=busybox -- sh", True, True),
        ("kubectl debug -it p --image=busybox", True, True),
        ("kubectl get pods", False, False),
        ("kubectl logs p", False, False),
    ],
)
def test_which_commands_get_a_terminal(line: str, tty: bool, pty: bool) -> None:
    c = cmd(line)
    assert tty_requested(c) is tty
    assert wants_terminal(c) is pty


def test_an_approval_releases_only_the_named_connection() -> None:
    assert api_release(cmd("kubectl exec -it p -- sh"), "ns") == ApiRelease(
        (("exec", "ns", "p"),), others=False
    )
    assert api_release(cmd("kubectl exec -it -n other p -c c -- sh"), "ns") == ApiRelease(
        (("exec", "other", "p"),), others=False
    )
    assert api_release(cmd("kubectl attach -it p"), "ns").connects == (("attach", "ns", "p"),)
    assert api_release(cmd("kubectl run -it x --image=b -- sh"), "ns") == ApiRelease(
        (("attach", "ns", "x"),)
    )
    assert api_release(cmd("kubectl delete pod x"), "ns") == ApiRelease()


def test_kubectl_cp_releases_its_exec_connections_into_the_named_pod_only() -> None:
    into = ("exec", "ns", "p")
    # into the pod: the test -d of the destination, then the tar x
    assert api_release(cmd("kubectl cp f.txt p:/tmp/f.txt"), "ns") == ApiRelease(
        (into, into), others=False
    )
    # out of it: the tar c, and one more per retry (at most 10)
    assert api_release(cmd("kubectl cp p:/tmp/f.txt f.txt"), "ns").connects == (into,)
    assert len(api_release(cmd("kubectl cp p:/f f --retries=3"), "ns").connects) == 4
    assert len(api_release(cmd("kubectl cp p:/f f --retries=99"), "ns").connects) == 11
    assert api_release(cmd("kubectl cp -n o p:/f f"), "ns").connects == (("exec", "o", "p"),)


def lines_of(tracker: InputLines, keys: bytes, shown: bytes) -> list[tuple[str, str]]:
    tracker.feed(keys)
    return tracker.output(shown)


def test_typed_lines_with_editing_and_their_echo() -> None:
    t = InputLines()
    t.output(b"/ # \x1b[6n\r/ # \x1b[J")
    assert lines_of(t, b"echo $((6*7))\r", b"echo $((6*7))\r\n42\r\n/ # ") == [
        ("echo $((6*7))", "/ # echo $((6*7))")
    ]
    # Backspace, Ctrl-U, Ctrl-W, cursor keys, a bracketed paste of two lines
    got = lines_of(
        t,
        b"lx\x7fs\x15rm -rf /tmp/a\x17b\r\x1b[200~id\rpwd\r\x1b[201~",
        b"rm -rf b\r\n/ # id\r\nuid=0\r\n/ # pwd\r\n/\r\n/ # ",
    )
    assert got == [("rm -rf b", "/ # rm -rf b"), ("id", "/ # id"), ("pwd", "/ # pwd")]
    # Enter on an empty line: nothing; a line recalled with Up: its echo
    assert lines_of(t, b"\r", b"\r\n/ # ") == []
    assert lines_of(t, b"\x1b[A\r", b"rm -rf b\r\n") == [("", "/ # rm -rf b")]
    # not echoed (a password prompt): reported with an empty echo at the end
    t.feed(b"hunter2\r")
    assert t.close() == [("hunter2", "")]


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_the_tracker_takes_any_bytes(keys: bytes, shown: bytes) -> None:
    t = InputLines()
    t.feed(keys)
    for line, echo in t.output(shown) + t.close():
        assert "\x1b" not in line and "\n" not in line and "\r" not in line
        assert len(echo) <= 400


async def test_the_pty_driver_moves_bytes_resizes_and_returns_the_status(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sh = shutil.which("sh")
    assert sh is not None
    term = PtyTerminal(80, 24)
    assert not term.feed(b"too early\r")  # nothing runs: nothing written
    shown = bytearray()

    async def sink(data: bytes) -> None:
        shown.extend(data)

    script = "read a; echo got-$a; stty size; read b; stty size; exit 4"
    task = asyncio.ensure_future(
        run_on_pty(
            [sh, "-c", script], cwd=tmp_path, environ=dict(os.environ), terminal=term, sink=sink
        )
    )
    while not term.attached:
        await asyncio.sleep(0.01)
    term.feed(b"hello\r")
    while b"24 80" not in shown:
        await asyncio.sleep(0.01)
    term.resize(100, 30)
    term.feed(b"x\r")
    assert await asyncio.wait_for(task, 10) == 4
    assert b"got-hello" in shown and b"30 100" in shown
    assert not term.attached
    assert sys.platform.startswith("linux")
