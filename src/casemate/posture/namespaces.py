"""What namespace rules need to know about one namespace, gathered object by object.

:class:`NamespaceIndex` is fed every scanned object (keeping only small summaries, so a live
scan of a large cluster stays flat in memory) and yields one frozen :class:`NamespaceFacts` per
namespace that holds workloads or policies. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from casemate.posture.model import Subject
from casemate.posture.podview import mapping, seq

__all__ = ["NamespaceFacts", "NamespaceIndex", "PolicyFacts", "selector_matches"]


@dataclass(frozen=True)
class PolicyFacts:
    subject: Subject
    pod_selector: Mapping[str, Any]
    types: frozenset[str]


@dataclass(frozen=True)
class NamespaceFacts:
    namespace: str
    anchor: Subject | None
    workloads: int
    pod_labels: frozenset[frozenset[tuple[str, str]]]
    policies: tuple[PolicyFacts, ...]
    has_limit_range: bool
    has_quota: bool


@dataclass
class _Building:
    anchor: Subject | None = None
    workloads: int = 0
    pod_labels: set[frozenset[tuple[str, str]]] = field(default_factory=set)
    policies: list[PolicyFacts] = field(default_factory=list)
    has_limit_range: bool = False
    has_quota: bool = False


def policy_types(spec: Mapping[str, Any]) -> frozenset[str]:
    """The directions a NetworkPolicy governs, defaulted as the apiserver does."""
    types = [t for t in seq(spec.get("policyTypes")) if isinstance(t, str)]
    if types:
        return frozenset(types)
    return frozenset({"Ingress", "Egress"} if spec.get("egress") is not None else {"Ingress"})


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector against a label set (an empty selector matches everything)."""
    for key, value in mapping(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expr in seq(selector.get("matchExpressions")):
        expr = mapping(expr)
        key, op = str(expr.get("key")), expr.get("operator")
        values = seq(expr.get("values"))
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


class NamespaceIndex:
    """Accumulates per-namespace facts; objects without a namespace count as ``default``."""

    def __init__(self) -> None:
        self._spaces: dict[str, _Building] = {}

    def add(self, subject: Subject) -> None:
        kind = subject.kind
        if kind not in _INTERESTING and not subject.pods:
            return
        ns = subject.namespace or "default"
        b = self._spaces.setdefault(ns, _Building())
        if subject.pods:
            b.workloads += 1
            if b.anchor is None:
                b.anchor = subject
            for pod in subject.pods:
                labels = mapping(pod.meta.get("labels"))
                b.pod_labels.add(frozenset((str(k), str(v)) for k, v in labels.items()))
        elif kind == "NetworkPolicy":
            spec = mapping(subject.obj.get("spec"))
            b.policies.append(
                PolicyFacts(subject, mapping(spec.get("podSelector")), policy_types(spec))
            )
        elif kind == "LimitRange":
            b.has_limit_range = True
        elif kind == "ResourceQuota":
            b.has_quota = True

    def facts(self) -> Iterator[NamespaceFacts]:
        for ns in sorted(self._spaces):
            b = self._spaces[ns]
            yield NamespaceFacts(
                ns,
                b.anchor,
                b.workloads,
                frozenset(b.pod_labels),
                tuple(b.policies),
                b.has_limit_range,
                b.has_quota,
            )


_INTERESTING = frozenset({"NetworkPolicy", "LimitRange", "ResourceQuota"})
