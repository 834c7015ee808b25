"""Pure decisions of a remediated rollout.

* :func:`check_remediation`: the remediated document is the original plus exactly what
  ``casemate vuln fix`` adds (init containers ``casemate-fetch-*``, the ``casemate-fixes``
  volume and its mounts, a ``postStart`` hook where there was none), nothing else: a second
  manifest edited by hand (a privileged flag, another image) is refused before anything is
  stored or applied.
* :func:`refusal`: a workload whose controller would not replace its running pods (a
  StatefulSet or DaemonSet with ``updateStrategy: OnDelete``, a partitioned StatefulSet, a bare
  ReplicaSet, Pod, Job or CronJob) is refused with the reason: nothing would be watched.
* :func:`assess` (Deployment), :func:`assess_statefulset`, :func:`assess_daemonset`: from the
  workload, its pods and their events, is the rollout still progressing, done, or failed (and
  why)? Each kind by its own controller's progress signals; StatefulSets and DaemonSets have no
  ``progressDeadlineSeconds``, so the caller's timeout is their only deadline.
* :func:`stuck_pods`: the pods a StatefulSet rollback must delete (the controller waits for a
  pod of the bad revision to become Ready before it replaces it, which never happens).
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


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str(_meta(pod).get("name", "?"))


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# -- what can be rolled out -------------------------------------------------------------------

#: Kinds whose controller does not replace running pods when the pod template changes.
NOT_REPLACED = {
    "Pod": "a Pod's containers and init containers cannot be changed in place; remediate the "
    "workload that creates it",
    "ReplicaSet": "a ReplicaSet does not replace its running pods when its template changes; "
    "remediate the Deployment that owns it",
    "Job": "a Job's pod template cannot be changed once it exists",
    "CronJob": "a CronJob's template only reaches the Jobs it starts later: there is no rollout "
    "to watch or roll back",
}


def refusal(document: Mapping[str, Any]) -> str | None:
    """Why the rollout of ``document`` (the remediated one) cannot be watched; None if it can."""
    kind = str(document.get("kind", "?"))
    label = f"{kind}/{_meta(document).get('name', '?')}"
    if kind in NOT_REPLACED:
        return f"{label}: not rolled out: {NOT_REPLACED[kind]}"
    if kind not in ("Deployment", "StatefulSet", "DaemonSet"):
        return f"{label}: rollouts are watched for Deployments, StatefulSets and DaemonSets only"
    spec = document.get("spec") or {}
    strategy = (spec.get("updateStrategy") or {}) if kind != "Deployment" else {}
    if strategy.get("type") == "OnDelete":
        return (
            f"{label}: updateStrategy OnDelete: the controller does not replace running pods, so "
            "the remediated spec would reach only pods deleted by hand and there is no rollout "
            "to watch; set updateStrategy RollingUpdate (or apply the second manifest and delete "
            "the pods yourself)"
        )
    partition = _int((strategy.get("rollingUpdate") or {}).get("partition"))
    if kind == "StatefulSet" and partition > 0:
        return (
            f"{label}: updateStrategy.rollingUpdate.partition {partition}: pods with an ordinal "
            f"below {partition} would keep the unremediated spec; remove the partition first"
        )
    return None


# -- progress and failure ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    state: State
    reason: str
    ready: int = 0
    desired: int = 0
    restarts: int = 0


def _pod_failure(pods: Sequence[Mapping[str, Any]],
                 events: Sequence[Mapping[str, Any]]) -> str | None:  # fmt: skip
    """The first failure signal of ``pods``: a FailedPostStartHook event about one of them
    (matched by uid when the event has one: a StatefulSet's new pod has its predecessor's name),
    a container waiting for a reason it does not leave by itself, exited non-zero, restarted."""
    uids = {str(_meta(p).get("uid")) for p in pods if _meta(p).get("uid")}
    names = {_pod_name(p) for p in pods}
    for event in events:
        involved = event.get("involvedObject") or {}
        uid = involved.get("uid")
        ours = uid in uids if uid else involved.get("name") in names
        if ours and event.get("reason") == "FailedPostStartHook":
            message = str(event.get("message", ""))[-500:]
            return f"pod {involved.get('name')}: FailedPostStartHook: {message}"
    for pod in pods:
        for container in _containers(pod):
            state = container.get("state") or {}
            waiting = (state.get("waiting") or {}).get("reason")
            if waiting in FAILED_WAITING:
                message = (state.get("waiting") or {}).get("message", "")
                return f"pod {_pod_name(pod)} container {container.get('name')}: {waiting}" + (
                    f": {str(message)[-300:]}" if message else ""
                )
            code = (state.get("terminated") or {}).get("exitCode")
            last = (container.get("lastState") or {}).get("terminated") or {}
            if code not in (None, 0) or last.get("exitCode") not in (None, 0):
                return (
                    f"pod {_pod_name(pod)} container {container.get('name')} exited with "
                    f"{code if code not in (None, 0) else last.get('exitCode')}"
                )
            if _int(container.get("restartCount")) > 0:
                return (
                    f"pod {_pod_name(pod)} container {container.get('name')} restarted "
                    f"{container.get('restartCount')} times"
                )
    return None


def _verdict(failure: str | None, done: bool, ready: int, desired: int, restarts: int,
             waiting: str, *, elapsed: float, timeout: float) -> Assessment:  # fmt: skip
    if failure:
        return Assessment("failed", failure, ready, desired, restarts)
    if done:
        return Assessment("succeeded", f"{ready}/{desired} pods Ready", ready, desired, restarts)
    if elapsed > timeout:
        return Assessment("failed", f"timed out after {timeout:g} s with {ready}/{desired} pods "
                          f"Ready ({waiting})", ready, desired, restarts)  # fmt: skip
    return Assessment("progressing", f"{ready}/{desired} pods Ready ({waiting})", ready,
                      desired, restarts)  # fmt: skip


def _observed(obj: Mapping[str, Any]) -> bool:
    """Has the controller seen the object's current spec? Before, its status and its pods
    describe the previous spec (the rollback of a failed rollout would see the failed pods)."""
    status = obj.get("status") or {}
    return _int(status.get("observedGeneration")) >= _int(_meta(obj).get("generation"))


def _owned(pods: Sequence[Mapping[str, Any]],
           owner: Mapping[str, Any]) -> list[Mapping[str, Any]]:  # fmt: skip
    """The pods ``owner`` controls directly (by uid) that are not being deleted."""
    uid = _meta(owner).get("uid")
    return [
        p for p in pods
        if any(r.get("uid") == uid for r in _meta(p).get("ownerReferences") or [])
        and not _meta(p).get("deletionTimestamp")
    ]  # fmt: skip


def _revision(pod: Mapping[str, Any]) -> Any:
    return (_meta(pod).get("labels") or {}).get("controller-revision-hash")


def _current(pods: Sequence[Mapping[str, Any]], owner: Mapping[str, Any],
             revision: str | None) -> list[Mapping[str, Any]]:  # fmt: skip
    """The pods of :func:`_owned` labelled with ``revision``."""
    return [p for p in _owned(pods, owner) if revision and _revision(p) == revision]


def assess(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
           events: Sequence[Mapping[str, Any]], *, elapsed: float,
           timeout: float) -> Assessment:  # fmt: skip
    """The state of a Deployment's rollout. ``pods`` are those of its newest ReplicaSet and
    ``events`` the namespace's recent events (only those about these pods count)."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = _int(spec.get("replicas", 1), 1)
    restarts = sum(_int(c.get("restartCount")) for p in pods for c in _containers(p))
    ready = sum(1 for p in pods if _ready(p))
    if not _observed(deployment):
        return _verdict(None, False, ready, desired, restarts, "the new spec is not observed "
                        "yet", elapsed=elapsed, timeout=timeout)  # fmt: skip
    failure = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            failure = f"progressDeadlineSeconds exceeded: {condition.get('message', '')}"
    done = (
        _int(status.get("updatedReplicas")) == desired
        and _int(status.get("availableReplicas")) >= desired
        and _int(status.get("replicas")) == desired
        and ready >= desired
    )
    return _verdict(failure or _pod_failure(pods, events), done, ready, desired, restarts,
                    "old pods left" if ready >= desired else "new pods not Ready",
                    elapsed=elapsed, timeout=timeout)  # fmt: skip


def assess_statefulset(statefulset: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
                       events: Sequence[Mapping[str, Any]], *, elapsed: float,
                       timeout: float) -> Assessment:  # fmt: skip
    """The state of a StatefulSet's RollingUpdate. ``pods`` are those its selector matches
    (only those it owns at ``status.updateRevision`` count); done when the controller has
    observed the spec, every replica is updated and Ready and ``currentRevision`` has become
    ``updateRevision``. No progressDeadlineSeconds exists: ``timeout`` is the deadline."""
    spec = statefulset.get("spec") or {}
    status = statefulset.get("status") or {}
    desired = _int(spec.get("replicas", 1), 1)
    if not _observed(statefulset):
        return _verdict(None, False, 0, desired, 0, "the new spec is not observed yet",
                        elapsed=elapsed, timeout=timeout)  # fmt: skip
    update = status.get("updateRevision")
    new = _current(pods, statefulset, str(update) if update else None)
    restarts = sum(_int(c.get("restartCount")) for p in new for c in _containers(p))
    ready = sum(1 for p in new if _ready(p))
    done = (
        bool(update)
        and status.get("currentRevision") == update
        and _int(status.get("updatedReplicas")) >= desired
        and _int(status.get("readyReplicas")) >= desired
        and _int(status.get("replicas")) == desired
        and ready >= desired
    )
    waiting = (
        f"{_int(status.get('updatedReplicas'))}/{desired} updated, revision "
        f"{status.get('currentRevision')} -> {update}"
    )
    return _verdict(_pod_failure(new, events), done, ready, desired, restarts, waiting,
                    elapsed=elapsed, timeout=timeout)  # fmt: skip


def newest_revision(revisions: Sequence[Mapping[str, Any]], owner: Mapping[str, Any]) -> str | None:
    """The ``controller-revision-hash`` of the newest ControllerRevision of ``owner`` (a
    DaemonSet labels its pods with it; a rollback makes an older revision the newest again)."""
    uid = _meta(owner).get("uid")
    owned = [
        r for r in revisions
        if any(o.get("uid") == uid for o in _meta(r).get("ownerReferences") or [])
    ]  # fmt: skip
    if not owned:
        return None
    newest = max(owned, key=lambda r: _int(r.get("revision")))
    value = (_meta(newest).get("labels") or {}).get("controller-revision-hash")
    return str(value) if value else None


def assess_daemonset(daemonset: Mapping[str, Any], revision: str | None,
                     pods: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], *,
                     elapsed: float, timeout: float) -> Assessment:  # fmt: skip
    """The state of a DaemonSet's RollingUpdate. ``revision`` is :func:`newest_revision`;
    ``pods`` those its selector matches (only those it owns at ``revision`` count). Done when
    the controller has observed the spec, every scheduled node runs an updated pod, all of them
    Ready and available and no pod of an older revision is left. No progressDeadlineSeconds:
    ``timeout`` is the deadline."""
    status = daemonset.get("status") or {}
    desired = _int(status.get("desiredNumberScheduled"))
    if not _observed(daemonset):
        return _verdict(None, False, 0, desired, 0, "the new spec is not observed yet",
                        elapsed=elapsed, timeout=timeout)  # fmt: skip
    new = _current(pods, daemonset, revision)
    everything = (
        _current(pods, daemonset, None)
        if False
        else [p for p in pods if not _meta(p).get("deletionTimestamp")]
    )
    restarts = sum(_int(c.get("restartCount")) for p in new for c in _containers(p))
    ready = sum(1 for p in new if _ready(p))
    done = (
        revision is not None
        and _int(status.get("updatedNumberScheduled")) >= desired
        and _int(status.get("numberReady")) >= desired
        and _int(status.get("numberAvailable")) >= desired
        and _int(status.get("numberUnavailable")) == 0
        and ready >= desired
        and len(everything) == len(new)
    )
    waiting = (
        f"{_int(status.get('updatedNumberScheduled'))}/{desired} nodes updated, "
        f"{_int(status.get('numberUnavailable'))} unavailable"
    )
    return _verdict(_pod_failure(new, events), done, ready, desired, restarts, waiting,
                    elapsed=elapsed, timeout=timeout)  # fmt: skip


def stuck_pods(statefulset: Mapping[str, Any],
               pods: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:  # fmt: skip
    """(name, uid) of the pods a StatefulSet's rollback must delete: owned by it, of another
    revision than ``updateRevision`` (the restored spec, once observed), not Ready and not
    already being deleted. The controller waits for such a pod to become Ready before it
    replaces it, forever when its spec is the broken one (the "forced rollback" of the
    StatefulSet documentation)."""
    update = (statefulset.get("status") or {}).get("updateRevision")
    if not update or not _observed(statefulset):
        return []
    return [
        (_pod_name(p), str(_meta(p).get("uid", "")))
        for p in _owned(pods, statefulset)
        if _revision(p) != update and not _ready(p)
    ]
