"""POST /policies/commands/api-rules/test: the API proxy's decision for one request, through
the proxy's own classify → with_body → decide path; nothing is sent to any cluster."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from casemate.core.runtime import Runtime
from casemate.k8s.clusters import Clusters
from tests.k8s.test_kubeconfig import CA_PEM
from tests.server.conftest import login
from tests.server.test_policies import API_RULES_POLICY, PASSWORD, put

URL = "/api/v1/policies/commands/api-rules/test"


@pytest.fixture
def people(runtime: Runtime, client: TestClient) -> dict[str, dict[str, str]]:
    for name, roles in {"audrey": ["auditor"], "olga": ["operator"]}.items():
        runtime.identity.create_user(name, by=None, password=PASSWORD, roles=roles)
    return {
        "audrey": login(client, "audrey", PASSWORD),
        "olga": login(client, "olga", PASSWORD),
        "admin": login(client),
    }


def ask(client: TestClient, who: dict[str, str], method: str, path: str, **extra: Any) -> Any:
    return client.post(URL, json={"method": method, "path": path, **extra}, headers=who)


PRIVILEGED_POD = json.dumps(
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {
            "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": True}}]
        },
    }
)


def test_the_verdict_and_rule_of_the_built_in_rules(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    audrey = people["audrey"]
    r = ask(client, audrey, "GET", "/api/v1/namespaces/web/pods")
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["allowed"] is True and v["action"] == "allow" and v["rule"], v
    assert v["request"] == {
        "verb": "list",
        "scope": "namespaced",
        "api_group": "",
        "resource": "pods",
        "namespace": "web",
        "name": "",
        "dry_run": False,
        "describe": "list pods -n web",
    }
    assert v["policy_version"] == 0
    v = ask(client, audrey, "GET", "/api/v1/namespaces/web/secrets/db").json()
    assert (v["action"], v["rule"]) == ("deny", "api.secret-read"), v
    v = ask(client, audrey, "DELETE", "/api/v1/namespaces/web").json()
    assert v["action"] == "deny" and not v["allowed"], v
    v = ask(client, audrey, "POST", "/api/v1/namespaces/web/pods/web-0/exec?command=sh").json()
    assert v["action"] == "review", v
    # the body counts as the proxy reads it: the same create, harmless then privileged
    harmless = PRIVILEGED_POD.replace('"privileged": true', '"privileged": false')
    v = ask(client, audrey, "POST", "/api/v1/namespaces/web/pods", body=harmless).json()
    assert v["allowed"] is True, v
    v = ask(client, audrey, "POST", "/api/v1/namespaces/web/pods", body=PRIVILEGED_POD).json()
    assert (v["action"], v["rule"]) == ("deny", "api.pod-escape"), v
    v = ask(client, audrey, "POST", "/api/v1/namespaces/web/pods", body="{not json").json()
    assert v["action"] == "deny", v  # an unreadable body is assumed the worst
    # the grant is a hard boundary
    v = ask(client, audrey, "GET", "/api/v1/namespaces/prod/pods", namespaces=["team-*"]).json()
    assert (v["action"], v["rule"]) == ("deny", "grant.namespace"), v
    v = ask(client, audrey, "GET", "/api/v1/pods", namespaces=["team-a"]).json()
    assert (v["action"], v["rule"]) == ("deny", "grant.all-namespaces"), v
    v = ask(client, audrey, "GET", "/api/v1/namespaces/team-a/pods", namespaces=["team-*"]).json()
    assert v["allowed"] is True, v


def test_site_rules_stored_or_tried_from_the_editor(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    audrey = people["audrey"]
    path = "/api/v1/namespaces/web/configmaps/settings"
    assert ask(client, audrey, "GET", path).json()["allowed"] is True
    # a draft (not stored) is tried, and its rule decides
    v = ask(client, audrey, "GET", path, yaml=API_RULES_POLICY).json()
    assert (v["action"], v["rule"], v["policy_version"]) == (
        "deny",
        "site.no-configmap-reads",
        None,
    ), v
    assert ask(client, audrey, "GET", path).json()["allowed"] is True
    # an invalid draft names the line; an invalid api_rules section says so
    r = ask(client, audrey, "GET", path, yaml="version: 1\nrules:\n  - id: [x\n")
    assert r.status_code == 422 and r.json()["line"], r.text
    r = ask(client, audrey, "GET", path, yaml=API_RULES_POLICY.replace("[read]", "[rd]"))
    assert r.status_code == 422 and "api_rules" in r.json()["detail"], r.text
    # once stored, it is in force
    assert put(client, people["admin"], API_RULES_POLICY).status_code == 200
    v = ask(client, audrey, "GET", path).json()
    assert (v["rule"], v["policy_version"]) == ("site.no-configmap-reads", 1), v


def test_only_auditors_and_admins_may_ask(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    assert ask(client, people["olga"], "GET", "/api/v1/pods").status_code == 403
    assert client.post(URL, json={"method": "GET", "path": "/api"}).status_code == 401
    assert ask(client, people["admin"], "GET", "/api").status_code == 200


HOSTILE: list[dict[str, Any]] = [
    {"method": "TRACE", "path": "/api/v1/pods"},
    {"method": "GET\r\nX-Evil: 1", "path": "/api/v1/pods"},
    {"method": "GET", "path": "http://evil.example/api/v1/pods"},
    {"method": "GET", "path": "//evil.example/api/v1/pods"},
    {"method": "GET", "path": "/api/v1/namespaces/web/../kube-system/secrets"},
    {"method": "GET", "path": "/api/v1/namespaces/web/%2e%2e/secrets"},
    {"method": "GET", "path": "/api/v1/namespaces/web%2Fx/pods"},
    {"method": "GET", "path": "/api/v1/pods\r\nHost: evil"},
    {"method": "GET", "path": "/api/v1/pods" + "/x" * 5000},
    {"method": "GET", "path": "/api/v1/pods", "content_type": "text/html"},
    {"method": "GET", "path": "/api/v1/pods", "namespaces": [""]},
    {"method": "GET", "path": "/api/v1/pods", "namespaces": []},
    {"method": "GET", "path": "/api/v1/pods", "forward": True},
    {"method": "POST", "path": "/api/v1/namespaces/a/pods", "body": "x" * (300 * 1024)},
]


@pytest.mark.parametrize("request_", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_requests_get_a_clear_4xx(
    client: TestClient, people: dict[str, dict[str, str]], request_: dict[str, Any]
) -> None:
    r = client.post(URL, json=request_, headers=people["audrey"])
    assert 400 <= r.status_code < 500, (request_, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.text


@pytest.fixture
def canary() -> Iterator[tuple[str, list[bytes]]]:
    """A listening socket that records every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    seen.append(conn.recv(65536) or b"(connected)")
                except OSError:
                    seen.append(b"(connected)")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}", seen
    stop.set()
    thread.join(5)
    server.close()


def test_nothing_is_forwarded_stored_or_audited(
    runtime: Runtime,
    client: TestClient,
    people: dict[str, dict[str, str]],
    canary: tuple[str, list[bytes]],
) -> None:
    url, seen = canary
    Clusters(runtime.db, runtime.vault, runtime.audit).register_cluster(
        "prod", url, CA_PEM, by=None, check=False
    )
    before = runtime.audit.query(limit=1, newest_first=True)[0].seq
    for method, path in [
        ("DELETE", "/api/v1/namespaces/web"),
        ("GET", "/api/v1/namespaces/web/pods"),
        ("POST", "/api/v1/namespaces/web/pods"),
        ("GET", "/version"),
    ]:
        r = ask(client, people["admin"], method, path, cluster="prod", account="root", body="{}")
        assert r.status_code == 200, r.text
    assert seen == []  # the cluster was never contacted
    assert runtime.audit.query(limit=1, newest_first=True)[0].seq == before
