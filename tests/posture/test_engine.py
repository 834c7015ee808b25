"""The engine offers each object only the rules that can report on it, and that choice never
changes a finding."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from casemate.posture.engine import Scanner
from casemate.posture.model import Hit, Rule, Settings, Severity, Subject
from casemate.posture.rules import ALL_RULES
from tests.posture.helpers import pod, wrap


def _corpus() -> list[dict[str, Any]]:
    """Objects of every kind some rule is declared for, each with something to report."""
    bad = pod(
        {
            "hostNetwork": True,
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:latest",
                    "securityContext": {"privileged": True},
                    "env": [{"name": "DB_PASSWORD", "value": "hunter2"}],
                }
            ],
        }
    )
    meta = {"name": "x", "namespace": "ns"}
    rbac = "rbac.authorization.k8s.io/v1"
    everything = [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
    ]
    return [
        bad,
        wrap("Deployment", bad),
        {"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": everything},
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": meta, "rules": everything},
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "Group", "name": "system:anonymous"}],
        },  # fmt: skip
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"type": "NodePort"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": "LoadBalancer",
                "externalIPs": ["1.2.3.4"],
                "ports": [{"port": 80, "nodePort": 30080}],
            },
        },  # fmt: skip
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"db_password": "hunter2"},
        },  # fmt: skip
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta,
            "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}]},
        },  # fmt: skip
        {
            "apiVersion": "casemate.io/v1",
            "kind": "DockerDaemon",
            "metadata": {"name": "h"},
            "info": {
                "SecurityOptions": [],
                "LiveRestoreEnabled": False,
                "RegistryConfig": {"InsecureRegistryCIDRs": ["10.0.0.0/8"]},
                "Warnings": ["API is accessible on http://0.0.0.0:2375 without encryption"],
            },
            "bridge": {"Options": {}},
        },  # fmt: skip
        {
            "apiVersion": "casemate.io/v1",
            "kind": "DockerContainer",
            "metadata": {"name": "c"},
            "inspect": {
                "HostConfig": {"Privileged": True, "NetworkMode": "host", "CapAdd": ["SYS_ADMIN"]},
                "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock"}],
            },
        },  # fmt: skip
        {
            "apiVersion": "casemate.io/v1",
            "kind": "KubeletConfig",
            "metadata": {"name": "n"},
            "config": {
                "readOnlyPort": 10255,
                "authentication": {"anonymous": {"enabled": True}},
                "authorization": {"mode": "AlwaysAllow"},
            },
        },  # fmt: skip
        {
            "apiVersion": "casemate.io/v1",
            "kind": "ClusterAccess",
            "metadata": {"name": "k"},
            "anonymous": {"/version": True, "/api": True, "/api/v1/secrets?limit=1": True},
        },  # fmt: skip
    ]


KINDS = sorted({o["kind"] for o in _corpus()})
DECLARED = [r for r in ALL_RULES if r.kinds is not None]


def _direct(obj: dict[str, Any]) -> set[tuple[str, tuple[str | int, ...]]]:
    """Every object rule called on ``obj`` directly, none skipped."""
    subject, settings = Subject(obj), Settings()
    return {
        (r.id, hit.path)
        for r in ALL_RULES
        if r.scope == "object"
        for hit in r.check(subject, settings)
    }


def test_the_corpus_trips_every_rule_declared_for_kinds() -> None:
    found = {rule for obj in _corpus() for rule, _ in _direct(obj)}
    # a declared rule without a hit here would make the two tests below prove nothing for it
    assert [r.id for r in DECLARED if r.id not in found] == []


@pytest.mark.parametrize("obj", _corpus(), ids=lambda o: o["kind"])
def test_choosing_rules_by_kind_changes_no_finding(obj: dict[str, Any]) -> None:
    scanned = {(f.rule_id, f.parts) for f in Scanner().check(Subject(obj))}
    assert scanned == _direct(obj)


@pytest.mark.parametrize("rule", DECLARED, ids=lambda r: r.id)
def test_declared_kinds_are_the_only_kinds_a_rule_reports_on(rule: Rule) -> None:
    """Every corpus object, relabelled to each kind outside the rule's ``kinds``: nothing."""
    assert rule.kinds is not None
    for obj in _corpus():
        for kind in KINDS:
            if kind in rule.kinds:
                continue
            other = copy.deepcopy(obj)
            other["kind"] = kind
            assert list(rule.check(Subject(other), Settings())) == [], (rule.id, kind)


def test_rules_that_cannot_apply_are_not_called() -> None:
    calls: list[tuple[str, str]] = []

    def recorder(name: str) -> Any:
        def check(subject: Subject, settings: Settings) -> list[Hit]:
            calls.append((name, subject.kind))
            return []

        return check

    def rule(name: str, **kw: Any) -> Rule:
        return Rule(f"t.{name}", "t", Severity.LOW, name, "", "", recorder(name), **kw)

    scanner = Scanner(
        [
            rule("services", kinds=frozenset({"Service"})),
            rule("pods", pods_only=True),
            rule("any"),
        ]
    )
    for obj in _corpus():
        scanner.check(Subject(obj))
    assert {k for n, k in calls if n == "services"} == {"Service"}
    assert {k for n, k in calls if n == "pods"} == {"Pod", "Deployment"}
    assert {k for n, k in calls if n == "any"} == set(KINDS)
