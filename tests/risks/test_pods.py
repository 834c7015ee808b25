"""Pod escape risks: one pure module for the command policy and the API proxy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casemate.risks.pods import (
    RISK_IDS,
    WORKLOAD_KINDS,
    object_risks,
    patch_risks,
    pod_spec_risks,
)

RISKY_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"hostPID": True}, "host-namespaces"),
    ({"hostIPC": True}, "host-namespaces"),
    ({"hostNetwork": True}, "host-namespaces"),
    ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "host-path"),
    ({"containers": [{"name": "c", "securityContext": {"privileged": True}}]}, "privileged"),
    ({"initContainers": [{"name": "c", "securityContext": {"privileged": True}}]}, "privileged"),
    ({"ephemeralContainers": [{"name": "c", "securityContext": {"privileged": True}}]},
     "privileged"),
    ({"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}]},
     "capabilities"),
    ({"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": True}}]},
     "privilege-escalation"),
    ({"containers": [{"name": "c", "ports": [{"containerPort": 1, "hostPort": 8080}]}]},
     "host-ports"),
    ({"containers": [{"name": "c", "securityContext": {"privileged": "true"}}]}, "unreadable"),
    ({"containers": {"name": "c"}}, "unreadable"),
    ({"hostPID": 1}, "unreadable"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "risk"), RISKY_SPECS)
def test_each_risk_is_found_in_specs_and_patches(spec: dict[str, Any], risk: str) -> None:
    assert risk in {r.risk for r in pod_spec_risks(spec)}
    # the generic patch scan finds the same risk wherever the spec sits
    if risk != "unreadable" or "privileged" in str(spec) or "hostPID" in str(spec):
        found = {r.risk for r in patch_risks({"spec": {"template": {"spec": spec}}})}
        assert found & {risk, "unreadable"}


@pytest.mark.parametrize("kind", sorted(WORKLOAD_KINDS))
def test_every_workload_kind_is_unwrapped(kind: str) -> None:
    spec = {"hostPID": True, "containers": [{"name": "c"}]}
    template = {"spec": spec}
    bodies = {
        "Pod": {"spec": spec},
        "PodTemplate": {"template": template},
        "CronJob": {"spec": {"jobTemplate": {"spec": {"template": template}}}},
    }
    obj = {"kind": kind, **bodies.get(kind, {"spec": {"template": template}})}
    assert [r.risk for r in object_risks(obj)] == ["host-namespaces"]
    assert [r.risk for r in object_risks({"kind": "List", "items": [obj]})] == ["host-namespaces"]


def test_safe_specs_and_other_kinds_have_none() -> None:
    safe = {
        "containers": [
            {
                "name": "c",
                "securityContext": {
                    "privileged": False,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": []},
                },
                "ports": [{"containerPort": 80, "hostPort": 0}],
            }
        ],
        "hostPID": False,
        "volumes": [{"name": "e", "emptyDir": {}}],
    }
    assert pod_spec_risks(safe) == ()
    assert object_risks({"kind": "ConfigMap", "data": {"hostPID": "true"}}) == ()
    assert patch_risks({"metadata": {"annotations": {"hostPath": "/", "privileged": "1"}}}) == ()


def test_json_patch_paths() -> None:
    path = ("spec", "template", "spec", "containers", "0", "securityContext", "privileged")
    assert [r.risk for r in patch_risks(True, path)] == ["privileged"]
    assert patch_risks(False, path) == ()
    caps = ("spec", "containers", "0", "securityContext", "capabilities", "add", "-")
    assert [r.risk for r in patch_risks("SYS_ADMIN", caps)] == ["capabilities"]
    assert [r.risk for r in patch_risks({"path": "/x"}, ("spec", "volumes", "0", "hostPath"))] == [
        "host-path"
    ]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["hostPID", "containers", "securityContext", "privileged", "x", "spec"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(_json)
def test_never_raises_and_only_known_ids(value: object) -> None:
    for risk in (*pod_spec_risks(value), *patch_risks(value), *object_risks(value)):
        assert risk.risk in RISK_IDS
