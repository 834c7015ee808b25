"""A pod spec seen with its field paths: the shared view the pod rules read.

The pod spec(s) of an object come from :func:`casemate.risks.pods.pod_specs` (one list of
workload kinds and template paths for the whole product); this module only adds where each
one sits in the object (its field path), its template metadata, and its containers of every
list (``containers``, ``initContainers``, ``ephemeralContainers``) with their paths, plus the
effective security context of a container (the container's own field, else the pod's).
Malformed parts are skipped here; :data:`casemate.risks.pods` reports them as ``unreadable``
and the ``escape.unreadable`` rule turns that into a finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from casemate.posture.model import Path
from casemate.risks.pods import pod_spec_risks, pod_specs

__all__ = ["ContainerView", "PodView", "pod_views"]

CONTAINER_LISTS: Final = ("containers", "initContainers", "ephemeralContainers")
_EMPTY: Final[Mapping[str, Any]] = {}
_LIST_LABELS: Final = {"containers": "container", "initContainers": "init container"}


def mapping(value: object) -> Mapping[str, Any]:
    if type(value) is dict:  # the common case, without the abstract-class check
        return value
    return value if isinstance(value, Mapping) else _EMPTY


def seq(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class ContainerView:
    path: Path
    obj: Mapping[str, Any]
    list_name: str

    # computed once per view (the object is never mutated): every pod rule reads them

    @cached_property
    def name(self) -> str:
        name = self.obj.get("name")
        return name if isinstance(name, str) else "?"

    @cached_property
    def ctx(self) -> Mapping[str, Any]:
        return mapping(self.obj.get("securityContext"))

    @cached_property
    def ctx_path(self) -> Path:
        return (*self.path, "securityContext")

    @cached_property
    def label(self) -> str:
        return f"{_LIST_LABELS.get(self.list_name, 'ephemeral container')} {self.name}"


@dataclass(frozen=True)
class PodView:
    spec_path: Path
    spec: Mapping[str, Any]
    meta: Mapping[str, Any]
    containers: tuple[ContainerView, ...]
    unreadable: bool

    @property
    def meta_path(self) -> Path:
        return (*self.spec_path[:-1], "metadata")

    @cached_property
    def ctx(self) -> Mapping[str, Any]:
        return mapping(self.spec.get("securityContext"))

    @cached_property
    def ctx_path(self) -> Path:
        return (*self.spec_path, "securityContext")

    @property
    def annotations(self) -> Mapping[str, Any]:
        return mapping(self.meta.get("annotations"))

    @property
    def is_windows(self) -> bool:
        return mapping(self.spec.get("os")).get("name") == "windows"

    def at(self, *rest: str | int) -> Path:
        return (*self.spec_path, *rest)

    def effective(self, container: ContainerView, key: str) -> tuple[Any, Path]:
        """A securityContext field as the kubelet applies it: the container's own value,
        else the pod's (with the path where it was found, or the container's if neither)."""
        if container.ctx.get(key) is not None:
            return container.ctx[key], (*container.ctx_path, key)
        if self.ctx.get(key) is not None:
            return self.ctx[key], (*self.ctx_path, key)
        return None, (*container.ctx_path, key)


def _find_path(obj: Mapping[str, Any], target: object, depth: int = 6) -> Path | None:
    """Where ``target`` (an object found by :func:`pod_specs`) sits in ``obj``, by identity."""
    stack: list[tuple[Mapping[str, Any], Path]] = [(obj, ())]
    while stack:
        node, path = stack.pop()
        for key, value in node.items():
            if value is target:
                return (*path, key)
            if isinstance(value, Mapping) and len(path) < depth and key != "metadata":
                stack.append((value, (*path, key)))
    return None


def pod_views(obj: Mapping[str, Any]) -> tuple[PodView, ...]:
    views: list[PodView] = []
    for spec in pod_specs(obj):
        path = _find_path(obj, spec)
        if path is None:
            continue
        unreadable = any(r.risk == "unreadable" for r in pod_spec_risks(spec))
        spec_map = mapping(spec)
        parent: object = obj
        for key in path[:-1]:
            parent = mapping(parent).get(str(key))
        meta = mapping(mapping(parent).get("metadata"))
        containers = tuple(
            ContainerView((*path, list_name, index), container, list_name)
            for list_name in CONTAINER_LISTS
            for index, container in enumerate(seq(spec_map.get(list_name)))
            if isinstance(container, Mapping)
        )
        views.append(PodView(path, spec_map, meta, containers, unreadable))
    return tuple(views)
