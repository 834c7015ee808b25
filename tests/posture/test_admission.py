"""Admission decisions (pure) and the webhook's HTTP handling (in process, no sockets)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from casemate.errors import InvalidInput
from casemate.posture.admission import AdmissionPolicy, BadReview, review_response
from casemate.posture.webhook import webhook_app
from tests.posture.helpers import pod, restricted_pod, wrap


def review(obj, operation="CREATE", uid="u-1"):
    kind = {"group": "", "version": "v1", "kind": obj.get("kind", "Pod")} if obj else None
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": operation, "kind": kind, "object": obj},
        }
    ).encode()


def privileged():
    return pod(
        {"containers": [{"name": "c", "image": "a:1", "securityContext": {"privileged": True}}]}
    )


DEFAULT = AdmissionPolicy.build()


def test_default_policy_enforces_baseline_and_warns_the_rest():
    assert DEFAULT.modes["escape.privileged"] == "enforce"
    assert DEFAULT.modes["escape.run-as-non-root"] == "warn"
    assert "network.namespace-no-policy" not in DEFAULT.modes  # namespace rules cannot run


def test_privileged_pod_refused_with_the_rules_message():
    answer = review_response(review(privileged(), uid="abc"), DEFAULT)
    response = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert response["uid"] == "abc" and response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "escape.privileged: container c is privileged" in response["status"]["message"]
    assert "spec.containers[0].securityContext.privileged" in response["status"]["message"]


def test_workload_template_refused_at_the_workload():
    response = review_response(review(wrap("Deployment", privileged())), DEFAULT)["response"]
    assert response["allowed"] is False
    assert "spec.template.spec.containers[0]" in response["status"]["message"]
    assert "Deployment" in response["status"]["message"]


def test_warn_and_audit_modes():
    policy = AdmissionPolicy.build(
        enforce=["escape.privileged"], warn=["images.*"], audit=["rbac.*"]
    )
    obj = restricted_pod()
    obj["spec"]["containers"][0]["image"] = "nginx"
    response = review_response(review(obj), policy)["response"]
    assert response["allowed"] is True
    assert any("images.latest-tag" in w for w in response["warnings"])
    assert all(w.startswith("casemate posture: ") and len(w) <= 256 for w in response["warnings"])
    assert "rbac.automount-token" in response["auditAnnotations"]["posture-findings"]


def test_strongest_mode_wins_and_unknown_patterns_fail():
    policy = AdmissionPolicy.build(enforce=["escape.*"], warn=["escape.privileged"])
    assert policy.modes["escape.privileged"] == "enforce"
    with pytest.raises(InvalidInput):
        AdmissionPolicy.build(enforce=["no.such-rule"])


def test_compliant_object_and_deletes_are_allowed():
    policy = AdmissionPolicy.build(enforce=["escape.*"])
    obj = restricted_pod()
    obj["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = True
    response = review_response(review(obj), policy)["response"]
    assert response == {"uid": "u-1", "allowed": True}
    assert review_response(review(privileged(), "DELETE"), policy)["response"]["allowed"] is True
    assert review_response(review(None), policy)["response"]["allowed"] is True


def test_many_warnings_are_capped():
    containers = [{"name": f"c{i}", "image": "nginx"} for i in range(40)]
    response = review_response(
        review(pod({"containers": containers})), AdmissionPolicy.build(warn=["images.latest-tag"])
    )["response"]
    assert len(response["warnings"]) == 21 and response["warnings"][-1].endswith("20 more warnings")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",'
        b' "request": {"uid": "x"}}',
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_reviews(body):
    with pytest.raises(BadReview):
        review_response(body, DEFAULT)


@pytest.fixture
def client():
    with TestClient(webhook_app(DEFAULT, max_body=64 * 1024)) as c:
        yield c


def test_http_answers(client):
    r = client.post("/validate", content=review(privileged()))
    assert r.status_code == 200 and r.json()["response"]["allowed"] is False
    r = client.post("/validate", content=b"{}")
    assert r.status_code == 400 and "AdmissionReview" in r.json()["error"]
    r = client.post("/validate", content=b"x" * (65 * 1024))
    assert r.status_code == 413
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/validate").status_code == 405
    assert client.post("/other", content=review(privileged())).status_code == 404
