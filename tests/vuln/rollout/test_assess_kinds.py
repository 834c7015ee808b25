"""The pure decisions of StatefulSet and DaemonSet rollouts: which can be rolled out at all
(OnDelete, partitions, kinds whose pods are never replaced), when each kind's rollout is done,
progressing or failed by its controller's own signals, and which pods a StatefulSet rollback
must delete."""

from __future__ import annotations

from typing import Any

import pytest

from casemate.vuln.rollout.assess import (
    assess_daemonset,
    assess_statefulset,
    newest_revision,
    refusal,
    stuck_pods,
)
from casemate.vuln.rollout.run import pair_documents
from tests.vuln.rollout.test_assess import remediated

UID = "owner-uid"
OTHER = "other-uid"


def workload(kind: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "db"}, "spec": spec}


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (workload("StatefulSet", updateStrategy={"type": "OnDelete"}),
         "StatefulSet/db: updateStrategy OnDelete: the controller does not replace running pods"),
        (workload("DaemonSet", updateStrategy={"type": "OnDelete"}),
         "DaemonSet/db: updateStrategy OnDelete: the controller does not replace running pods"),
        (workload("StatefulSet", updateStrategy={"type": "RollingUpdate",
                                                 "rollingUpdate": {"partition": 2}}),
         "partition 2: pods with an ordinal below 2 would keep the unremediated spec"),
        (workload("Pod"), "Pod/db: not rolled out: a Pod's containers and init containers"),
        (workload("ReplicaSet"), "ReplicaSet/db: not rolled out: a ReplicaSet does not replace"),
        (workload("Job"), "Job/db: not rolled out: a Job's pod template cannot be changed"),
        (workload("CronJob"), "CronJob/db: not rolled out: a CronJob's template only reaches"),
        (workload("Widget"), "Widget/db: rollouts are watched for Deployments, StatefulSets and"),
    ],
)  # fmt: skip
def test_refusals_say_why(document: dict[str, Any], reason: str) -> None:
    found = refusal(document)
    assert found is not None and reason in found, found


@pytest.mark.parametrize(
    "document",
    [
        workload("Deployment", strategy={"type": "Recreate"}),
        workload("StatefulSet"),  # apps/v1 default: RollingUpdate
        workload("StatefulSet", updateStrategy={"type": "RollingUpdate",
                                                "rollingUpdate": {"partition": 0}}),
        workload("DaemonSet", updateStrategy={"type": "RollingUpdate"}),
        # a Deployment has no updateStrategy: a stray one means nothing to its controller
        workload("Deployment", updateStrategy={"type": "OnDelete"}),
    ],
)  # fmt: skip
def test_rolling_updates_are_accepted(document: dict[str, Any]) -> None:
    assert refusal(document) is None


def test_statefulsets_and_daemonsets_pair() -> None:
    from tests.vuln.rollout.test_assess import ORIGINAL

    for kind in ("StatefulSet", "DaemonSet"):
        text = ORIGINAL.replace("Deployment", kind)
        ((original, second),) = pair_documents(text, remediated(text), "x.yaml", "prod")
        assert original["kind"] == second["kind"] == kind
        assert second["spec"]["template"]["spec"]["initContainers"][0]["name"] == (
            "casemate-fetch-app"
        )


# -- pods and events ---------------------------------------------------------------------------


def pod(name: str = "db-0", revision: str = "db-new", *, ready: bool = True, uid: str = "",
        owner: str = UID, deleting: bool = False, **container: Any) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {
        "name": name, "uid": uid or f"uid-{name}-{revision}",
        "labels": {"controller-revision-hash": revision},
        "ownerReferences": [{"uid": owner, "controller": True}],
    }  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "2026-12-05T00:00:00Z"
    statuses = [{"name": "app", "restartCount": 0, **container}]
    return {"metadata": meta,
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": statuses}}  # fmt: skip


def hook_failed(target: dict[str, Any]) -> dict[str, Any]:
    meta = target["metadata"]
    return {"involvedObject": {"kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
            "reason": "FailedPostStartHook", "message": "exec failed: exit 1"}  # fmt: skip


# -- StatefulSet -------------------------------------------------------------------------------


def sts(count: int = 1, **status: Any) -> dict[str, Any]:
    base = {
        "observedGeneration": 3,
        "replicas": count,
        "readyReplicas": count,
        "updatedReplicas": count,
        "currentRevision": "db-new",
        "updateRevision": "db-new",
    }
    return {"kind": "StatefulSet", "metadata": {"name": "db", "generation": 3, "uid": UID},
            "spec": {"replicas": count}, "status": {**base, **status}}  # fmt: skip


def sts_state(obj: dict[str, Any], pods: list[dict[str, Any]],
              events: list[dict[str, Any]] | None = None, elapsed: float = 1) -> Any:  # fmt: skip
    return assess_statefulset(obj, pods, events or [], elapsed=elapsed, timeout=10)


def test_statefulset_done_only_when_every_replica_is_updated_ready_and_current() -> None:
    two = [pod("db-0"), pod("db-1")]
    done = sts_state(sts(2), two)
    assert (done.state, done.reason, done.ready) == ("succeeded", "2/2 pods Ready", 2)
    for status in (
        {"observedGeneration": 2},  # the controller has not seen the new template
        {"currentRevision": "db-old"},  # the update is not complete
        {"updatedReplicas": 1},
        {"readyReplicas": 1},
        {"replicas": 3},  # scaling
        {"updateRevision": None},
    ):
        assert sts_state(sts(2, **status), two).state == "progressing", status
    # one replica still on the old revision: only the updated pod counts as Ready
    mixed = sts_state(sts(2, currentRevision="db-old"), [pod("db-0", "db-old"), pod("db-1")])
    assert (mixed.state, mixed.ready) == ("progressing", 1)
    assert sts_state(sts(2), [pod("db-0"), pod("db-1", ready=False)]).state == "progressing"
    # pods of another owner or being deleted are not this rollout's
    assert sts_state(sts(1), [pod(owner=OTHER)]).state == "progressing"
    assert sts_state(sts(1), [pod(deleting=True)]).state == "progressing"


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ([pod(ready=False, state={"waiting": {"reason": "CrashLoopBackOff"}})],
         "pod db-0 container app: CrashLoopBackOff"),
        ([pod(ready=False, state={"waiting": {"reason": "PostStartHookError",
                                              "message": "exit 1"}})],
         "PostStartHookError: exit 1"),
        ([pod(restartCount=2)], "pod db-0 container app restarted 2 times"),
        ([pod(ready=False, lastState={"terminated": {"exitCode": 137}})], "exited with 137"),
    ],
)  # fmt: skip
def test_statefulset_failures_of_the_update_revision(pods: list[Any], reason: str) -> None:
    result = sts_state(sts(1, currentRevision="db-old", readyReplicas=0), pods)
    assert result.state == "failed" and reason in result.reason, result
    # the same pods on another revision (the one being rolled back from) do not fail it
    for p in pods:
        p["metadata"]["labels"]["controller-revision-hash"] = "db-bad"
    assert sts_state(sts(1, currentRevision="db-old"), pods).state == "progressing"


def test_statefulset_post_start_events_are_matched_by_uid() -> None:
    """A StatefulSet's replacement pod keeps its predecessor's name: the event of the failed
    predecessor must not fail the rollback that replaced it."""
    failed_one = pod("db-0", "db-bad", ready=False)
    replacement = pod("db-0", "db-new", ready=False)
    obj = sts(1, readyReplicas=0)
    assert sts_state(obj, [replacement], [hook_failed(failed_one)]).state == "progressing"
    result = sts_state(obj, [replacement], [hook_failed(replacement)])
    assert result.state == "failed"
    assert "pod db-0: FailedPostStartHook: exec failed: exit 1" in result.reason
    # an event without uid (older event sources) falls back to the name
    nameless = hook_failed(replacement)
    del nameless["involvedObject"]["uid"]
    assert sts_state(obj, [replacement], [nameless]).state == "failed"


def test_statefulset_has_no_progress_deadline_but_the_timeout() -> None:
    result = sts_state(sts(1, currentRevision="db-old", readyReplicas=0), [pod(ready=False)],
                       elapsed=11)  # fmt: skip
    assert result.state == "failed"
    assert result.reason.startswith("timed out after 10 s with 0/1 pods Ready (1/1 updated"), result
    unseen = sts_state(sts(1, observedGeneration=1), [], elapsed=11)
    assert unseen.state == "failed" and "not observed yet" in unseen.reason


def test_stuck_pods_of_a_statefulset_rollback() -> None:
    restored = sts(2, updateRevision="db-orig", currentRevision="db-bad", readyReplicas=1)
    pods = [
        pod("db-1", "db-bad", ready=False),  # the failed revision, never Ready: stuck
        pod("db-0", "db-bad", ready=True),  # Ready: the controller replaces it by itself
        pod("db-2", "db-orig", ready=False),  # the restored revision starting: leave it
        pod("db-3", "db-bad", ready=False, deleting=True),  # already going
        pod("db-4", "db-bad", ready=False, owner=OTHER),  # not this StatefulSet's
    ]
    assert stuck_pods(restored, pods) == [("db-1", "uid-db-1-db-bad")]
    # before the controller observed the restored spec, updateRevision is still the bad one
    assert stuck_pods(sts(2, observedGeneration=2, updateRevision="db-bad"), pods) == []
    assert stuck_pods(sts(2, updateRevision=None), pods) == []


# -- DaemonSet ---------------------------------------------------------------------------------


def ds(**status: Any) -> dict[str, Any]:
    base = {"observedGeneration": 3, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
            "updatedNumberScheduled": 2, "numberReady": 2, "numberAvailable": 2,
            "numberUnavailable": 0}  # fmt: skip
    return {"kind": "DaemonSet", "metadata": {"name": "agent", "generation": 3, "uid": UID},
            "spec": {}, "status": {**base, **status}}  # fmt: skip


def ds_state(obj: dict[str, Any], pods: list[dict[str, Any]], revision: str | None = "h2",
             events: list[dict[str, Any]] | None = None, elapsed: float = 1) -> Any:  # fmt: skip
    return assess_daemonset(obj, revision, pods, events or [], elapsed=elapsed, timeout=10)


def test_daemonset_done_only_when_every_node_runs_an_updated_ready_pod() -> None:
    pods = [pod("agent-a", "h2"), pod("agent-b", "h2")]
    done = ds_state(ds(), pods)
    assert (done.state, done.reason, done.desired) == ("succeeded", "2/2 pods Ready", 2)
    for status in (
        {"observedGeneration": 2},
        {"updatedNumberScheduled": 1},
        {"numberReady": 1},
        {"numberAvailable": 1},  # minReadySeconds not yet passed
        {"numberUnavailable": 1},
    ):
        assert ds_state(ds(**status), pods).state == "progressing", status
    # an old pod left on a node (being replaced), or no revision known yet
    assert ds_state(ds(), [*pods, pod("agent-c", "h1")]).state == "progressing"
    assert ds_state(ds(), pods, revision=None).state == "progressing"
    assert ds_state(ds(), [pods[0], pod("agent-b", "h2", ready=False)]).state == "progressing"
    # an old pod already being deleted does not hold the rollout
    assert ds_state(ds(), [*pods, pod("agent-c", "h1", deleting=True)]).state == "succeeded"


def test_daemonset_failures_and_timeout() -> None:
    failing = pod("agent-a", "h2", ready=False)
    result = ds_state(ds(numberUnavailable=1), [failing], events=[hook_failed(failing)])
    assert result.state == "failed" and "pod agent-a: FailedPostStartHook" in result.reason
    crash = pod("agent-a", "h2", ready=False, state={"waiting": {"reason": "CrashLoopBackOff"}})
    assert "CrashLoopBackOff" in ds_state(ds(), [crash]).reason
    # the same crash on the old revision (what a rollback leaves behind) is not a failure
    old_crash = pod("agent-a", "h1", ready=False, state={"waiting": {"reason": "CrashLoopBackOff"}})
    assert ds_state(ds(), [old_crash]).state == "progressing"
    late = ds_state(ds(updatedNumberScheduled=1, numberUnavailable=1), [], elapsed=11)
    assert late.state == "failed"
    assert late.reason.startswith("timed out after 10 s with 0/2 pods Ready (1/2 nodes updated")


def test_newest_revision_of_the_owner() -> None:
    def revision(number: int, hash_: str, owner: str = UID) -> dict[str, Any]:
        return {"revision": number, "metadata": {"labels": {"controller-revision-hash": hash_},
                                                 "ownerReferences": [{"uid": owner}]}}  # fmt: skip

    owner = ds()
    # a rollback re-uses the original's revision object with a higher number
    revisions = [revision(3, "orig"), revision(2, "bad"), revision(9, "alien", OTHER)]
    assert newest_revision(revisions, owner) == "orig"
    assert newest_revision([revision(1, "alien", OTHER)], owner) is None
    assert newest_revision([], owner) is None
