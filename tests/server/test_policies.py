"""The command policy API end to end: real app, real database, identity and audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from casemate.bastion.policy import default_policy
from casemate.bastion.policystore import PolicyStore
from casemate.core.runtime import Runtime
from casemate.events import GenericEvent
from casemate.server.app import API_PREFIX, create_app
from casemate.server.routes import policies
from tests.server.conftest import login, problem_of

API = "/api/v1"
URL = f"{API}/policies/commands"
PASSWORD = "quartz-lantern-meadow-58"

POLICY = """\
# Team policy
version: 1
default_action: reject
rules:
  - id: read
    priority: 10
    action: accept
    description: Reading is fine.
    match:
      groups: [read-only]
  - id: no-namespace-deletes
    priority: 100
    action: reject
    match:
      verbs: [delete]
      kinds: [namespaces]
"""


def with_routes(app: FastAPI) -> FastAPI:
    """Register the router unless the app already does (it is wired in by server/app.py)."""
    if not any(getattr(r, "path", "").startswith(URL) for r in app.routes):
        app.include_router(policies.router, prefix=API_PREFIX)
    return app


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(with_routes(create_app(runtime)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def people(runtime: Runtime, client: TestClient) -> dict[str, dict[str, str]]:
    """Logged-in users: audrey (auditor), olga (operator), bob (approver), and the admin."""
    roles = {"audrey": ["auditor"], "olga": ["operator"], "bob": ["approver"]}
    for name, granted in roles.items():
        runtime.identity.create_user(name, by=None, password=PASSWORD, roles=granted)
    found = {name: login(client, name, PASSWORD) for name in roles}
    found["admin"] = login(client)
    return found


def put(client: TestClient, headers: dict[str, str], text: str, **extra: object) -> Any:
    return client.put(URL, json={"yaml": text, **extra}, headers=headers)


# Reading ----------------------------------------------------------------------------------


def test_the_builtin_default_as_json_and_as_yaml(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    r = client.get(URL, headers=people["audrey"])
    assert r.status_code == 200, r.text
    body = r.json()
    default = default_policy()
    assert body["version"] == 0 and body["builtin"] is True and body["valid"] is True
    assert body["rules"] == len(default.rules) and body["default_action"] == "reject"
    assert body["yaml"] == default.to_yaml() and body["created_at"] is None
    as_yaml = client.get(URL, headers={**people["audrey"], "Accept": "application/yaml"})
    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert as_yaml.text == default.to_yaml()
    assert as_yaml.headers["etag"] == f'"{body["digest"]}"'
    assert as_yaml.headers["x-casemate-policy-version"] == "0"
    by_query = client.get(URL, params={"format": "yaml"}, headers=people["admin"])
    assert by_query.text == default.to_yaml()
    forced_json = client.get(
        URL, params={"format": "json"}, headers={**people["admin"], "Accept": "text/yaml"}
    )
    assert forced_json.json()["version"] == 0


def test_operators_and_approvers_may_not_read_or_change_the_policy(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    for method, path in (
        ("GET", ""),
        ("GET", "/history"),
        ("GET", "/versions/0"),
        ("POST", "/test"),
        ("PUT", ""),
    ):
        body = {"yaml": POLICY} if method == "PUT" else {"line": "kubectl get pods"}
        for who in ("olga", "bob"):
            r = client.request(method, URL + path, json=body, headers=people[who])
            assert r.status_code == 403, (method, path, r.text)
            assert "admin" in problem_of(r)["detail"]
        anonymous = client.request(method, URL + path, json=body)
        assert anonymous.status_code == 401


# Changing ---------------------------------------------------------------------------------


def test_auditors_may_not_change_the_policy(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    before = runtime.audit.head_seq()
    r = put(client, people["audrey"], POLICY)
    assert r.status_code == 403 and "admin role" in problem_of(r)["detail"]
    assert runtime.audit.head_seq() == before
    assert client.get(URL, headers=people["audrey"]).json()["version"] == 0


def test_a_read_only_admin_token_may_not_change_the_policy(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    issued = client.post(
        f"{API}/tokens", json={"name": "ro", "scopes": ["read"]}, headers=people["admin"]
    )
    assert issued.status_code == 201, issued.text
    token = {"Authorization": f"Bearer {issued.json()['token']}"}
    assert put(client, token, POLICY).status_code == 403


def test_admins_replace_the_policy_and_it_is_audited(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    r = put(client, people["admin"], POLICY, comment="team rules")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["version"] == 1 and info["builtin"] is False
    assert info["created_by"] == "admin" and info["comment"] == "team rules"
    current = client.get(URL, headers=people["audrey"]).json()
    assert current["version"] == 1 and current["yaml"] == POLICY and current["rules"] == 2
    (record,) = runtime.audit.query(kind="bastion.policy.changed")
    assert record.actor == "admin" and record.source == "testclient"
    assert record.details["version"] == 1 and record.details["digest"] == info["digest"]
    # the audit API finds it by kind prefix
    found = client.get(
        f"{API}/audit", params={"kind": "bastion.policy.*"}, headers=people["audrey"]
    )
    assert [i["seq"] for i in found.json()["items"]] == [record.seq]
    # the store of another process sees it
    assert PolicyStore.from_runtime(runtime).current_info().version == 1
    # storing the same text again changes nothing
    again = put(client, people["admin"], POLICY)
    assert again.json()["version"] == 1
    assert len(runtime.audit.query(kind="bastion.policy.changed")) == 1


def test_invalid_yaml_is_a_422_naming_the_line(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    bad = POLICY.replace("verbs: [delete]", "verbs: [obliterate]")
    r = put(client, people["admin"], bad)
    assert r.status_code == 422
    problem = problem_of(r)
    assert problem["line"] == 15
    assert "line 15" in problem["detail"] and "unknown command 'obliterate'" in problem["detail"]
    broken = put(client, people["admin"], "version: 1\nrules: [\n")
    assert broken.status_code == 422 and problem_of(broken)["line"] == 3
    assert "not valid YAML" in problem_of(broken)["detail"]
    assert client.get(URL, headers=people["admin"]).json()["version"] == 0
    assert runtime.audit.query(kind="bastion.policy.changed") == []


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("a: &a [x, x, x]\nb: &b [*a, *a, *a]\nversion: 1\nrules: *b\n", "aliases"),
        ("- version: 1\n", "must be a mapping"),
        ("version: 1\ncolour: blue\n", "unknown key 'colour'"),
        ("version: 1\ndefault_action: accept\n", "would not stop any command"),
        ("version: !!python/object/apply:os.system ['id']\n", "tags are not allowed"),
        ("", "empty"),
    ],
)
def test_hostile_policies_are_refused(
    client: TestClient, people: dict[str, dict[str, str]], text: str, detail: str
) -> None:
    r = put(client, people["admin"], text)
    assert r.status_code == 422 and detail in problem_of(r)["detail"]


def test_bodies_over_the_limit_and_unknown_fields_are_refused(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    huge = "version: 1\n# " + "x" * (100 * 1024) + "\n"  # the fixture allows 64 KiB bodies
    r = put(client, people["admin"], huge)
    assert r.status_code == 413
    extra = put(client, people["admin"], POLICY, colour="blue")
    assert extra.status_code == 422 and "colour" in problem_of(extra)["detail"]
    missing = client.put(URL, json={"comment": "no policy"}, headers=people["admin"])
    assert missing.status_code == 422 and "yaml" in problem_of(missing)["detail"]


def test_base_version_prevents_lost_updates(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    assert put(client, people["admin"], POLICY, base_version=0).status_code == 200
    stale = put(client, people["admin"], POLICY.replace("fine", "ok"), base_version=0)
    assert stale.status_code == 409 and "version 1 now" in problem_of(stale)["detail"]


def test_export_import_round_trip_history_and_versions(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    admin = people["admin"]
    first = put(client, admin, POLICY, comment="v1").json()
    exported = client.get(URL, params={"format": "yaml"}, headers=admin).text
    assert exported == POLICY
    second = POLICY.replace("Reading is fine.", "Reading is always fine.")
    assert put(client, admin, second, comment="v2").json()["version"] == 2
    back = put(client, admin, exported, comment="back to v1").json()
    assert back["version"] == 3 and back["digest"] == first["digest"]
    history = client.get(f"{URL}/history", headers=people["audrey"]).json()
    assert [(h["version"], h["comment"]) for h in history] == [
        (3, "back to v1"),
        (2, "v2"),
        (1, "v1"),
    ]
    assert [h["version"] for h in client.get(f"{URL}/history?limit=1", headers=admin).json()] == [3]
    v2 = client.get(f"{URL}/versions/2", headers=people["audrey"]).json()
    assert v2["version"] == 2 and v2["yaml"] == second
    v2_yaml = client.get(f"{URL}/versions/2", headers={**admin, "Accept": "application/yaml"})
    assert v2_yaml.text == second
    v0 = client.get(f"{URL}/versions/0", params={"format": "yaml"}, headers=admin)
    assert v0.text == default_policy().to_yaml()
    missing = client.get(f"{URL}/versions/9", headers=admin)
    assert missing.status_code == 404 and problem_of(missing)["detail"]


# Trying commands --------------------------------------------------------------------------


def verdict(
    client: TestClient, headers: dict[str, str], line: str, **extra: object
) -> dict[str, Any]:
    r = client.post(f"{URL}/test", json={"line": line, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_try_commands_against_the_builtin_default(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    audrey = people["audrey"]
    deleted = verdict(client, audrey, "kubectl delete ns prod", cluster="prod", account="ops")
    assert deleted["action"] != "accept" and deleted["allowed"] is False
    assert deleted["action"] == "reject" and deleted["rule_id"] == "k8s.delete-namespace"
    assert deleted["policy_version"] == 0 and deleted["stage"] == 0
    read = verdict(client, audrey, "kubectl get pods -n shop | grep web")
    assert (read["action"], read["allowed"]) == ("accept", True)
    refused = verdict(client, audrey, "kubectl get pods; rm -rf /")
    assert (refused["action"], refused["rule_id"]) == ("reject", "casemate.refused")
    assert "';'" in refused["reason"]
    not_kubectl = verdict(client, people["admin"], "bash -c id")
    assert not_kubectl["action"] == "reject" and not_kubectl["rule_id"] == "casemate.refused"
    held = verdict(client, audrey, "kubectl scale deploy web --replicas=0 -n shop")
    assert held["action"] == "review" and held["allowed"] is False


def test_try_commands_against_the_stored_and_a_candidate_policy(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    admin = people["admin"]
    put(client, admin, POLICY)
    write = verdict(client, admin, "kubectl scale deploy web --replicas=2")
    assert write["action"] == "reject" and write["rule_id"] is None
    assert write["policy_version"] == 1 and "default" in write["reason"]
    candidate = POLICY.replace("groups: [read-only]", "groups: [read-only, write]")
    allowed = verdict(client, admin, "kubectl scale deploy web --replicas=2", yaml=candidate)
    assert allowed["action"] == "accept" and allowed["policy_version"] is None
    scoped = POLICY + (
        "  - id: alice-warned\n    priority: 50\n    action: warn\n"
        "    applies_to: {users: [alice], groups: [ops]}\n"
    )
    warned = verdict(client, admin, "kubectl get pods", yaml=scoped, user="alice", groups=["ops"])
    assert warned["action"] == "warn" and warned["warnings"][0]["rule_id"] == "alice-warned"
    other = verdict(client, admin, "kubectl get pods", yaml=scoped, user="bob", groups=["ops"])
    assert other["action"] == "accept" and other["warnings"] == []
    bad = client.post(
        f"{URL}/test",
        json={"line": "kubectl get pods", "yaml": "version: 1\nx: 1\n"},
        headers=admin,
    )
    assert bad.status_code == 422 and problem_of(bad)["line"] == 2
    empty = client.post(f"{URL}/test", json={"line": ""}, headers=admin)
    assert empty.status_code == 422


# Audit search filters of the API ----------------------------------------------------------


def test_audit_search_by_cluster_and_decision(
    client: TestClient, runtime: Runtime, people: dict[str, dict[str, str]]
) -> None:
    for cluster, decision in (("prod", "reject"), ("prod", "accept"), ("dev", "reject")):
        runtime.audit.append(
            GenericEvent(name="test.decided", data={"cluster": cluster, "decision": decision})
        )
    runtime.audit.append(GenericEvent(name="test.other", data={"changes": {"cluster": "prod"}}))

    def kinds(**params: str) -> list[tuple[str, str]]:
        r = client.get(f"{API}/audit", params=params, headers=people["audrey"])
        assert r.status_code == 200, r.text
        return [
            (i["details"].get("cluster"), i["details"].get("decision")) for i in r.json()["items"]
        ]

    assert kinds(cluster="prod") == [("prod", "accept"), ("prod", "reject")]
    assert kinds(cluster="prod", decision="reject") == [("prod", "reject")]
    assert kinds(decision="reject", order="oldest") == [("prod", "reject"), ("dev", "reject")]
    assert kinds(cluster="PROD") == []
    page = client.get(
        f"{API}/audit", params={"decision": "reject", "limit": "1"}, headers=people["audrey"]
    ).json()
    assert page["next_after"] is not None
    rest = client.get(
        f"{API}/audit",
        params={"decision": "reject", "after": str(page["next_after"])},
        headers=people["audrey"],
    ).json()
    assert [i["details"]["cluster"] for i in rest["items"]] == ["prod"]


# The API proxy's rules, versioned with the policy ----------------------------------------

API_RULES_POLICY = """\
version: 1
default_action: reject
rules:
  - id: read
    priority: 10
    action: accept
    match: {groups: [read-only]}
api_rules:
  version: 1
  rules:
    - id: site.no-configmap-reads
      priority: 2000
      action: deny
      description: Not here.
      match: {verbs: [read], resources: [configmaps]}
    - id: api.namespaced-rbac-write
      priority: 500
      action: warn
      enabled: false
"""


def test_api_rules_are_shown_and_changed_with_the_policy(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    r = client.get(f"{URL}/api-rules", headers=people["audrey"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 0 and body["site_rules"] is False
    ids = {rule["id"]: rule for rule in body["rules"]["rules"]}
    assert ids["api.secret-read"]["action"] == "deny"
    assert ids["api.pod-escape"]["action"] == "deny"
    assert client.get(f"{URL}/api-rules", headers=people["olga"]).status_code == 403
    # an invalid api_rules section is refused before anything is stored
    bad = API_RULES_POLICY.replace("action: deny", "action: maybe")
    r = put(client, people["admin"], bad)
    assert r.status_code == 422 and "maybe" in r.json()["detail"], r.text
    assert client.get(f"{URL}/api-rules", headers=people["audrey"]).json()["version"] == 0
    r = put(client, people["admin"], API_RULES_POLICY.replace("verbs: [read]", "verbs: [rd]"))
    assert r.status_code == 422, r.text
    # a valid one is versioned with the policy and merged over the built-in rules
    r = put(client, people["admin"], API_RULES_POLICY)
    assert r.status_code == 200, r.text
    body = client.get(f"{URL}/api-rules", headers=people["audrey"]).json()
    assert body["version"] == 1 and body["site_rules"] is True
    ids = {rule["id"]: rule for rule in body["rules"]["rules"]}
    assert ids["site.no-configmap-reads"]["action"] == "deny"
    assert ids["api.namespaced-rbac-write"].get("enabled") is False
    assert ids["api.secret-read"]["action"] == "deny"  # the built-in rules stay
    text = client.get(f"{URL}/api-rules?format=yaml", headers=people["audrey"]).text
    assert "site.no-configmap-reads" in text and text.startswith("version: 1")
