"""Insecure ports: control-plane static pod flags and kubelet configurations (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from casemate.posture.engine import check_object, select_rules
from casemate.posture.model import Subject

RULES = select_rules(["engine.control-plane-insecure-port", "engine.etcd-plain-client-port",
                      "engine.kubelet-*"])  # fmt: skip


def static_pod(*command: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cp", "namespace": "kube-system"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": list(command)}]},
    }


def found(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    return sorted((f.rule_id, f.value) for f in check_object(obj, rules=RULES))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["kube-apiserver", "--insecure-port=8080"], [("engine.control-plane-insecure-port",
                                                        "--insecure-port=8080")]),
        (["/usr/local/bin/kube-apiserver", "--insecure-port", "8080", "--x"],
         [("engine.control-plane-insecure-port", "--insecure-port=8080")]),
        (["kube-apiserver", "--insecure-port=0"], []),
        (["kube-apiserver", "--secure-port=6443"], []),
        (["kube-apiserver", "--insecure-port=0", "--insecure-bind-address=0.0.0.0"],
         [("engine.control-plane-insecure-port", "--insecure-bind-address=0.0.0.0")]),
        (["kube-apiserver", "--insecure-port=8080", "--insecure-port=0"], []),  # last one wins
        (["kube-scheduler", "--port=10251"], [("engine.control-plane-insecure-port",
                                                "--port=10251")]),
        (["kube-controller-manager", "--port=0"], []),
        (["etcd", "--listen-client-urls=https://10.0.0.1:2379", "--client-cert-auth=true"], []),
        (["etcd", "--listen-client-urls=https://10.0.0.1:2379,http://0.0.0.0:2379",
          "--client-cert-auth=true"], [("engine.etcd-plain-client-port", "http://0.0.0.0:2379")]),
        (["etcd", "--listen-client-urls=https://10.0.0.1:2379"],
         [("engine.etcd-plain-client-port", None)]),
        (["nginx", "--insecure-port=8080"], []),  # not a control-plane component
    ],
)  # fmt: skip
def test_control_plane_flags(command: list[str], expected: list[tuple[str, Any]]) -> None:
    assert found(static_pod(*command)) == expected


def test_flags_in_args_count_too() -> None:
    obj = static_pod("kube-apiserver")
    obj["spec"]["containers"][0]["args"] = ["--insecure-port=8080"]
    assert found(obj) == [("engine.control-plane-insecure-port", "--insecure-port=8080")]


SECURE = {
    "readOnlyPort": 0,
    "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True}},
    "authorization": {"mode": "Webhook"},
}


def kubelet(**changes: Any) -> dict[str, Any]:
    config = {**SECURE, **changes}
    return {"apiVersion": "casemate.io/v1", "kind": "KubeletConfig",
            "metadata": {"name": "node-1"}, "config": config}  # fmt: skip


def test_secure_kubelet_has_no_findings() -> None:
    assert found(kubelet()) == []
    assert Subject(kubelet()).kind == "KubeletConfig"


def test_insecure_kubelets() -> None:
    assert found(kubelet(readOnlyPort=10255)) == [("engine.kubelet-read-only-port", 10255)]
    assert found(kubelet(authentication={"anonymous": {"enabled": True}})) == [
        ("engine.kubelet-anonymous-auth", True)
    ]
    assert found(kubelet(authentication={})) == [("engine.kubelet-anonymous-auth", None)]
    assert found(kubelet(authorization={"mode": "AlwaysAllow"})) == [
        ("engine.kubelet-always-allow", "AlwaysAllow")
    ]
