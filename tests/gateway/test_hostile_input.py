"""Hostile input at every entry of the bastion, against the real cluster (RBAC on).

Every line below either is refused with a reason, or parses to exactly what it says; none
runs anything the policy forbids. The forbidden command hidden in them is always ``kubectl
delete namespace <A>``: after each battery namespace A still exists, and each refused line left a
``bastion.command.decided`` record with decision ``reject`` (written before anything could
run) and nothing else. Entries: :meth:`BastionSession.run` (what every channel calls), the
interactive shell over raw terminal bytes (:class:`TerminalShell`), and the HTTP API (exec
NDJSON and the terminal websocket) with malformed bodies answered 4xx, never 500.

Crash safety: a command's decision is audited before it runs, and its recording survives the
gateway dying under it (in-process: the proxy torn down and the command cancelled; for real:
the gateway process killed with SIGKILL, then :meth:`RecordingStore.recover`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from fastapi.testclient import TestClient

from casemate.bastion.kubectl import CommandRefused, parse_command
from casemate.bastion.recording import RecordingStore, read_cast
from casemate.bastion.runner import EXIT_REFUSED
from casemate.gateway.terminal import TerminalShell
from casemate.server.app import create_app
from tests.gateway.conftest import PASSWORD, Bastion
from tests.gateway.helpers import (
    Collect,
    audit_rows,
    decided_for,
    in_thread,
    login,
    processes_in,
    served_gateway,
    type_line,
    wait_for,
    ws_until,
)

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]


def hostile_lines(ns: str) -> list[tuple[str, str]]:
    """(what, line): lines that must be refused whole."""
    kill = f"kubectl delete namespace {ns}"
    return [
        ("unbalanced single quote", f"kubectl get configmaps 'x {kill}"),
        ("unbalanced double quote", f'kubectl get configmaps "x {kill}'),
        ("trailing backslash", f"{kill} \\"),
        (
            "here-document",
            f"kubectl apply -f - <<EOF\napiVersion: v1\nkind: Namespace\nEOF\n{kill}",
        ),
        ("here-string", "kubectl apply -f - <<< 'apiVersion: v1'"),
        ("input redirection", "kubectl apply -f - < /etc/passwd"),
        ("command substitution", f"kubectl get configmaps $({kill})"),
        ("backticks", f"kubectl get configmaps `{kill}`"),
        ("variable expansion", "kubectl get configmaps $HOME"),
        ("list with ;", f"kubectl get configmaps; {kill}"),
        ("list with &&", f"kubectl get configmaps && {kill}"),
        ("list with ||", f"kubectl get configmaps || {kill}"),
        ("background job", f"{kill} &"),
        ("output redirection", "kubectl get configmaps > /etc/casemate-x"),
        ("append redirection out of the workspace", "kubectl get configmaps >> ../x"),
        ("redirection onto the session's kubeconfig", "kubectl get configmaps > ../kubeconfig"),
        ("redirection onto the workspace itself", "kubectl get configmaps > ."),
        ("redirection followed by a pipe", "kubectl get configmaps > x | sh"),
        ("two redirections", "kubectl get configmaps > x > /etc/casemate-x"),
        ("redirection glued to a word", "kubectl get configmaps>/etc/casemate-x"),
        ("clobbering redirection", "kubectl get configmaps >| x"),
        ("stderr redirection", "kubectl get configmaps 2>&1"),
        ("subshell", f"({kill})"),
        ("group", f"{{ {kill}; }}"),
        ("pipe into a shell", "kubectl get configmaps -o name | sh"),
        ("pipe into xargs", "kubectl get namespaces -o name | xargs kubectl delete"),
        ("assignment", f"KUBECONFIG=/etc/kubernetes/admin.conf {kill}"),
        ("program as a path", f"/usr/bin/{kill}"),
        ("comment", "kubectl get configmaps # and more"),
        ("NUL byte", f"kubectl get configmaps\x00; {kill}"),
        ("NUL inside a word", f"kubectl get config\x00maps {kill}"),
        ("ANSI escape", f"kubectl get configmaps\x1b[2K\r{kill}"),
        ("ANSI colour inside the verb", f"kubectl \x1b[31mdelete\x1b[0m namespace {ns}"),
        ("carriage return", f"kubectl get configmaps\r{kill}"),
        ("line feed", f"kubectl get configmaps\n{kill}"),
        ("bell and backspace", f"kubectl get configmaps\x07\x08\x08{kill}"),
        ("DEL", f"kubectl get configmaps\x7f {kill}"),
        ("C1 CSI", f"kubectl get configmaps\x9b2K {kill}"),
        ("C1 NEL", f"kubectl get configmaps\x85{kill}"),
        ("line separator", f"kubectl get configmaps\u2028{kill}"),
        ("zero-width space", f"kubectl delete namespace\u200b {ns}"),
        ("right-to-left override", f"kubectl get configmaps \u202e{kill}"),
        ("no-break space", f"kubectl\u00a0delete namespace {ns}"),
        ("100 KB line", f"{kill} " + "a" * 100_000),
        ("Cyrillic e in kubectl", f"kub\u0435ctl delete namespace {ns}"),
        ("fullwidth kubectl", f"\uff4b\uff55\uff42\uff45\uff43\uff54\uff4c delete namespace {ns}"),
        ("fullwidth verb", f"kubectl \uff44\uff45\uff4c\uff45\uff54\uff45 namespace {ns}"),
        ("Cyrillic a in the kind", f"kubectl delete n\u0430mespace {ns}"),
        (
            "fullwidth kind",
            f"kubectl delete \uff4e\uff41\uff4d\uff45\uff53\uff50\uff41\uff43\uff45 {ns}",
        ),
        ("dotless-I kind (Go lowercases it)", "kubectl delete customresourcedef\u0130nitions x"),
        (
            "Kelvin sign kind (Go lowercases it)",
            "kubectl delete validatingwebhoo\u212aconfigurations x",
        ),
        ("unknown plugin", f"kubectl krew install x; {kill}"),
        ("kubeconfig flag", "kubectl --kubeconfig=/etc/kubernetes/admin.conf get configmaps"),
        ("server flag", "kubectl --server=https://127.0.0.1:6443 get configmaps"),
        ("impersonation flag", "kubectl --as=system:admin get configmaps"),
        ("jq reading the environment", "kubectl get configmaps -o json | jq -r env"),
        ("the namespace delete itself", kill),
        ("the namespace delete split across lines", f"kubectl delete \\\n namespace {ns}"),
        ("the namespace delete with quotes", f'kube""ctl "delete" names\'pace\' {ns}'),
        ("the namespace delete by type/name", f"kubectl delete namespace/{ns}"),
        # issue 9: the ways around the first layer that the second one also closes
        ("the namespace delete after --", f"kubectl delete -- namespace {ns}"),
        ("the namespace delete as a raw DELETE", f"kubectl delete --raw /api/v1/namespaces/{ns}"),
        ("the namespace delete with --dry-run=none", f"{kill} --dry-run=none"),
        ("the namespace delete that would print the session path", f"{kill} -v=6"),
        ("verbosity 6 prints the session directory", "kubectl get configmaps -v=6"),
        ("verbosity 6 as a short flag", "kubectl -v6 get configmaps"),
        (
            "create --raw sends a chunked body (411)",
            f"kubectl create --raw /api/v1/namespaces/{ns}/configmaps -f cm.json",
        ),
        (
            "replace --raw sends a chunked body (411)",
            f"kubectl replace --raw /api/v1/namespaces/{ns}/configmaps/x -f cm.json",
        ),
        (
            "the preview's kubeconfig as a flag",
            "kubectl --kubeconfig=../preview/kubeconfig get configmaps",
        ),
        (
            "the preview's kubeconfig from the environment",
            f"KUBECONFIG=../preview/kubeconfig {kill}",
        ),
        (
            "a redirection onto the preview's kubeconfig",
            "kubectl get configmaps > ../preview/kubeconfig",
        ),
    ]


def refused_everywhere(b: Bastion, session_id: str, results: dict[str, Any]) -> None:
    """Each case: refused (126, decision reject), audited as a rejection, never finished."""
    decided = {d["command_id"]: d for d in decided_for(b.rt, session_id)}
    finished = {
        row["details"]["command_id"]
        for row in audit_rows(b.rt, "bastion.command.finished")
        if row["details"]["session_id"] == session_id
    }
    problems = []
    for what, (result, out) in results.items():
        record = decided.get(result.command_id)
        if result.exit_code != EXIT_REFUSED or result.decision != "reject":
            problems.append(f"{what}: exit {result.exit_code}, {result.decision}: {out[:300]}")
        elif "refused" not in out:
            problems.append(f"{what}: no refusal shown: {out[:300]}")
        elif record is None or record["decision"] != "reject":
            problems.append(f"{what}: audit record {record}")
        elif result.command_id in finished:
            problems.append(f"{what}: it ran")
    assert not problems, "\n".join(problems)


def namespace_alive(b: Bastion) -> None:
    phase = b.kube.kubectl("get", "namespace", b.ns_a, "-o", "jsonpath={.status.phase}")
    assert phase.stdout == "Active", phase


# BastionSession.run -------------------------------------------------------------------------


async def test_hostile_lines_are_refused_by_the_session(bastion: Bastion) -> None:
    b = bastion
    session = await b.gateway.open_session(b.alice, b.cluster)
    results: dict[str, Any] = {}
    try:
        for what, line in hostile_lines(b.ns_a):
            sink = Collect()
            results[what] = (await session.run(line, sink), sink.text)
        # and the correct parses: what bash would run, decided as such
        code, out = await run(session, "kubectl get configmaps \\\n -o name")
        assert code == 0, out
        code, out = await run(session, 'kube""ctl\tget\t"config"maps -o name | grep -c .')
        assert code == 0 and out.strip().isdigit(), out
        assert not any(session.env.workspace.iterdir()), "a redirection created a file"
    finally:
        await session.close()
    refused_everywhere(b, session.id, results)
    split = results["the namespace delete split across lines"][0]
    record = next(d for d in decided_for(b.rt, session.id) if d["command_id"] == split.command_id)
    assert record["argv"] == [["kubectl", "delete", "namespace", b.ns_a]]
    assert record["rule_id"] == "k8s.delete-namespace"
    assert not Path("/etc/casemate-x").exists()
    namespace_alive(b)


async def test_secret_data_is_not_printed_by_verbs_other_than_get(bastion: Bastion) -> None:
    """``k8s.secret-data`` refuses ``kubectl get secret -o yaml``; every other verb that prints
    the object it changed (or would change, with a server-side dry run), and ``kubectl wait``,
    prints the same data and must be refused (or print no data) just the same."""
    b = bastion
    value = "s3cr3t-" + secrets.token_hex(8)
    name = f"other-{secrets.token_hex(2)}"
    b.kube.kubectl("-n", b.ns_a, "create", "secret", "generic", name, f"--from-literal=p={value}")
    forms = [value, base64.b64encode(value.encode()).decode().rstrip("=")]
    merge = """'{"metadata":{"labels":{"seen":"yes"}}}'"""
    lines = [
        f"kubectl get secret {name} -o yaml",
        f"kubectl label secret {name} seen=yes --dry-run=server -o yaml",
        f"kubectl annotate secret {name} seen=yes --dry-run=server -o json",
        f"kubectl patch secret {name} --type=merge -p {merge} --dry-run=server -o yaml",
        f"kubectl wait --for=create secret/{name} -o yaml",
        f"kubectl label secret {name} seen=yes -o 'jsonpath={{.data.p}}'",
        # issue 9: reads the command layer lets through are refused at the API layer
        f"kubectl describe secret {name}",
        f"kubectl get secret {name}",
        "kubectl get secrets -o custom-columns=NAME:.metadata.name",
        f"kubectl get --raw /api/v1/namespaces/{b.ns_a}/secrets/{name}",
        f"kubectl get secrets --field-selector metadata.name={name} -o name",
        f"kubectl events --for secret/{name}",
        f"kubectl create secret generic copy-{name} --from-literal=a=b --dry-run=server",
    ]
    session = await b.gateway.open_session(b.alice, b.cluster)
    shown = []
    try:
        for line in lines:
            code, out = await run(session, line)
            if any(form in out for form in forms):
                shown.append(f"{line}  (exit {code}):\n{out[:400]}")
    finally:
        await session.close()
    assert not shown, "secret data printed:\n" + "\n".join(shown)


# The terminal -------------------------------------------------------------------------------


def terminal_inputs(ns: str) -> list[tuple[str, bytes]]:
    kill = f"kubectl delete namespace {ns}".encode()
    typed = [(what, line.encode("utf-8") + b"\r") for what, line in hostile_lines(ns)]
    return typed + [
        ("raw NUL bytes", b"kubectl get configmaps\x00\x00; " + kill + b"\r"),
        ("invalid UTF-8", b"kubectl \xff\xfe" + kill + b"\r"),
        ("8-bit C1 CSI", b"kubectl get configmaps \x9b2K" + kill + b"\r"),
        ("UTF-8 C1 CSI", b"kubectl get configmaps \xc2\x9b2K" + kill + b"\r"),
        ("OSC window title", b"\x1b]0;" + kill + b"\x07\r"),
        ("DCS string", b"\x1bP" + kill + b"\x1b\\\r"),
        ("unterminated OSC", b"\x1b]0;" + kill + b"\r"),
        ("cursor keys", kill + b"\x1b[D\x1b[D\x1b[C\x1b[3~\x1bOH\r"),
        (
            "paste of two lines",
            b"\x1b[200~kubectl get configmaps -o name\n" + kill + b"\n\x1b[201~",
        ),
        ("paste after an empty line", b"\x1b[200~\n" + kill + b"\n\x1b[201~"),
        ("paste without a final newline", b"\x1b[200~kubectl version\n" + kill + b"\x1b[201~"),
        ("help then the delete", b"help\r" + kill + b"\r"),
        ("CRLF and LF", b"kubectl get configmaps -o name\r\n" + kill + b"\n"),
        ("split with backslash-newline", b"kubectl delete \\\r namespace " + ns.encode() + b"\r"),
        ("100 KB typed", b"kubectl get configmaps " + b"a" * 100_000 + b"\r"),
        ("Ctrl-C then the delete", kill + b"\x03" + b"\r"),
        ("Ctrl-U kills the line", kill + b"\x15kubectl get configmaps -o name\r"),
    ]


async def test_hostile_keystrokes_never_get_past_the_terminal(bastion: Bastion) -> None:
    b = bastion
    session = await b.gateway.open_session(
        b.alice, b.cluster, channel="terminal", term="xterm-256color"
    )
    screen = Collect()
    shell = TerminalShell(session, screen)
    problems = []
    try:
        await shell.start()
        for what, data in terminal_inputs(b.ns_a):
            before = len(decided_for(b.rt, session.id))
            shown = await type_line(shell, screen, data)
            await type_line(shell, screen, b"\x03")  # Ctrl-C: whatever is left on the line goes
            problems += [
                f"{what}: {record['decision']} {record['argv']}"
                for record in decided_for(b.rt, session.id)[before:]
                if record["decision"] != "reject" and deletes(record["argv"])
            ]
            if "Traceback" in shown or "internal error" in shown:
                problems.append(f"{what}: {shown[-300:]}")
            assert not shell.done.is_set(), f"{what} ended the shell"
        shown = await type_line(shell, screen, b"kubectl get namespace -o name\r")
        assert "Forbidden" in shown or "namespace/" in shown, shown  # the shell still works
        shown = await type_line(shell, screen, b"kubectl get configmaps -o name\r")
        assert "[exit" not in shown, shown
    finally:
        await session.close()
    assert not problems, "\n".join(problems)
    namespace_alive(b)
    store = b.gateway.recordings
    assert store is not None
    cast = store.open_for_replay(session.id).read()  # closed, hash checked, parses
    typed = "".join(e.data for e in cast.events if e.code == "i")
    assert "\x00" in typed and "\x1b]0;" in typed  # what was typed, as typed
    rejected = [d for d in decided_for(b.rt, session.id) if d["decision"] == "reject"]
    assert len(rejected) >= len(hostile_lines(b.ns_a)) // 2


# HTTP: exec and the terminal websocket ------------------------------------------------------


def http_battery(client: TestClient, ns: str) -> dict[str, Any]:
    """Runs in a thread (the TestClient has its own event loop): what each request got."""
    got: dict[str, Any] = {}
    exec_url = "/api/v1/clusters/test/exec"
    r = client.post(exec_url, json={"line": "kubectl get configmaps"})
    got["no credentials"] = (r.status_code, r.text)
    auth = login(client, "alice", PASSWORD)

    def post(body: Any = None, *, raw: bytes | None = None, **headers: str) -> Any:
        hdrs = {**auth, "Content-Type": "application/json", **headers}
        content = raw if raw is not None else json.dumps(body).encode()
        return client.post(exec_url, content=content, headers=hdrs)

    bad: dict[str, Any] = {
        "malformed JSON": post(raw=b'{"line": "kubectl get pods"'),
        "not JSON at all": post(raw=b"kubectl delete namespace " + ns.encode()),
        "JSON of the wrong shape": post(["kubectl", "get", "pods"]),
        "deeply nested JSON": post(raw=b"[" * 50_000 + b"]" * 50_000),
        "invalid UTF-8": post(raw=b'{"line": "kubectl \xff\xfe get pods"}'),
        "both line and argv": post({"line": "kubectl get pods", "argv": ["kubectl"]}),
        "neither line nor argv": post({}),
        "empty argv": post({"argv": []}),
        "argv with a number": post({"argv": ["kubectl", 1]}),
        "argv with null": post({"argv": ["kubectl", None]}),
        "argv with a list": post({"argv": ["kubectl", ["get"]]}),
        "argv as a string": post({"argv": "kubectl get pods"}),
        "line as a number": post({"line": 5}),
        "line null": post({"line": None}),
        "unknown field": post({"line": "kubectl get pods", "shell": True}),
        "line over 8 KiB": post({"line": "kubectl get configmaps " + "a" * 10_000}),
        "argv joining over 8 KiB": post({"argv": ["kubectl", "get", *["a" * 100] * 100]}),
        "argv of 1001 words": post({"argv": ["kubectl"] * 1001}),
        "body over the limit": post({"line": "kubectl get pods", "pad": "x" * (2 << 20)}),
        "namespace outside the grant": post(
            {"line": "kubectl get pods", "namespace": "kube-system"}
        ),
        "namespace with a NUL": post({"line": "kubectl get pods", "namespace": "a\x00b"}),
        "text/plain body": post(
            raw=b'{"line": "kubectl get pods"}', **{"Content-Type": "text/plain"}
        ),
    }
    r = client.post(
        "/api/v1/clusters/no-such-cluster/exec", json={"line": "kubectl get pods"}, headers=auth
    )
    bad["unknown cluster"] = r
    got["bad"] = {
        k: (v.status_code, v.headers.get("content-type", ""), v.text[:300]) for k, v in bad.items()
    }

    def stream(body: Any) -> list[dict[str, Any]]:
        r = post(body)
        assert r.status_code == 200, (body, r.status_code, r.text[:300])
        return [json.loads(line) for line in r.text.splitlines() if line]

    kill = ["kubectl", "delete", "namespace", ns]
    hostile: dict[str, list[dict[str, Any]]] = {}
    for what, line in hostile_lines(ns):
        if len(line.encode()) <= 8192:
            hostile[f"line: {what}"] = stream({"line": line})
    for what, argv in {
        "the delete as argv": kill,
        "a list hidden in a word": ["kubectl", "get", "configmaps;", *kill],
        "a substitution in a word": ["kubectl", "get", f"$({' '.join(kill)})"],
        "a newline in a word": ["kubectl", "get", "configmaps\n" + " ".join(kill)],
        "a NUL in a word": ["kubectl", "get", "configmaps\x00"],
        "an escape in a word": ["kubectl", "get", "configmaps\x1b[2K"],
        "look-alike program": ["kub\u0435ctl", *kill[1:]],
        "a shell as the program": ["sh", "-c", " ".join(kill)],
        "the program with a space": ["kubectl delete", "namespace", ns],
        "an empty word": ["kubectl", "", "delete", "namespace", ns],
        "a flag changing the target": ["kubectl", "--server=https://127.0.0.1:1", "get", "pods"],
    }.items():
        hostile[f"argv: {what}"] = stream({"argv": argv})
    got["hostile"] = hostile
    got["fine"] = stream({"argv": ["kubectl", "get", "configmaps", "-o", "name"]})
    got["websocket"] = websocket_battery(client, auth, ns)
    return got


def websocket_battery(client: TestClient, auth: dict[str, str], ns: str) -> list[str]:
    """The terminal over the websocket: junk messages are ignored, hostile input refused."""
    screens: list[str] = []
    with client.websocket_connect("/api/v1/clusters/test/terminal", headers=auth) as ws:
        # the shell is idle again when it has drawn an empty prompt line (input sent while a
        # command runs is dropped, so wait for that before typing on)
        idle = f"\ralice@test:{ns}$ \x1b[K"
        ws_until(ws, idle)
        for junk in ("not json", "[]", "null", '"input"', json.dumps({"type": "input", "data": 5})):
            ws.send_text(junk)
        ws.send_text(json.dumps({"type": "resize", "cols": "wide", "rows": -3}))
        ws.send_text(json.dumps({"type": "input", "data": "x" * (70 * 1024)}))  # over the limit
        ws.send_text(json.dumps({"type": "bogus"}))
        for data in (
            f"kubectl delete namespace {ns}\r",
            f"kubectl get configmaps\x00; kubectl delete namespace {ns}\r",
            f"kub\u0435ctl delete namespace {ns}\r",
            f"\x1b[200~kubectl get configmaps -o name\nkubectl delete namespace {ns}\n\x1b[201~",
        ):
            ws.send_text(json.dumps({"type": "input", "data": data}))
            screens.append(ws_until(ws, idle))
        ws.send_text(json.dumps({"type": "input", "data": "exit\r"}))
        with contextlib.suppress(Exception):
            while True:
                msg = ws.receive_json()
                if msg.get("type") == "exit":
                    screens.append(f"exit: {msg.get('reason')}")
                    break
    return screens


async def test_http_entry_points_refuse_bad_and_hostile_input(bastion: Bastion) -> None:
    b = bastion
    app = create_app(b.rt, served_gateway(b.rt, b.clusters))

    def drive() -> dict[str, Any]:
        with TestClient(app, raise_server_exceptions=False) as client:
            return http_battery(client, b.ns_a)

    got = await asyncio.wait_for(in_thread(drive), 600)
    assert got["no credentials"][0] == 401, got["no credentials"]
    problems = []
    for what, (status, ctype, text) in got["bad"].items():
        if not 400 <= status < 500 or not ctype.startswith("application/problem+json"):
            problems.append(f"{what}: {status} {ctype} {text}")
    for what, events in got["hostile"].items():
        end = events[-1]
        if end.get("type") != "exit" or end.get("code") != EXIT_REFUSED:
            problems.append(f"{what}: {events[-3:]}")
        elif end.get("decision") != "reject":
            problems.append(f"{what}: decision {end.get('decision')}")
    assert not problems, "\n".join(problems)
    assert got["bad"]["body over the limit"][0] == 413
    assert got["fine"][-1]["code"] == 0, got["fine"]
    screens = got["websocket"]
    assert all("refused" in s for s in screens[:3]), screens
    assert screens[-1] == "exit: exit", screens
    namespace_alive(b)
    # every hostile exec was audited as a rejection before anything ran
    rejected = [
        row
        for row in audit_rows(b.rt, "bastion.command.decided")
        if row["details"]["decision"] == "reject"
    ]
    assert len(rejected) >= len(got["hostile"])


# Crash safety -------------------------------------------------------------------------------


async def test_a_command_cut_off_by_a_dying_gateway_leaves_its_records(bastion: Bastion) -> None:
    """In-process crash: the API proxy is torn down under a running watch and the command is
    cancelled. The decision was audited before it ran, the end is audited as interrupted, no
    kubectl is left behind, and the recording reads back."""
    b = bastion
    name = f"crash-{secrets.token_hex(2)}"
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", name)
    session = await b.gateway.open_session(b.alice, b.cluster)
    out = Collect()
    task = asyncio.ensure_future(session.run("kubectl get configmaps -w", out))
    try:
        await wait_for(lambda: name.encode() in out.data, 30, "the watch to list")
        decided = decided_for(b.rt, session.id)
        assert [d["decision"] for d in decided] == ["accept"]  # committed before it ran
        assert decided[0]["argv"] == [["kubectl", "get", "configmaps", "-w"]]
        # the command is cancelled first: with the proxy closed first, kubectl may see its
        # watch cut and exit by itself before the cancel, and the command then ends as 'ran'
        assert session.interrupt()
        await b.gateway.proxy.close()  # connections cut, listener gone
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        await wait_for(lambda: not processes_in(session.env.workspace), 10, "kubectl to end")
        store = b.gateway.recordings
        assert store is not None
        live = store.path_of(store.get(session.id))
        cast = read_cast(live.read_bytes())  # readable while still being written
        assert any(name in e.data for e in cast.events if e.code == "o")
        assert any("kubectl get configmaps -w" in e.data for e in cast.events if e.code == "m")
    finally:
        if not task.done():
            task.cancel()
        await session.close()
    finished = [
        row
        for row in audit_rows(b.rt, "bastion.command.finished")
        if row["details"]["session_id"] == session.id
    ]
    assert [row["outcome"] for row in finished] == ["interrupted"]
    seqs = {
        row["kind"]: row["seq"]
        for row in audit_rows(b.rt)
        if row["details"].get("session_id") == session.id
    }
    assert seqs["bastion.command.decided"] < seqs["bastion.command.finished"]
    assert b.gateway.recordings is not None
    b.gateway.recordings.open_for_replay(session.id).read()  # closed and its hash matches
    assert b.rt.audit.verify().ok


CHILD = """
import asyncio, json, sys
from pathlib import Path, PurePosixPath
from casemate.bastion.runner import Tools
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.gateway.service import Gateway
from casemate.k8s.clusters import Clusters
from casemate.testenv.kube import find_binaries
from tests.gateway.conftest import PASSWORD, principal

async def main(data_dir):
    settings = load_settings(
        data_dir=Path(data_dir), admin_password=PASSWORD, kubeproxy_listen="127.0.0.1:0",
        sqlite_synchronous="NORMAL",
    )
    rt = open_runtime(settings, create=False)
    bins = find_binaries()
    clusters = Clusters(rt.db, rt.vault, rt.audit)
    gateway = Gateway(rt, tools=Tools.find(bins.kubectl, bins.helm), clusters=clusters)
    await gateway.start()
    session = await gateway.open_session(principal(rt, "alice"), "test")
    print(json.dumps({"session": session.id, "root": str(session.env.root),
                      "workspace": str(session.env.workspace)}), flush=True)

    async def write(data):
        print(json.dumps({"output": data.decode("utf-8", "replace")}), flush=True)

    await session.run("kubectl get configmaps -w", write)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_killed_gateway_loses_no_records_and_its_recording_is_recovered(
    bastion: Bastion,
) -> None:
    """A real crash: a gateway process (same data directory) is killed with SIGKILL while a
    session's watch runs. What it audited is there and the chain verifies; the recording is
    recovered as ``interrupted`` and reads back; the next gateway removes the dead session's
    directory (its kubeconfig held the dead session's token)."""
    b = bastion
    name = f"killed-{secrets.token_hex(2)}"
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", name)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(b.rt.settings.data_dir),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    info: dict[str, str] = {}
    workspace: Path | None = None
    try:
        assert child.stdout is not None
        seen = ""
        while name not in seen:
            raw = await asyncio.wait_for(child.stdout.readline(), 60)
            if not raw:
                assert child.stderr is not None
                raise AssertionError((await child.stderr.read()).decode()[-3000:])
            msg = json.loads(raw)
            if "session" in msg:
                info = msg
                workspace = Path(msg["workspace"])
            seen += msg.get("output", "")
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        # kubectl runs in a process group of its own: it outlives the killed gateway
        for pid in processes_in(workspace) if workspace is not None else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    sid = info["session"]
    assert child.returncode == -signal.SIGKILL
    rows = [r for r in audit_rows(b.rt) if r["details"].get("session_id") == sid]
    kinds = [r["kind"] for r in rows]
    assert "bastion.session.started" in kinds
    decided = [r["details"] for r in rows if r["kind"] == "bastion.command.decided"]
    assert [d["decision"] for d in decided] == ["accept"]
    assert decided[0]["line"] == "kubectl get configmaps -w"
    watched = [
        r["details"]
        for r in rows
        if r["kind"] == "kubeproxy.request" and r["details"]["resource"] == "configmaps"
    ]
    assert watched, f"the watch the user saw answered is not audited: {kinds}"
    assert b.rt.audit.verify().ok
    store = RecordingStore.from_runtime(b.rt)
    recovered = {r.session_id: r for r in store.recover()}
    assert recovered[sid].status == "interrupted"
    cast = store.open_for_replay(sid).read()
    assert any(name in e.data for e in cast.events if e.code == "o")
    assert any("kubectl get configmaps -w" in e.data for e in cast.events if e.code == "m")
    assert Path(info["root"]).exists()  # the dead gateway could not clean up
    successor = served_gateway(b.rt, b.clusters)
    await successor.start()
    await successor.close()
    assert not Path(info["root"]).exists()


# Internals ----------------------------------------------------------------------------------


def deletes(argv: list[list[str]]) -> bool:
    """Whether a decided command (its parsed stages) is a kubectl delete."""
    if not argv or argv[0][:1] != ["kubectl"]:
        return False
    try:
        command = parse_command(tuple(argv[0]), workspace=PurePosixPath("/workspace"))
    except CommandRefused:
        return False
    return command.verb == "delete"


async def run(session: Any, line: str) -> tuple[int, str]:
    out = Collect()
    result = await session.run(line, out)
    return result.exit_code, out.text
