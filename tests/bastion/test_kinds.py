from __future__ import annotations

import pytest

from casemate.bastion.kinds import (
    BUILTIN_KINDS,
    CATEGORY_ALL,
    canonical_kind,
    is_builtin,
    is_namespaced,
)


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("po", "pods"),
        ("pod", "pods"),
        ("pods", "pods"),
        ("Pod", "pods"),
        ("PODS", "pods"),
        ("pods.v1.", "pods"),
        ("pod.", "pods"),
        ("deploy", "deployments"),
        ("deployment", "deployments"),
        ("Deployment", "deployments"),
        ("deployment.apps", "deployments"),
        ("deployments.v1.apps", "deployments"),
        ("ns", "namespaces"),
        ("NS", "namespaces"),
        ("namespace", "namespaces"),
        ("svc", "services"),
        ("cm", "configmaps"),
        ("secret", "secrets"),
        ("secret.v1.", "secrets"),
        ("secret.v1", "secrets"),
        ("sa", "serviceaccounts"),
        ("rs", "replicasets"),
        ("ds", "daemonsets"),
        ("sts", "statefulsets"),
        ("job", "jobs"),
        ("cj", "cronjobs"),
        ("ing", "ingresses"),
        ("netpol", "networkpolicies"),
        ("pv", "persistentvolumes"),
        ("pvc", "persistentvolumeclaims"),
        ("no", "nodes"),
        ("node", "nodes"),
        ("crd", "customresourcedefinitions"),
        ("crds", "customresourcedefinitions"),
        ("clusterrole", "clusterroles"),
        ("ClusterRoleBinding", "clusterrolebindings"),
        ("role", "roles"),
        ("rolebindings.rbac.authorization.k8s.io", "rolebindings"),
        ("hpa", "horizontalpodautoscalers"),
        ("csr", "certificatesigningrequests"),
        ("pdb", "poddisruptionbudgets"),
        ("ev", "events"),
        ("events.events.k8s.io", "events"),
        ("quota", "resourcequotas"),
        ("limits", "limitranges"),
        ("all", "all"),
        ("ALL", "all"),
        # custom resources: as typed, lowercased, version dropped
        ("certificates.cert-manager.io", "certificates.cert-manager.io"),
        ("certificates.v1.cert-manager.io", "certificates.cert-manager.io"),
        ("Certificate", "certificate"),
        ("widgets.v1beta1.example.com", "widgets.example.com"),
        ("widgets.example", "widgets.example"),
    ],
)
def test_canonical_kind(typed: str, canonical: str):
    assert canonical_kind(typed) == canonical


@pytest.mark.parametrize("typed", ["", "a b", "po/x", "nѕ", "ｐｏ", "-po", "po*", "po_x", ".po"])
def test_not_a_kind(typed: str):
    assert canonical_kind(typed) is None


def test_aliases_are_unique_and_canonical_is_plural():
    seen: dict[str, str] = {}
    for info in BUILTIN_KINDS:
        assert canonical_kind(info.plural) == info.plural
        for alias in (info.plural, info.singular, *info.short):
            assert seen.setdefault(alias, info.plural) == info.plural
    assert CATEGORY_ALL <= {info.plural for info in BUILTIN_KINDS}


def test_scope():
    assert is_builtin("pods") and is_namespaced("pods") is True
    assert is_namespaced("namespaces") is False
    assert is_namespaced("clusterrolebindings") is False
    assert not is_builtin("widgets.example.com")
    assert is_namespaced("widgets.example.com") is None
