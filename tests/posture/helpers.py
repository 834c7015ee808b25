"""Small builders for posture tests (plain dicts, as decoded YAML)."""

from __future__ import annotations

import copy
from typing import Any

from casemate.posture.engine import Scanner
from casemate.posture.model import Settings, Subject
from casemate.posture.rules import RULES_BY_ID


def pod(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
    base.update(spec or {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", **meta},
        "spec": base,
    }


def wrap(kind: str, pod_obj: dict[str, Any]) -> dict[str, Any]:
    """The same pod as the template of a workload ``kind``."""
    template = {"metadata": copy.deepcopy(pod_obj["metadata"]), "spec": pod_obj["spec"]}
    api = {"Job": "batch/v1", "CronJob": "batch/v1"}.get(kind, "apps/v1")
    meta = {"name": "w", "namespace": "ns"}
    if kind == "CronJob":
        spec: dict[str, Any] = {
            "schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": template}},
        }
    else:
        spec = {"template": template}
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


def hits(rule_id: str, obj: dict[str, Any], **settings: Any) -> list[tuple[str, Any]]:
    """(path, value) of every finding of one rule on one object."""
    rule = RULES_BY_ID[rule_id]
    findings = Scanner([rule], Settings(**settings)).check(Subject(obj))
    return [(f.path, f.value) for f in findings]


def restricted_pod() -> dict[str, Any]:
    """A pod that passes every restricted control."""
    ctx = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod(
        {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "r.example/a:1", "securityContext": ctx}],
        }
    )
