"""Pod escape risks: what in a pod spec lets a container reach its node.

One pure module, used by the command policy's manifest inspection
(:mod:`casemate.bastion.runner`), by the Kubernetes API proxy on every workload it sees
created or updated (:mod:`casemate.kubeproxy.classify`), and later by posture rules and the
admission webhook. No I/O; inputs are decoded JSON/YAML values, outputs frozen.

The risks (ids are stable; rules and audit records name them):

* ``privileged`` - a container with ``securityContext.privileged: true``;
* ``host-namespaces`` - ``hostPID``, ``hostIPC`` or ``hostNetwork``;
* ``host-path`` - a ``hostPath`` volume;
* ``capabilities`` - ``securityContext.capabilities.add`` with anything;
* ``privilege-escalation`` - ``allowPrivilegeEscalation: true`` set explicitly;
* ``host-ports`` - a container port with ``hostPort``;
* ``unreadable`` - the object claims a workload kind but its pod spec is not a mapping or a
  field has the wrong type: the caller must assume the worst.

Every container list is checked (``containers``, ``initContainers``, ``ephemeralContainers``),
and the kinds that embed a pod template are unwrapped (:func:`pod_specs`). A value is judged
the way the apiserver decodes it: ``true`` only for the JSON boolean (a string ``"true"`` is a
decode error there, and ``unreadable`` here).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "RISK_IDS",
    "WORKLOAD_KINDS",
    "WORKLOAD_RESOURCES",
    "PodRisk",
    "object_risks",
    "patch_risks",
    "pod_spec_risks",
    "pod_specs",
]

RISK_IDS: Final = (
    "privileged",
    "host-namespaces",
    "host-path",
    "capabilities",
    "privilege-escalation",
    "host-ports",
    "unreadable",
)

#: kind → the path of keys from the object to its pod spec.
_SPEC_PATHS: Final[Mapping[str, tuple[str, ...]]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
WORKLOAD_KINDS: Final = frozenset(_SPEC_PATHS)
#: The API resources of the workload kinds (as the API proxy sees them).
WORKLOAD_RESOURCES: Final = frozenset(
    {
        "pods",
        "podtemplates",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "replicationcontrollers",
        "jobs",
        "cronjobs",
    }
)
_RESOURCE_KIND: Final = {
    "pods": "Pod",
    "podtemplates": "PodTemplate",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "replicationcontrollers": "ReplicationController",
    "jobs": "Job",
    "cronjobs": "CronJob",
}
_CONTAINER_LISTS: Final = ("containers", "initContainers", "ephemeralContainers")


@dataclass(frozen=True)
class PodRisk:
    """One escape risk: its id (one of :data:`RISK_IDS`) and where (``container web``)."""

    risk: str
    where: str

    def describe(self) -> str:
        return f"{self.risk} ({self.where})" if self.where else self.risk


class _Unreadable(Exception):  # internal signal
    pass


def _mapping(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Unreadable
    return value


def _list(value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Unreadable
    return value


def _flag(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Unreadable
    return value


def _spec_risks(spec: Mapping[str, Any]) -> Iterator[PodRisk]:
    for key in ("hostPID", "hostIPC", "hostNetwork"):
        if _flag(spec.get(key)):
            yield PodRisk("host-namespaces", key)
    for volume in _list(spec.get("volumes")):
        volume = _mapping(volume)
        if volume.get("hostPath") is not None:
            yield PodRisk("host-path", f"volume {volume.get('name', '?')}")
    for list_name in _CONTAINER_LISTS:
        for container in _list(spec.get(list_name)):
            container = _mapping(container)
            where = f"container {container.get('name', '?')}"
            ctx = _mapping(container.get("securityContext"))
            if _flag(ctx.get("privileged")):
                yield PodRisk("privileged", where)
            if _flag(ctx.get("allowPrivilegeEscalation")):
                yield PodRisk("privilege-escalation", where)
            caps = _mapping(ctx.get("capabilities"))
            if _list(caps.get("add")):
                yield PodRisk("capabilities", where)
            for port in _list(container.get("ports")):
                port = _mapping(port)
                if port.get("hostPort") not in (None, 0):
                    yield PodRisk("host-ports", where)


def pod_spec_risks(spec: object) -> tuple[PodRisk, ...]:
    """The risks of one pod spec (``unreadable`` if it is not shaped like one)."""
    try:
        return tuple(dict.fromkeys(_spec_risks(_mapping(spec))))
    except _Unreadable:
        return (PodRisk("unreadable", "pod spec"),)


def pod_specs(obj: Mapping[str, Any], kind: str | None = None) -> Iterator[object]:
    """The pod spec(s) an object carries (``kind`` defaults to the object's own), nothing
    for other kinds. A spec missing along the path yields nothing (a partial patch)."""
    kind = kind or obj.get("kind")
    path = _SPEC_PATHS.get(kind) if isinstance(kind, str) else None
    if path is None:
        return
    value: object = obj
    for key in path:
        if not isinstance(value, Mapping):
            yield value  # judged unreadable
            return
        value = value.get(key)
        if value is None:
            return
    yield value


def object_risks(obj: object, *, resource: str | None = None) -> tuple[PodRisk, ...]:
    """The risks of one Kubernetes object (or a ``List`` of them, or a patch of one sent to
    ``resource``). Objects of other kinds have none."""
    if not isinstance(obj, Mapping):
        return ()
    kind = obj.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        found: list[PodRisk] = []
        for item in obj["items"]:
            found += object_risks(item)
        return tuple(dict.fromkeys(found))
    if resource is not None and not isinstance(kind, str):
        kind = _RESOURCE_KIND.get(resource)
    found = []
    for spec in pod_specs(obj, kind if isinstance(kind, str) else None):
        found += pod_spec_risks(spec)
    return tuple(dict.fromkeys(found))


# Patches and partial objects ----------------------------------------------------------------------

_HOST_FLAGS: Final = frozenset({"hostPID", "hostIPC", "hostNetwork"})
_BOOL_RISKS: Final = {
    "privileged": "privileged",
    "allowPrivilegeEscalation": "privilege-escalation",
}


def _scan(value: object, path: tuple[str, ...], out: list[PodRisk]) -> None:
    key = path[-1] if path else ""
    where = "/".join(path) or "body"
    if key == "metadata":
        return
    if key in _HOST_FLAGS or key in _BOOL_RISKS:
        if value is None or value is False:
            return
        if value is True:
            out.append(PodRisk(_BOOL_RISKS.get(key, "host-namespaces"), where))
        else:
            out.append(PodRisk("unreadable", where))
        return
    if key == "hostPath" and value is not None:
        out.append(PodRisk("host-path", where))
        return
    if key == "hostPort" and value not in (None, 0):
        out.append(PodRisk("host-ports", where))
        return
    if "capabilities" in path and "add" in path[path.index("capabilities") :]:
        if value not in (None, [], ""):
            out.append(PodRisk("capabilities", where))
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _scan(v, (*path, str(k)), out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _scan(item, (*path, str(index)), out)


def patch_risks(value: object, path: tuple[str, ...] = ()) -> tuple[PodRisk, ...]:
    """The risks a (partial) object or patch would set, wherever they sit: every field named
    like one of the risky fields (outside ``metadata``) is judged, so a merge patch, a
    strategic merge patch or a whole object of any workload kind is covered without knowing
    its shape. ``path`` is where ``value`` goes (a JSON patch operation's path, split)."""
    out: list[PodRisk] = []
    _scan(value, tuple(path), out)
    return tuple(dict.fromkeys(out))
