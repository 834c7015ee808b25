from __future__ import annotations

from casemate.posture.engine import scan, select_rules
from casemate.posture.model import Subject
from casemate.posture.namespaces import selector_matches
from tests.posture.helpers import hits, pod, wrap


def test_requests_and_limits():
    obj = pod(
        {
            "containers": [
                {
                    "name": "a",
                    "image": "a:1",
                    "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
                }
            ]
        }
    )
    assert hits("resources.cpu-requests", obj) == []
    assert hits("resources.memory-requests", obj) == [
        ("spec.containers[0].resources.requests.memory", None)
    ]
    assert hits("resources.cpu-limits", obj) == [("spec.containers[0].resources.limits.cpu", None)]
    assert hits("resources.memory-limits", obj) == []
    eph = pod({"ephemeralContainers": [{"name": "e", "image": "a:1"}], "containers": []})
    assert hits("resources.memory-limits", eph) == []


def _ns_findings(objs, pattern):
    return [
        (f.kind, f.name, f.rule_id)
        for f in scan([Subject(o) for o in objs], select_rules([pattern]))
    ]


def _policy(name, selector, types=None, **spec):
    body = {"podSelector": selector, **spec}
    if types:
        body["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": body,
    }


def test_namespace_rules():
    workload = wrap("Deployment", pod(labels={"app": "web"}))
    assert _ns_findings([workload], "resources.namespace-*") == [
        ("Namespace", "ns", "resources.namespace-limitrange"),
        ("Namespace", "ns", "resources.namespace-quota"),
    ]
    lr = {"kind": "LimitRange", "metadata": {"name": "l", "namespace": "ns"}}
    rq = {"kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "ns"}}
    assert _ns_findings([workload, lr, rq], "resources.namespace-*") == []
    # a namespace with only a LimitRange has no workloads to protect
    assert _ns_findings([lr], "resources.namespace-*") == []


def test_network_policy_coverage():
    web = wrap("Deployment", pod(labels={"app": "web"}))
    assert _ns_findings([web], "network.namespace-no-policy") == [
        ("Namespace", "ns", "network.namespace-no-policy")
    ]
    allow_web = _policy(
        "allow-web", {"matchLabels": {"app": "web"}}, ingress=[{"from": [{"podSelector": {}}]}]
    )
    found = _ns_findings([web, allow_web], "network.*")
    assert ("Namespace", "ns", "network.no-default-deny-ingress") in found
    assert ("Namespace", "ns", "network.no-default-deny-egress") in found
    deny = _policy("deny", {}, ["Ingress", "Egress"])
    assert _ns_findings([web, allow_web, deny], "network.*") == []


def test_policy_selects_nothing_and_allows_all():
    web = wrap("Deployment", pod(labels={"app": "web"}))
    typo = _policy("typo", {"matchLabels": {"app": "wbe"}}, ["Ingress"])
    assert _ns_findings([web, typo], "network.policy-selects-nothing") == [
        ("NetworkPolicy", "typo", "network.policy-selects-nothing")
    ]
    everyone = _policy("open", {}, ingress=[{"from": [{"namespaceSelector": {}}]}])
    assert hits("network.policy-allows-all", everyone) == [
        ("spec.ingress", [{"from": [{"namespaceSelector": {}}]}])
    ]
    assert len(hits("network.policy-allows-all", _policy("o", {}, ingress=[{}]))) == 1
    assert (
        len(
            hits(
                "network.policy-allows-all",
                _policy("o", {}, egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
            )
        )
        == 1
    )
    assert (
        hits(
            "network.policy-allows-all",
            _policy("o", {}, ingress=[{"from": [{"podSelector": {"matchLabels": {"a": "b"}}}]}]),
        )
        == []
    )


def test_selector_matches():
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "db"}}, labels)
    assert selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}, labels
    )
    assert not selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels
    )
    assert selector_matches(
        {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels
    )
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Bogus"}]}, labels)


def _svc(**spec):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": spec,
    }


def test_services():
    assert hits("network.service-nodeport", _svc(type="NodePort")) == [("spec.type", "NodePort")]
    assert hits("network.service-nodeport", _svc(type="ClusterIP")) == []
    assert len(hits("network.service-loadbalancer", _svc(type="LoadBalancer"))) == 1
    assert (
        hits(
            "network.service-loadbalancer",
            _svc(type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8"]),
        )
        == []
    )
    assert hits("network.service-external-ips", _svc(externalIPs=["1.2.3.4"])) == [
        ("spec.externalIPs", ["1.2.3.4"])
    ]
