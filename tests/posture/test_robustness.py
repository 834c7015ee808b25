"""Whatever shape an object has, the engine and the webhook answer: findings or "not checked",
never an exception (hypothesis over JSON-like values in every position rules read)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.posture.admission import AdmissionPolicy, review_response
from casemate.posture.engine import Scanner
from casemate.posture.model import Subject
from tests.posture.helpers import pod, wrap

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "securityContext", "capabilities", "add", "drop", "privileged", "hostPath", "ports",
    "hostPort", "volumes", "env", "envFrom", "image", "resources", "limits", "seccompProfile",
    "type", "sysctls", "name", "value", "livenessProbe", "httpGet", "host", "lifecycle",
    "runAsNonRoot", "runAsUser", "seLinuxOptions", "appArmorProfile", "windowsOptions",
    "procMount", "annotations", "labels", "rules", "verbs", "resources", "subjects", "roleRef",
    "podSelector", "ingress", "from", "data", "spec", "template", "containers",
    "initContainers", "ephemeralContainers", "metadata", "hostUsers", "os",
]  # fmt: skip
shaped = st.recursive(
    json_values,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=30,
)
KINDS = ["Pod", "Deployment", "CronJob", "Role", "ClusterRoleBinding", "NetworkPolicy",
         "ConfigMap", "Service", "ServiceAccount", "List"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), body=st.dictionaries(st.sampled_from(KEYS), shaped, max_size=6))
def test_any_object_is_checked_without_exceptions(kind, body):
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}, **body}
    scanner = Scanner()
    scanner.check(Subject(obj))
    scanner.finish()


@settings(max_examples=200, deadline=None)
@given(spec=st.dictionaries(st.sampled_from(KEYS), shaped, max_size=6))
def test_any_pod_spec_in_a_template(spec):
    scanner = Scanner()
    for obj in (pod(spec), wrap("CronJob", pod(spec))):
        scanner.check(Subject(obj))
    scanner.finish()


POLICY = AdmissionPolicy.build()


@settings(max_examples=200, deadline=None)
@given(obj=shaped)
def test_webhook_answers_any_object(obj):
    body = json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "CREATE", "object": obj},
        }
    ).encode()
    response = review_response(body, POLICY)["response"]
    assert response["uid"] == "u" and isinstance(response["allowed"], bool)
