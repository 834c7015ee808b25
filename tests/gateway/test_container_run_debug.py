"""``kubectl run -it --rm`` and ``kubectl debug -it`` through the bastion's web terminal on the
real node (issue 11): both are judged by the command policy and held for review, and after
approval the container's shell is the user's terminal; what the API proxy then lets through
is what the command needs and nothing more (no second attach, no pod of another spec).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest

from casemate.bastion.review import TicketState
from casemate.k8s.clusters import HOME_NAMESPACE
from casemate.kubeproxy.classify import classify
from casemate.testenv.node import BUSYBOX_IMAGE, RealNode, real_node_placement
from tests.gateway.conftest import Bastion
from tests.gateway.helpers import audit_details, decided_for, wait_for
from tests.gateway.test_container_terminal import Screen, approve_pending, busybox_pod

pytestmark = [pytest.mark.k8s, pytest.mark.node]

PROMPT = b"/ # "


def operator_can_debug(b: Bastion) -> None:
    """What an operator account really holds in a cluster where people debug pods: the
    ``edit`` preset plus ``pods/ephemeralcontainers`` (Kubernetes' ``edit`` role lacks it)."""
    ns, sa = b.ns_a, f"casemate-{b.account}"
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    role = b.kube.http.post(
        f"{rbac}/roles",
        json={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "debug-pods", "namespace": ns},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods/ephemeralcontainers"],
                    "verbs": ["get", "patch", "update"],
                }
            ],
        },
    )
    assert role.status_code in (201, 409), role.text
    binding = b.kube.http.post(
        f"{rbac}/rolebindings",
        json={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"debug-pods-{b.account}", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "debug-pods",
            },
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": HOME_NAMESPACE}],
        },
    )
    assert binding.status_code in (201, 409), binding.text


async def web_shell(b: Bastion) -> tuple[Any, Any, Screen]:
    from casemate.gateway.terminal import TerminalShell

    session = await b.gateway.open_session(b.alice, b.cluster, channel="web", term="xterm")
    screen = Screen()
    shell = TerminalShell(session, screen)
    await shell.start()
    return session, shell, screen


def overrides() -> str:
    return json.dumps({"spec": real_node_placement()}, separators=(",", ":"))


async def test_run_it_rm_after_review_on_the_real_node(
    bastion: Bastion, real_node: RealNode
) -> None:
    b = bastion
    del real_node
    name = f"run-{secrets.token_hex(3)}"
    session, shell, screen = await web_shell(b)
    line = (
        f"kubectl run -it --rm {name} --image={BUSYBOX_IMAGE} --image-pull-policy=Never "
        f"--restart=Never --overrides='{overrides()}' -- sh"
    )
    await shell.feed(line.encode() + b"\r")
    await screen.wait_for(b"waiting for approval")
    # held: nothing was created yet
    got = b.kube.kubectl("get", "-n", b.ns_a, f"pod/{name}", check=False)
    assert got.returncode != 0
    await approve_pending(b)
    await screen.wait_for(b"approved by")
    # kubectl attaches once the pod runs; the first prompt may come before the attach
    await asyncio.sleep(1.5)
    await shell.feed(b"\r")
    await screen.wait_for(PROMPT, timeout=60)
    assert session.releasing
    # while it runs, the release holds only this pod's one attach (already used by kubectl)
    again = classify("POST", f"/api/v1/namespaces/{b.ns_a}/pods/{name}/attach?stdin=true")
    other = classify("POST", f"/api/v1/namespaces/{b.ns_a}/pods/x{name}/exec?command=sh")
    assert not session.release_api(again)
    assert not session.release_api(other)
    mark = len(screen.data)
    await shell.feed(b"echo ran-$((6*7))\r")
    await screen.wait_for(b"ran-42", start=mark)
    await shell.feed(b"exit 0\r")
    await asyncio.wait_for(shell.wait_idle(), 90)
    assert not session.releasing

    def gone() -> bool:
        return b.kube.kubectl("get", "-n", b.ns_a, f"pod/{name}", check=False).returncode != 0

    await wait_for(gone, 60, "--rm to delete the pod")
    await session.close()
    typed = [d for d in audit_details(b.rt, "bastion.container.input") if d.get("pod") == name]
    assert any(d["line"] == "echo ran-$((6*7))" for d in typed), typed
    decided = [d for d in decided_for(b.rt, session.id) if d["line"].startswith("kubectl run")]
    assert decided and decided[0]["decision"] == "review"


async def test_debug_it_ephemeral_container_after_review(
    bastion: Bastion, real_node: RealNode
) -> None:
    b = bastion
    pod = busybox_pod(b, real_node)
    operator_can_debug(b)
    session, shell, screen = await web_shell(b)
    await shell.feed(
        f"kubectl debug -it {pod} --image={BUSYBOX_IMAGE} --image-pull-policy=Never "
        f"--target=box -- sh\r".encode()
    )
    await screen.wait_for(b"waiting for approval")
    spec = b.kube.kubectl("get", "-n", b.ns_a, f"pod/{pod}", "-o", "json").stdout
    assert not json.loads(spec)["spec"].get("ephemeralContainers")  # nothing before approval
    await approve_pending(b)
    await screen.wait_for(b"approved by")
    await asyncio.sleep(1.5)
    await shell.feed(b"\r")
    await screen.wait_for(PROMPT, timeout=60)
    mark = len(screen.data)
    # --target shares the process namespace: the pod's own sleep is visible
    await shell.feed(b"echo dbg-$((7*6)); ps | grep -c 'sleep 360[0]'\r")
    await screen.wait_for(b"dbg-42", start=mark)
    await screen.wait_for(b"\r\n1\r\n", start=mark)
    await shell.feed(b"exit 0\r")
    await asyncio.wait_for(shell.wait_idle(), 60)
    await session.close()
    spec = b.kube.kubectl("get", "-n", b.ns_a, f"pod/{pod}", "-o", "json").stdout
    assert len(json.loads(spec)["spec"]["ephemeralContainers"]) == 1
    typed = [d for d in audit_details(b.rt, "bastion.container.input") if d.get("pod") == pod]
    assert any(d["line"].startswith("echo dbg-") for d in typed), typed


async def test_run_and_debug_are_still_judged(bastion: Bastion, real_node: RealNode) -> None:
    """Insider attempts: the policy refuses before any review (privileged, a namespace outside
    the grant, a sysadmin debug profile) and the API proxy refuses an unreviewed attach."""
    b = bastion
    pod = busybox_pod(b, real_node)
    operator_can_debug(b)
    session, shell, screen = await web_shell(b)
    refused = [
        f"kubectl run -it --rm p1 --image={BUSYBOX_IMAGE} --privileged -- sh",
        f"kubectl run -it --rm p2 -n {b.ns_b} --image={BUSYBOX_IMAGE} -- sh",
        f"kubectl debug -it {pod} --image={BUSYBOX_IMAGE} --profile=sysadmin -- sh",
        f"kubectl debug -it -n {b.ns_b} {pod} --image={BUSYBOX_IMAGE} -- sh",
    ]
    for line in refused:
        mark = len(screen.data)
        await shell.feed(line.encode() + b"\r")
        await asyncio.wait_for(shell.wait_idle(), 30)
        shown = screen.data[mark:]
        assert b"refused" in shown, (line, shown)
        assert b"waiting for approval" not in shown, line
    # a plain run -it (no overrides) is an attach too: held for review, nothing created
    mark = len(screen.data)
    await shell.feed(f"kubectl run -it --rm p3 --image={BUSYBOX_IMAGE} -- sh\r".encode())
    await screen.wait_for(b"waiting for approval", start=mark)
    ticket = await wait_for(
        lambda: b.gateway.reviews.list_tickets(user="alice", states=(TicketState.PENDING,)),
        what="the ticket of run -it",
    )
    assert ticket[0].rule_id == "k8s.run-interactive"
    await asyncio.to_thread(b.gateway.reviews.deny, ticket[0].id, b.approver)
    await asyncio.wait_for(shell.wait_idle(), 30)
    # nothing of these reached the cluster
    for ns in (b.ns_a, b.ns_b):
        names = b.kube.kubectl("get", "-n", ns, "pods", "-o", "name").stdout
        assert not {"pod/p1", "pod/p2", "pod/p3"} & set(names.split())
    spec = b.kube.kubectl("get", "-n", b.ns_a, f"pod/{pod}", "-o", "json").stdout
    assert not json.loads(spec)["spec"].get("ephemeralContainers")
    # with the session's own credential (no reviewed command running) the API proxy refuses
    # the ephemeral container and the attach
    patch = classify("PATCH", f"/api/v1/namespaces/{b.ns_a}/pods/{pod}/ephemeralcontainers")
    attach = classify("POST", f"/api/v1/namespaces/{b.ns_a}/pods/{pod}/attach?stdin=true")
    assert not session.release_api(patch) and not session.release_api(attach)
    proc = await asyncio.create_subprocess_exec(
        b.gateway.runner.tools.kubectl,
        "debug",
        pod,
        f"--image={BUSYBOX_IMAGE}",
        "--image-pull-policy=Never",
        "--",
        "true",
        env=dict(session.env.env),
        cwd=session.env.workspace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0, out
    assert b"needs a reviewed command" in out, out  # the proxy's refusal, not RBAC's
    spec = b.kube.kubectl("get", "-n", b.ns_a, f"pod/{pod}", "-o", "json").stdout
    assert not json.loads(spec)["spec"].get("ephemeralContainers")
    await session.close()
