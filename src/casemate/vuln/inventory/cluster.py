"""The images a live cluster runs: every container and init container of every pod (in one
namespace or all), read page by page through Casemate's stored credential for the cluster, with
the image digest the node reports (``status.containerStatuses[].imageID``).

The images themselves are then read from the local Docker engine (no registry client here);
:func:`digest_problem` says when the engine's image is provably not the one the cluster runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from casemate.errors import CasemateError
from casemate.k8s.client import KubeClient


@dataclass(frozen=True, slots=True)
class RunningImage:
    image: str
    image_id: str  # what the node reports ("" while the container has not started)
    where: tuple[str, ...]  # namespace/pod/container


def _statuses(pod: Mapping[str, Any]) -> dict[str, str]:
    status = pod.get("status") or {}
    found: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key) or []:
            if isinstance(entry, Mapping) and entry.get("imageID"):
                found[str(entry.get("name", ""))] = str(entry["imageID"])
    return found


def images_of_pods(pods: list[Mapping[str, Any]]) -> list[RunningImage]:
    """One entry per (image, reported digest), with every place it runs. Pure."""
    seen: dict[tuple[str, str], list[str]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        ids = _statuses(pod)
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                if not isinstance(container, Mapping) or not container.get("image"):
                    continue
                name = str(container.get("name", ""))
                entry = (str(container["image"]), ids.get(name, ""))
                where = f"{meta.get('namespace', '')}/{meta.get('name', '')}/{name}"
                seen.setdefault(entry, []).append(where)
    return [RunningImage(image, image_id, tuple(where))
            for (image, image_id), where in seen.items()]  # fmt: skip


def running_images(client: KubeClient, *, cluster: str, namespace: str | None = None,
                   page_size: int = 500) -> tuple[list[RunningImage], list[str]]:  # fmt: skip
    """The images of the cluster's pods, and what could not be listed."""
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    pods: list[Mapping[str, Any]] = []
    token = ""
    while True:
        params = {"limit": str(page_size), **({"continue": token} if token else {})}
        try:
            page = client.get(path, what="list pods", params=params)
        except CasemateError as e:
            return images_of_pods(pods), [f"cluster {cluster}: pods not listed: {e.message}"]
        pods += [p for p in page.get("items") or [] if isinstance(p, Mapping)]
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return images_of_pods(pods), []


def digest_problem(running: RunningImage, engine_digest: str | None) -> str | None:
    """Why the engine's image is not the running one, when the node reported the image's own
    id (``sha256:…``, the config digest the engine knows too) and it differs. A registry digest
    (``repo@sha256:…``, of the manifest) cannot be compared with the engine's id: not a
    problem, the report says the digest was not compared."""
    reported = running.image_id.removeprefix("docker-pullable://").removeprefix("docker://")
    if not reported or "@" in reported or not reported.startswith("sha256:"):
        return None
    if engine_digest and reported != engine_digest:
        return (
            f"{running.image}: the Docker engine's image ({engine_digest[:19]}…) is not the one "
            f"the cluster runs ({reported[:19]}…, in {', '.join(running.where[:3])})"
        )
    return None
