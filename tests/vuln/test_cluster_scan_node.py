"""``casemate vuln scan --cluster`` against pods that really run on the real kubelet node: the
node reports each container's image id, and the scan compares it with the id of the image the
local Docker engine holds under the same name. The engine's copy of an image the node runs
(saved from the engine, imported into the node's containerd) is scanned as the running one; the
engine's ``casemate-test/debian12:1`` (``docker import`` of the rootfs) is another image than
the node's (``docker load`` archive with its own configuration), and the scan says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Clusters
from casemate.testenv.docker import DockerEngine
from casemate.testenv.kube import LocalCluster
from casemate.testenv.node import DEBIAN12_IMAGE, RealNode, real_node_placement
from tests.vuln.remediate.test_fix_cli import advisories
from tests.vuln.test_cli import casemate

pytestmark = [pytest.mark.k8s, pytest.mark.node, pytest.mark.docker]
SAME = "casemate-test/h6-scan-same:1"


def _pod(kube: LocalCluster, ns: str, name: str, image: str) -> str:
    pod = {"metadata": {"name": name},
           "spec": {**real_node_placement(), "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": image, "imagePullPolicy": "Never",
                                    "command": ["sleep", "infinity"]}]}}  # fmt: skip
    resp = kube.http.post(f"/api/v1/namespaces/{ns}/pods", json=pod)
    assert resp.status_code == 201, resp.text
    kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=120s")
    status = kube.http.get(f"/api/v1/namespaces/{ns}/pods/{name}").json()["status"]
    return str(status["containerStatuses"][0]["imageID"])


def test_scan_cluster_compares_the_node_image_id_with_the_engine(
    kube_cluster: LocalCluster, kube_namespace: str, real_node: RealNode,
    docker_engine: DockerEngine, debian12_image: str, tmp_path: Path,
) -> None:  # fmt: skip
    assert debian12_image == DEBIAN12_IMAGE
    docker_engine.docker("tag", debian12_image, SAME)
    try:
        _scan(kube_cluster, kube_namespace, real_node, docker_engine, tmp_path)
    finally:
        docker_engine.docker("rmi", SAME, check=False)  # the tag only; the image stays


def _scan(kube_cluster: LocalCluster, kube_namespace: str, real_node: RealNode,
          docker_engine: DockerEngine, tmp_path: Path) -> None:  # fmt: skip
    archive = tmp_path / "same.tar"
    docker_engine.docker("save", "-o", str(archive), SAME)
    done = real_node.ctr("images", "import", str(archive), timeout=300)
    assert done.returncode == 0, done.stderr
    real_node.import_image(DEBIAN12_IMAGE)
    engine_id = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", SAME).stdout.strip()
    node_same = _pod(kube_cluster, kube_namespace, "same", SAME)
    node_other = _pod(kube_cluster, kube_namespace, "other", DEBIAN12_IMAGE)
    assert node_same == engine_id  # the node reports the image's own id, as the engine does
    assert node_other.startswith("sha256:") and node_other != engine_id

    data = tmp_path / "data"
    rt = open_runtime(load_settings(data_dir=data, admin_password="Orchid-Falcon-Tundra-58"),
                      create=True)  # fmt: skip
    try:
        clusters = Clusters(rt.db, rt.vault, rt.audit)
        clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
        clusters.add_account("test", "reader", Credential.bearer(kube_cluster.admin_token),
                             by=None)  # fmt: skip
    finally:
        rt.close()
    advisories(tmp_path / "feed")
    assert casemate(data, "vuln", "db", "import", str(tmp_path / "feed")).returncode == 0
    done = casemate(data, "vuln", "scan", "--cluster", "test", "-n", kube_namespace,
                    "--format", "json", env={"DOCKER_HOST": docker_engine.host})  # fmt: skip
    assert done.returncode == 2, done.stderr  # the other image makes the scan partial
    report = json.loads(done.stdout)
    assert {(f["target"], f["component"]["name"]) for f in report["findings"]} == {
        (SAME, "zlib"), (SAME, "glibc")}  # fmt: skip
    assert report["problems"] == [
        f"cluster test: {DEBIAN12_IMAGE}: the Docker engine's image ({engine_id[:19]}…) is not "
        f"the one the cluster runs ({node_other[:19]}…, in {kube_namespace}/other/app)"
    ]
