"""Kubernetes-native reports: ``PolicyReport`` / ``ClusterPolicyReport`` (wgpolicyk8s.io
v1alpha2), the shape Kyverno, Trivy Operator and Policy Reporter read.

Neutral input: :class:`PolicyResult` values; out: one PolicyReport per namespace (results about
namespaced objects) and one ClusterPolicyReport (cluster-scoped objects and results without
one), each with its summary. Plain dicts, ready for YAML or JSON and ``kubectl apply``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = ["API_VERSION", "PolicyResult", "ResourceRef", "policy_reports"]

API_VERSION: Final = "wgpolicyk8s.io/v1alpha2"
Outcome = Literal["pass", "fail", "warn", "error", "skip"]
_SEVERITIES: Final = frozenset({"critical", "high", "medium", "low", "info"})


@dataclass(frozen=True)
class ResourceRef:
    api_version: str
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    rule: str
    message: str
    result: Outcome
    severity: str
    category: str = ""
    resource: ResourceRef | None = None
    properties: Mapping[str, str] = field(default_factory=dict)


def _result(r: PolicyResult, source: str, stamp: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": source,
        "policy": r.policy,
        "rule": r.rule,
        "result": r.result,
        "message": r.message,
        "scored": True,
        "timestamp": {"seconds": stamp, "nanos": 0},
    }
    if r.severity in _SEVERITIES:
        out["severity"] = r.severity
    if r.category:
        out["category"] = r.category
    if r.resource is not None:
        ref = {
            "apiVersion": r.resource.api_version,
            "kind": r.resource.kind,
            "name": r.resource.name,
        }
        if r.resource.namespace:
            ref["namespace"] = r.resource.namespace
        out["resources"] = [ref]
    if r.properties:
        out["properties"] = {str(k): str(v) for k, v in r.properties.items()}
    return out


def _summary(results: Sequence[PolicyResult]) -> dict[str, int]:
    counts = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
    for r in results:
        counts[r.result] += 1
    return counts


def policy_reports(
    source: str,
    results: Sequence[PolicyResult],
    *,
    name: str = "",
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """One report per namespace (sorted), then the cluster-wide report if it has results."""
    stamp = int((now or datetime.now(UTC)).timestamp())
    name = name or source
    by_namespace: dict[str, list[PolicyResult]] = {}
    for r in results:
        ns = r.resource.namespace if r.resource is not None else ""
        by_namespace.setdefault(ns, []).append(r)
    reports = []
    for ns in sorted(by_namespace):
        members = by_namespace[ns]
        metadata: dict[str, Any] = {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": source},
        }
        if ns:
            metadata["namespace"] = ns
        reports.append(
            {
                "apiVersion": API_VERSION,
                "kind": "PolicyReport" if ns else "ClusterPolicyReport",
                "metadata": metadata,
                "summary": _summary(members),
                "results": [_result(r, source, stamp) for r in members],
            }
        )
    reports.sort(key=lambda rep: rep["kind"] == "ClusterPolicyReport")
    return reports
