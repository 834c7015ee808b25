"""Network: NetworkPolicy coverage per namespace (default deny, policies that allow everything
or select no pod) and Services that open the cluster to the outside."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from casemate.posture.model import Hit, Settings, Severity, Subject
from casemate.posture.namespaces import NamespaceFacts, PolicyFacts, selector_matches
from casemate.posture.podview import mapping, seq
from casemate.posture.rules.registry import Family

FAMILY = Family("network")
rule = FAMILY.rule


def _default_deny(policy: PolicyFacts, direction: str) -> bool:
    spec = mapping(policy.subject.obj.get("spec"))
    key = direction.lower()
    return (
        not policy.pod_selector.get("matchLabels")
        and not policy.pod_selector.get("matchExpressions")
        and direction in policy.types
        and not seq(spec.get(key))
    )


@rule(
    "network.namespace-no-policy",
    Severity.MEDIUM,
    "Namespace without any NetworkPolicy",
    """Without a NetworkPolicy every pod of the namespace accepts connections from every pod
    of the cluster and may connect anywhere: one compromised pod reaches all.""",
    "Add a default-deny NetworkPolicy and allow the flows the workloads need "
    "(`casemate posture fix` can generate one).",
    scope="namespace",
)
def namespace_no_policy(facts: NamespaceFacts, settings: Settings) -> Iterator[Hit]:
    if facts.workloads and not facts.policies:
        yield Hit((), None, f"namespace {facts.namespace} has workloads and no NetworkPolicy")


@rule(
    "network.no-default-deny-ingress",
    Severity.MEDIUM,
    "No default-deny ingress policy",
    """Pods that no policy selects accept traffic from anywhere; a default-deny ingress policy
    (empty podSelector, policyTypes Ingress, no rules) makes allowing explicit.""",
    "Add a NetworkPolicy with `podSelector: {}` and `policyTypes: [Ingress]` and no rules.",
    scope="namespace",
)
def no_default_deny_ingress(facts: NamespaceFacts, settings: Settings) -> Iterator[Hit]:
    if (
        facts.workloads
        and facts.policies
        and not any(_default_deny(p, "Ingress") for p in facts.policies)
    ):
        yield Hit((), None, f"namespace {facts.namespace} has no default-deny ingress policy")


@rule(
    "network.no-default-deny-egress",
    Severity.LOW,
    "No default-deny egress policy",
    """Without an egress default deny a compromised pod can reach the cloud metadata service,
    the apiserver and the internet.""",
    "Add a NetworkPolicy with `podSelector: {}` and `policyTypes: [Egress]`, then allow DNS "
    "and the needed destinations.",
    scope="namespace",
)
def no_default_deny_egress(facts: NamespaceFacts, settings: Settings) -> Iterator[Hit]:
    if (
        facts.workloads
        and facts.policies
        and not any(_default_deny(p, "Egress") for p in facts.policies)
    ):
        yield Hit((), None, f"namespace {facts.namespace} has no default-deny egress policy")


@rule(
    "network.policy-selects-nothing",
    Severity.LOW,
    "NetworkPolicy that selects no pod",
    """A policy whose podSelector matches none of the namespace's pods protects nothing; often
    a typo in a label, leaving the intended pods open.""",
    "Fix the podSelector's labels to match the pods' template labels.",
    scope="namespace",
)
def policy_selects_nothing(facts: NamespaceFacts, settings: Settings) -> Iterator[Hit]:
    if not facts.workloads:
        return
    for policy in facts.policies:
        if not any(
            selector_matches(policy.pod_selector, dict(labels)) for labels in facts.pod_labels
        ):
            yield Hit(
                ("spec", "podSelector"),
                dict(policy.pod_selector),
                f"NetworkPolicy {policy.subject.name} selects none of the namespace's pods",
                subject=policy.subject,
            )


def _allows_all(peers: object) -> bool:
    """A rule list with a rule that has no peers (or a peer selecting every namespace)."""
    for item in seq(peers):
        item = mapping(item)
        sources = item.get("from", item.get("to"))
        if not seq(sources):
            return True
        for peer in seq(sources):
            peer = mapping(peer)
            ns_sel = peer.get("namespaceSelector")
            if ns_sel is not None and not mapping(ns_sel) and not mapping(peer.get("podSelector")):
                return True
            cidr = mapping(peer.get("ipBlock")).get("cidr")
            if cidr in ("0.0.0.0/0", "::/0"):
                return True
    return False


@rule(
    "network.policy-allows-all",
    Severity.MEDIUM,
    "NetworkPolicy rule that allows everything",
    """An ingress or egress rule without peers, with an empty namespaceSelector, or with
    0.0.0.0/0 allows every source or destination: the policy looks restrictive but is not.""",
    "Name the peers: a podSelector, a namespaceSelector with labels, or a narrow ipBlock.",
    kinds=("NetworkPolicy",),
)
def policy_allows_all(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if subject.kind != "NetworkPolicy":
        return
    spec: Mapping[str, Any] = mapping(subject.obj.get("spec"))
    for key in ("ingress", "egress"):
        if _allows_all(spec.get(key)):
            yield Hit(("spec", key), spec.get(key), f"a {key} rule allows every peer")


def _service_spec(subject: Subject) -> Mapping[str, Any] | None:
    if subject.kind != "Service":
        return None
    return mapping(subject.obj.get("spec"))


@rule(
    "network.service-nodeport",
    Severity.MEDIUM,
    "NodePort Service",
    """A NodePort Service listens on every node's addresses, past any ingress controller or
    load balancer rules.""",
    "Use a ClusterIP Service behind an Ingress or Gateway.",
    kinds=("Service",),
)
def service_nodeport(subject: Subject, settings: Settings) -> Iterator[Hit]:
    spec = _service_spec(subject)
    if spec is not None and spec.get("type") == "NodePort":
        yield Hit(
            ("spec", "type"), "NodePort", f"Service {subject.name} opens a port on every node"
        )


@rule(
    "network.service-loadbalancer",
    Severity.MEDIUM,
    "LoadBalancer Service open to any address",
    """A LoadBalancer Service without loadBalancerSourceRanges is reachable from the whole
    internet (or network) the load balancer faces.""",
    "Set `loadBalancerSourceRanges`, or use an internal load balancer.",
    kinds=("Service",),
)
def service_loadbalancer(subject: Subject, settings: Settings) -> Iterator[Hit]:
    spec = _service_spec(subject)
    if (
        spec is not None
        and spec.get("type") == "LoadBalancer"
        and not seq(spec.get("loadBalancerSourceRanges"))
    ):
        yield Hit(
            ("spec", "loadBalancerSourceRanges"),
            None,
            f"Service {subject.name} is open to any address",
        )


@rule(
    "network.service-external-ips",
    Severity.HIGH,
    "Service with externalIPs",
    """externalIPs let a Service claim any address, intercepting traffic meant for it
    (CVE-2020-8554).""",
    "Remove `externalIPs`; use a LoadBalancer or an Ingress.",
    kinds=("Service",),
)
def service_external_ips(subject: Subject, settings: Settings) -> Iterator[Hit]:
    spec = _service_spec(subject)
    if spec is not None and seq(spec.get("externalIPs")):
        yield Hit(
            ("spec", "externalIPs"),
            spec["externalIPs"],
            f"Service {subject.name} claims external IPs",
        )
