"""Built-in Kubernetes resource kinds, their aliases, and canonicalisation of a typed kind.

The canonical name of a kind is its plural resource name (``namespaces``, ``deployments``).
kubectl resolves a typed kind case-insensitively from the plural, the singular, a short name or
the kind, optionally qualified by group (``deployment.apps``) or version and group
(``deployments.v1.apps``, ``secret.v1.`` for the core group). We do the same without asking the
API server:

* the part before the first dot is looked up in :data:`BUILTIN_KINDS`; if it names a built-in
  kind, that kind is the answer whatever group follows. This is deliberately conservative: a
  custom resource that reuses a built-in name in another group (``pods.metrics.k8s.io``) is
  treated like the built-in, so a rule about the built-in also covers it;
* anything else is a custom resource: its canonical name is the typed text lowercased with the
  version removed (``certificates.v1.cert-manager.io`` → ``certificates.cert-manager.io``).
  Custom kinds cannot be mapped between singular, plural and short names without discovery,
  so rules about them should use globs (``certificate*``).

``all`` is kubectl's category; :data:`CATEGORY_ALL` lists its built-in members (custom
resources may join the category, which the policy treats as "maybe").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "BUILTIN_KINDS",
    "CATEGORY_ALL",
    "KindInfo",
    "canonical_kind",
    "is_builtin",
    "is_namespaced",
]


@dataclass(frozen=True)
class KindInfo:
    plural: str
    singular: str
    group: str
    namespaced: bool
    short: tuple[str, ...] = ()


def _k(plural: str, singular: str, group: str, namespaced: bool, *short: str) -> KindInfo:
    return KindInfo(plural, singular, group, namespaced, short)


_NS = True
_CLUSTER = False

BUILTIN_KINDS: tuple[KindInfo, ...] = (
    # core
    _k("bindings", "binding", "", _NS),
    _k("componentstatuses", "componentstatus", "", _CLUSTER, "cs"),
    _k("configmaps", "configmap", "", _NS, "cm"),
    _k("endpoints", "endpoints", "", _NS, "ep"),
    _k("events", "event", "", _NS, "ev"),
    _k("limitranges", "limitrange", "", _NS, "limits"),
    _k("namespaces", "namespace", "", _CLUSTER, "ns"),
    _k("nodes", "node", "", _CLUSTER, "no"),
    _k("persistentvolumeclaims", "persistentvolumeclaim", "", _NS, "pvc"),
    _k("persistentvolumes", "persistentvolume", "", _CLUSTER, "pv"),
    _k("pods", "pod", "", _NS, "po"),
    _k("podtemplates", "podtemplate", "", _NS),
    _k("replicationcontrollers", "replicationcontroller", "", _NS, "rc"),
    _k("resourcequotas", "resourcequota", "", _NS, "quota"),
    _k("secrets", "secret", "", _NS),
    _k("serviceaccounts", "serviceaccount", "", _NS, "sa"),
    _k("services", "service", "", _NS, "svc"),
    # admissionregistration.k8s.io
    _k(
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        "admissionregistration.k8s.io",
        _CLUSTER,
    ),
    _k(
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        "admissionregistration.k8s.io",
        _CLUSTER,
    ),
    _k(
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        "admissionregistration.k8s.io",
        _CLUSTER,
    ),
    _k(
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        "admissionregistration.k8s.io",
        _CLUSTER,
    ),
    _k(
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicy",
        "admissionregistration.k8s.io",
        _CLUSTER,
    ),
    _k(
        "mutatingadmissionpolicybindings",
        "mutatingadmissionpolicybinding",
        "admissionregistration.k8s.io",
        _CLUSTER,
    ),
    # apiextensions / apiregistration
    _k(
        "customresourcedefinitions",
        "customresourcedefinition",
        "apiextensions.k8s.io",
        _CLUSTER,
        "crd",
        "crds",
    ),
    _k("apiservices", "apiservice", "apiregistration.k8s.io", _CLUSTER),
    # apps
    _k("controllerrevisions", "controllerrevision", "apps", _NS),
    _k("daemonsets", "daemonset", "apps", _NS, "ds"),
    _k("deployments", "deployment", "apps", _NS, "deploy"),
    _k("replicasets", "replicaset", "apps", _NS, "rs"),
    _k("statefulsets", "statefulset", "apps", _NS, "sts"),
    # authentication / authorization
    _k("selfsubjectreviews", "selfsubjectreview", "authentication.k8s.io", _CLUSTER),
    _k("tokenreviews", "tokenreview", "authentication.k8s.io", _CLUSTER),
    _k("localsubjectaccessreviews", "localsubjectaccessreview", "authorization.k8s.io", _NS),
    _k("selfsubjectaccessreviews", "selfsubjectaccessreview", "authorization.k8s.io", _CLUSTER),
    _k("selfsubjectrulesreviews", "selfsubjectrulesreview", "authorization.k8s.io", _CLUSTER),
    _k("subjectaccessreviews", "subjectaccessreview", "authorization.k8s.io", _CLUSTER),
    # autoscaling / batch
    _k("horizontalpodautoscalers", "horizontalpodautoscaler", "autoscaling", _NS, "hpa"),
    _k("cronjobs", "cronjob", "batch", _NS, "cj"),
    _k("jobs", "job", "batch", _NS),
    # certificates / coordination / discovery
    _k(
        "certificatesigningrequests",
        "certificatesigningrequest",
        "certificates.k8s.io",
        _CLUSTER,
        "csr",
    ),
    _k("clustertrustbundles", "clustertrustbundle", "certificates.k8s.io", _CLUSTER),
    _k("leases", "lease", "coordination.k8s.io", _NS),
    _k("endpointslices", "endpointslice", "discovery.k8s.io", _NS),
    # flowcontrol
    _k("flowschemas", "flowschema", "flowcontrol.apiserver.k8s.io", _CLUSTER),
    _k(
        "prioritylevelconfigurations",
        "prioritylevelconfiguration",
        "flowcontrol.apiserver.k8s.io",
        _CLUSTER,
    ),
    # networking
    _k("ingressclasses", "ingressclass", "networking.k8s.io", _CLUSTER),
    _k("ingresses", "ingress", "networking.k8s.io", _NS, "ing"),
    _k("networkpolicies", "networkpolicy", "networking.k8s.io", _NS, "netpol"),
    _k("ipaddresses", "ipaddress", "networking.k8s.io", _CLUSTER),
    _k("servicecidrs", "servicecidr", "networking.k8s.io", _CLUSTER),
    # node / policy / rbac
    _k("runtimeclasses", "runtimeclass", "node.k8s.io", _CLUSTER),
    _k("poddisruptionbudgets", "poddisruptionbudget", "policy", _NS, "pdb"),
    _k("clusterrolebindings", "clusterrolebinding", "rbac.authorization.k8s.io", _CLUSTER),
    _k("clusterroles", "clusterrole", "rbac.authorization.k8s.io", _CLUSTER),
    _k("rolebindings", "rolebinding", "rbac.authorization.k8s.io", _NS),
    _k("roles", "role", "rbac.authorization.k8s.io", _NS),
    # resource / scheduling / storage
    _k("deviceclasses", "deviceclass", "resource.k8s.io", _CLUSTER),
    _k("resourceclaims", "resourceclaim", "resource.k8s.io", _NS),
    _k("resourceclaimtemplates", "resourceclaimtemplate", "resource.k8s.io", _NS),
    _k("resourceslices", "resourceslice", "resource.k8s.io", _CLUSTER),
    _k("priorityclasses", "priorityclass", "scheduling.k8s.io", _CLUSTER, "pc"),
    _k("csidrivers", "csidriver", "storage.k8s.io", _CLUSTER),
    _k("csinodes", "csinode", "storage.k8s.io", _CLUSTER),
    _k("csistoragecapacities", "csistoragecapacity", "storage.k8s.io", _NS),
    _k("storageclasses", "storageclass", "storage.k8s.io", _CLUSTER, "sc"),
    _k("volumeattachments", "volumeattachment", "storage.k8s.io", _CLUSTER),
    _k("volumeattributesclasses", "volumeattributesclass", "storage.k8s.io", _CLUSTER, "vac"),
)

CATEGORY_ALL: frozenset[str] = frozenset(
    {
        "pods",
        "replicationcontrollers",
        "services",
        "daemonsets",
        "deployments",
        "replicasets",
        "statefulsets",
        "horizontalpodautoscalers",
        "cronjobs",
        "jobs",
    }
)


def _alias_table() -> Mapping[str, KindInfo]:
    table: dict[str, KindInfo] = {}
    for info in BUILTIN_KINDS:
        for alias in (info.plural, info.singular, *info.short):
            existing = table.get(alias)
            if existing is not None and existing is not info:
                raise AssertionError(f"kind alias {alias!r} is ambiguous")
            table[alias] = info
    return table


_ALIASES = _alias_table()
_BY_PLURAL = {info.plural: info for info in BUILTIN_KINDS}

# What a typed kind may contain: DNS-ish names, dots for group/version. Anything else (spaces,
# non-ASCII look-alikes, slashes) is refused by the caller.
_KIND_TEXT = re.compile(r"[a-z0-9]([a-z0-9.-]*)?")


def canonical_kind(typed: str) -> str | None:
    """The canonical name of a typed kind, or None if the text cannot be a kind at all."""
    lowered = typed.lower()
    if not typed.isascii() or not _KIND_TEXT.fullmatch(lowered):
        return None
    if lowered == "all":
        return "all"
    head, dot, rest = lowered.partition(".")
    info = _ALIASES.get(head)
    if info is not None:
        return info.plural
    if not dot:
        return lowered
    # custom resource: drop the version of RESOURCE.VERSION.GROUP
    version, dot2, group = rest.partition(".")
    if dot2 and re.fullmatch(r"v\d+((alpha|beta)\d+)?", version):
        return f"{head}.{group}" if group else head
    return lowered


def is_builtin(kind: str) -> bool:
    return kind in _BY_PLURAL


def is_namespaced(kind: str) -> bool | None:
    """Whether a canonical kind is namespaced; None for custom kinds (unknown)."""
    info = _BY_PLURAL.get(kind)
    return None if info is None else info.namespaced
