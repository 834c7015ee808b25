"""The web UI's asset tree against the real node (issue 11): GET /assets lists only what the
person's grant covers, and in headless Chromium a container shell opened from the tree runs
through review; the typed line is in the audit and the output in the replay. "Logs" shows the
pod's log; "Download a file" copies a file into the workspace after review, which the terminal
page's Files panel and ``casemate session files/download`` then hand out."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from casemate.server.app import create_app
from casemate.testenv.kube import LocalCluster
from casemate.testenv.node import BUSYBOX_IMAGE, RealNode, real_node_placement
from tests.gateway.conftest import PASSWORD, Bastion
from tests.gateway.helpers import in_thread, served_gateway
from tests.gateway.test_container_entries import approve_sync
from tests.gateway.test_container_terminal import busybox_pod, make_pod
from tests.server.test_web import Cdp, chromium, serve

pytestmark = [pytest.mark.k8s, pytest.mark.node]

SCREEN = "[...document.querySelectorAll('.term .xterm-rows > div')].map(r => r.textContent)"


def talking_pod(kube: LocalCluster, ns: str, line: str) -> str:
    """A running busybox pod that logs ``line`` once, on the real node."""
    name = f"talk-{secrets.token_hex(3)}"
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
                    "command": ["sh", "-c", f"echo {line}; exec sleep 3600"],
                }
            ],
        },
    }
    resp = kube.http.post(f"/api/v1/namespaces/{ns}/pods", json=pod)
    assert resp.status_code == 201, resp.text
    kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    return name


def cli(base: str, auth: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env.update(CASEMATE_URL=base, CASEMATE_TOKEN=auth["Authorization"][7:])
    cmd = [sys.executable, "-m", "casemate.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def login(base: str, username: str) -> dict[str, str]:
    r = httpx.post(f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def pods_listed(tree: list[dict[str, Any]]) -> dict[str, set[str]]:
    """namespace -> pod names, over every cluster of the tree."""
    out: dict[str, set[str]] = {}
    for cluster in tree:
        for ns in cluster["namespaces"]:
            names = out.setdefault(ns["name"], set())
            for w in ns["workloads"]:
                names.update(p["name"] for p in w["pods"])
    return out


def live_typists(base: str, auth: dict[str, str]) -> list[tuple[list[str], list[str]]]:
    r = httpx.get(f"{base}/api/v1/sessions", headers=auth)
    assert r.status_code == 200, r.text
    return [(s["shared_with"], s["typists"]) for s in r.json()]


def browser_login(cdp: Cdp, username: str) -> None:
    cdp.wait_for("document.querySelector('form.login') !== null")
    cdp.evaluate(
        "(() => { const f = document.querySelector('form.login');"
        f" f.username.value = {json.dumps(username)};"
        f" f.password.value = {json.dumps(PASSWORD)};"
        " f.requestSubmit(); })()"
    )
    cdp.wait_for("location.hash === '#/clusters'")


def switch_user(cdp: Cdp, username: str) -> None:
    cdp.evaluate("document.getElementById('logout').click()")
    cdp.wait_for("location.hash === '#/login'")
    browser_login(cdp, username)


def type_in(cdp: Cdp, text: str) -> None:
    cdp.evaluate("document.querySelector('.term textarea').focus()")
    cdp.call("Input.insertText", text=text)
    cdp.call(
        "Input.dispatchKeyEvent",
        type="keyDown",
        key="Enter",
        code="Enter",
        windowsVirtualKeyCode=13,
        text="\r",
    )
    cdp.call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter")


def screen_has(cdp: Cdp, needle: str, *, line: bool = False) -> None:
    test = f"r.trim() === {json.dumps(needle)}" if line else f"r.includes({json.dumps(needle)})"
    cdp.wait_for(f"{SCREEN}.some(r => {test})", timeout=60)


async def test_asset_tree_shell_in_chromium(
    bastion: Bastion, real_node: RealNode, tmp_path: Path
) -> None:
    b = bastion
    pod = busybox_pod(b, real_node)
    other = make_pod(b.kube, real_node, b.ns_b)
    said = f"LOG-{secrets.token_hex(4)}"
    talker = talking_pod(b.kube, b.ns_a, said)
    app = create_app(b.rt, served_gateway(b.rt, b.clusters))

    def drive() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with serve(app) as base:
            alice = login(base, "alice")
            r = httpx.get(f"{base}/api/v1/assets", headers=alice)
            assert r.status_code == 200, r.text
            out["api"] = r.json()
            out["api_text"] = r.text
            with chromium(tmp_path / "profile") as cdp:
                cdp.call("Page.navigate", url=base + "/")
                browser_login(cdp, "alice")
                cdp.evaluate("document.querySelector('nav a[data-route=\"assets\"]').click()")
                shell = f'[data-pod={json.dumps(pod)}][data-container="box"] a.shell'
                cdp.wait_for(f"document.querySelector({json.dumps(shell)}) !== null")
                out["page"] = cdp.evaluate("document.getElementById('main').textContent")
                cdp.evaluate(f"document.querySelector({json.dumps(shell)}).click()")
                screen_has(cdp, "waiting for approval")
                approve_sync(b)
                screen_has(cdp, "/ # ")
                type_in(cdp, "echo $((6*7))")
                screen_has(cdp, "42", line=True)
                type_in(cdp, "exit")
                # the restricted shell's prompt again (the first one held the exec line)
                prompt = json.dumps(f"alice@test:{b.ns_a}$")
                cdp.wait_for(f"{SCREEN}.filter(r => r.includes({prompt})).length >= 2", 60)
                type_in(cdp, "exit")
                cdp.wait_for(
                    "document.querySelector('.termbar .status')?.textContent.startsWith('closed')",
                    timeout=60,
                )
                admin = login(base, "admin")
                deadline = time.monotonic() + 30
                typed: list[dict[str, Any]] = []
                while not typed and time.monotonic() < deadline:
                    r = httpx.get(
                        f"{base}/api/v1/audit",
                        params={"kind": "bastion.container.input", "actor": "alice"},
                        headers=admin,
                    )
                    assert r.status_code == 200, r.text
                    typed = [
                        e["details"]
                        for e in r.json()["items"]
                        if e["details"].get("line") == "echo $((6*7))"
                    ]
                    time.sleep(0.2)
                assert typed, "the typed line is not in the audit"
                sid = typed[0]["session_id"]
                out["audit"] = typed[0]
                r = httpx.get(f"{base}/api/v1/recordings/{sid}/download", headers=alice)
                assert r.status_code == 200, r.text
                out["cast"] = r.text
                cdp.evaluate(f"location.hash = '#/play/{sid}'")
                cdp.wait_for(
                    "document.querySelector('.player')?.textContent.includes('$((6*7))')"
                    " && document.querySelector('.player').textContent.includes('42')",
                    timeout=60,
                )
                # a crafted link's ?run= that is not a container shell types nothing
                hostile = f"kubectl delete pod {pod}"
                params = f"ns={b.ns_a}&run={hostile.replace(' ', '+')}"
                cdp.evaluate(f"location.hash = '#/terminal/test?{params}'")
                cdp.wait_for(f"{SCREEN}.some(r => r.includes({prompt}))", 60)
                time.sleep(1.5)
                out["hostile_screen"] = cdp.evaluate(f"{SCREEN}.join('\\n')")
                # nor one of the other shapes with anything changed: '..', another namespace
                for crafted in (
                    f"kubectl cp {pod}:/etc/../etc/hostname ./hostname -c box",
                    f"kubectl logs -f {pod} -c box -n {b.ns_b}",
                ):
                    params = f"ns={b.ns_a}&run={crafted.replace(' ', '+')}"
                    cdp.evaluate(f"location.hash = '#/terminal/test?{params}'")
                    cdp.wait_for(f"{SCREEN}.some(r => r.includes({prompt}))", 60)
                    time.sleep(1.5)
                    out["hostile_screen"] += cdp.evaluate(f"{SCREEN}.join('\\n')")
                # "Logs" from the tree follows the pod's log
                cdp.evaluate("location.hash = '#/assets'")
                logs = f'[data-pod={json.dumps(talker)}][data-container="box"] a.logs'
                cdp.wait_for(f"document.querySelector({json.dumps(logs)}) !== null")
                cdp.evaluate(f"document.querySelector({json.dumps(logs)}).click()")
                screen_has(cdp, said, line=True)
                # "Download a file": the path asked for is copied into the workspace after
                # review, then listed by the Files panel and downloaded from it
                cdp.evaluate("location.hash = '#/assets'")
                copy = f'[data-pod={json.dumps(pod)}][data-container="box"] button.copy-file'
                cdp.wait_for(f"document.querySelector({json.dumps(copy)}) !== null")
                cdp.evaluate("window.prompt = () => '/etc/hostname'")
                cdp.evaluate(f"document.querySelector({json.dumps(copy)}).click()")
                screen_has(cdp, "waiting for approval")
                approve_sync(b)
                cdp.wait_for(f"{SCREEN}.filter(r => r.includes({prompt})).length >= 2", 60)
                cdp.evaluate("document.querySelector('button.files').click()")
                item = "li[data-file=hostname] button.download"
                cdp.wait_for(f"document.querySelector({json.dumps(item)}) !== null", 30)
                cdp.evaluate(
                    "URL.createObjectURL = (blob) => { window.saved = blob; return 'about:blank'; }"
                )
                cdp.evaluate(f"document.querySelector({json.dumps(item)}).click()")
                cdp.wait_for("window.saved !== undefined")
                out["saved"] = cdp.evaluate("window.saved.text()")
                # the same file from the CLI, while the page's session lives
                r = httpx.get(f"{base}/api/v1/sessions", headers=alice)
                sid = next(s["session_id"] for s in r.json() if s["channel"] == "web")
                out["cli_files"] = cli(base, alice, "session", "files", sid)
                target = tmp_path / "got"
                out["cli_get"] = cli(
                    base, alice, "session", "download", sid, "hostname", "-o", str(target)
                )
                out["cli_got"] = target.read_text() if target.exists() else None
                out["cli_bad"] = cli(
                    base, alice, "session", "download", sid, "../etc/passwd", "-o", "-"
                )
                # a live session of alice's (held open from here: leaving the terminal page
                # ends the page's), shared from the sessions page with bob who "may type",
                # then only his typing taken back
                url = base.replace("http", "ws") + "/api/v1/clusters/test/terminal"
                with ws_connect(url) as held:
                    held.send(json.dumps({"type": "auth", "token": alice["Authorization"][7:]}))
                    held.recv(timeout=30)
                    cdp.evaluate("location.hash = '#/sessions'")
                    cdp.wait_for("document.querySelector('form.share input[name=typing]') !== null")
                    cdp.evaluate(
                        "(() => { const f = document.querySelector('form.share');"
                        " f.querySelector('input:not([type])').value = 'bob';"
                        " f.typing.checked = true; f.requestSubmit(); })()"
                    )
                    cdp.wait_for("document.querySelector('button.stop-typing') !== null")
                    out["typists"] = live_typists(base, alice)
                    # bob watches and types into it from his browser
                    switch_user(cdp, "bob")
                    cdp.evaluate("location.hash = '#/sessions'")
                    link = "a[href$='?type=1']"
                    cdp.wait_for(f"document.querySelector({json.dumps(link)}) !== null")
                    cdp.evaluate(f"document.querySelector({json.dumps(link)}).click()")
                    cdp.wait_for(
                        "document.querySelector('.termbar .status')?.textContent === 'connected'"
                    )
                    type_in(cdp, "echo BOB$((1+1))")
                    # his line reached alice's restricted shell, which refuses expansions
                    screen_has(cdp, "$ echo BOB$((1+1))")
                    screen_has(cdp, "refused: expansions")
                    switch_user(cdp, "alice")
                    cdp.evaluate("location.hash = '#/sessions'")
                    cdp.wait_for("document.querySelector('button.stop-typing') !== null")
                    cdp.evaluate("document.querySelector('button.stop-typing').click()")
                    cdp.wait_for(
                        "document.querySelector('button.stop-typing') === null"
                        " && document.querySelector('[data-user=bob]') !== null"
                    )
                    out["typists_after"] = live_typists(base, alice)
                out["problems"] = cdp.problems()
        return out

    out = await asyncio.wait_for(in_thread(drive), 420)
    # the asset API: the granted namespace and its pod, nothing of the other namespace
    assert pods_listed(out["api"]) == {b.ns_a: {pod, talker}}
    assert b.ns_b not in out["api_text"] and other not in out["api_text"]
    assert b.token not in out["api_text"]
    containers = [
        c
        for ns in out["api"][0]["namespaces"]
        for w in ns["workloads"]
        for p in w["pods"]
        for c in p["containers"]
    ]
    assert [(c["name"], c["state"], c["ready"]) for c in containers] == [
        ("box", "running", True)
    ] * 2
    assert b.ns_b not in out["page"] and other not in out["page"]
    assert out["audit"]["namespace"] == b.ns_a
    assert "42" in out["cast"] and "echo $((6*7))" in out["cast"]
    for typed_line in ("kubectl delete", "kubectl cp", "kubectl logs"):
        assert typed_line not in out["hostile_screen"], out["hostile_screen"]
    assert out["saved"] == f"{pod}\n"
    assert out["cli_files"].returncode == 0, out["cli_files"].stderr
    assert "hostname" in out["cli_files"].stdout
    assert out["cli_get"].returncode == 0, out["cli_get"].stderr
    assert out["cli_got"] == f"{pod}\n"
    assert out["cli_bad"].returncode != 0 and "root:" not in out["cli_bad"].stdout
    assert out["typists"] == [(["bob"], ["bob"])]
    assert out["typists_after"] == [(["bob"], [])]
    assert out["problems"] == []
