"""API rules: the grant boundary, the default rule set, YAML loading."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import yaml

from casemate.errors import InvalidInput, PolicyError
from casemate.kubeproxy.body import with_body
from casemate.kubeproxy.classify import classify
from casemate.kubeproxy.rulefile import DEFAULT_RULES_YAML
from casemate.kubeproxy.rules import (
    GRANT_ALL_NAMESPACES,
    GRANT_NAMESPACE,
    ApiAction,
    ApiMatch,
    ApiRule,
    ApiRules,
    AppliesTo,
    SessionGrant,
    decide,
    default_rules,
    request_scope,
)

FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def grant(namespaces: tuple[str, ...] = ("team-a",), **kw: Any) -> SessionGrant:
    base: dict[str, Any] = {
        "user": "alice",
        "groups": frozenset({"dev"}),
        "cluster": "prod",
        "account": "deployer",
        "namespaces": namespaces,
        "expires_at": FUTURE,
    }
    base.update(kw)
    return SessionGrant(**base)


GRANT = grant()


def verdict(method: str, target: str, g: SessionGrant = GRANT, rules: ApiRules | None = None):
    return decide(classify(method, target), g, rules)


# The default rule set ------------------------------------------------------------------------

DEFAULT_CASES = [
    # discovery and health
    ("GET", "/api", "allow", "api.discovery"),
    ("GET", "/api/v1", "allow", "api.discovery"),
    ("GET", "/apis", "allow", "api.discovery"),
    ("GET", "/apis/apps/v1", "allow", "api.discovery"),
    ("GET", "/version", "allow", "api.discovery"),
    ("GET", "/openapi/v2", "allow", "api.discovery"),
    ("GET", "/openapi/v3/apis/apps/v1", "allow", "api.discovery"),
    ("HEAD", "/healthz", "allow", "api.discovery"),
    ("GET", "/metrics", "deny", None),
    ("GET", "/debug/pprof/profile", "deny", None),
    ("GET", "/logs/kube-apiserver.log", "deny", None),
    ("POST", "/version", "deny", None),
    # inside the granted namespace
    ("GET", "/api/v1/namespaces/team-a/pods", "allow", "api.namespaced"),
    ("GET", "/api/v1/namespaces/team-a/pods?watch=1", "allow", "api.namespaced"),
    ("GET", "/api/v1/namespaces/team-a/pods/p/log?follow=true", "allow", "api.namespaced"),
    ("POST", "/api/v1/namespaces/team-a/configmaps", "allow", "api.namespaced"),
    ("DELETE", "/api/v1/namespaces/team-a/pods/p", "allow", "api.namespaced"),
    ("PUT", "/apis/apps/v1/namespaces/team-a/deployments/d/scale", "review",
     "api.scale-to-zero"),
    ("POST", "/apis/example.com/v1/namespaces/team-a/widgets", "allow", "api.namespaced"),
    # outside the grant: hard boundary
    ("GET", "/api/v1/namespaces/team-b/pods", "deny", GRANT_NAMESPACE),
    ("GET", "/api/v1/namespaces/team-b", "deny", GRANT_NAMESPACE),
    ("GET", "/api/v1/namespaces/kube-system/secrets", "deny", GRANT_NAMESPACE),
    ("GET", "/api/v1/pods", "deny", GRANT_ALL_NAMESPACES),
    ("GET", "/api/v1/watch/pods", "deny", GRANT_ALL_NAMESPACES),
    ("GET", "/apis/apps/v1/deployments", "deny", GRANT_ALL_NAMESPACES),
    # the namespace object
    ("GET", "/api/v1/namespaces/team-a", "allow", "api.cluster-read"),
    ("GET", "/api/v1/namespaces", "allow", "api.cluster-read"),
    ("GET", "/api/v1/namespaces?watch=1", "allow", "api.cluster-read"),
    ("DELETE", "/api/v1/namespaces/team-a", "deny", "api.delete-namespace"),
    ("DELETE", "/api/v1/namespaces", "deny", "api.delete-namespace"),
    ("PATCH", "/api/v1/namespaces/team-a", "deny", None),  # cluster-scoped write
    ("PUT", "/api/v1/namespaces/team-a/finalize", "deny", None),
    ("POST", "/api/v1/namespaces", "deny", None),
    # cluster-scoped reads
    ("GET", "/api/v1/nodes", "allow", "api.cluster-read"),
    ("GET", "/api/v1/nodes/n1", "allow", "api.cluster-read"),
    ("GET", "/apis/storage.k8s.io/v1/storageclasses", "allow", "api.cluster-read"),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "allow", "api.cluster-read"),
    ("GET", "/api/v1/nodes/n1/proxy/configz", "deny", "api.proxy-subresource"),
    ("GET", "/api/v1/nodes/n1/status", "deny", None),
    ("GET", "/api/v1/persistentvolumes", "deny", None),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "deny", None),
    ("GET", "/apis/example.com/v1/gadgets", "deny", None),  # unknown cluster-scoped
    # cluster-scoped writes
    ("PATCH", "/api/v1/nodes/n1", "deny", None),
    ("DELETE", "/api/v1/nodes/n1", "deny", None),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "deny",
     "api.cluster-rbac-write"),
    ("PUT", "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit", "deny",
     "api.cluster-rbac-write"),
    ("POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", "deny",
     "api.admission-write"),
    ("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x", "deny",
     "api.crd-write"),
    ("PUT", "/apis/certificates.k8s.io/v1/certificatesigningrequests/c/approval", "deny",
     "api.csr-write"),
    ("POST", "/apis/authentication.k8s.io/v1/tokenreviews", "deny", None),
    ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "deny", None),
    # self reviews
    ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "allow", "api.self-review"),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "allow",
     "api.self-review"),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", "allow",
     "api.self-review"),
    # dangerous in-namespace requests
    ("POST", "/api/v1/namespaces/team-a/serviceaccounts/default/token", "deny",
     "api.serviceaccount-token"),
    ("GET", "/api/v1/namespaces/team-a/pods/p/proxy", "deny", "api.proxy-subresource"),
    ("GET", "/api/v1/namespaces/team-a/services/web:80/proxy/x", "deny",
     "api.proxy-subresource"),
    ("GET", "/api/v1/proxy/namespaces/team-a/pods/p", "deny", "api.proxy-verb"),
    ("POST", "/api/v1/namespaces/team-a/pods/p/exec?command=sh", "review", "api.exec"),
    ("GET", "/api/v1/namespaces/team-a/pods/p/exec?command=sh", "review", "api.exec"),
    ("POST", "/api/v1/namespaces/team-a/pods/p/attach", "review", "api.exec"),
    ("POST", "/api/v1/namespaces/team-a/pods/p/portforward", "review", "api.exec"),
    ("PATCH", "/api/v1/namespaces/team-a/pods/p/ephemeralcontainers", "deny",
     "api.pod-escape"),  # no body looked at: the worst is assumed
    ("DELETE", "/api/v1/namespaces/team-a/pods", "review", "api.delete-collection"),
    # Secret data never leaves (Helm's release records excepted)
    ("GET", "/api/v1/namespaces/team-a/secrets", "deny", "api.secret-read"),
    ("GET", "/api/v1/namespaces/team-a/secrets/s", "deny", "api.secret-read"),
    ("GET", "/api/v1/namespaces/team-a/secrets?watch=1", "deny", "api.secret-read"),
    ("GET", "/api/v1/namespaces/team-a/secrets?fieldSelector=metadata.name%3Ds", "deny",
     "api.secret-read"),
    ("GET", "/api/v1/namespaces/team-a/secrets?labelSelector=owner%3Dhelmx", "deny",
     "api.secret-read"),
    ("GET", "/api/v1/namespaces/team-a/secrets?labelSelector=owner%21%3Dhelm", "deny",
     "api.secret-read"),
    ("GET", "/api/v1/namespaces/team-a/secrets/sh.helm.release.v1.web.v1", "allow",
     "api.helm-release-secrets"),
    ("GET", "/api/v1/namespaces/team-a/secrets?labelSelector=owner%3Dhelm", "allow",
     "api.helm-release-secret-list"),
    ("GET", "/api/v1/namespaces/team-a/secrets?labelSelector=name%3Dweb%2Cowner%3Dhelm",
     "allow", "api.helm-release-secret-list"),
    ("GET", "/api/v1/namespaces/team-b/secrets/sh.helm.release.v1.web.v1", "deny",
     GRANT_NAMESPACE),
    # (no body looked at: the worst is assumed)
    ("PATCH", "/api/v1/namespaces/team-a/secrets/s", "deny", "api.secret-token-type"),
    ("PUT", "/api/v1/namespaces/team-a/secrets/s", "deny", "api.secret-token-type"),
    ("POST", "/api/v1/namespaces/team-a/secrets", "deny", "api.secret-token-type"),
    # bindings and roles (no body: the worst is assumed)
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings", "review",
     "api.rolebinding"),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles", "review",
     "api.powerful-role"),
    ("PATCH", "/apis/apps/v1/namespaces/team-a/deployments/d", "deny", "api.pod-escape"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "target", "action", "rule"), DEFAULT_CASES)
def test_default_rules(method: str, target: str, action: str, rule: str | None) -> None:
    v = verdict(method, target)
    assert (v.action.value, v.rule) == (action, rule), v.reason
    assert v.allowed is (action in ("allow", "warn"))


def test_warnings_are_collected_and_named() -> None:
    v = decide(
        with_body(
            classify("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles"),
            b'{"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}',
            "application/json",
        ),
        GRANT,
    )
    assert v.action == ApiAction.WARN
    assert [n.rule for n in v.warnings] == ["api.namespaced-rbac-write"]
    assert "Roles" in v.warnings[0].reason


def test_denials_explain_themselves() -> None:
    v = verdict("GET", "/api/v1/namespaces/team-b/pods")
    assert "team-b" in v.reason and "team-a" in v.reason
    v = verdict("GET", "/api/v1/pods")
    assert "-n" in v.reason
    v = verdict("PATCH", "/api/v1/nodes/n1")
    assert v.rule is None and "patch nodes n1" in v.reason and "deny" in v.reason


# The grant -------------------------------------------------------------------------------------


def test_namespace_globs_and_all_namespaces() -> None:
    g = grant(("team-*",))
    assert verdict("GET", "/api/v1/namespaces/team-x/pods", g).allowed
    assert not verdict("GET", "/api/v1/namespaces/ops/pods", g).allowed
    assert not verdict("GET", "/api/v1/pods", g).allowed  # a glob is not "every namespace"
    everything = grant(("*",))
    assert verdict("GET", "/api/v1/pods", everything).allowed
    assert verdict("GET", "/api/v1/namespaces/kube-system/pods", everything).allowed
    nothing = grant(())
    v = verdict("GET", "/api/v1/namespaces/team-a/pods", nothing)
    assert v.rule == GRANT_NAMESPACE and "no namespaces" in v.reason
    assert verdict("GET", "/version", nothing).allowed


def test_rules_cannot_widen_the_grant() -> None:
    anything = ApiRules(
        rules=(ApiRule("allow-all", 10_000, ApiAction.ALLOW),), default_action=ApiAction.ALLOW
    )
    assert verdict("GET", "/api/v1/namespaces/team-b/pods", rules=anything).rule == GRANT_NAMESPACE
    assert verdict("GET", "/api/v1/pods", rules=anything).rule == GRANT_ALL_NAMESPACES
    assert verdict("PATCH", "/api/v1/nodes/n1", rules=anything).allowed


def test_grant_validation() -> None:
    with pytest.raises(InvalidInput):
        grant(expires_at=dt.datetime(2100, 1, 1))  # naive
    with pytest.raises(InvalidInput):
        grant(user="")
    with pytest.raises(InvalidInput):
        grant(("",))
    g = grant(namespaces=["a", "b"], groups={"x"})  # type: ignore[arg-type]
    assert g.namespaces == ("a", "b") and g.groups == frozenset({"x"})
    hash(g)


# Rule semantics ----------------------------------------------------------------------------------


def rules(*items: ApiRule, default: ApiAction = ApiAction.ALLOW) -> ApiRules:
    return ApiRules(rules=items, default_action=default)


def test_priority_then_severity() -> None:
    rs = rules(
        ApiRule("a", 10, ApiAction.ALLOW, ApiMatch(resources=("pods",))),
        ApiRule("d", 10, ApiAction.DENY, ApiMatch(resources=("pods",))),
        ApiRule("hi", 20, ApiAction.ALLOW, ApiMatch(names=("ok",))),
    )
    assert verdict("DELETE", "/api/v1/namespaces/team-a/pods/p", rules=rs).rule == "d"
    assert verdict("DELETE", "/api/v1/namespaces/team-a/pods/ok", rules=rs).rule == "hi"


def test_warn_is_not_terminal_and_default_applies() -> None:
    rs = rules(ApiRule("w", 10, ApiAction.WARN, ApiMatch(verbs=("read",))))
    v = verdict("GET", "/api/v1/namespaces/team-a/pods", rules=rs)
    assert v.action == ApiAction.WARN and v.rule is None
    rs = rules(ApiRule("w", 10, ApiAction.WARN, ApiMatch(verbs=("read",))), default=ApiAction.DENY)
    v = verdict("GET", "/api/v1/namespaces/team-a/pods", rules=rs)
    assert v.action == ApiAction.DENY and [n.rule for n in v.warnings] == ["w"]


def test_names_and_namespaces_cover_collections_for_restricting_rules() -> None:
    deny = rules(ApiRule("d", 10, ApiAction.DENY, ApiMatch(names=("prod-db",))))
    assert not verdict("DELETE", "/api/v1/namespaces/team-a/pods", rules=deny).allowed
    assert not verdict("GET", "/api/v1/namespaces/team-a/pods/prod-db", rules=deny).allowed
    assert verdict("GET", "/api/v1/namespaces/team-a/pods/other", rules=deny).allowed
    allow = rules(ApiRule("a", 10, ApiAction.ALLOW, ApiMatch(names=("x",))), default=ApiAction.DENY)
    assert not verdict("GET", "/api/v1/namespaces/team-a/pods", rules=allow).allowed
    assert verdict("GET", "/api/v1/namespaces/team-a/pods/x", rules=allow).allowed
    everywhere = grant(("*",))
    deny_ns = rules(ApiRule("d", 10, ApiAction.DENY, ApiMatch(namespaces=("kube-*",))))
    assert not verdict("GET", "/api/v1/pods", everywhere, deny_ns).allowed
    assert verdict("GET", "/api/v1/namespaces/ops/pods", everywhere, deny_ns).allowed
    assert verdict("GET", "/api/v1/nodes", everywhere, deny_ns).allowed
    allow_ns = rules(
        ApiRule("a", 10, ApiAction.ALLOW, ApiMatch(namespaces=("ops",))), default=ApiAction.DENY
    )
    assert not verdict("GET", "/api/v1/pods", everywhere, allow_ns).allowed
    assert verdict("GET", "/api/v1/namespaces/ops/pods", everywhere, allow_ns).allowed


def test_resource_patterns_are_rbac_like() -> None:
    rs = rules(ApiRule("d", 10, ApiAction.DENY, ApiMatch(resources=("pods",))))
    assert not verdict("GET", "/api/v1/namespaces/team-a/pods/p", rules=rs).allowed
    assert verdict("GET", "/api/v1/namespaces/team-a/pods/p/log", rules=rs).allowed
    rs = rules(ApiRule("d", 10, ApiAction.DENY, ApiMatch(resources=("pods/*",))))
    assert not verdict("GET", "/api/v1/namespaces/team-a/pods/p/log", rules=rs).allowed
    assert verdict("GET", "/api/v1/namespaces/team-a/pods/p", rules=rs).allowed
    rs = rules(ApiRule("d", 10, ApiAction.DENY, ApiMatch(resources=("*",))))
    assert not verdict("GET", "/api/v1/namespaces/team-a/pods/p/log", rules=rs).allowed
    assert verdict("GET", "/version", rules=rs).allowed  # no resource: no match


def test_groups_scopes_paths_and_dry_run() -> None:
    rs = rules(
        ApiRule("g", 10, ApiAction.DENY, ApiMatch(api_groups=("",), verbs=("write",))),
        ApiRule("c", 10, ApiAction.DENY, ApiMatch(scopes=("cluster",))),
        ApiRule("p", 10, ApiAction.DENY, ApiMatch(paths=("/metrics",))),
    )
    assert not verdict("POST", "/api/v1/namespaces/team-a/pods", rules=rs).allowed
    assert verdict("POST", "/apis/apps/v1/namespaces/team-a/deployments", rules=rs).allowed
    assert not verdict("GET", "/api/v1/nodes", rules=rs).allowed
    assert not verdict("GET", "/metrics", rules=rs).allowed
    dry = rules(ApiRule("dry", 10, ApiAction.ALLOW, ApiMatch(dry_run=True)), default=ApiAction.DENY)
    assert verdict("PATCH", "/api/v1/nodes/n1?dryRun=All", rules=dry).allowed
    assert not verdict("PATCH", "/api/v1/nodes/n1", rules=dry).allowed


def test_applies_to() -> None:
    rs = rules(
        ApiRule(
            "sre-nodes",
            2000,
            ApiAction.ALLOW,
            ApiMatch(verbs=("patch",), resources=("nodes",)),
            AppliesTo(groups=("sre",), clusters=("prod",)),
        ),
        default=ApiAction.DENY,
    )
    target = "/api/v1/nodes/n1"
    assert not verdict("PATCH", target, rules=rs).allowed
    assert verdict("PATCH", target, grant(groups=frozenset({"sre"})), rs).allowed
    assert not verdict("PATCH", target, grant(groups=frozenset({"sre"}), cluster="x"), rs).allowed
    by_user = rules(
        ApiRule("u", 10, ApiAction.DENY, applies_to=AppliesTo(users=("bob",), accounts=("d*",)))
    )
    assert verdict("GET", "/version", rules=by_user).allowed
    assert not verdict("GET", "/version", grant(user="bob"), by_user).allowed


def test_site_rule_can_allow_a_cluster_scoped_write_but_not_rbac() -> None:
    site = ApiRules.from_yaml(
        """
version: 1
default_action: deny
rules:
  - id: site.platform-storageclasses
    priority: 2000
    action: allow
    applies_to: {groups: [platform]}
    match: {verbs: [write], api_groups: [storage.k8s.io], resources: [storageclasses]}
  - id: site.platform-cluster
    priority: 200
    action: allow
    applies_to: {groups: [platform]}
    match: {scopes: [cluster], verbs: [write]}
"""
    )
    merged = default_rules().merged(site)
    platform = grant(groups=frozenset({"platform"}))
    assert verdict("POST", "/apis/storage.k8s.io/v1/storageclasses", platform, merged).allowed
    assert not verdict("POST", "/apis/storage.k8s.io/v1/storageclasses", GRANT, merged).allowed
    v = verdict("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", platform, merged)
    assert v.rule == "api.cluster-rbac-write"
    assert verdict("PATCH", "/api/v1/nodes/n1", platform, merged).allowed


def test_merged_replaces_by_id() -> None:
    off = ApiRules.from_yaml(
        """
version: 1
rules:
  - {id: api.exec, priority: 900, action: review, enabled: false}
"""
    )
    merged = default_rules().merged(off)
    assert merged.default_action == ApiAction.DENY
    v = verdict("POST", "/api/v1/namespaces/team-a/pods/p/exec", rules=merged)
    assert v.action == ApiAction.ALLOW and v.rule == "api.namespaced"


# YAML ---------------------------------------------------------------------------------------------


def test_default_rules_round_trip() -> None:
    shipped = default_rules()
    assert shipped.default_action == ApiAction.DENY
    again = ApiRules.from_yaml(shipped.to_yaml())
    assert again == shipped
    assert yaml.safe_load(DEFAULT_RULES_YAML)["version"] == 1
    ids = [r.id for r in shipped.rules]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "must be a mapping"),
        ("version: 2", "newer"),
        ("version: 0", "not a rule set version"),
        ("version: true", "expected an integer"),
        ("{}", "expected an integer"),
        ("version: 1\nfoo: 1", "unknown key 'foo'"),
        ("version: 1\ndefault_action: maybe", "unknown action"),
        ("version: 1\ndefault_action: warn", "not terminal"),
        ("version: 1\nrules: {}", "expected a list"),
        ("version: 1\nrules: [{id: x, priority: 1}]", "missing key 'action'"),
        ("version: 1\nrules: [{id: X!, priority: 1, action: deny}]", "invalid rule id"),
        ("version: 1\nrules: [{id: x, priority: '1', action: deny}]", "expected an integer"),
        ("version: 1\nrules: [{id: x, priority: 1, action: deny, match: {verbs: [eat]}}]",
         "unknown verb"),
        ("version: 1\nrules: [{id: x, priority: 1, action: deny, match: {scopes: [moon]}}]",
         "unknown scope"),
        ("version: 1\nrules: [{id: x, priority: 1, action: deny, match: {kinds: [pods]}}]",
         "unknown key 'kinds'"),
        ("version: 1\nrules: [{id: x, priority: 1, action: deny, match: {names: pods}}]",
         "expected a list"),
        ("version: 1\nrules: [{id: x, priority: 1, action: deny, match: {dry_run: 1}}]",
         "expected true or false"),
        ("version: 1\nrules: [{id: x, priority: 1, action: deny, applies_to: {teams: [a]}}]",
         "unknown key 'teams'"),
        ("version: 1\nrules:\n- {id: x, priority: 1, action: deny}\n"
         "- {id: x, priority: 2, action: deny}", "duplicate rule id"),
        ("version: 1\nversion: 1", "duplicate key"),
        ("version: 1\nrules: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_yaml_errors(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as info:
        ApiRules.from_yaml(text, source="site.yaml")
    assert "site.yaml" in info.value.message


def test_constructed_rules_are_validated() -> None:
    with pytest.raises(PolicyError, match="duplicate"):
        rules(ApiRule("x", 1, ApiAction.DENY), ApiRule("x", 2, ApiAction.DENY))
    with pytest.raises(PolicyError, match="unknown verb"):
        rules(ApiRule("x", 1, ApiAction.DENY, ApiMatch(verbs=("eat",))))
    with pytest.raises(PolicyError, match="not terminal"):
        ApiRules(default_action=ApiAction.WARN)


def test_request_scope() -> None:
    assert request_scope(classify("GET", "/version")) == "non-resource"
    assert request_scope(classify("GET", "/api/v1/nodes")) == "cluster"
    assert request_scope(classify("GET", "/api/v1/pods")) == "all-namespaces"
    assert request_scope(classify("GET", "/api/v1/namespaces/a/pods")) == "namespaced"
    assert request_scope(classify("GET", "/api/v1/namespaces/a")) == "cluster"


# What a write's body sets -----------------------------------------------------------------------

JSON = "application/json"
MERGE = "application/merge-patch+json"
SMP = "application/strategic-merge-patch+json"
JPATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
DEPLOY = "/apis/apps/v1/namespaces/team-a/deployments"
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a"
SECRETS = "/api/v1/namespaces/team-a/secrets"


def _pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c"}], **spec}}


def _deploy(**pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": [{"name": "c"}], **pod_spec}}},
    }


def _container(**fields: Any) -> dict[str, Any]:
    return _pod(containers=[{"name": "c", **fields}])


BODY_CASES: list[tuple[str, str, Any, str, str, str | None]] = [
    # service-account-token Secrets: every way of sending one
    ("POST", SECRETS, {"kind": "Secret", "type": "kubernetes.io/service-account-token"}, JSON,
     "deny", "api.secret-token-type"),
    ("POST", SECRETS, '{"kind":"Secret","type":"kubernetes.io\\/service-account-token"}', JSON,
     "deny", "api.secret-token-type"),
    ("POST", SECRETS, '{"kind":"Secret","type":"kubernetes.io\\u002fservice-account-token"}',
     JSON, "deny", "api.secret-token-type"),
    ("POST", SECRETS, '{"type":"Opaque","type":"kubernetes.io/service-account-token"}', JSON,
     "deny", "api.secret-token-type"),  # duplicate keys: unreadable, the worst assumed
    ("PATCH", SECRETS + "/t", "type: kubernetes.io/service-account-token\n", APPLY, "deny",
     "api.secret-token-type"),
    ("PATCH", SECRETS + "/sh.helm.release.v1.x.v1",
     {"type": "kubernetes.io/service-account-token"}, APPLY, "deny", "api.secret-token-type"),
    ("PATCH", SECRETS + "/t", [{"op": "add", "path": "/type",
                                "value": "kubernetes.io/service-account-token"}], JPATCH,
     "deny", "api.secret-token-type"),
    ("PUT", SECRETS + "/t", {"type": "kubernetes.io/service-account-token"}, JSON, "deny",
     "api.secret-token-type"),
    ("POST", SECRETS, b"\x6b\x38\x73\x00protobuf", "application/vnd.kubernetes.protobuf",
     "deny", "api.secret-token-type"),
    ("POST", SECRETS, {"kind": "Secret", "type": "Opaque", "data": {"a": "Yg=="}}, JSON,
     "allow", "api.namespaced"),
    ("PATCH", SECRETS + "/s", {"metadata": {"labels": {"a": "b"}}}, SMP, "review",
     "api.secret-update"),
    ("PUT", SECRETS + "/s", {"kind": "Secret", "type": "Opaque"}, JSON, "review",
     "api.secret-update"),
    ("POST", SECRETS + "?dryRun=All", {"type": "kubernetes.io/service-account-token"}, JSON,
     "deny", "api.secret-token-type"),
    # pods and every workload kind that carries a pod template
    ("POST", "/api/v1/namespaces/team-a/pods", _pod(hostPID=True), JSON, "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods", _pod(hostNetwork=True), JSON, "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods", _pod(hostIPC=True), JSON, "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _pod(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), JSON, "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods", _container(securityContext={"privileged": True}),
     JSON, "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _container(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}), JSON, "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _container(securityContext={"allowPrivilegeEscalation": True}), JSON, "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods", _container(ports=[{"containerPort": 80,
                                                                   "hostPort": 80}]),
     JSON, "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _pod(initContainers=[{"name": "i", "securityContext": {"privileged": True}}]), JSON,
     "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods", _container(securityContext={"privileged": "true"}),
     JSON, "deny", "api.pod-escape"),  # not a boolean: unreadable
    ("POST", "/api/v1/namespaces/team-a/pods", "kind: Pod\nspec:\n  hostPID: yes\n",
     "application/yaml", "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _container(securityContext={"privileged": False, "capabilities": {"drop": ["ALL"]}}),
     JSON, "allow", "api.namespaced"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     {**_pod(), "metadata": {"annotations": {"hostPath": "/", "privileged": "true"}}}, JSON,
     "allow", "api.namespaced"),
    ("POST", DEPLOY, _deploy(hostPID=True), JSON, "deny", "api.pod-escape"),
    ("POST", "/apis/apps/v1/namespaces/team-a/daemonsets", _deploy(hostNetwork=True), JSON,
     "deny", "api.pod-escape"),
    ("POST", "/apis/apps/v1/namespaces/team-a/statefulsets",
     _deploy(volumes=[{"name": "h", "hostPath": {"path": "/var/run"}}]), JSON, "deny",
     "api.pod-escape"),
    ("POST", "/apis/batch/v1/namespaces/team-a/jobs", _deploy(hostPID=True), JSON, "deny",
     "api.pod-escape"),
    ("POST", "/apis/batch/v1/namespaces/team-a/cronjobs",
     {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
         "hostPID": True, "containers": []}}}}}}, JSON, "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/replicationcontrollers", _deploy(hostIPC=True), JSON,
     "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/podtemplates",
     {"kind": "PodTemplate", "template": {"spec": {"hostPID": True}}}, JSON, "deny",
     "api.pod-escape"),
    ("POST", DEPLOY, _deploy(), JSON, "allow", "api.namespaced"),
    ("PATCH", DEPLOY + "/web", {"spec": {"template": {"spec": {"hostPID": True}}}}, SMP, "deny",
     "api.pod-escape"),
    ("PATCH", DEPLOY + "/web", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "securityContext": {"privileged": True}}]}}}}, MERGE, "deny",
     "api.pod-escape"),
    ("PATCH", DEPLOY + "/web", [{"op": "add", "path":
                                "/spec/template/spec/containers/0/securityContext/privileged",
                                "value": True}], JPATCH, "deny", "api.pod-escape"),
    ("PATCH", DEPLOY + "/web", [{"op": "add", "path":
                                "/spec/template/spec/containers/0/securityContext",
                                "value": {"capabilities": {"add": ["NET_ADMIN"]}}}], JPATCH,
     "deny", "api.pod-escape"),
    ("PATCH", DEPLOY + "/web", [{"op": "add", "path":
                                "/spec/template/spec/containers/0/securityContext/capabilities"
                                "/add/-", "value": "SYS_PTRACE"}], JPATCH, "deny",
     "api.pod-escape"),
    ("PATCH", DEPLOY + "/web", [{"op": "copy", "from": "/metadata/x",
                                "path": "/spec/template/spec/hostPID"}], JPATCH, "deny",
     "api.pod-escape"),
    ("PATCH", DEPLOY + "/web", [{"op": "replace", "path": "/spec/template/spec/containers/0"
                                "/image", "value": "nginx:2"}], JPATCH, "allow",
     "api.namespaced"),
    ("PATCH", "/api/v1/namespaces/team-a/pods/p/ephemeralcontainers",
     {"spec": {"ephemeralContainers": [{"name": "d", "securityContext": {"privileged": True}}]}},
     SMP, "deny", "api.pod-escape"),
    ("PUT", DEPLOY + "/web", _deploy(hostPID=True), JSON, "deny", "api.pod-escape"),
    ("POST", DEPLOY + "?dryRun=All", _deploy(hostPID=True), JSON, "deny", "api.pod-escape"),
    # scale or patch replicas to zero
    ("PATCH", DEPLOY + "/web", {"spec": {"replicas": 0}}, SMP, "review", "api.scale-to-zero"),
    ("PATCH", DEPLOY + "/web", [{"op": "replace", "path": "/spec/replicas", "value": 0}],
     JPATCH, "review", "api.scale-to-zero"),
    ("PATCH", DEPLOY + "/web/scale", {"spec": {"replicas": 0}}, MERGE, "review",
     "api.scale-to-zero"),
    ("PUT", DEPLOY + "/web/scale", {"kind": "Scale", "spec": {"replicas": 0}}, JSON, "review",
     "api.scale-to-zero"),
    ("PUT", "/apis/apps/v1/namespaces/team-a/statefulsets/db/scale", {"spec": {"replicas": 0}},
     JSON, "review", "api.scale-to-zero"),
    ("PUT", DEPLOY + "/web/scale", {"kind": "Scale", "spec": {}}, JSON, "review",
     "api.scale-to-zero"),  # ScaleSpec.replicas is a plain int32: absent is 0
    ("PATCH", DEPLOY + "/web", {"spec": {"replicas": "0"}}, SMP, "review",
     "api.scale-to-zero"),  # not a number: judged as unknown
    ("PATCH", DEPLOY + "/web", "spec: {replicas: 0}\n", APPLY, "review", "api.scale-to-zero"),
    ("PATCH", DEPLOY + "/web", {"spec": {"replicas": 3}}, SMP, "allow", "api.namespaced"),
    ("PATCH", DEPLOY + "/web/scale", {"spec": {"replicas": 1}}, MERGE, "allow",
     "api.namespaced"),
    # RBAC: powerful roles and bindings
    ("POST", RBAC + "/rolebindings", {"roleRef": {"kind": "ClusterRole", "name": "admin"}},
     JSON, "review", "api.rolebinding"),
    ("POST", RBAC + "/rolebindings",
     {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}, JSON, "review",
     "api.rolebinding"),
    ("POST", RBAC + "/rolebindings", {"roleRef": {"kind": "Role", "name": "view"}}, JSON,
     "review", "api.rolebinding"),
    ("POST", RBAC + "/rolebindings", {"roleRef": {"kind": "ClusterRole", "name": "view"}},
     JSON, "allow", "api.rolebinding-view"),
    ("PATCH", RBAC + "/rolebindings/v", {"subjects": [{"kind": "ServiceAccount",
                                                       "name": "x"}]}, SMP, "review",
     "api.rolebinding"),
    ("POST", RBAC + "/roles", {"rules": [{"verbs": ["*"], "resources": ["pods"]}]}, JSON,
     "review", "api.powerful-role"),
    ("POST", RBAC + "/roles", {"rules": [{"verbs": ["escalate"], "resources": ["roles"]}]},
     JSON, "review", "api.powerful-role"),
    ("POST", RBAC + "/roles", {"rules": [{"verbs": ["bind"], "resources": ["roles"]}]},
     JSON, "review", "api.powerful-role"),
    ("POST", RBAC + "/roles",
     {"rules": [{"verbs": ["impersonate"], "resources": ["serviceaccounts"]}]}, JSON,
     "review", "api.powerful-role"),
    ("PATCH", RBAC + "/roles/r", [{"op": "add", "path": "/rules/0/verbs/-", "value": "*"}],
     JPATCH, "review", "api.powerful-role"),
    ("POST", RBAC + "/roles", {"rules": [{"verbs": ["get", "list"], "resources": ["pods"]}]},
     JSON, "warn", "api.namespaced"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "target", "body", "ctype", "action", "rule"), BODY_CASES)
def test_body_rules(
    method: str, target: str, body: Any, ctype: str, action: str, rule: str | None
) -> None:
    raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else None)
    data = raw.encode() if isinstance(raw, str) else raw
    if data is None:
        data = json.dumps(body).encode()
    v = decide(with_body(classify(method, target), data, ctype), GRANT)
    assert (v.action.value, v.rule) == (action, rule), v.reason


PREVIEW = grant(dry_run_only=True)


@pytest.mark.parametrize(
    ("method", "target", "body", "action", "rule"),
    [
        ("PATCH", DEPLOY + "/web", {"spec": {"replicas": 0}}, "deny", "preview.dry-run-only"),
        (
            "PATCH",
            DEPLOY + "/web?dryRun=All",
            {"spec": {"replicas": 0}},
            "allow",
            "api.scale-to-zero",
        ),  # a dry run shows what review is about
        (
            "PATCH",
            DEPLOY + "/web?dryRun=all",
            {"spec": {"replicas": 2}},
            "deny",
            "preview.dry-run-only",
        ),  # the apiserver only knows "All"
        ("PATCH", DEPLOY + "/web?dryRun=", {}, "deny", "preview.dry-run-only"),
        ("DELETE", DEPLOY + "/web", None, "deny", "preview.dry-run-only"),
        ("DELETE", DEPLOY + "/web?dryRun=All", None, "allow", "api.namespaced"),
        ("DELETE", DEPLOY, None, "deny", "preview.dry-run-only"),
        ("DELETE", DEPLOY + "?dryRun=All", None, "allow", "api.delete-collection"),
        ("DELETE", "/api/v1/namespaces/team-a?dryRun=All", None, "deny", "api.delete-namespace"),
        ("POST", DEPLOY, {}, "deny", "preview.dry-run-only"),
        ("PUT", DEPLOY + "/web/scale", {"spec": {"replicas": 0}}, "deny", "preview.dry-run-only"),
        (
            "POST",
            "/api/v1/namespaces/team-a/pods/p/exec?command=sh&dryRun=All",
            None,
            "deny",
            "preview.dry-run-only",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/pods/p/portforward?ports=80",
            None,
            "deny",
            "preview.dry-run-only",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/services/s/proxy/x",
            None,
            "deny",
            "preview.dry-run-only",
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {},
            "deny",
            "preview.dry-run-only",
        ),
        (
            "POST",
            "/api/v1/namespaces/team-a/serviceaccounts/s/token?dryRun=All",
            {},
            "deny",
            "api.serviceaccount-token",
        ),
        ("POST", "/version", None, "deny", "preview.dry-run-only"),
        ("GET", DEPLOY + "/web", None, "allow", "api.namespaced"),
        ("GET", "/api/v1/namespaces/team-a/secrets/s", None, "deny", "api.secret-read"),
        ("GET", "/api/v1/namespaces/team-b/pods", None, "deny", GRANT_NAMESPACE),
    ],
)
def test_preview_credentials_never_change_anything(
    method: str, target: str, body: Any, action: str, rule: str | None
) -> None:
    api = classify(method, target)
    if body is not None:
        api = with_body(api, json.dumps(body).encode(), JSON)
    v = decide(api, PREVIEW)
    assert (v.action.value, v.rule) == (action, rule), v.reason
    if method not in ("GET", "HEAD"):
        assert v.allowed is ("dryRun=All" in target and action == "allow")


def test_body_conditions_round_trip_and_validate() -> None:
    rules = ApiRules.from_yaml(
        "version: 1\nrules:\n- id: x\n  priority: 1\n  action: deny\n  match:\n"
        "    secret_types: [a]\n    pod_risks: [privileged]\n    role_refs: [ClusterRole/x]\n"
        "    role_verbs: [bind]\n    replicas: ['0']\n    label_selectors: [owner=helm]\n"
    )
    assert ApiRules.from_yaml(rules.to_yaml()) == rules
    with pytest.raises(PolicyError, match="expected a list"):
        ApiRules.from_yaml(
            "version: 1\nrules:\n- {id: x, priority: 1, action: deny, "
            "match: {pod_risks: privileged}}\n"
        )


# Kubernetes protobuf bodies (what kubectl sends for objects it builds itself) -----------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _f(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _envelope(kind: str, obj: bytes, version: str = "v1") -> bytes:
    return b"k8s\x00" + _f(1, _f(1, version) + _f(2, kind)) + _f(2, obj)


def _pb_pod(*spec: bytes) -> bytes:
    return _f(1, _f(1, "p")) + _f(2, b"".join(spec))


_CONTAINER = _f(1, "c") + _f(2, "registry.invalid/x:1")
PB = "application/vnd.kubernetes.protobuf"

PROTOBUF_CASES: list[tuple[str, str, bytes, str, str | None]] = [
    ("POST", "/api/v1/namespaces/team-a/pods", _envelope("Pod", _pb_pod(_f(2, _CONTAINER))),
     "allow", "api.namespaced"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _envelope("Pod", _pb_pod(_f(2, _CONTAINER), _f(12, 1))), "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _envelope("Pod", _pb_pod(_f(2, _CONTAINER + _f(15, _f(2, 1))))), "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _envelope("Pod", _pb_pod(_f(2, _CONTAINER + _f(15, _f(1, _f(1, "SYS_ADMIN")))))), "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _envelope("Pod", _pb_pod(_f(2, _CONTAINER + _f(6, _f(2, 80) + _f(3, 80))))), "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",
     _envelope("Pod", _pb_pod(_f(2, _CONTAINER), _f(1, _f(1, "h") + _f(2, _f(1, _f(1, "/")))))),
     "deny", "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",  # hostPID twice: Go would take the last
     _envelope("Pod", _pb_pod(_f(2, _CONTAINER), _f(12, 0), _f(12, 1))), "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/pods",  # a Deployment sent to pods
     _envelope("Deployment", _f(2, b"")), "deny", "api.pod-escape"),
    ("POST", "/apis/apps/v1/namespaces/team-a/deployments",
     _envelope("Deployment", _f(2, _f(1, 2) + _f(3, _f(2, _f(2, _CONTAINER) + _f(11, 1)))),
               "apps/v1"), "deny", "api.pod-escape"),
    ("POST", "/apis/apps/v1/namespaces/team-a/deployments",
     _envelope("Deployment", _f(2, _f(1, 2) + _f(3, _f(2, _f(2, _CONTAINER)))), "apps/v1"),
     "allow", "api.namespaced"),
    ("POST", "/apis/batch/v1/namespaces/team-a/cronjobs",
     _envelope("CronJob", _f(2, _f(5, _f(2, _f(6, _f(2, _f(13, 1)))))), "batch/v1"), "deny",
     "api.pod-escape"),
    ("POST", "/api/v1/namespaces/team-a/secrets",
     _envelope("Secret", _f(1, _f(1, "t")) + _f(3, "kubernetes.io/service-account-token")),
     "deny", "api.secret-token-type"),
    ("POST", "/api/v1/namespaces/team-a/secrets",
     _envelope("Secret", _f(1, _f(1, "s")) + _f(3, "Opaque")), "allow", "api.namespaced"),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings",
     _envelope("RoleBinding", _f(3, _f(2, "ClusterRole") + _f(3, "view"))), "allow",
     "api.rolebinding-view"),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings",
     _envelope("RoleBinding", _f(3, _f(2, "ClusterRole") + _f(3, "admin"))), "review",
     "api.rolebinding"),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles",
     _envelope("Role", _f(2, _f(1, "get") + _f(1, "*"))), "review", "api.powerful-role"),
    ("PUT", "/apis/apps/v1/namespaces/team-a/deployments/web/scale",
     _envelope("Scale", _f(2, _f(1, 0)), "autoscaling/v1"), "review", "api.scale-to-zero"),
    ("PUT", "/apis/apps/v1/namespaces/team-a/deployments/web/scale",  # no replicas: 0 in Go
     _envelope("Scale", _f(2, b""), "autoscaling/v1"), "review", "api.scale-to-zero"),
    ("PUT", "/apis/apps/v1/namespaces/team-a/deployments/web/scale",
     _envelope("Scale", _f(2, _f(1, 3)), "autoscaling/v1"), "allow", "api.namespaced"),
    ("POST", "/api/v1/namespaces/team-a/pods", b"k8s\x00\xff", "deny", "api.pod-escape"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "target", "body", "action", "rule"), PROTOBUF_CASES)
def test_protobuf_bodies(
    method: str, target: str, body: bytes, action: str, rule: str | None
) -> None:
    v = decide(with_body(classify(method, target), body, PB), GRANT)
    assert (v.action.value, v.rule) == (action, rule), v.reason
