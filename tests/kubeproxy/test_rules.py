"""API rules: the grant boundary, the default rule set, YAML loading."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml

from casemate.errors import InvalidInput, PolicyError
from casemate.kubeproxy.classify import classify
from casemate.kubeproxy.rules import (
    DEFAULT_RULES_YAML,
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
    ("POST", "/apis/apps/v1/namespaces/team-a/deployments", "allow", "api.namespaced"),
    ("PATCH", "/apis/apps/v1/namespaces/team-a/deployments/d", "allow", "api.namespaced"),
    ("DELETE", "/api/v1/namespaces/team-a/pods/p", "allow", "api.namespaced"),
    ("PUT", "/apis/apps/v1/namespaces/team-a/deployments/d/scale", "allow", "api.namespaced"),
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
    ("PATCH", "/api/v1/namespaces/team-a/pods/p/ephemeralcontainers", "review",
     "api.ephemeral-containers"),
    ("DELETE", "/api/v1/namespaces/team-a/pods", "review", "api.delete-collection"),
    # warnings
    ("GET", "/api/v1/namespaces/team-a/secrets", "warn", "api.namespaced"),
    ("GET", "/api/v1/namespaces/team-a/secrets/s", "warn", "api.namespaced"),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings", "warn",
     "api.namespaced"),
    ("POST", "/api/v1/namespaces/team-a/secrets", "allow", "api.namespaced"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "target", "action", "rule"), DEFAULT_CASES)
def test_default_rules(method: str, target: str, action: str, rule: str | None) -> None:
    v = verdict(method, target)
    assert (v.action.value, v.rule) == (action, rule), v.reason
    assert v.allowed is (action in ("allow", "warn"))


def test_warnings_are_collected_and_named() -> None:
    v = verdict("GET", "/api/v1/namespaces/team-a/secrets/s")
    assert v.action == ApiAction.WARN
    assert [n.rule for n in v.warnings] == ["api.secret-read"]
    assert "secrets" in v.warnings[0].reason


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
