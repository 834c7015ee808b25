"""Posture over HTTP (/api/v1/posture: rules, exceptions, a live scan of the real test cluster)
and the web UI's Posture page in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.k8s.client import Credential, KubeClient
from casemate.k8s.clusters import Clusters
from casemate.server.app import create_app
from casemate.testenv.kube import LocalCluster
from tests.server.conftest import ADMIN_PASSWORD, login, problem_of

pytestmark = pytest.mark.k8s

API = "/api/v1/posture"
AUDITOR_PASSWORD = "a-long-auditor-password-for-tests-7"
XSS = '<img src=x onerror="window.__xss=1">'


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(
        data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD, max_body_bytes=64 * 1024
    )
    rt = open_runtime(settings, create=True)
    assert rt.identity.ensure_first_admin(settings) is None
    rt.identity.create_user("audrey", by=None, password=AUDITOR_PASSWORD, roles=["auditor"])
    yield rt
    rt.close()


@pytest.fixture
def cluster(runtime: Runtime, kube_cluster: LocalCluster, kube_namespace: str) -> str:
    """The test cluster registered as 'test' with a privileged pod in a fresh namespace."""
    clusters = Clusters(runtime.db, runtime.vault, runtime.audit)
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    clusters.add_account("test", "reader", Credential.bearer(kube_cluster.admin_token), by=None)
    admin = KubeClient(
        kube_cluster.server_url,
        kube_cluster.ca_pem,
        Credential.bearer(kube_cluster.admin_token),
        cluster="test",
    )
    with admin:
        for name in ("agent", "web"):
            admin.post(
                f"/api/v1/namespaces/{kube_namespace}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "busybox:1.36",
                                "securityContext": {"privileged": True},
                            }
                        ]
                    },
                },  # fmt: skip
                what="create pod",
            )
    return kube_namespace


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        yield c


def privileged_in(result: dict, namespace: str) -> dict[str, dict]:
    return {
        f["object"]["name"]: f
        for f in result["findings"]
        if f["rule"] == "escape.privileged" and f["object"]["namespace"] == namespace
    }


def test_posture_api(client: TestClient, runtime: Runtime, cluster: str) -> None:
    admin = login(client)
    auditor = login(client, "audrey", AUDITOR_PASSWORD)
    assert client.get(f"{API}/rules").status_code == 401
    rules = client.get(f"{API}/rules", headers=auditor).json()
    assert {"escape.privileged", "images.signature", "engine.kubelet-read-only-port"} <= {
        r["id"] for r in rules
    }
    body = {
        "rule": "escape.privileged",
        "namespace": cluster,
        "labels": {"app": "agent"},
        "owner": "team-agent",
        "reason": XSS,
        "expires": "7d",
    }
    # only admins change exceptions; attacks on the scope or the expiry are 422
    assert client.post(f"{API}/exceptions", json=body, headers=auditor).status_code == 403
    for bad in ({"rule": "*"}, {"rule": "escape.*"}, {"namespace": ""}, {"expires": "2020-01-01"},
                {"labels": {"app": "*"}}, {"unknown": 1}):  # fmt: skip
        r = client.post(f"{API}/exceptions", json={**body, **bad}, headers=admin)
        assert r.status_code == 422, (bad, r.text)
        problem_of(r)
    r = client.post(f"{API}/exceptions", json=body, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["expired"] is False and created["created_by"] == "admin"
    assert [e["id"] for e in client.get(f"{API}/exceptions", headers=auditor).json()] == [
        created["id"]
    ]
    # the scan: the agent pod is excepted (shown, not hidden), the web pod is open
    r = client.post(f"{API}/scan", json={"cluster": "test", "namespace": cluster}, headers=auditor)
    assert r.status_code == 200, r.text
    result = r.json()
    found = privileged_in(result, cluster)
    assert found["agent"]["exception"]["id"] == created["id"]
    assert found["agent"]["exception"]["reason"] == XSS
    assert found["web"]["exception"] is None
    assert result["excepted"] >= 1 and result["problems"] == []
    assert result["by_namespace"][cluster]["critical"] == 1  # only the open one counts
    assert client.post(f"{API}/scan", json={"cluster": "nope"}, headers=auditor).status_code == 404
    r = client.post(f"{API}/scan", json={"cluster": "test", "rules": ["no.such"]}, headers=admin)
    assert r.status_code == 422
    # delete: audited, and the finding is open again
    assert client.delete(f"{API}/exceptions/{created['id']}", headers=auditor).status_code == 403
    assert client.delete(f"{API}/exceptions/{created['id']}", headers=admin).status_code == 204
    assert client.delete(f"{API}/exceptions/{created['id']}", headers=admin).status_code == 404
    actions = [e.details["action"] for e in runtime.audit.query(kind="posture.exception")]
    assert sorted(actions) == ["created", "deleted"]
    again = client.post(f"{API}/scan", json={"cluster": "test", "namespace": cluster},
                        headers=auditor).json()  # fmt: skip
    assert privileged_in(again, cluster)["agent"]["exception"] is None
    spec = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/posture/scan", "/api/v1/posture/exceptions"} <= set(spec["paths"])


def test_posture_page_in_chromium(runtime: Runtime, cluster: str, tmp_path: Path) -> None:
    from tests.server.test_admin_web import go, log_in, text_of
    from tests.server.test_web import chromium, serve

    with serve(create_app(runtime)) as base, chromium(tmp_path / "profile") as cdp:
        log_in(cdp, base, "admin", ADMIN_PASSWORD)
        go(cdp, "#/posture", "document.querySelector('form.posture-exception') !== null")
        cdp.wait_for("document.querySelector('select[name=cluster] option') !== null")
        # add an exception through the form (a hostile reason stays text)
        fill = {"rule": "escape.privileged", "ex-namespace": cluster, "labels": "app=agent",
                "owner": "team-agent", "reason": XSS, "expires": "7d"}  # fmt: skip
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.posture-exception');"
            f" const v = {json.dumps(fill)};"
            " for (const [k, x] of Object.entries(v)) f.querySelector(`[name=${k}]`).value = x;"
            " f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('tr[data-exception]') !== null")
        assert XSS in text_of(cdp, "tr[data-exception]")
        # scan the namespace: summary by namespace and severity, one finding excepted
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.posture-scan');"
            f" f.namespace.value = {json.dumps(cluster)}; f.requestSubmit(); }})()"
        )
        ready = f"document.querySelector('tr[data-namespace={json.dumps(cluster)}]') !== null"
        cdp.wait_for(ready, timeout=60)
        row = text_of(cdp, f"tr[data-namespace={json.dumps(cluster)}]")
        assert row.startswith(cluster) and "1" in row
        states = cdp.evaluate(
            "[...document.querySelectorAll('.posture-results tr.excepted td.state')]"
            ".map(td => td.textContent)"
        )
        assert any("excepted" in s and "team-agent" in s for s in states), states
        assert cdp.evaluate("window.__xss === undefined")
        # delete it from the page
        cdp.evaluate("window.confirm = () => true")
        cdp.evaluate("document.querySelector('tr[data-exception] button.danger').click()")
        cdp.wait_for("document.querySelector('tr[data-exception]') === null")
        assert cdp.problems() == []
