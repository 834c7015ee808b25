"""The admission policy remembers findings per object template: pods made from one template
are checked once, any other change is checked again, a new policy starts afresh, and no answer
ever differs from checking the object itself (names, exceptions, messages)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from casemate.posture.admission import (
    MEMO_MAX_TEXT,
    MEMO_SIZE,
    AdmissionPolicy,
    decide,
    review_response,
)
from casemate.posture.engine import ObjectRules
from casemate.posture.exceptions import ExceptionScope, PostureException
from casemate.posture.model import Hit, Rule, Settings, Severity, Subject
from casemate.posture.rules import ALL_RULES
from tests.posture.helpers import pod, wrap

PSS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "pss"


def review(obj: dict[str, Any], uid: str = "u") -> bytes:
    kind = {"group": "", "version": "v1", "kind": obj["kind"]}
    request = {"uid": uid, "operation": "CREATE", "kind": kind, "object": obj}
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def counting_policy(**settings: Any) -> tuple[AdmissionPolicy, list[str]]:
    """A policy of one rule that records every object it is called on (its name) and reports
    every container, refusing the object."""
    calls: list[str] = []

    def check(subject: Subject, _settings: Settings) -> Iterator[Hit]:
        calls.append(subject.name)
        for view in subject.pods:
            for c in view.containers:
                yield Hit((*c.path, "name"), c.name, f"container {c.name} counted")

    rule = Rule("test.count", "test", Severity.HIGH, "count", "x", "y", check, pods_only=True)
    return AdmissionPolicy({rule.id: "enforce"}, (rule,), Settings(**settings)), calls


def replica(name: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod as a ReplicaSet creates it: the template's spec and labels, its own name, uid,
    generateName and managedFields."""
    obj = copy.deepcopy(template or pod(labels={"app": "web"}))
    obj["metadata"].update(
        name=name,
        generateName="web-7f9c-",
        uid=f"uid-{name}",
        resourceVersion="1",
        creationTimestamp=None,
        managedFields=[{"manager": "kube-controller-manager", "time": f"2026-12-05T{name}"}],
    )
    return obj


def test_pods_of_one_template_are_checked_once_and_answered_alike() -> None:
    policy, calls = counting_policy()
    answers = [review_response(review(replica(f"web-{i}"), f"u{i}"), policy) for i in range(5)]
    assert calls == ["web-0"]
    assert [a["response"]["uid"] for a in answers] == [f"u{i}" for i in range(5)]
    assert all(a["response"]["allowed"] is False for a in answers)
    assert {a["response"]["status"]["message"] for a in answers} == {
        "casemate posture refused this Pod: test.count: container app counted "
        "(spec.containers[0].name)"
    }
    # decide() on a remembered template: the findings carry the object's own name
    decision = decide(replica("web-9"), policy)
    assert calls == ["web-0"] and {f.name for f in decision.refused} == {"web-9"}


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["spec"]["containers"][0].update(image="registry.example/app:2"),
        lambda o: o["spec"].update(hostNetwork=True),
        lambda o: o["metadata"]["labels"].update(app="other"),  # rules and exceptions read labels
        lambda o: o["metadata"].setdefault("annotations", {}).update(a="b"),
        lambda o: o["metadata"].update(namespace="other"),
        lambda o: o.update(apiVersion="v2"),
    ],
    ids=["image", "spec", "labels", "annotations", "namespace", "apiVersion"],
)
def test_any_other_change_is_checked_again(change: Any) -> None:
    policy, calls = counting_policy()
    review_response(review(replica("a")), policy)
    changed = replica("b")
    change(changed)
    review_response(review(changed), policy)
    assert calls == ["a", "b"]


def test_a_new_policy_checks_again() -> None:
    first, calls = counting_policy()
    review_response(review(replica("a")), first)
    review_response(review(replica("b")), first)
    second, calls2 = counting_policy(pss_version="v1.30")  # another policy: another memory
    review_response(review(replica("c")), second)
    assert (calls, calls2) == (["a"], ["c"])
    assert len(first.memo) == len(second.memo) == 1


def test_exceptions_apply_to_the_object_itself_on_a_remembered_template() -> None:
    policy, calls = counting_policy()
    expires = datetime.now(UTC) + timedelta(hours=1)
    only_b = PostureException(
        1, ExceptionScope("test.count", "ns", "Pod", "b"), "o", "r", expires, expires, "t"
    )
    a = review_response(review(replica("a")), policy, [only_b])["response"]
    b = review_response(review(replica("b")), policy, [only_b])["response"]
    assert a["allowed"] is False
    assert b["allowed"] is True and "excepted by exception 1" in str(b["auditAnnotations"])
    assert review_response(review(replica("b")), policy)["response"]["allowed"] is False
    assert calls == ["a"]


def test_bounded_and_big_objects_are_not_remembered() -> None:
    policy, calls = counting_policy()
    for i in range(MEMO_SIZE + 5):
        review_response(review(replica("x", pod(labels={"app": f"a{i}"}))), policy)
    assert len(policy.memo) == MEMO_SIZE
    big = pod({"hostname": "h" * MEMO_MAX_TEXT}, labels={})
    calls.clear()
    for name in ("a", "b"):
        review_response(review(replica(name, big)), policy)
    assert calls == ["a", "b"] and len(policy.memo) == MEMO_SIZE


def test_names_are_in_the_key_where_rules_read_them() -> None:
    """Services and RBAC objects put their name in the message; a CEL rule may test it."""
    policy = AdmissionPolicy.build(warn=["network.*"])
    for name in ("front", "back"):
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"type": "NodePort"},
        }
        warnings = review_response(review(service), policy)["response"]["warnings"]
        assert any(f"Service {name} opens a port" in w for w in warnings), warnings
    cel = AdmissionPolicy.build(custom=[Rule("cel.x", "cel", Severity.LOW, "t", "e", "f",
                                             lambda s, _: iter(()))])  # fmt: skip
    assert cel.name_free_pods is False and AdmissionPolicy.build().name_free_pods is True


def _pod_bearing() -> list[dict[str, Any]]:
    """Objects with pod specs: every PSS conformance fixture, as a Pod and in each workload,
    plus a pod tripping many rules."""
    objects: list[dict[str, Any]] = []
    for path in sorted(PSS_DIR.glob("*/v*/*/*.yaml")):
        docs = yaml.safe_load_all(path.read_text())
        objects.extend(d for d in docs if isinstance(d, dict) and isinstance(d.get("spec"), dict))
    assert len(objects) > 100, "the PSS conformance fixtures are missing"
    bad = pod(
        {
            "hostNetwork": True,
            "hostPID": True,
            "volumes": [{"name": "v", "hostPath": {"path": "/var/run/docker.sock"}}],
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:latest",
                    "ports": [{"containerPort": 80, "hostPort": 80}],
                    "securityContext": {"privileged": True, "capabilities": {"add": ["ALL"]}},
                    "env": [{"name": "DB_PASSWORD", "value": "hunter2"}],
                }
            ],
        },
        labels={"app": "x"},
        annotations={"container.apparmor.security.beta.kubernetes.io/app": "unconfined"},
    )
    objects.append(bad)
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"):
        objects += [wrap(kind, bad), wrap(kind, objects[0])]
    return objects


def test_no_rule_offered_to_a_pod_bearing_object_reads_its_name() -> None:
    """Why the name can be left out of the key for objects with a pod spec: every object rule
    gives the same findings under two names, and none mentions the name."""
    checker = ObjectRules(ALL_RULES)
    total = 0
    for obj in _pod_bearing():
        views = []
        for name in ("zq-first-name", "xk-second-name"):
            renamed = copy.deepcopy(obj)
            renamed.setdefault("metadata", {})["name"] = name
            subject = Subject(renamed)
            assert subject.pods
            findings = checker.check(subject)
            text = repr([(f.message, f.value, f.path) for f in findings])
            assert name not in text
            views.append([(f.rule_id, f.path, f.message, repr(f.value)) for f in findings])
            total += len(findings)
        assert views[0] == views[1]
    assert total > 500
