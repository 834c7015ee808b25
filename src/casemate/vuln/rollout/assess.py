"""Pure decisions of a remediated rollout.

* :func:`check_remediation`: the remediated document is the original plus exactly what
  ``casemate vuln fix`` adds (init containers ``casemate-fetch-*``, the ``casemate-fixes``
  volume and its mounts, a ``postStart`` hook where there was none), nothing else: a second
  manifest edited by hand (a privileged flag, another image) is refused before anything is
  stored or applied.
* :func:`assess`: from the Deployment, the pods of its newest ReplicaSet and their events, is
  the rollout still progressing, done, or failed (and why)?
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from casemate.vuln.remediate.manifest import POD_SPEC_PATHS, VOLUME

FETCH_PREFIX = "casemate-fetch-"
#: Waiting reasons of a container that will not come up by itself.
FAILED_WAITING = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
     "CreateContainerError", "RunContainerError", "InvalidImageName", "PostStartHookError"}
)  # fmt: skip
FAILED_EVENTS = frozenset({"FailedPostStartHook", "BackOff", "Failed"})

State = Literal["progressing", "succeeded", "failed"]


def _pod_spec(document: Mapping[str, Any]) -> Any:
    node: Any = document
    for key in POD_SPEC_PATHS.get(str(document.get("kind")), ()):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def strip_remediation(document: Mapping[str, Any]) -> Any:
    """``document`` without what ``vuln fix`` adds (a deep copy; the input is not changed)."""
    doc = copy.deepcopy(_plain(document))
    spec = _pod_spec(doc)
    if not isinstance(spec, dict):
        return doc
    inits = [c for c in spec.get("initContainers") or []
             if not str(c.get("name", "")).startswith(FETCH_PREFIX)]  # fmt: skip
    fetched = {
        str(c.get("name", ""))[len(FETCH_PREFIX) :]
        for c in spec.get("initContainers") or []
        if str(c.get("name", "")).startswith(FETCH_PREFIX)
    }
    if "initContainers" in spec:
        if inits:
            spec["initContainers"] = inits
        else:
            del spec["initContainers"]
    if "volumes" in spec:
        volumes = [v for v in spec["volumes"] if v.get("name") != VOLUME]
        if volumes:
            spec["volumes"] = volumes
        else:
            del spec["volumes"]
    for container in spec.get("containers") or []:
        mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != VOLUME]
        if "volumeMounts" in container:
            if mounts:
                container["volumeMounts"] = mounts
            else:
                del container["volumeMounts"]
        lifecycle = container.get("lifecycle")
        if str(container.get("name", ""))[: 63 - len(FETCH_PREFIX)] in fetched and lifecycle:
            lifecycle.pop("postStart", None)
            if not lifecycle:
                del container["lifecycle"]
    return doc


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_remediation(original: Mapping[str, Any], remediated: Mapping[str, Any]) -> str | None:
    """None when ``remediated`` is ``original`` plus only Casemate's additions; else why not."""
    if strip_remediation(remediated) != _plain(original):
        kind = original.get("kind", "?")
        name = (original.get("metadata") or {}).get("name", "?")
        return (
            f"{kind}/{name}: the remediated manifest changes more than 'casemate vuln fix' "
            "adds (init containers casemate-fetch-*, the casemate-fixes volume, postStart)"
        )
    return None


@dataclass(frozen=True, slots=True)
class Assessment:
    state: State
    reason: str
    ready: int = 0
    desired: int = 0
    restarts: int = 0


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", "?"))


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def assess(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
           events: Sequence[Mapping[str, Any]], *, elapsed: float,
           timeout: float) -> Assessment:  # fmt: skip
    """The state of a Deployment's rollout. ``pods`` are those of its newest ReplicaSet and
    ``events`` the namespace's recent events (only those about these pods count)."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    names = {_pod_name(p) for p in pods}
    restarts = sum(int(c.get("restartCount", 0)) for p in pods for c in _containers(p))
    ready = sum(1 for p in pods if _ready(p))

    def failed(reason: str) -> Assessment:
        return Assessment("failed", reason, ready, desired, restarts)

    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return failed(f"progressDeadlineSeconds exceeded: {condition.get('message', '')}")
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("name") in names and event.get("reason") == "FailedPostStartHook":
            message = str(event.get("message", ""))[-500:]
            return failed(f"pod {involved.get('name')}: FailedPostStartHook: {message}")
    for pod in pods:
        for container in _containers(pod):
            state = container.get("state") or {}
            waiting = (state.get("waiting") or {}).get("reason")
            if waiting in FAILED_WAITING:
                message = (state.get("waiting") or {}).get("message", "")
                return failed(
                    f"pod {_pod_name(pod)} container {container.get('name')}: {waiting}"
                    + (f": {str(message)[-300:]}" if message else "")
                )
            code = (state.get("terminated") or {}).get("exitCode")
            last = (container.get("lastState") or {}).get("terminated") or {}
            if code not in (None, 0) or last.get("exitCode") not in (None, 0):
                return failed(
                    f"pod {_pod_name(pod)} container {container.get('name')} exited with "
                    f"{code if code not in (None, 0) else last.get('exitCode')}"
                )
            if int(container.get("restartCount", 0)) > 0:
                return failed(
                    f"pod {_pod_name(pod)} container {container.get('name')} restarted "
                    f"{container.get('restartCount')} times"
                )
    generation = int((deployment.get("metadata") or {}).get("generation", 0))
    observed = int(status.get("observedGeneration", 0))
    done = (
        observed >= generation
        and int(status.get("updatedReplicas", 0)) == desired
        and int(status.get("availableReplicas", 0)) >= desired
        and int(status.get("replicas", 0)) == desired
        and ready >= desired
    )
    if done:
        return Assessment("succeeded", f"{ready}/{desired} pods Ready", ready, desired, restarts)
    if elapsed > timeout:
        return failed(f"timed out after {timeout:g} s with {ready}/{desired} pods Ready")
    return Assessment("progressing", f"{ready}/{desired} pods Ready", ready, desired, restarts)
