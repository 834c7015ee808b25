"""The cluster and grant API end to end: real app, database, vault, audit log, and a real
kube-apiserver. The routers are mounted here as the lead will in ``create_app``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from casemate.core.identity import Principal
from casemate.core.runtime import Runtime
from casemate.k8s.clusters import Clusters
from casemate.server.app import create_app
from casemate.server.routes import clusters as clusters_routes
from casemate.server.routes import grants as grants_routes
from casemate.testenv.kube import LocalCluster
from tests.k8s.test_kubeconfig import CA_PEM
from tests.server.conftest import login, problem_of

API = "/api/v1"
USER_PASSWORD = "Maple-Glacier-Violin-73"


def mount(app: FastAPI) -> FastAPI:
    paths = {getattr(r, "path", "") for r in app.routes}
    if f"{API}/clusters" not in paths:
        app.include_router(clusters_routes.router, prefix=API)
    if f"{API}/grants" not in paths:
        app.include_router(grants_routes.router, prefix=API)
    return app


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(mount(create_app(runtime)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin_h(api: TestClient) -> dict[str, str]:
    return login(api)


def user_headers(api: TestClient, runtime: Runtime, username: str, **kw: Any) -> dict[str, str]:
    runtime.identity.create_user(username, by=None, password=USER_PASSWORD, **kw)
    return login(api, username, USER_PASSWORD)


def register(api: TestClient, headers: dict[str, str], kube: LocalCluster, name: str) -> Any:
    body = {"name": name, "server": kube.server_url, "ca_pem": kube.ca_pem.decode()}
    r = api.post(f"{API}/clusters", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_bad_input_is_a_clear_4xx(api: TestClient, admin_h: dict[str, str]) -> None:
    base = {"name": "prod", "server": "https://k8s.example.com", "ca_pem": CA_PEM.decode()}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "server": "http://k8s.example.com"}, 422, "https://"),
        ({**base, "ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n"}, 422, "CA bundle"),
        ({**base, "name": "Prod_1"}, 422, "cluster name"),
        ({**base, "flavour": "x"}, 422, "unknown field"),
        ({**base, "name": ""}, 422, "name"),
        ({"name": "prod"}, 422, "server"),
    ]
    for body, status, fragment in cases:
        r = api.post(f"{API}/clusters", json=body, headers=admin_h)
        assert r.status_code == status, (body, r.text)
        assert fragment in problem_of(r)["detail"], r.text
    # Oversized bodies (the test app allows 64 KiB), and bytes that are not UTF-8 JSON.
    huge = {**base, "ca_pem": "A" * (70 * 1024)}
    assert api.post(f"{API}/clusters", json=huge, headers=admin_h).status_code == 413
    r = api.post(
        f"{API}/clusters/import",
        content=b'{"kubeconfig": "\xff\xfe kind: Config"}',
        headers={**admin_h, "content-type": "application/json"},
    )
    assert r.status_code in (400, 422) and problem_of(r)["detail"]
    r = api.post(f"{API}/clusters/import", json={"kubeconfig": "a: [\n"}, headers=admin_h)
    assert r.status_code == 422 and "not valid YAML" in problem_of(r)["detail"]
    r = api.post(
        f"{API}/clusters/import",
        content=b'{"kubeconfig": "\\ud800"}',  # a lone surrogate, as JSON allows
        headers={**admin_h, "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert api.get(f"{API}/clusters", headers=admin_h).json() == []
    r = api.post(f"{API}/grants", json={"cluster": "x", "account": "y"}, headers=admin_h)
    assert r.status_code == 422 and problem_of(r)["errors"]
    assert api.post(f"{API}/grants/999/revoke", headers=admin_h).status_code == 404


def test_only_admins_write(api: TestClient, admin_h: dict[str, str], runtime: Runtime) -> None:
    op = user_headers(api, runtime, "olivia", roles=["operator"])
    aud = user_headers(api, runtime, "aud", roles=["auditor"])
    body = {"name": "prod", "server": "https://k8s.example.com", "ca_pem": CA_PEM.decode()}
    r = api.post(f"{API}/clusters", json={**body, "check": False}, headers=op)
    assert r.status_code == 403 and problem_of(r)["detail"] == "this needs the admin role"
    assert api.post(f"{API}/clusters", json={**body, "check": False}, headers=admin_h).is_success
    assert api.get(f"{API}/clusters", headers=aud).status_code == 200
    assert api.get(f"{API}/clusters", headers=op).status_code == 403
    assert api.delete(f"{API}/clusters/prod", headers=aud).status_code == 403
    assert api.get(f"{API}/grants/mine", headers=op).json() == []
    r = api.get(f"{API}/clusters/prod/access", headers=op)
    assert r.status_code == 403 and "no grant for cluster prod" in problem_of(r)["detail"]
    assert api.get(f"{API}/clusters").status_code == 401


@pytest.mark.k8s
def test_cluster_account_grant_flow_never_returns_tokens(
    api: TestClient,
    admin_h: dict[str, str],
    runtime: Runtime,
    kube_cluster: LocalCluster,
    kube_namespace: str,
) -> None:
    seen: list[str] = []

    def call(method: str, path: str, **kw: Any) -> Any:
        r = api.request(method, f"{API}{path}", **kw)
        seen.append(r.text)
        return r

    token = kube_cluster.admin_token
    cluster = register(api, admin_h, kube_cluster, "test")
    assert cluster["server"] == kube_cluster.server_url and len(cluster["ca_fingerprint"]) == 64

    # A wrong token is refused at registration.
    r = call("POST", "/clusters/test/accounts", json={"name": "bad", "token": "nope-" * 8},
             headers=admin_h)  # fmt: skip
    assert r.status_code == 422 and "rejected this credential" in problem_of(r)["detail"]
    r = call("POST", "/clusters/test/accounts", json={"name": "root", "token": token},
             headers=admin_h)  # fmt: skip
    assert r.status_code == 201, r.text
    root = r.json()
    assert root["subject"] == "casemate-admin" and root["kind"] == "token"
    assert set(root) >= {"fingerprint", "service_account", "namespaces"}

    # Provision through the stored admin account, then through a one-shot admin token.
    name = f"api-{secrets.token_hex(3)}"
    body = {"name": name, "namespaces": [kube_namespace], "preset": "edit", "admin_account": "root"}
    r = call("POST", "/clusters/test/accounts/provision", json=body, headers=admin_h)
    assert r.status_code == 201, r.text
    assert r.json()["service_account"] == f"casemate-system/casemate-{name}"
    body = {**body, "admin_token": "x", "name": "both"}  # and admin_account: ambiguous
    r = call("POST", "/clusters/test/accounts/provision", json=body, headers=admin_h)
    assert r.status_code == 422 and "not both" in problem_of(r)["detail"]
    r = call("POST", f"/clusters/test/accounts/{name}/rotate", json={"admin_token": token},
             headers=admin_h)  # fmt: skip
    assert r.status_code == 200 and r.json()["rotated_at"] is not None

    # Import the admin kubeconfig (everything inline).
    r = call(
        "POST",
        "/clusters/import",
        json={"kubeconfig": kube_cluster.admin_kubeconfig.read_text(), "name": "imp"},
        headers=admin_h,
    )
    assert r.status_code == 201, r.text
    assert r.json()["account"]["name"] == "casemate-admin"
    exec_config = kube_cluster.admin_kubeconfig.read_text().replace(
        f"token: {token}", "exec: {command: gke-gcloud-auth-plugin, apiVersion: v1}"
    )
    r = call("POST", "/clusters/import", json={"kubeconfig": exec_config, "name": "gke"},
             headers=admin_h)  # fmt: skip
    assert r.status_code == 422 and "exec plugin" in problem_of(r)["detail"]

    # Grants: a user limited to the namespace.
    alice = user_headers(api, runtime, "alice", roles=["operator"])
    r = call("POST", "/grants", json={"user": "alice", "cluster": "test", "account": name,
             "namespaces": [kube_namespace], "ttl_seconds": 3600}, headers=admin_h)  # fmt: skip
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["state"] == "active" and grant["expires_at"] is not None
    r = call("GET", f"/clusters/test/access?namespace={kube_namespace}", headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["account"] == name and r.json()["namespaces"] == [kube_namespace]
    r = call("GET", "/clusters/test/access?namespace=kube-system", headers=alice)
    assert r.status_code == 403 and "do not include namespace kube-system" in r.json()["detail"]
    assert [g["id"] for g in call("GET", "/grants/mine", headers=alice).json()] == [grant["id"]]
    service = Clusters(runtime.db, runtime.vault, runtime.audit)
    u = runtime.identity.get_user("alice")
    me = Principal(u.id, u.username, u.effective_roles, u.groups, "session", frozenset())
    provisioned = service.account_credential(service.resolve_access(me, "test")).token
    r = call("POST", f"/grants/{grant['id']}/revoke", json={"reason": "done"}, headers=admin_h)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    r = call("GET", f"/clusters/test/access?namespace={kube_namespace}", headers=alice)
    assert r.status_code == 403 and "revoked" in r.json()["detail"]
    assert call("POST", f"/grants/{grant['id']}/revoke", headers=admin_h).status_code == 409

    reads = ["/clusters", "/clusters/test", "/clusters/test/accounts", "/grants"]
    for path in [*reads, f"/clusters/test/accounts/{name}", f"/grants/{grant['id']}"]:
        r = call("GET", path, headers=admin_h)
        assert r.status_code == 200, (path, r.text)
    r = call("DELETE", f"/clusters/test/accounts/{name}?admin_account=root", headers=admin_h)
    assert r.status_code == 204
    assert (
        kube_cluster.http.get(
            f"/api/v1/namespaces/casemate-system/serviceaccounts/casemate-{name}"
        ).status_code
        == 404
    )
    assert call("DELETE", "/clusters/imp", headers=admin_h).status_code == 204
    assert call("GET", "/clusters/imp", headers=admin_h).status_code == 404

    # No response, audit record or database byte holds the token.
    everything = "\n".join(seen)
    audit = "\n".join(str(e.to_dict()) for e in runtime.audit.query(limit=1000))
    db = b"".join(p.read_bytes() for p in runtime.settings.data_dir.glob("casemate.db*"))
    assert "k8s.grant" in audit and db
    for secret in (token, provisioned):
        assert secret not in everything and secret not in audit
        assert secret.encode() not in db


@pytest.mark.k8s
def test_an_admin_checks_a_stored_account_against_the_cluster(
    api: TestClient,
    admin_h: dict[str, str],
    runtime: Runtime,
    kube_cluster: LocalCluster,
    kube_namespace: str,
) -> None:
    token = kube_cluster.admin_token
    register(api, admin_h, kube_cluster, "test")
    r = api.post(f"{API}/clusters/test/accounts", json={"name": "root", "token": token},
                 headers=admin_h)  # fmt: skip
    assert r.status_code == 201, r.text
    name = f"chk-{secrets.token_hex(3)}"
    body = {"name": name, "namespaces": [kube_namespace], "preset": "edit", "admin_account": "root"}
    r = api.post(f"{API}/clusters/test/accounts/provision", json=body, headers=admin_h)
    assert r.status_code == 201, r.text
    seen: list[str] = []

    def check(account: str, headers: dict[str, str] = admin_h) -> Any:
        r = api.post(f"{API}/clusters/test/accounts/{account}/check", headers=headers)
        seen.append(r.text)
        return r

    # The cluster admin: every namespace, cluster-wide.
    r = check("root")
    assert r.status_code == 200, r.text
    root = r.json()
    assert (root["reachable"], root["authenticated"], root["subject_matches"]) == (True,) * 3
    assert root["subject"] == "casemate-admin" and root["cluster_wide"] and not root["error"]
    assert root["namespaces"] == root["checked_namespaces"] and root["namespaces"]

    # The provisioned account: its one namespace, nothing cluster-wide, not kube-system.
    got = check(name).json()
    assert got["subject"] == f"system:serviceaccount:casemate-system:casemate-{name}"
    assert got["namespaces"] == got["checked_namespaces"] == [kube_namespace]
    assert got["authenticated"] and got["subject_matches"] and not got["cluster_wide"]
    assert "system:serviceaccounts" in got["groups"]

    # Admins only; unknown accounts are 404.
    op = user_headers(api, runtime, "olivia", roles=["operator"])
    aud = user_headers(api, runtime, "aud", roles=["auditor"])
    assert check(name, op).status_code == 403 and check(name, aud).status_code == 403
    assert check("ghost").status_code == 404

    # Its ServiceAccount deleted in the cluster: the stored token is rejected, said with a 200.
    sa = f"/api/v1/namespaces/casemate-system/serviceaccounts/casemate-{name}"
    assert kube_cluster.http.delete(sa).is_success
    deadline = time.monotonic() + 60
    while (got := check(name).json())["authenticated"]:
        assert time.monotonic() < deadline, got
        time.sleep(0.5)
    assert got["reachable"] and not got["namespaces"] and not got["subject_matches"]
    assert "rejected the stored credential" in got["error"]

    checks = [e for e in runtime.audit.query(kind="k8s.account", limit=1000)
              if e.details["action"] == "checked"]  # fmt: skip
    assert [e.details["account"] for e in checks[:2]] == ["root", name]
    assert checks[1].details["changes"]["namespaces_allowed"] == [kube_namespace]
    audit = "\n".join(str(e.to_dict()) for e in runtime.audit.query(limit=1000))
    assert token not in "\n".join(seen) and token not in audit
