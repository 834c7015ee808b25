from __future__ import annotations

import pytest

from tests.posture.helpers import hits, pod


def role(*rules, kind="ClusterRole", labels=None):
    meta = {"name": "r", **({"labels": labels} if labels else {})}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "rules": list(rules),
    }


def grant(groups, resources, verbs):
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


@pytest.mark.parametrize(
    ("rule_id", "grant_", "expected"),
    [
        ("rbac.wildcard-verbs", grant([""], ["pods"], ["*"]), 1),
        ("rbac.wildcard-verbs", grant([""], ["pods"], ["get"]), 0),
        ("rbac.wildcard-resources", grant([""], ["*"], ["get"]), 1),
        ("rbac.secrets-read", grant([""], ["secrets"], ["list"]), 1),
        ("rbac.secrets-read", grant(["*"], ["*"], ["get"]), 1),
        ("rbac.secrets-read", grant(["apps"], ["secrets"], ["get"]), 0),
        ("rbac.secrets-read", grant([""], ["secrets"], ["create"]), 0),
        ("rbac.escalate-bind-impersonate", grant([""], ["users"], ["impersonate"]), 1),
        (
            "rbac.escalate-bind-impersonate",
            grant(["rbac.authorization.k8s.io"], ["clusterroles"], ["bind", "escalate"]),
            1,
        ),
        ("rbac.pods-exec", grant([""], ["pods/exec"], ["create"]), 1),
        ("rbac.pods-exec", grant([""], ["pods/attach"], ["get"]), 1),
        ("rbac.pods-exec", grant([""], ["pods/log"], ["get"]), 0),
        ("rbac.nodes-proxy", grant([""], ["nodes/proxy"], ["get"]), 1),
        ("rbac.workload-create", grant(["apps"], ["deployments"], ["create"]), 1),
        ("rbac.workload-create", grant([""], ["deployments"], ["create"]), 0),
        ("rbac.token-create", grant([""], ["serviceaccounts/token"], ["create"]), 1),
        ("rbac.csr-approve", grant(["certificates.k8s.io"], ["signers"], ["approve"]), 1),
        (
            "rbac.admission-webhooks-write",
            grant(
                ["admissionregistration.k8s.io"], ["validatingwebhookconfigurations"], ["delete"]
            ),
            1,
        ),
    ],
)
def test_role_rules(rule_id, grant_, expected):
    assert len(hits(rule_id, role(grant_))) == expected
    assert len(hits(rule_id, role(grant_, kind="Role"))) == expected


def test_default_roles_are_skipped():
    obj = role(grant(["*"], ["*"], ["*"]), labels={"kubernetes.io/bootstrapping": "rbac-defaults"})
    assert hits("rbac.wildcard-verbs", obj) == []


def test_paths_point_at_the_rule():
    obj = role(grant([""], ["pods"], ["get"]), grant([""], ["pods"], ["*"]))
    assert hits("rbac.wildcard-verbs", obj) == [("rules[1].verbs", ["*"])]


def binding(role_name, *subjects, kind="ClusterRoleBinding"):
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "b"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role_name,
        },
        "subjects": list(subjects),
    }


def test_cluster_admin_bindings():
    user = {"kind": "User", "name": "alice"}
    masters = {"kind": "Group", "name": "system:masters"}
    assert hits("rbac.cluster-admin-binding", binding("cluster-admin", masters, user)) == [
        ("subjects[1]", user)
    ]
    assert hits("rbac.cluster-admin-binding", binding("view", user)) == []


def test_anonymous_bindings():
    anon = {"kind": "User", "name": "system:anonymous"}
    assert len(hits("rbac.anonymous-binding", binding("view", anon))) == 1
    unauth = {"kind": "Group", "name": "system:unauthenticated"}
    assert hits("rbac.anonymous-binding", binding("system:public-info-viewer", unauth)) == []


def test_service_account_tokens():
    assert hits("rbac.automount-token", pod()) == [("spec.automountServiceAccountToken", None)]
    assert hits("rbac.automount-token", pod({"automountServiceAccountToken": False})) == []
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}}
    assert len(hits("rbac.serviceaccount-automount", sa)) == 1
    assert (
        hits("rbac.serviceaccount-automount", {**sa, "automountServiceAccountToken": False}) == []
    )
    assert len(hits("rbac.default-service-account", pod({"serviceAccountName": "default"}))) == 1
    assert hits("rbac.default-service-account", pod({"serviceAccountName": "web"})) == []


def _env(*env, env_from=None):
    c = {"name": "a", "image": "a:1", "env": list(env)}
    if env_from:
        c["envFrom"] = env_from
    return pod({"containers": [c]})


def test_env_literals():
    obj = _env(
        {"name": "DB_PASSWORD", "value": "hunter2hunter2"},
        {"name": "PASSWORD_FILE", "value": "/run/x"},
        {"name": "MODE", "value": "x"},
    )
    assert hits("secrets.env-literal", obj) == [("spec.containers[0].env[0].value", "hunt…")]
    assert hits("secrets.env-literal", _env({"name": "API_TOKEN", "value": ""})) == []


def test_private_keys_and_tokens():
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
    assert len(hits("secrets.private-key", _env({"name": "K", "value": key}))) == 1
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"tls.key": key, "aws": "AKIAABCDEFGHIJKLMNOP"},
    }
    assert hits("secrets.private-key", cm)[0][0] == "data['tls.key']"
    assert hits("secrets.token-format", cm) == [("data.aws", "AKIA…")]
    assert hits("secrets.configmap-credential", {**cm, "data": {"db_password": "x1"}}) == [
        ("data.db_password", "…")
    ]


def test_secret_refs():
    ref = {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert hits("secrets.env-secret-ref", _env(ref)) == [
        ("spec.containers[0].env[0].valueFrom.secretKeyRef", {"name": "s", "key": "k"})
    ]
    obj = _env(env_from=[{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "s"}}])
    assert hits("secrets.envfrom-secret", obj) == [
        ("spec.containers[0].envFrom[1].secretRef", {"name": "s"})
    ]
