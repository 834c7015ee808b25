"""Custom rules from ValidatingAdmissionPolicy CEL expressions, in scans and at admission."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from casemate.errors import PolicyError
from casemate.posture.admission import AdmissionPolicy, review_response
from casemate.posture.cel import load_cel_rules
from casemate.posture.engine import Scanner
from casemate.posture.model import Subject
from tests.posture.helpers import pod, wrap


def vap(*validations, name="shop-rules", resources=("deployments",), groups=("apps",), **spec):
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "annotations": {"casemate.io/severity": "high"}},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": list(groups),
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": list(resources),
                    }
                ]
            },  # fmt: skip
            "validations": list(validations),
            **spec,
        },
    }


def deployment(name="web", image="nginx:1.27", replicas=2):
    obj = wrap("Deployment", pod({"containers": [{"name": "c", "image": image}]}))
    obj["metadata"]["name"] = name
    obj["spec"]["replicas"] = replicas
    return obj


def messages(rules, obj):
    return [(f.rule_id, f.severity.value, f.message) for f in Scanner(rules).check(Subject(obj))]


def test_validations_variables_and_messages():
    rules = load_cel_rules([vap(
        {"expression": "variables.images.all(i, !i.endsWith(':latest'))", "message": "no latest"},
        {"expression": "object.metadata.name.lowerAscii() == object.metadata.name",
         "messageExpression": "'name ' + object.metadata.name + ' must be lower case'"},
        {"expression": "object.spec.replicas <= 5", "message": "at most 5 replicas"},
        variables=[{"name": "images",
                    "expression": "object.spec.template.spec.containers.map(c, c.image)"}],
    )])  # fmt: skip
    assert [r.id for r in rules] == ["cel.shop-rules.0", "cel.shop-rules.1", "cel.shop-rules.2"]
    assert messages(rules, deployment()) == []
    bad = deployment(name="Web", image="nginx:latest", replicas=9)
    assert messages(rules, bad) == [
        ("cel.shop-rules.0", "high", "no latest"),
        ("cel.shop-rules.1", "high", "name Web must be lower case"),
        ("cel.shop-rules.2", "high", "at most 5 replicas"),
    ]


def test_match_constraints_and_conditions():
    rules = load_cel_rules([vap(
        {"expression": "false", "message": "always"},
        matchConditions=[
            {"name": "prod", "expression": "object.metadata.name.startsWith('prod-')"}
        ],
    )])  # fmt: skip
    assert messages(rules, deployment(name="prod-web")) == [("cel.shop-rules.0", "high", "always")]
    assert messages(rules, deployment(name="dev-web")) == []
    assert messages(rules, pod()) == []  # pods are not in resourceRules
    everything = load_cel_rules([vap({"expression": "false"}, resources=("*",), groups=("*",))])
    assert len(messages(everything, pod())) == 1


def test_evaluation_errors_fail_closed():
    rules = load_cel_rules([vap({"expression": "size(object.spec.replicas) > 0"})])
    ((rule_id, _, message),) = messages(rules, deployment())
    assert rule_id == "cel.shop-rules.0" and "could not evaluate" in message


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("quantity('1Gi').isGreaterThan(quantity('1'))", "quantity() is not supported"),
        ("url('https://x').getHost() == 'x'", "url() is not supported"),
        ("isCIDR('10.0.0.0/8')", "isCIDR() is not supported"),
        ("authorizer.group('').resource('pods').check('create').allowed()",
         "authorizer is not available"),
        ("oldObject == null", "oldObject is not available"),
        ("object.spec.((", "not valid CEL"),
    ],
)  # fmt: skip
def test_unsupported_expressions_are_refused_with_a_clear_message(expression, message):
    with pytest.raises(PolicyError) as e:
        load_cel_rules([vap({"expression": expression})])
    assert message in e.value.message and "shop-rules" in e.value.message


def test_bad_policies():
    with pytest.raises(PolicyError, match="no validations"):
        load_cel_rules([vap()])
    with pytest.raises(PolicyError, match="not valid"):
        load_cel_rules([vap({"expression": "true"}, name="Bad Name")])
    assert load_cel_rules([{"kind": "ConfigMap"}]) == []


def test_custom_rules_at_admission():
    custom = load_cel_rules(
        [vap({"expression": "object.spec.replicas <= 5", "message": "too many"})]
    )
    policy = AdmissionPolicy.build(custom=custom)
    assert policy.modes["cel.shop-rules.0"] == "enforce"
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "u", "operation": "CREATE",
                                   "object": deployment(replicas=9)}}).encode()  # fmt: skip
    response = review_response(body, policy)["response"]
    assert response["allowed"] is False
    assert "cel.shop-rules.0: too many" in response["status"]["message"]
    warn = AdmissionPolicy.build(warn=["cel.*"], custom=custom)
    assert review_response(body, warn)["response"]["warnings"] == [
        "casemate posture: cel.shop-rules.0: too many"
    ]


def test_cli_scan_with_a_policy_file(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(vap({"expression": "object.spec.replicas <= 5", "message": "too many"}))
    )
    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump(deployment(replicas=9)))
    run = [sys.executable, "-m", "casemate.cli", "posture", "scan", str(manifest),
           "--policy", str(policy), "-f", "json"]  # fmt: skip
    r = subprocess.run([*run, "--rule", "cel.*"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert [f["rule_id"] for f in json.loads(r.stdout)["findings"]] == ["cel.shop-rules.0"]
    policy.write_text(yaml.safe_dump(vap({"expression": "quantity('1') > 0"})))
    r = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "quantity() is not supported" in r.stderr
