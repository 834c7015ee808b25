"""The asset tree of the web UI: ``GET /assets`` lists, for the logged-in person, the clusters
they hold a live grant on → the namespaces of those grants → workloads → pods → containers,
with status.

Each namespace is read through the access a session would get there
(:meth:`Clusters.resolve_access` for that cluster and namespace, so a revoked or expired grant
or a disabled cluster shows nothing) and that grant's system account, with one list of the
namespace's pods. Only pods are read; nothing else of the namespace (never Secrets), and of a
pod only its name, phase, owner and its containers' names, images and states, never its
environment or volumes. A namespace the cluster refuses or cannot answer for is listed with
its error instead of pods.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from casemate.core.identity import Principal
from casemate.errors import CasemateError
from casemate.k8s.client import KubeClient
from casemate.k8s.clusters import Clusters
from casemate.server.deps import PrincipalDep
from casemate.server.routes.clusters import ClustersDep

router = APIRouter(prefix="/assets", tags=["assets"])

_MAX_PODS = 500  # per namespace


class Container(BaseModel):
    name: str
    image: str
    ready: bool
    state: str  # running, waiting: <reason>, terminated: <reason>, unknown


class Pod(BaseModel):
    name: str
    phase: str
    containers: list[Container]


class Workload(BaseModel):
    kind: str  # Deployment, StatefulSet, DaemonSet, Job, ReplicaSet… or Pod (no owner)
    name: str
    pods: list[Pod]


class Namespace(BaseModel):
    name: str
    workloads: list[Workload]
    error: str | None = None


class ClusterAssets(BaseModel):
    name: str
    namespaces: list[Namespace]


def _text(value: Any, limit: int = 253) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _state(status: dict[str, Any]) -> str:
    state = status.get("state")
    if not isinstance(state, dict) or not state:
        return "unknown"
    kind = next(iter(state))
    detail = state.get(kind)
    reason = _text(detail.get("reason"), 63) if isinstance(detail, dict) else ""
    return f"{kind}: {reason}" if reason else _text(kind, 63)


def _owner(meta: dict[str, Any]) -> tuple[str, str]:
    """The workload a pod belongs to; a ReplicaSet's pod-template hash is dropped from its name
    (``web-5d9c7b8f6d`` → Deployment ``web``) when the ReplicaSet has one."""
    for ref in meta.get("ownerReferences") or []:
        if not isinstance(ref, dict) or not ref.get("controller"):
            continue
        kind, name = _text(ref.get("kind"), 63), _text(ref.get("name"))
        labels = meta.get("labels") or {}
        template_hash = labels.get("pod-template-hash") if isinstance(labels, dict) else None
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return "Deployment", name[: -len(template_hash) - 1]
        return kind, name
    return "Pod", _text(meta.get("name"))


def _pod(item: dict[str, Any]) -> tuple[tuple[str, str], Pod]:
    meta = item.get("metadata") or {}
    spec = item.get("spec") or {}
    status = item.get("status") or {}
    statuses = {
        _text(s.get("name")): s
        for s in status.get("containerStatuses") or []
        if isinstance(s, dict)
    }
    containers = []
    for c in spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        name = _text(c.get("name"))
        s = statuses.get(name, {})
        containers.append(
            Container(
                name=name,
                image=_text(c.get("image"), 512),
                ready=bool(s.get("ready")),
                state=_state(s),
            )
        )
    pod = Pod(
        name=_text(meta.get("name")), phase=_text(status.get("phase"), 63), containers=containers
    )
    return _owner(meta), pod


def namespace_assets(clusters: Clusters, principal: Principal, cluster: str, ns: str) -> Namespace:
    """``ns`` of ``cluster`` as ``principal``'s grant there lets a session see it."""
    try:
        access = clusters.resolve_access(principal, cluster, ns)
        credential = clusters.account_credential(access)
        with KubeClient(
            access.server, access.ca_pem.encode("ascii"), credential, cluster=cluster
        ) as client:
            listed = client.get(
                f"/api/v1/namespaces/{ns}/pods",
                what=f"list pods in {ns}",
                params={"limit": str(_MAX_PODS)},
            )
    except CasemateError as e:  # Denied (no grant there any more) included
        return Namespace(name=ns, workloads=[], error=str(e))
    workloads: dict[tuple[str, str], list[Pod]] = {}
    for item in listed.get("items") or []:
        if isinstance(item, dict):
            owner, pod = _pod(item)
            workloads.setdefault(owner, []).append(pod)
    return Namespace(
        name=ns,
        workloads=[
            Workload(kind=kind, name=name, pods=sorted(pods, key=lambda p: p.name))
            for (kind, name), pods in sorted(workloads.items())
        ],
    )


@router.get("", response_model=list[ClusterAssets])
def my_assets(principal: PrincipalDep, clusters: ClustersDep) -> list[ClusterAssets]:
    granted: dict[str, set[str]] = {}
    for g in clusters.grants_for(principal):
        granted.setdefault(g.cluster, set()).update(g.namespaces)
    return [
        ClusterAssets(
            name=cluster,
            namespaces=[
                namespace_assets(clusters, principal, cluster, ns) for ns in sorted(namespaces)
            ],
        )
        for cluster, namespaces in sorted(granted.items())
    ]
