"""The rollout's pure decisions: what a remediated manifest may change, and when a Deployment's
rollout succeeded or failed (StatefulSets and DaemonSets: ``test_assess_kinds.py``). The
journal survives a reopen and names what is unfinished."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from casemate.errors import InvalidInput
from casemate.vuln.remediate.manifest import Change, remediate, sites
from casemate.vuln.remediate.manifest import load as load_manifest
from casemate.vuln.remediate.plan import ContainerPlan, PackageFix
from casemate.vuln.rollout.assess import assess, check_remediation
from casemate.vuln.rollout.journal import Journal, Rollout, Workload, new_id
from casemate.vuln.rollout.run import _selector, pair_documents

ORIGINAL = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: app
        image: debian:12
        lifecycle: {preStop: {exec: {command: [sleep, "1"]}}}
"""


def remediated(text: str = ORIGINAL) -> str:
    plan = ContainerPlan("app", "debian:12", "dpkg",
                         (PackageFix("zlib1g", "zlib", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1",
                                     ("CVE-2023-45853",)),))  # fmt: skip
    (site,) = sites(load_manifest(text, "web.yaml"))
    return remediate(text, "web.yaml", {(site.document, "app"): Change(plan, "fetch", "install")})


def test_only_casemates_additions_pass() -> None:
    pairs = pair_documents(ORIGINAL, remediated(), "web.yaml", "prod")
    assert len(pairs) == 1
    original, second = pairs[0]
    assert check_remediation(original, second) is None
    container = second["spec"]["template"]["spec"]["containers"][0]
    assert container["lifecycle"]["preStop"]  # kept, not stripped


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda s: s["containers"][0].setdefault("securityContext", {}).update(privileged=True),
         "privileged"),
        (lambda s: s["containers"][0].update(image="evil:1"), "another image"),
        (lambda s: s["initContainers"].append({"name": "miner", "image": "x"}), "extra init"),
        (lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda s: s.update(hostPID=True), "hostPID"),
    ],
)  # fmt: skip
def test_anything_else_is_refused(edit: Any, where: str) -> None:
    original, second = pair_documents(ORIGINAL, remediated(), "web.yaml", "prod")[0]
    tampered = copy.deepcopy(second)
    edit(tampered["spec"]["template"]["spec"])
    assert check_remediation(original, tampered) is not None, where


def test_pairing_refusals() -> None:
    with pytest.raises(InvalidInput, match="changes nothing"):
        pair_documents(ORIGINAL, ORIGINAL, "web.yaml", "prod")
    renamed = remediated().replace("name: web", "name: other")
    with pytest.raises(InvalidInput, match="Deployment/other is in the remediated manifest but"):
        pair_documents(ORIGINAL, renamed, "web.yaml", "prod")
    rs = ORIGINAL.replace("Deployment", "ReplicaSet")
    with pytest.raises(InvalidInput, match="ReplicaSet/web: not rolled out: a ReplicaSet does "
                       "not replace its running pods"):  # fmt: skip
        pair_documents(rs, remediated(rs), "rs.yaml", "prod")
    on_delete = ORIGINAL.replace("Deployment", "DaemonSet").replace(
        "replicas: 2", "updateStrategy: {type: OnDelete}"
    )
    with pytest.raises(InvalidInput, match="DaemonSet/web: updateStrategy OnDelete: the "
                       "controller does not replace running pods"):  # fmt: skip
        pair_documents(on_delete, remediated(on_delete), "ds.yaml", "prod")
    privileged = remediated().replace("image: debian:12\n", "image: debian:12\n        "
                                      "securityContext: {privileged: true}\n", 1)  # fmt: skip
    with pytest.raises(InvalidInput, match="changes more than 'casemate vuln fix' adds"):
        pair_documents(ORIGINAL, privileged, "web.yaml", "prod")


def deployment(**status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": 1, **status}}  # fmt: skip


def pod(ready: bool = True, **container: Any) -> dict[str, Any]:
    statuses = [{"name": "app", "restartCount": 0, **container}]
    return {"metadata": {"name": "web-1"},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": statuses}}  # fmt: skip


def test_success_needs_every_new_pod_ready_and_the_old_ones_gone() -> None:
    assert assess(deployment(), [pod()], [], elapsed=1, timeout=10).state == "succeeded"
    assert assess(deployment(), [pod(False)], [], elapsed=1, timeout=10).state == "progressing"
    old_left = deployment(replicas=2)
    assert assess(old_left, [pod()], [], elapsed=1, timeout=10).state == "progressing"
    stale = deployment(observedGeneration=1)
    assert assess(stale, [pod()], [], elapsed=1, timeout=10).state == "progressing"
    # before the controller observed the spec, the pods are the previous spec's: a rollback
    # must not fail on the failed rollout's pods
    crashing = pod(False, state={"waiting": {"reason": "CrashLoopBackOff"}})
    assert assess(stale, [crashing], [], elapsed=1, timeout=10).state == "progressing"
    assert assess(stale, [crashing], [], elapsed=11, timeout=10).state == "failed"
    assert assess(deployment(), [], [], elapsed=1, timeout=10).state == "progressing"


@pytest.mark.parametrize(
    ("dep", "pods", "events", "reason"),
    [
        (deployment(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]),
         [pod()], [], "progressDeadlineSeconds exceeded"),
        (deployment(), [pod()], [{"involvedObject": {"name": "web-1"},
                                  "reason": "FailedPostStartHook", "message": "exit 1"}],
         "FailedPostStartHook: exit 1"),
        (deployment(), [pod(False, state={"waiting": {"reason": "CrashLoopBackOff"}})], [],
         "CrashLoopBackOff"),
        (deployment(), [pod(restartCount=1)], [], "restarted 1 times"),
        (deployment(), [pod(False, lastState={"terminated": {"exitCode": 137}})], [],
         "exited with 137"),
        (deployment(updatedReplicas=0), [pod(False)], [], "timed out after 10 s"),
    ],
)  # fmt: skip
def test_failures(dep: Any, pods: Any, events: Any, reason: str) -> None:
    result = assess(dep, pods, events, elapsed=11, timeout=10)
    assert result.state == "failed"
    assert reason in result.reason


def test_events_of_other_pods_do_not_count() -> None:
    other = [{"involvedObject": {"name": "old-pod"}, "reason": "FailedPostStartHook"}]
    assert assess(deployment(), [pod()], other, elapsed=1, timeout=10).state == "succeeded"


def test_journal_is_durable_and_names_the_unfinished(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "rollouts")
    workload = Workload("Deployment", "web", "prod", {"a": 1}, {"a": 2}, None)
    first = Rollout(new_id(), "test", "me", "orig", "rem", "diff", (workload,))
    journal.save(first)
    done = journal.step(Rollout(new_id(), "test", "me", "o", "r", "d", (workload,)), "succeeded")
    reopened = Journal(tmp_path / "rollouts")
    assert [r.id for r in reopened.unfinished("test")] == [first.id]
    assert reopened.unfinished("other") == []
    assert reopened.get(done.id).steps[-1]["phase"] == "succeeded"
    assert reopened.get(first.id).workloads[0].original == {"a": 1}
    with pytest.raises(InvalidInput, match="is not a rollout id"):
        reopened.get("../../etc/passwd")
    assert not list((tmp_path / "rollouts").glob("*.tmp"))


def test_selector_query_syntax() -> None:
    selector = {"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["x", "y"]},
                                     {"key": "env", "operator": "NotIn", "values": ["dev"]},
                                     {"key": "app", "operator": "Exists"},
                                     {"key": "old", "operator": "DoesNotExist"}]}  # fmt: skip
    assert _selector(selector) == "a=1,b=2,tier in (x,y),env notin (dev),app,!old"
