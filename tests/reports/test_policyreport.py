from __future__ import annotations

from datetime import UTC, datetime

from casemate.reports.policyreport import API_VERSION, PolicyResult, ResourceRef, policy_reports

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def test_reports_per_namespace_and_cluster():
    pod = ResourceRef("v1", "Pod", "p", "team-a")
    role = ResourceRef("rbac.authorization.k8s.io/v1", "ClusterRole", "r")
    reports = policy_reports(
        "casemate",
        [
            PolicyResult(
                "escape",
                "escape.privileged",
                "privileged",
                "fail",
                "critical",
                "escape",
                pod,
                {"path": "spec"},
            ),
            PolicyResult("rbac", "rbac.wildcard-verbs", "wildcard", "fail", "high", "rbac", role),
            PolicyResult("escape", "escape.host-path", "ok", "pass", "nonsense", resource=pod),
        ],
        now=NOW,
    )
    assert [(r["kind"], r["metadata"].get("namespace")) for r in reports] == [
        ("PolicyReport", "team-a"),
        ("ClusterPolicyReport", None),
    ]
    ns_report = reports[0]
    assert ns_report["apiVersion"] == API_VERSION
    assert ns_report["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    first = ns_report["results"][0]
    assert first["resources"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "team-a"}
    ]
    assert first["timestamp"] == {"seconds": int(NOW.timestamp()), "nanos": 0}
    assert first["severity"] == "critical" and first["properties"] == {"path": "spec"}
    assert "severity" not in ns_report["results"][1]  # not a PolicyReport severity
    assert reports[1]["results"][0]["resources"][0] == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "name": "r",
    }
