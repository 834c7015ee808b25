"""``casemate vuln rollout`` of a StatefulSet and of a DaemonSet on the real node.

The second manifest is written by ``vuln fix``'s own writer (``remediate``) around commands that
stand in for the package download and install (the real download and ``dpkg -i`` on the node
are proven with a Deployment in ``test_rollout_node.py``; here the subject is each kind's
rollout, so the busybox test image keeps them fast). For each kind: a remediated spec whose
postStart fails is rolled back automatically, and the workload ends with its original spec and
Ready pods (a StatefulSet only after its pod stuck on the failed revision is deleted: its
controller would wait for that pod forever); then a good one succeeds, its postStart having run
in the new pod. The StatefulSet also gets a remediated spec whose download (init container)
fails: its pod never runs, so the controller is stuck on it for sure and the rollback must
delete it (a failing postStart leaves short windows where the pod looks Ready, in which the
controller may move on by itself); and its rollout is killed while watched and
``vuln recover`` puts it back. Every step is audited."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from casemate.testenv.kube import LocalCluster
from casemate.testenv.node import BUSYBOX_IMAGE, RealNode, real_node_placement
from casemate.vuln.remediate.manifest import Change, remediate
from casemate.vuln.remediate.plan import ContainerPlan
from tests.vuln.rollout.support import audited_steps, interrupted_rollout, registered
from tests.vuln.test_cli import casemate

pytestmark = [pytest.mark.k8s, pytest.mark.node]
COLLECTION = {"StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
FETCH = "mkdir -p /casemate-fixes/app && echo zlib1g-fixed > /casemate-fixes/app/fixed"
INSTALL = "cat /casemate-fixes/app/fixed > /casemate-fixes/installed"
BROKEN = "echo 'dpkg: error processing archive zlib1g.deb' >&2; exit 1"
BROKEN_FETCH = "echo 'zlib1g.deb: SHA-256 mismatch' >&2; exit 1"


def manifest(kind: str, name: str) -> str:
    pod = {"terminationGracePeriodSeconds": 1, **real_node_placement(),
           "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                           "command": ["sleep", "3600"]}]}  # fmt: skip
    extra = f"  serviceName: {name}\n  replicas: 1\n" if kind == "StatefulSet" else ""
    return f"""\
# {kind} of the test (deployed by hand)
apiVersion: apps/v1
kind: {kind}
metadata:
  name: {name}
spec:
{extra}  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec: {json.dumps(pod)}
"""


def second(text: str, install: str, fetch: str = FETCH) -> str:
    plan = ContainerPlan("app", BUSYBOX_IMAGE, "dpkg")
    return remediate(text, "w.yaml", {(0, "app"): Change(plan, fetch, install)})


@pytest.fixture
def data(tmp_path: Path, kube_cluster: LocalCluster, real_node: RealNode) -> Path:
    return registered(tmp_path / "data", kube_cluster)


def path(ns: str, kind: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/{COLLECTION[kind]}/{name}"


def live_spec(kube: LocalCluster, ns: str, kind: str, name: str) -> dict[str, Any]:
    resp = kube.http.get(path(ns, kind, name))
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["spec"]["template"]["spec"])


def settled(kube: LocalCluster, ns: str, kind: str, name: str) -> list[dict[str, Any]]:
    """Wait for the rollout as kubectl sees it; the workload's live pods, each Ready."""
    kube.kubectl("rollout", "status", "-n", ns, f"{kind.lower()}/{name}", "--timeout=120s",
                 timeout=130)  # fmt: skip
    pods = kube.http.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": f"app={name}"})
    live = [p for p in pods.json()["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in live]
    conditions = {c["type"]: c["status"] for c in live[0]["status"].get("conditions", [])}
    assert conditions.get("Ready") == "True", live[0]["status"]
    return live


def rollout(data: Path, ns: str, first: Path, remediated: Path) -> subprocess.CompletedProcess[str]:
    return casemate(data, "vuln", "rollout", "--manifest", str(first), "--remediated",
                    str(remediated), "--cluster", "test", "-n", ns, "--timeout", "90")  # fmt: skip


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_failed_rollout_is_rolled_back_then_a_good_one_succeeds(
    kind: str, data: Path, kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path
) -> None:
    ns, name = kube_namespace, "db" if kind == "StatefulSet" else "agent"
    original = manifest(kind, name)
    created = kube_cluster.http.post(path(ns, kind, "")[:-1], json=yaml.safe_load(original))
    assert created.status_code == 201, created.text
    first_pod = settled(kube_cluster, ns, kind, name)[0]["metadata"]["uid"]
    before = live_spec(kube_cluster, ns, kind, name)
    first, bad, good = tmp_path / "w.yaml", tmp_path / "bad.yaml", tmp_path / "good.yaml"
    first.write_text(original)
    bad.write_text(second(original, BROKEN))
    good.write_text(second(original, INSTALL))

    failed = rollout(data, ns, first, bad)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert ": rolled-back: " in failed.stdout, failed.stdout
    assert "FailedPostStartHook" in failed.stdout or "restarted" in failed.stdout, failed.stdout
    assert live_spec(kube_cluster, ns, kind, name) == before
    (restored,) = settled(kube_cluster, ns, kind, name)
    assert "initContainers" not in restored["spec"]
    assert restored["metadata"]["uid"] != first_pod  # really rolled, and back

    if kind == "StatefulSet":
        bad.write_text(second(original, INSTALL, BROKEN_FETCH))
        stuck = rollout(data, ns, first, bad)
        assert stuck.returncode == 1, stuck.stdout + stuck.stderr
        assert "pod db-0 container casemate-fetch-app" in stuck.stdout, stuck.stdout
        # its controller never replaces a pod that is not Ready: without this, a timeout
        assert f"deleted the pods stuck on the failed revision: {ns}/db-0" in stuck.stdout
        assert live_spec(kube_cluster, ns, kind, name) == before
        settled(kube_cluster, ns, kind, name)
        interrupted_rollout(data, "--manifest", str(first), "--remediated", str(good),
                            "--cluster", "test", "-n", ns, "--timeout", "90")  # fmt: skip
        assert "casemate-fetch-app" in json.dumps(live_spec(kube_cluster, ns, kind, name))
        recovered = casemate(data, "vuln", "recover", "--cluster", "test", "--timeout", "120")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert "rolled-back: recovered: the rollout was interrupted while watching" in (
            recovered.stdout
        )
        assert live_spec(kube_cluster, ns, kind, name) == before
        settled(kube_cluster, ns, kind, name)

    done = rollout(data, ns, first, good)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": succeeded: 1/1 pods Ready" in done.stdout, done.stdout
    spec = live_spec(kube_cluster, ns, kind, name)
    assert [c["name"] for c in spec["initContainers"]] == ["casemate-fetch-app"]
    (updated,) = settled(kube_cluster, ns, kind, name)
    installed = kube_cluster.kubectl("exec", "-n", ns, updated["metadata"]["name"], "-c", "app",
                                     "--", "cat", "/casemate-fixes/installed")  # fmt: skip
    assert installed.stdout.strip() == "zlib1g-fixed"  # the postStart ran in the new pod
    steps = ["stored", "applied", "failed", "rolled-back"]
    if kind == "StatefulSet":
        steps += ["stored", "applied", "failed", "rolled-back", "stored", "applied", "recovered"]
    assert audited_steps(data) == [*steps, "stored", "applied", "succeeded"]
