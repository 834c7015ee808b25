"""``casemate vuln scan --cluster``: the images the pods of the real test apiserver run, listed
with the credential stored in Casemate and read from the real test dockerd; and the pure
pieces (which images, and when the engine's image is provably another one)."""

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
from casemate.vuln.inventory.cluster import RunningImage, digest_problem, images_of_pods
from tests.vuln.remediate.test_fix_cli import advisories
from tests.vuln.test_cli import casemate

POD = {
    "metadata": {"namespace": "shop", "name": "web-1"},
    "spec": {"initContainers": [{"name": "init", "image": "busybox:1"}],
             "containers": [{"name": "app", "image": "debian:12"},
                            {"name": "side", "image": "debian:12"}]},
    "status": {"containerStatuses": [{"name": "app", "imageID": "sha256:aaa"}]},
}  # fmt: skip


def test_images_of_pods_once_per_image_and_digest() -> None:
    second = {**POD, "metadata": {"namespace": "shop", "name": "web-2"}, "status": {}}
    found = {(r.image, r.image_id): r.where for r in images_of_pods([POD, second])}
    assert found == {
        ("busybox:1", ""): ("shop/web-1/init", "shop/web-2/init"),
        ("debian:12", "sha256:aaa"): ("shop/web-1/app",),
        ("debian:12", ""): ("shop/web-1/side", "shop/web-2/app", "shop/web-2/side"),
    }


def test_a_different_engine_image_is_a_problem() -> None:
    running = RunningImage("debian:12", "sha256:" + "a" * 64, ("shop/web-1/app",))
    assert digest_problem(running, "sha256:" + "a" * 64) is None
    problem = digest_problem(running, "sha256:" + "b" * 64)
    assert problem is not None and "is not the one the cluster runs" in problem
    registry = RunningImage("debian:12", "docker.io/library/debian@sha256:" + "c" * 64, ())
    assert digest_problem(registry, "sha256:" + "b" * 64) is None  # not comparable
    assert digest_problem(RunningImage("debian:12", "", ()), "sha256:b") is None


@pytest.mark.k8s
@pytest.mark.docker
def test_scan_cluster_reads_the_running_images(
    kube_cluster: LocalCluster, kube_namespace: str, docker_engine: DockerEngine,
    debian12_image: str, busybox_image: str, tmp_path: Path,
) -> None:  # fmt: skip
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
    for name, images in (("a", [debian12_image]), ("b", [debian12_image, busybox_image]),
                         ("c", ["casemate-test/none:1"])):  # fmt: skip
        pod = {"metadata": {"name": name},
               "spec": {"containers": [{"name": f"c{i}", "image": image}
                                       for i, image in enumerate(images)]}}  # fmt: skip
        resp = kube_cluster.http.post(f"/api/v1/namespaces/{kube_namespace}/pods", json=pod)
        assert resp.status_code == 201, resp.text
    done = casemate(data, "vuln", "scan", "--cluster", "test", "-n", kube_namespace,
                    "--format", "json", env={"DOCKER_HOST": docker_engine.host})  # fmt: skip
    assert done.returncode == 2, done.stderr  # the missing image makes the scan partial
    report = json.loads(done.stdout)
    assert {(f["target"], f["component"]["name"]) for f in report["findings"]} == {
        (debian12_image, "zlib"), (debian12_image, "glibc")}  # fmt: skip
    assert any("'casemate-test/none:1' is not in the Docker engine" in p
               and f"{kube_namespace}/c/c0" in p for p in report["problems"])  # fmt: skip
    assert len(list((data / "vuln" / "inventories").glob("*.json"))) == 1  # debian12, once
    wrong = casemate(data, "vuln", "scan", "--cluster", "nope")
    assert wrong.returncode != 0 and "nope" in wrong.stderr
    mixed = casemate(data, "vuln", "scan", debian12_image, "--cluster", "test")
    assert mixed.returncode == 2 and "give no other input" in mixed.stderr
