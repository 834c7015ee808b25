"""``casemate vuln rollout`` end to end on the real node: the remediated Deployment's init
container downloads the fixed zlib1g from a package mirror served by the test on the node's
gateway address (files fetched once from the machine's Debian mirror and cached), its postStart
installs it, the pod goes Ready and ``dpkg-query`` in the running container shows the fix. A
remediated Deployment whose postStart fails (a package file corrupted on purpose) is rolled
back automatically, and one whose rollout is interrupted (the process killed) is rolled back by
``casemate vuln recover``. Every step is in the audit log."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from casemate.testenv.kube import LocalCluster
from casemate.testenv.node import DEBIAN12_IMAGE, RealNode, real_node_placement
from casemate.vuln.advisories.index import IndexStore
from casemate.vuln.inventory.sources import scan_rootfs
from casemate.vuln.match import match
from casemate.vuln.remediate.manifest import Change, load, remediate, sites
from casemate.vuln.remediate.plan import fetch_script, install_script, plan_container
from tests.vuln.remediate.test_fix_cli import ZLIB_FIXED, advisories
from tests.vuln.rollout.mirror import serve_mirror
from tests.vuln.rollout.support import audited_steps, interrupted_rollout, registered
from tests.vuln.test_cli import casemate

pytestmark = [pytest.mark.k8s, pytest.mark.node]
TAMPER = "for f in /casemate-fixes/app/*.deb; do echo x >> $f; done; "


def manifest(name: str) -> str:
    placement = json.dumps(real_node_placement())
    return f"""\
# the web tier (deployed by hand)
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  progressDeadlineSeconds: 600
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec: {{"terminationGracePeriodSeconds": 1, {placement[1:-1]},
      "containers": [{{"name": "app", "image": "{DEBIAN12_IMAGE}",
                      "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}}]}}
"""


@pytest.fixture(scope="module")
def node(real_node: RealNode) -> RealNode:
    real_node.import_image(DEBIAN12_IMAGE)
    return real_node


@pytest.fixture(scope="module")
def mirror(node: RealNode) -> Iterator[tuple[str, list[str]]]:
    with serve_mirror(node.gateway) as served:
        yield served


@pytest.fixture
def data(tmp_path: Path, kube_cluster: LocalCluster) -> Path:
    directory = registered(tmp_path / "data", kube_cluster)
    advisories(tmp_path / "feed")
    done = casemate(directory, "vuln", "db", "import", str(tmp_path / "feed"))
    assert done.returncode == 0, done.stderr
    return directory


def second_manifest(text: str, data: Path, rootfs: Path, mirror: str, *, tamper: bool) -> str:
    """What ``vuln fix`` writes for the image (the test image's rootfs stands for it)."""
    inventory = scan_rootfs(rootfs)
    index = IndexStore(data / "vuln" / "db").load()
    changes = {}
    for site in sites(load(text, "web.yaml")):
        plan = plan_container(site.facts, inventory, match(inventory, index).findings)
        assert plan.applicable, plan
        install = install_script(plan)
        changes[(site.document, site.facts.name)] = Change(
            plan, fetch_script(plan, "bookworm", mirror), TAMPER + install if tamper else install
        )
    return remediate(text, "web.yaml", changes)


def deploy(kube: LocalCluster, ns: str, text: str, name: str) -> None:
    body = yaml.safe_load(text)
    resp = kube.http.post(f"/apis/apps/v1/namespaces/{ns}/deployments", json=body)
    assert resp.status_code == 201, resp.text
    kube.kubectl("rollout", "status", "-n", ns, f"deployment/{name}", "--timeout=120s")


def live_spec(kube: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    resp = kube.http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    assert resp.status_code == 200
    return dict(resp.json()["spec"]["template"]["spec"])


def files(tmp_path: Path, original: str, second: str) -> tuple[Path, Path]:
    first, remediated = tmp_path / "web.yaml", tmp_path / "web.remediated.yaml"
    first.write_text(original)
    remediated.write_text(second)
    return first, remediated


def test_rollout_installs_the_fix_on_the_real_node(
    node: RealNode, kube_cluster: LocalCluster, kube_namespace: str, data: Path,
    debian12_dir: Path, mirror: tuple[str, list[str]], tmp_path: Path,
) -> None:  # fmt: skip
    url, served = mirror
    original = manifest("web")
    deploy(kube_cluster, kube_namespace, original, "web")
    first, _ = files(tmp_path, original,
                     second_manifest(original, data, debian12_dir, url, tamper=False))  # fmt: skip
    done = casemate(data, "vuln", "rollout", "--manifest", str(first), "--cluster", "test",
                    "-n", kube_namespace, "--timeout", "240")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": succeeded: 1/1 pods Ready" in done.stdout
    assert any(p.endswith(".deb") and "/zlib1g_" in p for p in served)  # from the test mirror
    spec = live_spec(kube_cluster, kube_namespace, "web")
    assert [c["name"] for c in spec["initContainers"]] == ["casemate-fetch-app"]
    version = kube_cluster.kubectl(
        "exec", "-n", kube_namespace, "deployment/web", "-c", "app", "--",
        "dpkg-query", "-W", "-f", "${Version}", "zlib1g",
    )  # fmt: skip
    assert version.stdout.strip() == ZLIB_FIXED
    # the rescan of the running container (its dpkg database, read through exec)
    status = kube_cluster.kubectl("exec", "-n", kube_namespace, "deployment/web", "-c", "app",
                                  "--", "cat", "/var/lib/dpkg/status")  # fmt: skip
    running = tmp_path / "running"
    (running / "etc").mkdir(parents=True)
    (running / "var/lib/dpkg").mkdir(parents=True)
    shutil.copy(debian12_dir / "etc/os-release", running / "etc/os-release")
    (running / "var/lib/dpkg/status").write_text(status.stdout)
    index = IndexStore(data / "vuln" / "db").load()
    before = {f.package for f in match(scan_rootfs(debian12_dir), index).findings}
    after = {f.package for f in match(scan_rootfs(running), index).findings}
    assert before == {"zlib", "glibc"} and after == {"glibc"}
    assert audited_steps(data) == ["stored", "applied", "succeeded"]
    listed = casemate(data, "vuln", "rollouts", env={"COLUMNS": "300"})
    assert "succeeded" in listed.stdout and f"Deployment/{kube_namespace}/web" in listed.stdout


def test_failed_post_start_is_rolled_back(
    node: RealNode, kube_cluster: LocalCluster, kube_namespace: str, data: Path,
    debian12_dir: Path, mirror: tuple[str, list[str]], tmp_path: Path,
) -> None:  # fmt: skip
    original = manifest("shop")
    deploy(kube_cluster, kube_namespace, original, "shop")
    before = live_spec(kube_cluster, kube_namespace, "shop")
    first, remediated = files(
        tmp_path, original, second_manifest(original, data, debian12_dir, mirror[0], tamper=True)
    )
    done = casemate(data, "vuln", "rollout", "--manifest", str(first), "--remediated",
                    str(remediated), "--cluster", "test", "-n", kube_namespace,
                    "--timeout", "240")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert ": rolled-back: " in done.stdout
    assert "FailedPostStartHook" in done.stdout or "restarted" in done.stdout, done.stdout
    assert live_spec(kube_cluster, kube_namespace, "shop") == before
    kube_cluster.kubectl("rollout", "status", "-n", kube_namespace, "deployment/shop",
                         "--timeout=60s")  # fmt: skip
    pods = kube_cluster.http.get(f"/api/v1/namespaces/{kube_namespace}/pods").json()["items"]
    running = [p for p in pods if p["metadata"].get("deletionTimestamp") is None]
    assert running and all("initContainers" not in p["spec"] for p in running)
    assert audited_steps(data) == ["stored", "applied", "failed", "rolled-back"]


def test_an_interrupted_rollout_is_recovered(
    node: RealNode, kube_cluster: LocalCluster, kube_namespace: str, data: Path,
    debian12_dir: Path, mirror: tuple[str, list[str]], tmp_path: Path,
) -> None:  # fmt: skip
    original = manifest("api")
    deploy(kube_cluster, kube_namespace, original, "api")
    before = live_spec(kube_cluster, kube_namespace, "api")
    second = second_manifest(original, data, debian12_dir, mirror[0], tamper=False)
    first, _ = files(tmp_path, original, second)
    interrupted_rollout(data, "--manifest", str(first), "--cluster", "test", "-n",
                        kube_namespace, "--timeout", "240")  # fmt: skip
    assert "casemate-fetch-app" in json.dumps(live_spec(kube_cluster, kube_namespace, "api"))
    done = casemate(data, "vuln", "recover", "--cluster", "test", "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolled-back: recovered: the rollout was interrupted while watching" in done.stdout
    assert live_spec(kube_cluster, kube_namespace, "api") == before
    assert audited_steps(data) == ["stored", "applied", "recovered"]
