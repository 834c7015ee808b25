"""The vulnerability API (``/api/v1/vuln``) against the real test dockerd and apiserver, and the
"Vulnerabilities" page in headless Chromium: advisories, a scan with findings by severity, a
plan with its diff, the rollout history; hostile input gets a 4xx problem; roles are enforced."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from casemate.core.runtime import Runtime
from casemate.k8s.access import stored_client
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Clusters
from casemate.server.app import create_app
from casemate.testenv.docker import DockerEngine
from casemate.testenv.kube import LocalCluster
from casemate.vuln.advisories.index import IndexStore
from casemate.vuln.remediate.manifest import diff
from casemate.vuln.rollout.journal import Journal
from casemate.vuln.rollout.run import RolloutRunner
from tests.server.conftest import ADMIN_PASSWORD, login, problem_of, runtime
from tests.server.test_web import chromium, serve
from tests.vuln.remediate.test_fix_cli import advisories, manifest
from tests.vuln.rollout.mirror import serve_mirror
from tests.vuln.rollout.test_assess import ORIGINAL, remediated

__all__ = ["runtime"]
XSS = '<img src=x onerror="window.__xss=1">'


@pytest.fixture
def loaded(runtime: Runtime, tmp_path: Path) -> Runtime:
    advisories(tmp_path / "feed")
    IndexStore(runtime.settings.data_dir / "vuln" / "db").import_path(tmp_path / "feed")
    return runtime


@pytest.fixture
def api(loaded: Runtime, docker_engine: DockerEngine,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:  # fmt: skip
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    with TestClient(create_app(loaded), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.docker
def test_scans_plans_and_refusals(api: TestClient, loaded: Runtime, debian12_image: str) -> None:
    admin = login(api)
    assert api.get("/api/v1/vuln/scans").status_code == 401
    sources = api.get("/api/v1/vuln/advisories", headers=admin).json()
    assert [s["advisories"] for s in sources] == [2]
    made = api.post("/api/v1/vuln/scans", json={"image": debian12_image}, headers=admin)
    assert made.status_code == 201, made.text
    scan = made.json()
    assert {f["package"] for f in scan["findings"]} == {"zlib", "glibc"}
    assert scan["images"][0]["packages"] > 50
    listed = api.get("/api/v1/vuln/scans", headers=admin).json()
    assert [(s["id"], s["findings"]) for s in listed] == [(scan["id"], 2)]
    again = api.get(f"/api/v1/vuln/scans/{scan['id']}", headers=admin).json()
    assert again == scan
    assert api.get("/api/v1/vuln/scans/..%2F..%2Fetc", headers=admin).status_code in (404, 422)

    missing = api.post("/api/v1/vuln/scans", json={"image": "casemate-test/none:1"}, headers=admin)
    assert missing.status_code == 422
    assert "is not in the Docker engine" in problem_of(missing)["detail"]
    both = api.post("/api/v1/vuln/scans", json={"image": "a", "manifest": "b"}, headers=admin)
    assert both.status_code == 422

    with serve_mirror("127.0.0.1") as (mirror, _):  # the dependencies are resolved against it
        asked = {"manifest": manifest(debian12_image), "security_mirror": mirror}
        plan = api.post("/api/v1/vuln/plans", json=asked, headers=admin)
    assert plan.status_code == 200, plan.text
    body = plan.json()
    lines = {r["container"]: r["lines"] for r in body["rows"]}
    assert "install zlib1g >= 1:1.2.13.dfsg-1+deb12u1" in lines["app"]
    assert any("readOnlyRootFilesystem" in line for line in lines["locked"])
    assert "+      - name: casemate-fetch-app" in body["diff"]
    assert "# deployed by hand" in body["remediated"]
    templated = api.post("/api/v1/vuln/plans", json={"manifest": "kind: Pod\nx: {{ .Values }}\n"},
                         headers=admin)  # fmt: skip
    assert templated.status_code == 422
    assert "line 2: templating left in" in problem_of(templated)["detail"]
    hostile = {"manifest": "kind: Pod", "security_mirror": "file:///etc"}
    bad_mirror = api.post("/api/v1/vuln/plans", headers=admin, json=hostile)
    assert bad_mirror.status_code == 422

    loaded.identity.create_user("olga", by=None, password="a-long-user-password-for-tests-7",
                                roles=["operator"])  # fmt: skip
    olga = login(api, "olga", "a-long-user-password-for-tests-7")
    for method, path in (("get", "/api/v1/vuln/scans"), ("post", "/api/v1/vuln/plans"),
                         ("get", "/api/v1/vuln/rollouts")):  # fmt: skip
        assert api.request(method, path, headers=olga, json={"manifest": "x"}).status_code == 403
    spec = api.get("/api/v1/openapi.json").json()
    assert {"/api/v1/vuln/scans", "/api/v1/vuln/plans", "/api/v1/vuln/rollouts",
            "/api/v1/vuln/rollouts/{rollout_id}"} <= set(spec["paths"])  # fmt: skip
    assert {"VulnFindingOut", "VulnScanOut", "VulnPlanOut", "VulnRolloutOut"} <= set(
        spec["components"]["schemas"]
    )


@pytest.mark.k8s
def test_an_unfinished_rollout_is_rolled_back_at_server_start(
    loaded: Runtime, kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    """A rollout the API stored (and audited) and applied before the server stopped is rolled
    back when the server starts again: the original is in place, the record says why."""
    clusters = Clusters(loaded.db, loaded.vault, loaded.audit)
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    clusters.add_account("test", "deployer", Credential.bearer(kube_cluster.admin_token), by=None)
    original = _web(ORIGINAL)
    second = remediated(original)
    journal = Journal(loaded.settings.data_dir / "vuln" / "rollouts")
    with stored_client(clusters, "test", None, via="test") as client:
        runner = RolloutRunner(client, journal, loaded.audit, cluster="test", actor="admin",
                               source="api")  # fmt: skip
        stored = runner.start(original, second, diff(original, second, "manifest.yaml"),
                              "the original manifest", namespace=kube_namespace)  # fmt: skip
        runner._put("Deployment", kube_namespace, "web", yaml.safe_load(second))
    kube_cluster.kubectl("rollout", "status", "-n", kube_namespace, "deployment/web",
                         "--timeout=120s")  # fmt: skip
    assert [r.id for r in journal.unfinished()] == [stored.id]  # the server stopped here
    with TestClient(create_app(loaded), raise_server_exceptions=False) as api:
        admin = login(api)
        deadline = time.monotonic() + 90
        path = f"/api/v1/vuln/rollouts/{stored.id}"
        while (record := api.get(path, headers=admin).json())["phase"] in (
            "applying",
            "rolling-back",
        ):
            assert time.monotonic() < deadline, record
            time.sleep(0.5)
    assert record["phase"] == "rolled-back", (record["reason"], record["steps"])
    assert "recovered: the rollout was interrupted" in record["reason"]
    live = kube_cluster.http.get(f"/apis/apps/v1/namespaces/{kube_namespace}/deployments/web")
    assert "initContainers" not in live.json()["spec"]["template"]["spec"]  # the original
    steps = [e.details["step"] for e in loaded.audit.query(kind="vuln.rollout")]
    assert steps[0] == "stored" and "recovered" in steps


def _web(text: str) -> str:
    return text.replace(
        "spec:\n  replicas: 2\n", "spec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n", 1
    ).replace(
        "  template:\n    spec:\n", "  template:\n    metadata: {labels: {app: web}}\n    spec:\n"
    )


@pytest.mark.k8s
def test_rollout_through_the_api(loaded: Runtime, kube_cluster: LocalCluster,
                                 kube_namespace: str) -> None:  # fmt: skip
    clusters = Clusters(loaded.db, loaded.vault, loaded.audit)
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    clusters.add_account("test", "deployer", Credential.bearer(kube_cluster.admin_token), by=None)
    original = ORIGINAL.replace(
        "spec:\n  replicas: 2\n", "spec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n", 1
    ).replace(
        "  template:\n    spec:\n", "  template:\n    metadata: {labels: {app: web}}\n    spec:\n"
    )
    second = remediated(original)
    with TestClient(create_app(loaded), raise_server_exceptions=False) as api:
        admin = login(api)
        body = {"cluster": "test", "namespace": kube_namespace, "original": original,
                "remediated": second, "timeout": 60}  # fmt: skip
        hostile = second.replace("image: debian:12\n", "image: debian:12\n        "
                                 "securityContext: {privileged: true}\n", 1)  # fmt: skip
        refused = api.post("/api/v1/vuln/rollouts", json={**body, "remediated": hostile},
                           headers=admin)  # fmt: skip
        assert refused.status_code == 422
        assert "changes more than 'casemate vuln fix' adds" in problem_of(refused)["detail"]
        assert api.get("/api/v1/vuln/rollouts", headers=admin).json() == []  # nothing stored
        unknown = api.post("/api/v1/vuln/rollouts", json={**body, "cluster": "nope"},
                           headers=admin)  # fmt: skip
        assert unknown.status_code == 404
        started = api.post("/api/v1/vuln/rollouts", json=body, headers=admin)
        assert started.status_code == 202, started.text
        rollout_id = started.json()["id"]
        assert started.json()["phase"] == "applying"
        deadline = time.monotonic() + 90
        done = ("succeeded", "rolled-back", "rollback-failed")
        path = f"/api/v1/vuln/rollouts/{rollout_id}"
        while (phase := api.get(path, headers=admin).json()["phase"]) not in done:
            assert time.monotonic() < deadline, phase
            time.sleep(0.5)
        # the kwok node makes the pods Ready whatever their init containers do
        assert phase == "succeeded"
        record = api.get(f"/api/v1/vuln/rollouts/{rollout_id}", headers=admin).json()
        assert [s["phase"] for s in record["steps"]] == ["watching", "succeeded"]
        assert "+      - name: casemate-fetch-app" in record["diff"]
    steps = [(e.actor, e.details["step"]) for e in loaded.audit.query(kind="vuln.rollout")]
    assert steps == [("admin", "stored"), ("admin", "applied"), ("admin", "succeeded")]


@pytest.mark.docker
def test_the_vulnerabilities_page_in_chromium(
    api: TestClient, loaded: Runtime, debian12_image: str, tmp_path: Path
) -> None:
    with (serve(create_app(loaded)) as base, chromium(tmp_path / "profile") as cdp,
          serve_mirror("127.0.0.1") as (mirror, _)):  # fmt: skip
        cdp.call("Page.navigate", url=base + "/#/login")
        cdp.wait_for("document.querySelector('form.login') !== null")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.login');"
            f" f.username.value = 'admin'; f.password.value = {json.dumps(ADMIN_PASSWORD)};"
            " f.requestSubmit(); })()"
        )
        cdp.wait_for("location.hash === '#/clusters' && sessionStorage.getItem('casemate.token')")
        cdp.evaluate("location.hash = '#/vulnerabilities'")
        cdp.wait_for("document.querySelector('.advisories table') !== null")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.scan-image');"
            f" f.image.value = {json.dumps(debian12_image)}; f.requestSubmit(); }})()"
        )
        cdp.wait_for("document.querySelector('.scan-result tr[data-package=\"zlib\"]') !== null",
                     timeout=120)  # fmt: skip
        assert cdp.evaluate("document.querySelector('[data-count=unknown]').textContent") == (
            "unknown: 2"
        )
        cdp.wait_for("document.querySelectorAll('.scans tr[data-scan]').length === 1")
        text = manifest(debian12_image).replace("name: web", f"name: {json.dumps(XSS)}")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.plan-manifest');"
            f" f.manifest.value = {json.dumps(text)}; f.mirror.value = {json.dumps(mirror)};"
            " f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('.plan pre.diff') !== null", timeout=120)
        diff = cdp.evaluate("document.querySelector('.plan pre.diff').textContent")
        assert "casemate-fetch-app" in diff
        assert XSS in cdp.evaluate("document.querySelector('.plan table').textContent")
        assert cdp.evaluate("window.__xss === undefined")
        assert "No rollouts yet." in cdp.evaluate("document.querySelector('.rollouts').textContent")
        assert cdp.problems() == []
