"""``kubectl port-forward`` through a ``casemate kubeconfig`` on the user's own machine to a
pod on the real node (issue 11): held for review as a ticket bound to that exact request,
released once after approval (the forwarded port then reaches the pod's web server), held
again afterwards, and a pod outside the grant is refused."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from casemate.testenv.kube import find_binaries
from casemate.testenv.node import BUSYBOX_IMAGE, RealNode, real_node_placement
from tests.gateway.conftest import Bastion

pytestmark = [pytest.mark.k8s, pytest.mark.node]


def web_pod(b: Bastion, ns: str, marker: str) -> str:
    name = f"web-{secrets.token_hex(3)}"
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            **real_node_placement(),
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": [
                        "sh",
                        "-c",
                        f"mkdir -p /www && echo {marker} > /www/index.html "
                        "&& exec httpd -f -p 8080 -h /www",
                    ],
                }
            ],
        },
    }
    resp = b.kube.http.post(f"/api/v1/namespaces/{ns}/pods", json=pod)
    assert resp.status_code == 201, resp.text
    b.kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    return name


async def test_port_forward_through_an_issued_kubeconfig_after_review(
    bastion: Bastion, real_node: RealNode, tmp_path: Path
) -> None:
    b = bastion
    del real_node
    marker = f"PF-{secrets.token_hex(4)}"
    pod = web_pod(b, b.ns_a, marker)
    other = web_pod(b, b.ns_b, "NOT-YOURS")
    text, _ = await b.gateway.issue_kubeconfig(b.alice, b.cluster, namespace=b.ns_a)
    kc = tmp_path / "kc"
    kc.write_text(text)
    kubectl = str(find_binaries().kubectl)
    with socket.socket() as probe:  # a free local port (the machine is shared)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ports = f"{port}:8080"

    def once(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "--kubeconfig", str(kc), *args], capture_output=True, text=True, timeout=60
        )

    # held for review: the first attempt names the ticket
    r = await asyncio.to_thread(once, "port-forward", f"pod/{pod}", ports)
    assert r.returncode != 0 and "held for review as ticket" in r.stderr, r.stderr
    ticket = int(r.stderr.split("ticket ")[1].split()[0])
    await asyncio.to_thread(b.gateway.reviews.approve, ticket, b.approver)
    # approved: the same port-forward runs, and the local port reaches the pod
    proc = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(kc),
        "port-forward",
        f"pod/{pod}",
        ports,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert re.search(rb"Forwarding from 127\.0\.0\.1:%d" % port, line), line

        def fetch() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as resp:
                return str(resp.read().decode())

        body = await asyncio.to_thread(fetch)
        assert body.strip() == marker
    finally:
        proc.terminate()
        await proc.wait()
    # the approval was used once: the next port-forward is held again
    r = await asyncio.to_thread(once, "port-forward", f"pod/{pod}", ports)
    assert r.returncode != 0 and "held for review" in r.stderr, r.stderr
    # a pod outside the grant: refused outright, never a ticket
    r = await asyncio.to_thread(once, "port-forward", "-n", b.ns_b, f"pod/{other}", ports)
    assert r.returncode != 0 and "held for review" not in r.stderr, r.stderr
    assert "forbidden" in r.stderr.lower(), r.stderr
