"""The real local control plane: controllers, RBAC, kwok stages, helm, and clean shutdown."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from casemate.testenv import kube
from casemate.testenv.kube import FAIL_LABEL, ClusterError, LocalCluster

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def get(cluster: LocalCluster, path: str) -> dict[str, Any]:
    resp = cluster.http.get(path)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


def apply(cluster: LocalCluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def deployment(name: str, labels: dict[str, str], progress_deadline: int = 600) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **labels}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


def test_pinned_versions_match_the_go_wrapper_modules() -> None:
    expected = {
        "k8s": ("k8s.io/kubernetes", kube.K8S_VERSION),
        "etcd": ("go.etcd.io/etcd/server/v3", kube.ETCD_VERSION),
        "kwok": ("sigs.k8s.io/kwok", kube.KWOK_VERSION),
        "helm": ("helm.sh/helm/v3", kube.HELM_VERSION),
    }
    for directory, (module, version) in expected.items():
        gomod = (REPO / "testenv" / directory / "go.mod").read_text()
        assert re.search(
            rf"^\s*(require\s+)?{re.escape(module)} {version}(\s+//.*)?$", gomod, re.M
        ), f"testenv/{directory}/go.mod does not require {module} {version}"
    staging = re.findall(
        r"^\s*(k8s\.io/\S+) => (\S+) (\S+)$", (REPO / "testenv/k8s/go.mod").read_text(), re.M
    )
    staging_version = "v0." + kube.K8S_VERSION.removeprefix("v1.")
    assert staging and all(a == b and v == staging_version for a, b, v in staging), staging


@pytest.mark.k8s
def test_deployment_gets_a_replicaset_and_a_ready_pod_on_a_kwok_node(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply(kube_cluster, ns, deployment("web", {}))

    def available() -> dict[str, Any] | None:
        d = get(kube_cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
        return d if d.get("status", {}).get("availableReplicas") == 1 else None

    dep = wait_for("deployment web to become available", available)
    assert condition(dep, "Available")["status"] == "True"

    replicasets = get(kube_cluster, f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
    assert [rs["metadata"]["ownerReferences"][0]["name"] for rs in replicasets] == ["web"]
    pods = get(kube_cluster, f"/api/v1/namespaces/{ns}/pods")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["ownerReferences"][0]["name"] == replicasets[0]["metadata"]["name"]
    assert pod["spec"]["nodeName"] in kube_cluster.node_names
    assert pod["status"]["phase"] == "Running"
    assert condition(pod, "Ready")["status"] == "True"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]


@pytest.mark.k8s
def test_service_account_token_is_limited_to_its_roles_namespace(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    ns_a, ns_b = kube_namespace, f"{kube_namespace}-b"
    kube_cluster.create_namespace(ns_b)
    try:
        apply(
            kube_cluster,
            ns_a,
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "reader-reads-pods"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pod-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns_a}],
            },
        )
        token = kube_cluster.kubectl("create", "token", "reader", "-n", ns_a).stdout.strip()

        with kube_cluster.http_client(token) as client:  # TLS verified against the cluster CA
            review = client.post(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            assert review.status_code == 201, review.text
            user = review.json()["status"]["userInfo"]["username"]
            assert user == f"system:serviceaccount:{ns_a}:reader"

            assert client.get(f"/api/v1/namespaces/{ns_a}/pods").status_code == 200
            denied = client.get(f"/api/v1/namespaces/{ns_b}/pods")
            assert denied.status_code == 403, denied.text
            assert denied.json()["reason"] == "Forbidden"
            assert client.delete(f"/api/v1/namespaces/{ns_a}/pods/x").status_code == 403

        with kube_cluster.http_client("not-a-token") as client:
            assert client.get(f"/api/v1/namespaces/{ns_a}/pods").status_code == 401
    finally:
        kube_cluster.delete_namespace(ns_b)


@pytest.mark.k8s
def test_pod_labelled_to_fail_crash_loops_and_its_deployment_never_becomes_available(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply(kube_cluster, ns, deployment("broken", {FAIL_LABEL: "true"}, progress_deadline=3))

    def crash_looping_pod() -> dict[str, Any] | None:
        pods = get(kube_cluster, f"/api/v1/namespaces/{ns}/pods")["items"]
        statuses = pods[0].get("status", {}).get("containerStatuses") if pods else None
        return pods[0] if statuses and "waiting" in statuses[0]["state"] else None

    pod = wait_for("the failing pod to crash-loop", crash_looping_pod)
    assert pod["status"]["phase"] == "Running"
    assert condition(pod, "Ready")["status"] == "False"
    status = pod["status"]["containerStatuses"][0]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["restartCount"] > 0
    assert status["ready"] is False

    def deadline_exceeded() -> dict[str, Any] | None:
        d = get(kube_cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/broken")
        return (
            d if condition(d, "Progressing").get("reason") == "ProgressDeadlineExceeded" else None
        )

    dep = wait_for("the rollout to exceed its progress deadline", deadline_exceeded)
    assert condition(dep, "Available")["status"] == "False"
    assert not dep["status"].get("availableReplicas")
    rollout = kube_cluster.kubectl(
        "rollout", "status", "deployment/broken", "-n", ns, "--timeout=10s", check=False
    )
    assert rollout.returncode != 0
    assert "exceeded its progress deadline" in rollout.stderr


@pytest.mark.k8s
def test_helm_installs_a_local_chart(
    kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: '>=1.34.0-0'\n"
    )
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n"
        "data:\n  greeting: hello\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    (chart / "templates" / "deployment.yaml").write_text(
        yaml.safe_dump(deployment("{{ .Release.Name }}-app", {}))
    )
    ns = kube_namespace

    kube_cluster.helm("install", "demo", str(chart), "-n", ns, "--wait", "--timeout=60s")

    settings = get(kube_cluster, f"/api/v1/namespaces/{ns}/configmaps/demo-settings")
    assert settings["data"] == {"greeting": "hello", "kube": kube.K8S_VERSION}
    app = get(kube_cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/demo-app")
    assert app["status"]["availableReplicas"] == 1
    releases = yaml.safe_load(kube_cluster.helm("list", "-n", ns, "-o", "yaml").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.k8s
def test_stop_leaves_no_process_or_port_behind(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=2)
    with cluster:
        pids = cluster.pids
        port = int(cluster.server_url.rsplit(":", 1)[1])
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert not any(_gone(pid) for pid in pids.values())
        nodes = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert sorted(nodes) == ["node/kwok-node-0", "node/kwok-node-1"]

    assert [name for name, pid in pids.items() if not _gone(pid)] == []
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    cluster.stop()  # idempotent


@pytest.mark.k8s
def test_failed_start_reports_the_component_log_and_cleans_up(tmp_path: Path) -> None:
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'boom: cannot serve' >&2\nexit 3\n")
    broken.chmod(0o755)
    binaries = dataclasses.replace(kube.find_binaries(), kube_apiserver=broken)
    cluster = LocalCluster(tmp_path / "work", binaries=binaries)
    (tmp_path / "work").mkdir()

    with pytest.raises(ClusterError, match="boom: cannot serve") as failure:
        cluster.start()

    assert "kube-apiserver exited with status 3" in str(failure.value)
    assert set(cluster.pids) == {"etcd", "kube-apiserver"}
    assert all(_gone(pid) for pid in cluster.pids.values())
