from __future__ import annotations

import pytest

from tests.posture.helpers import hits


def daemon(**info):
    base = {
        "SecurityOptions": [
            "name=seccomp,profile=builtin", "name=userns", "name=no-new-privileges",
        ],
        "LiveRestoreEnabled": True,
        "RegistryConfig": {"IndexConfigs": {"docker.io": {"Secure": True}},
                           "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"]},
        "Warnings": [],
    }  # fmt: skip
    base.update(info)
    bridge = {"Options": {"com.docker.network.bridge.enable_icc": "false"}}
    return {"apiVersion": "casemate.io/v1", "kind": "DockerDaemon", "metadata": {"name": "h"},
            "info": base, "bridge": bridge}  # fmt: skip


def container(**host_config):
    base = {"Privileged": False, "Memory": 1 << 30, "PidsLimit": 100, "CapAdd": None}
    base.update(host_config)
    return {"apiVersion": "casemate.io/v1", "kind": "DockerContainer", "metadata": {"name": "c"},
            "inspect": {"HostConfig": base, "Mounts": []}}  # fmt: skip


ENGINE_RULES = [
    "engine.docker-userns", "engine.docker-icc", "engine.docker-live-restore",
    "engine.docker-no-new-privileges", "engine.docker-insecure-registries",
    "engine.docker-tcp-without-tls", "engine.container-privileged",
    "engine.container-host-namespaces", "engine.container-sensitive-mount",
    "engine.container-no-memory-limit", "engine.container-no-pids-limit",
    "engine.container-capabilities",
]  # fmt: skip


@pytest.mark.parametrize("rule_id", ENGINE_RULES)
def test_a_hardened_host_has_no_findings(rule_id):
    assert hits(rule_id, daemon()) == [] and hits(rule_id, container()) == []


def test_daemon_rules():
    plain = daemon(SecurityOptions=["name=seccomp,profile=builtin"], LiveRestoreEnabled=False)
    assert len(hits("engine.docker-userns", plain)) == 1
    assert len(hits("engine.docker-no-new-privileges", plain)) == 1
    assert hits("engine.docker-live-restore", plain) == [("info.LiveRestoreEnabled", False)]
    icc = daemon()
    icc["bridge"]["Options"] = {}
    assert hits("engine.docker-icc", icc) == [
        ("bridge.Options['com.docker.network.bridge.enable_icc']", "true")
    ]
    indexes = {"registry.lan:5000": {"Secure": False}, "localhost:5000": {"Secure": False}}
    cidrs = ["127.0.0.0/8", "10.0.0.0/8"]
    insecure = daemon(RegistryConfig={"IndexConfigs": indexes, "InsecureRegistryCIDRs": cidrs})
    assert [v for _, v in hits("engine.docker-insecure-registries", insecure)] == [
        False,
        "10.0.0.0/8",
    ]
    tcp = daemon(Warnings=["WARNING: API is accessible on http://0.0.0.0:2375 without encryption."])
    assert hits("engine.docker-tcp-without-tls", tcp)[0][0] == "info.Warnings[0]"


def test_container_rules():
    bad = container(Privileged=True, PidMode="host", NetworkMode="host", Memory=0, PidsLimit=-1,
                    CapAdd=["NET_BIND_SERVICE", "SYS_ADMIN", "cap_net_admin"])  # fmt: skip
    bad["inspect"]["Mounts"] = [
        {"Type": "bind", "Source": "/var/run/docker.sock"},
        {"Type": "bind", "Source": "/srv/data"},
        {"Type": "volume", "Source": "/var/lib/docker/volumes/x/_data"},
    ]
    assert hits("engine.container-privileged", bad) == [("inspect.HostConfig.Privileged", True)]
    assert [p for p, _ in hits("engine.container-host-namespaces", bad)] == [
        "inspect.HostConfig.PidMode", "inspect.HostConfig.NetworkMode"]  # fmt: skip
    assert [v for _, v in hits("engine.container-sensitive-mount", bad)] == ["/var/run/docker.sock"]
    assert len(hits("engine.container-no-memory-limit", bad)) == 1
    assert len(hits("engine.container-no-pids-limit", bad)) == 1
    assert [v for _, v in hits("engine.container-capabilities", bad)] == [
        "SYS_ADMIN",
        "cap_net_admin",
    ]


def test_engine_rules_ignore_kubernetes_objects():
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "a:1"}]}}  # fmt: skip
    for rule_id in ENGINE_RULES:
        assert hits(rule_id, obj) == []


def access(**answered):
    return {"apiVersion": "casemate.io/v1", "kind": "ClusterAccess", "metadata": {"name": "k"},
            "anonymous": {"/version": True, "/api": False, **answered}}  # fmt: skip


def test_cluster_anonymous_access():
    assert hits("engine.cluster-anonymous-read", access()) == []
    assert hits("engine.cluster-anonymous-discovery", access()) == []
    opened = access(**{"/api": True, "/api/v1/secrets?limit=1": True})
    assert hits("engine.cluster-anonymous-read", opened) == [
        ("anonymous['/api/v1/secrets?limit=1']", True)
    ]
    assert hits("engine.cluster-anonymous-discovery", opened) == [("anonymous['/api']", True)]
