"""The real node: a kubelet on containerd joined to the test control plane (issue 11).

Pods really run there: init containers, postStart hooks, exec, logs, port-forward, pods
reaching servers on the host through the bridge gateway; kwok keeps only its fake nodes; the
kubelet's API refuses anonymous callers; stopping (and cleaning up after a killed run) leaves
the host as it was.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from casemate.testenv.kube import LocalCluster
from casemate.testenv.node import (
    BUSYBOX_IMAGE,
    REAL_NODE_LABEL,
    RealNode,
    _cgroup_dirs,
    _state_dir,
    clean_leftovers,
    real_node_placement,
)

pytestmark = [pytest.mark.k8s, pytest.mark.node]


def _pod(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**real_node_placement(), "terminationGracePeriodSeconds": 1, **spec},
    }


def _container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": command,
        **extra,
    }


def _create_ready(cluster: LocalCluster, pod: dict[str, Any], timeout: str = "60s") -> None:
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    resp = cluster.http.post(f"/api/v1/namespaces/{ns}/pods", json=pod)
    assert resp.status_code == 201, resp.text
    result = cluster.kubectl(
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        f"pod/{name}",
        f"--timeout={timeout}",
        check=False,
    )
    if result.returncode != 0:
        described = cluster.kubectl("describe", "-n", ns, f"pod/{name}", check=False).stdout
        pytest.fail(f"pod {name} not ready: {result.stderr}\n{described}")


def _host_state(node: RealNode) -> dict[str, Any]:
    mounts = Path("/proc/self/mountinfo").read_text()
    places = (str(node.workdir), str(node.sockdir))
    return {
        "bridge": subprocess.run(
            ["ip", "link", "show", node.bridge], capture_output=True, check=False
        ).returncode
        == 0,
        "mounts": [
            line.split()[4]
            for line in mounts.splitlines()
            if any(place in line.split()[4] for place in places)
        ],
        "cgroups": [str(d) for d in _cgroup_dirs(node.cgroup) if d.exists()],
        "processes": _processes_mentioning(str(node.workdir))
        + _processes_mentioning(str(node.sockdir)),
        "sockets": node.sockdir.exists(),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
    }


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


def test_pods_really_run_with_init_containers_and_post_start(
    kube_cluster: LocalCluster, real_node: RealNode, kube_namespace: str
) -> None:
    volume = {"name": "shared", "emptyDir": {}}
    mount = [{"name": "shared", "mountPath": "/shared"}]
    pod = _pod(
        "runs",
        kube_namespace,
        volumes=[volume],
        initContainers=[
            _container("init", ["sh", "-c", "echo from-init > /shared/init"], volumeMounts=mount)
        ],
        containers=[
            _container(
                "main",
                ["sh", "-c", "echo started; exec sleep 3600"],
                volumeMounts=mount,
                lifecycle={
                    "postStart": {
                        "exec": {"command": ["sh", "-c", "echo from-poststart > /shared/hook"]}
                    }
                },
            )
        ],
    )
    _create_ready(kube_cluster, pod)
    got = kube_cluster.kubectl(
        "exec", "-n", kube_namespace, "runs", "--", "sh", "-c", "cat /shared/init /shared/hook"
    )
    assert got.stdout.split() == ["from-init", "from-poststart"]
    # stdin reaches the container's process, and the exit status comes back
    piped = kube_cluster.kubectl(
        "exec",
        "-i",
        "-n",
        kube_namespace,
        "runs",
        "--",
        "sh",
        "-c",
        "read x; echo got-$x; exit 7",
        input="typed\n",
        check=False,
    )
    assert piped.stdout.strip() == "got-typed"
    assert piped.returncode == 7
    assert "started" in kube_cluster.kubectl("logs", "-n", kube_namespace, "runs").stdout
    status = kube_cluster.http.get(f"/api/v1/namespaces/{kube_namespace}/pods/runs").json()
    assert status["spec"]["nodeName"] == real_node.name
    assert status["status"]["podIP"].startswith(str(real_node.subnet.network_address)[:-1])


def test_a_failing_post_start_hook_is_reported_by_the_kubelet(
    kube_cluster: LocalCluster, real_node: RealNode, kube_namespace: str
) -> None:
    pod = _pod(
        "hookfails",
        kube_namespace,
        containers=[
            _container(
                "main",
                ["sleep", "3600"],
                lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}},
            )
        ],
    )
    resp = kube_cluster.http.post(f"/api/v1/namespaces/{kube_namespace}/pods", json=pod)
    assert resp.status_code == 201
    deadline = time.monotonic() + 60
    reasons: set[str] = set()
    while time.monotonic() < deadline and "FailedPostStartHook" not in reasons:
        events = kube_cluster.http.get(
            f"/api/v1/namespaces/{kube_namespace}/events",
            params={"fieldSelector": "involvedObject.name=hookfails"},
        ).json()
        reasons = {e["reason"] for e in events["items"]}
        time.sleep(0.5)
    assert "FailedPostStartHook" in reasons


def test_pods_reach_the_host_on_the_bridge_gateway(
    kube_cluster: LocalCluster, real_node: RealNode, kube_namespace: str
) -> None:
    token = secrets.token_hex(8)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = token.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((real_node.gateway, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{real_node.gateway}:{server.server_address[1]}/"
        # busybox 1.35's `wget -T` crashes: bound the download with timeout instead
        _create_ready(
            kube_cluster,
            _pod(
                "fetch",
                kube_namespace,
                containers=[
                    _container(
                        "main", ["sh", "-c", f"timeout 10 wget -qO /tmp/got {url}; sleep 3600"]
                    )
                ],
            ),
        )
        deadline = time.monotonic() + 20
        got = ""
        while time.monotonic() < deadline and got != token:
            got = kube_cluster.kubectl(
                "exec", "-n", kube_namespace, "fetch", "--", "cat", "/tmp/got", check=False
            ).stdout
            time.sleep(0.3)
        assert got == token
    finally:
        server.shutdown()
        server.server_close()


def test_port_forward_and_followed_logs(
    kube_cluster: LocalCluster, real_node: RealNode, kube_namespace: str
) -> None:
    script = (
        "mkdir -p /www && echo forwarded > /www/index.html && httpd -p 8080 -h /www && "
        "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done"
    )
    _create_ready(
        kube_cluster,
        _pod("web", kube_namespace, containers=[_container("main", ["sh", "-c", script])]),
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "KUBECONFIG": str(kube_cluster.admin_kubeconfig),
        "PATH": os.environ["PATH"],
        "HOME": str(kube_cluster.workdir / "home"),  # kubectl's cache, never the work tree's
    }
    kubectl = str(kube_cluster._bins().kubectl)
    forward = subprocess.Popen(
        [kubectl, "port-forward", "-n", kube_namespace, "pod/web", f"{port}:8080"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    logs = subprocess.Popen(
        [kubectl, "logs", "-f", "-n", kube_namespace, "web"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                body = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
                if body:
                    break
            time.sleep(0.2)
        assert body.strip() == "forwarded"
        assert logs.stdout is not None
        seen = [logs.stdout.readline().decode().strip() for _ in range(5)]
        assert all(line.startswith("line-") for line in seen), seen
    finally:
        for proc in (forward, logs):
            proc.terminate()
            proc.wait(10)
        if logs.stdout is not None:
            logs.stdout.close()


def test_kwok_keeps_only_its_fake_nodes(kube_cluster: LocalCluster, real_node: RealNode) -> None:
    nodes = {
        n["metadata"]["name"]: n for n in kube_cluster.http.get("/api/v1/nodes").json()["items"]
    }
    real = nodes[real_node.name]
    assert real["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert real["metadata"]["labels"][REAL_NODE_LABEL] == "true"
    assert {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"} in real["spec"][
        "taints"
    ]
    for name in kube_cluster.node_names:
        assert nodes[name]["status"]["nodeInfo"]["kubeletVersion"].startswith("kwok")


def test_the_kubelet_api_refuses_anonymous_callers(
    kube_cluster: LocalCluster, real_node: RealNode
) -> None:
    node = kube_cluster.http.get(f"/api/v1/nodes/{real_node.name}").json()
    port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with httpx.Client(verify=context, timeout=10) as client:
        resp = client.get(f"https://{real_node.gateway}:{port}/pods")
        assert resp.status_code == 401
        resp = client.get(
            f"https://{real_node.gateway}:{port}/pods",
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert resp.status_code == 401


@pytest.fixture
def second_node(kube_cluster: LocalCluster, tmp_path: Path) -> Iterator[RealNode]:
    node = RealNode(kube_cluster, tmp_path / "node2", name=f"node-{secrets.token_hex(3)}")
    try:
        yield node
    finally:
        node.stop()


def test_stop_and_crash_recovery_leave_the_host_as_found(
    kube_cluster: LocalCluster, second_node: RealNode, kube_namespace: str
) -> None:
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    second_node.start()
    pod = _pod("victim", kube_namespace, containers=[_container("main", ["sleep", "3600"])])
    pod["spec"]["nodeName"] = second_node.name
    _create_ready(kube_cluster, pod)
    running = _host_state(second_node)
    assert running["bridge"] and running["mounts"] and running["cgroups"]
    assert running["processes"]

    # A killed run: its processes die without cleaning up (shims and pods survive), and the
    # state file names an owner that is gone. The next start's sweep must clean all of it.
    state_path = _state_dir() / f"{second_node.id}.json"
    state = json.loads(state_path.read_text())
    dead = subprocess.Popen(["true"])
    dead.wait()
    state["owner"] = dead.pid
    state_path.write_text(json.dumps(state))
    for proc in second_node._procs:
        proc.signal(signal.SIGKILL)
        proc.popen.wait(10)
    second_node._procs.clear()
    second_node._state = {}
    assert _host_state(second_node)["processes"], "the pod's shim should outlive containerd"

    assert second_node.id in clean_leftovers()
    after = _host_state(second_node)
    assert after == {
        "bridge": False,
        "mounts": [],
        "cgroups": [],
        "processes": [],
        "sockets": False,
        "ip_forward": forward_before,
    }
    assert not state_path.exists()
