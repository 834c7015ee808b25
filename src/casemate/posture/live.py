"""Live input: a cluster's objects read through the API, page by page.

Each resource is listed with ``limit``/``continue`` so memory stays one page deep whatever the
cluster's size; objects are yielded as they arrive. List responses carry no kind on their
items, so it is set from the resource. Objects a controller owns (a Deployment's ReplicaSets
and their Pods, a CronJob's Jobs) are skipped when their owner's kind is scanned: their owner's
template already carries the findings, once. A resource the credential may not list is a
:class:`~casemate.posture.manifests.LoadProblem` (not checked), and the scan goes on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from casemate.errors import CasemateError, NotFound
from casemate.k8s.access import stored_client
from casemate.k8s.client import ClusterForbidden, CredentialRejected, KubeClient
from casemate.k8s.clusters import Clusters
from casemate.posture.manifests import LoadProblem
from casemate.posture.model import Subject

__all__ = [
    "ANONYMOUS_PROBES",
    "RESOURCES",
    "LiveResource",
    "anonymous_client",
    "cluster_client",
    "controller_owned",
    "iter_cluster",
    "iter_kubelets",
    "probe_anonymous",
]


@dataclass(frozen=True)
class LiveResource:
    group_version: str  # "v1", "apps/v1"
    resource: str
    kind: str
    namespaced: bool = True

    def path(self, namespace: str | None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if namespace is not None and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.resource}"
        return f"{base}/{self.resource}"


RESOURCES: Final = (
    LiveResource("v1", "pods", "Pod"),
    LiveResource("apps/v1", "deployments", "Deployment"),
    LiveResource("apps/v1", "statefulsets", "StatefulSet"),
    LiveResource("apps/v1", "daemonsets", "DaemonSet"),
    LiveResource("apps/v1", "replicasets", "ReplicaSet"),
    LiveResource("batch/v1", "jobs", "Job"),
    LiveResource("batch/v1", "cronjobs", "CronJob"),
    LiveResource("v1", "replicationcontrollers", "ReplicationController"),
    LiveResource("v1", "services", "Service"),
    LiveResource("v1", "serviceaccounts", "ServiceAccount"),
    LiveResource("v1", "configmaps", "ConfigMap"),
    LiveResource("v1", "limitranges", "LimitRange"),
    LiveResource("v1", "resourcequotas", "ResourceQuota"),
    LiveResource("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
    LiveResource("rbac.authorization.k8s.io/v1", "roles", "Role"),
    LiveResource("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    LiveResource("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    LiveResource(
        "rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False
    ),
)
_SCANNED_KINDS: Final = frozenset(r.kind for r in RESOURCES)


def controller_owned(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata")
    owners = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    if not isinstance(owners, list):
        return False
    return any(
        isinstance(o, Mapping) and o.get("controller") is True and o.get("kind") in _SCANNED_KINDS
        for o in owners
    )


def iter_cluster(
    client: KubeClient,
    *,
    cluster: str,
    namespace: str | None = None,
    page_size: int = 500,
    resources: tuple[LiveResource, ...] = RESOURCES,
) -> Iterator[Subject | LoadProblem]:
    """Every object of ``resources`` (in ``namespace``, or all; cluster-scoped ones only for a
    whole-cluster scan), owned objects skipped, and what could not be listed."""
    where = f"cluster {cluster}"
    for res in resources:
        if namespace is not None and not res.namespaced:
            continue
        token = ""
        while True:
            params = {"limit": str(page_size)}
            if token:
                params["continue"] = token
            try:
                page = client.get(res.path(namespace), what=f"list {res.resource}", params=params)
            except CasemateError as e:
                yield LoadProblem(where, f"{res.resource} not checked: {e.message}")
                break
            items = page.get("items")
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict) or controller_owned(item):
                    continue
                item["kind"] = res.kind
                item["apiVersion"] = res.group_version
                yield Subject(item)
            meta = page.get("metadata")
            token = meta.get("continue", "") if isinstance(meta, Mapping) else ""
            if not token:
                break


def cluster_client(clusters: Clusters, cluster: str, account: str | None = None) -> KubeClient:
    """A client for ``cluster`` as one of its stored system accounts (the only one, or the one
    named; see :func:`casemate.k8s.access.stored_access`)."""
    return stored_client(clusters, cluster, account, via="posture scan")


#: What an anonymous caller is asked (read-only), and whether Kubernetes' defaults answer it.
ANONYMOUS_PROBES: Final = (
    ("/version", True),
    ("/api", False),
    ("/apis", False),
    ("/api/v1/namespaces?limit=1", False),
    ("/api/v1/pods?limit=1", False),
    ("/api/v1/secrets?limit=1", False),
    ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?limit=1", False),
)


def probe_anonymous(client: KubeClient, *, cluster: str) -> Subject | LoadProblem:
    """A ``ClusterAccess`` fact object: which of :data:`ANONYMOUS_PROBES` the API server
    answers without credentials (``client`` must carry none)."""
    answered: dict[str, bool] = {}
    for path, _default in ANONYMOUS_PROBES:
        base, _, query = path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&")) if query else None
        try:
            client.get(base, what=f"read {base} anonymously", params=params)
            answered[path] = True
        except (CredentialRejected, ClusterForbidden, NotFound):
            answered[path] = False
        except CasemateError as e:
            return LoadProblem(f"cluster {cluster}", f"anonymous access not checked: {e.message}")
    return Subject(
        {
            "apiVersion": "casemate.io/v1",
            "kind": "ClusterAccess",
            "metadata": {"name": cluster},
            "anonymous": answered,
        }
    )


def anonymous_client(clusters: Clusters, cluster: str) -> KubeClient:
    info = clusters.get_cluster(cluster)
    return KubeClient(info.server, info.ca_pem.encode("ascii"), None, cluster=info.name)


def iter_kubelets(client: KubeClient, *, cluster: str) -> Iterator[Subject | LoadProblem]:
    """Each node's kubelet configuration as the API server relays it (``nodes/NAME/proxy/
    configz``; needs ``get`` on ``nodes/proxy``), as a synthetic ``KubeletConfig`` object for
    the engine rules. A node whose kubelet does not answer is a problem (not checked)."""
    where = f"cluster {cluster}"
    token = ""
    while True:
        params = {"limit": "500", **({"continue": token} if token else {})}
        try:
            page = client.get("/api/v1/nodes", what="list nodes", params=params)
        except CasemateError as e:
            yield LoadProblem(where, f"kubelets not checked: {e.message}")
            return
        items = page.get("items")
        for node in items if isinstance(items, list) else []:
            meta = node.get("metadata") if isinstance(node, Mapping) else None
            name = meta.get("name") if isinstance(meta, Mapping) else None
            if not isinstance(name, str):
                continue
            try:
                answer = client.get(
                    f"/api/v1/nodes/{name}/proxy/configz", what=f"kubelet configuration of {name}"
                )
            except CasemateError as e:
                yield LoadProblem(where, f"node {name}: kubelet not checked: {e.message}")
                continue
            config = answer.get("kubeletconfig")
            if not isinstance(config, Mapping):
                yield LoadProblem(where, f"node {name}: configz has no kubeletconfig")
                continue
            yield Subject(
                {
                    "apiVersion": "casemate.io/v1",
                    "kind": "KubeletConfig",
                    "metadata": {"name": name},
                    "config": config,
                }  # fmt: skip
            )
        meta = page.get("metadata")
        token = meta.get("continue", "") if isinstance(meta, Mapping) else ""
        if not token:
            return
