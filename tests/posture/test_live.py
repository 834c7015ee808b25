"""Live scans against the real test apiserver, with the credential stored in Casemate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.k8s.client import Credential, KubeClient
from casemate.k8s.clusters import Clusters
from casemate.posture.engine import Scanner
from casemate.posture.live import cluster_client, iter_cluster
from casemate.posture.manifests import LoadProblem
from casemate.posture.model import Subject
from casemate.testenv.kube import LocalCluster

pytestmark = pytest.mark.k8s

PRIVILEGED = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "rooted"},
    "spec": {
        "containers": [
            {"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}
        ]
    },
}


def deployment(name: str) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"hostPID": True, "containers": [{"name": "c", "image": "busybox:1.36"}]},
            },
        },
    }


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(
        load_settings(data_dir=tmp_path / "data", admin_password="Orchid-Falcon-Tundra-58"),
        create=True,
    )
    yield runtime
    runtime.close()


@pytest.fixture
def clusters(rt: Runtime, kube_cluster: LocalCluster) -> Clusters:
    c = Clusters(rt.db, rt.vault, rt.audit)
    c.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    c.add_account("test", "reader", Credential.bearer(kube_cluster.admin_token), by=None)
    return c


@pytest.fixture
def populated(kube_cluster: LocalCluster, kube_namespace: str) -> str:
    admin = KubeClient(
        kube_cluster.server_url,
        kube_cluster.ca_pem,
        Credential.bearer(kube_cluster.admin_token),
        cluster="test",
    )
    with admin:
        base = f"/api/v1/namespaces/{kube_namespace}"
        admin.post(f"{base}/pods", PRIVILEGED, what="create pod")
        for i in range(5):
            admin.post(
                f"/apis/apps/v1/namespaces/{kube_namespace}/deployments",
                deployment(f"web{i}"),
                what="create deployment",
            )
            admin.post(
                f"{base}/configmaps",
                {"metadata": {"name": f"cm{i}"}, "data": {"DB_PASSWORD": "hunter2"}},
                what="create configmap",
            )
    return kube_namespace


def test_live_scan_pages_through_a_namespace(clusters: Clusters, populated: str):
    with cluster_client(clusters, "test") as client:
        items = list(iter_cluster(client, cluster="test", namespace=populated, page_size=2))
    problems = [i for i in items if isinstance(i, LoadProblem)]
    assert problems == []
    subjects = [i for i in items if isinstance(i, Subject)]
    names = {(s.kind, s.name) for s in subjects}
    assert ("Pod", "rooted") in names
    assert {("Deployment", f"web{i}") for i in range(5)} <= names
    assert {("ConfigMap", f"cm{i}") for i in range(5)} <= names  # 5+ items: 3 pages of 2
    scanner = Scanner()
    findings = [f for s in subjects for f in scanner.check(s)] + scanner.finish()
    by_rule = {(f.rule_id, f.name) for f in findings}
    assert ("escape.privileged", "rooted") in by_rule
    assert ("escape.host-namespaces", "web3") in by_rule
    assert ("secrets.configmap-credential", "cm4") in by_rule
    assert ("network.namespace-no-policy", populated) in by_rule
    privileged = next(f for f in findings if f.rule_id == "escape.privileged")
    assert privileged.path == "spec.containers[0].securityContext.privileged"
    assert privileged.file is None and privileged.namespace == populated


def test_forbidden_resources_are_named(kube_cluster: LocalCluster, populated: str):
    with KubeClient(kube_cluster.server_url, kube_cluster.ca_pem, None, cluster="test") as anon:
        items = list(iter_cluster(anon, cluster="test", namespace=populated))
    problems = [i for i in items if isinstance(i, LoadProblem)]
    assert problems and all(p.file == "cluster test" for p in problems)
    assert any("pods not checked" in p.message for p in problems)
    assert not any(isinstance(i, Subject) for i in items)


def test_cli_live_scan(clusters: Clusters, rt: Runtime, populated: str, tmp_path: Path):
    env_dir = str(rt.settings.data_dir)
    r = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "posture", "scan", "--cluster", "test",
         "-n", populated, "-f", "json", "--rule", "escape.privileged"],
        capture_output=True, text=True, timeout=120,
        env={"CASEMATE_DATA_DIR": env_dir, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [dict(f["properties"])["object"] for f in doc["findings"]] == [f"Pod/{populated}/rooted"]
    # a live scan as Kubernetes-native PolicyReports: one per namespace, the pod named
    r = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "posture", "scan", "--cluster", "test",
         "-n", populated, "-f", "policyreport", "--rule", "escape.privileged"],
        capture_output=True, text=True, timeout=120,
        env={"CASEMATE_DATA_DIR": env_dir, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    reports = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "PolicyReport"]
    (report,) = [d for d in reports if d["metadata"]["namespace"] == populated]
    failed = [x for x in report["results"] if x["result"] == "fail"]
    assert [x["resources"][0]["name"] for x in failed] == ["rooted"], report
    # a custom CEL rule (ValidatingAdmissionPolicy) on the live objects, by the same engine
    from tests.posture.test_cel import vap

    policy = tmp_path / "policy.yaml"
    rule = {"expression": "object.metadata.name != 'rooted'", "message": "no rooted pods"}
    policy.write_text(yaml.safe_dump(vap(rule, resources=("pods",), groups=("",))))
    r = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "posture", "scan", "--cluster", "test",
         "-n", populated, "-f", "json", "--policy", str(policy), "--rule", "cel.*"],
        capture_output=True, text=True, timeout=120,
        env={"CASEMATE_DATA_DIR": env_dir, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    found = [
        (f["rule_id"], dict(f["properties"])["object"]) for f in json.loads(r.stdout)["findings"]
    ]
    assert found == [("cel.shop-rules.0", f"Pod/{populated}/rooted")], found


def test_cli_prints_kubectl_patches_that_fix_live_objects(
    clusters: Clusters, rt: Runtime, kube_cluster: LocalCluster, populated: str
):
    import shlex

    from casemate.posture.fixes import FIXES

    env = {"CASEMATE_DATA_DIR": str(rt.settings.data_dir), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "posture", "fix", "--cluster", "test",
         "-n", populated],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(
        i for i, line in enumerate(lines) if line.startswith("# Deployment/") and "web3" in line
    )
    argv = shlex.split(lines[header + 1])
    assert argv[:4] == ["kubectl", "patch", "deployment.apps", "web3"]
    kube_cluster.kubectl(*argv[1:])
    with cluster_client(clusters, "test") as client:
        items = list(iter_cluster(client, cluster="test", namespace=populated))
    web3 = next(i for i in items if isinstance(i, Subject) and i.name == "web3")
    left = [f.rule_id for f in Scanner().check(web3) if f.rule_id in FIXES]
    assert left == []
    assert web3.obj["spec"]["template"]["spec"].get("hostPID") is not True  # false is omitted
    assert web3.obj["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }


def test_anonymous_access_probe(clusters: Clusters, kube_cluster: LocalCluster):
    from casemate.posture.live import anonymous_client, probe_anonymous

    with anonymous_client(clusters, "test") as anonymous:
        before = probe_anonymous(anonymous, cluster="test")
    assert isinstance(before, Subject)
    assert before.obj["anonymous"]["/version"] is True  # Kubernetes' default
    assert [f.rule_id for f in Scanner().check(before)] == []
    name = "posture-test-anonymous-view"
    kube_cluster.kubectl(
        "create", "clusterrolebinding", name, "--clusterrole=view", "--user=system:anonymous"
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with anonymous_client(clusters, "test") as anonymous:
                after = probe_anonymous(anonymous, cluster="test")
            assert isinstance(after, Subject)
            found = {(f.rule_id, f.path) for f in Scanner().check(after)}
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ("engine.cluster-anonymous-read", "anonymous['/api/v1/pods?limit=1']") in found
    finally:
        kube_cluster.kubectl("delete", "clusterrolebinding", name, check=False)


@pytest.mark.node
def test_kubelet_configurations_through_the_api(clusters: Clusters, real_node) -> None:
    """The real node's kubelet (read-only port off, no anonymous auth, Webhook authorization)
    is read through nodes/NAME/proxy/configz and passes the insecure-port rules; the kwok
    node has no kubelet to answer and is named as not checked, never passed silently."""
    from casemate.posture.engine import select_rules
    from casemate.posture.live import iter_kubelets

    with cluster_client(clusters, "test") as client:
        items = list(iter_kubelets(client, cluster="test"))
    configs = {i.name: i for i in items if isinstance(i, Subject)}
    assert real_node.name in configs
    config = configs[real_node.name].obj["config"]
    assert config.get("readOnlyPort", 0) == 0  # configz leaves out zero values
    assert config["authorization"]["mode"] == "Webhook"
    assert config["authentication"]["anonymous"] == {"enabled": False}
    scanner = Scanner(select_rules(["engine.kubelet-*"]))
    assert [f for s in configs.values() for f in scanner.check(s)] == []
    problems = [i for i in items if isinstance(i, LoadProblem)]
    assert all("kubelet not checked" in p.message for p in problems)
    # the same configuration with the read-only port open is a finding
    opened = Subject({**configs[real_node.name].obj, "config": {**config, "readOnlyPort": 10255}})
    assert [f.rule_id for f in scanner.check(opened)] == ["engine.kubelet-read-only-port"]
