from __future__ import annotations

import copy

import pytest

from casemate.posture.engine import Scanner
from casemate.posture.model import Settings, Subject
from casemate.posture.rules import ALL_RULES, RULES_BY_ID
from casemate.risks.pods import object_risks
from tests.posture.helpers import hits, pod, restricted_pod, wrap

KINDS = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]
TEMPLATE_PREFIX = {
    "Deployment": "spec.template.spec",
    "StatefulSet": "spec.template.spec",
    "DaemonSet": "spec.template.spec",
    "ReplicaSet": "spec.template.spec",
    "Job": "spec.template.spec",
    "CronJob": "spec.jobTemplate.spec.template.spec",
}


def privileged_pod(list_name: str = "containers") -> dict:
    spec = {list_name: [{"name": "x", "image": "a:1", "securityContext": {"privileged": True}}]}
    if list_name != "containers":
        spec["containers"] = [{"name": "app", "image": "a:1"}]
    return pod(spec)


@pytest.mark.parametrize("list_name", ["containers", "initContainers", "ephemeralContainers"])
def test_privileged_in_every_container_list(list_name):
    assert hits("escape.privileged", privileged_pod(list_name)) == [
        (f"spec.{list_name}[0].securityContext.privileged", True)
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_workload_templates_are_checked_with_their_paths(kind):
    obj = wrap(kind, privileged_pod())
    assert hits("escape.privileged", obj) == [
        (f"{TEMPLATE_PREFIX[kind]}.containers[0].securityContext.privileged", True)
    ]


def test_privileged_false_or_string_is_not_privileged():
    obj = privileged_pod()
    obj["spec"]["containers"][0]["securityContext"]["privileged"] = False
    assert hits("escape.privileged", obj) == []
    obj["spec"]["containers"][0]["securityContext"]["privileged"] = "true"
    assert hits("escape.privileged", obj) == []
    assert hits("escape.unreadable", obj) == [("spec", None)]


def test_other_kinds_have_no_pod_findings():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    for r in ALL_RULES:
        if r.family == "escape":
            assert hits(r.id, obj) == []


def test_host_namespaces_each_flag():
    obj = pod({"hostNetwork": True, "hostPID": True, "hostIPC": False})
    assert hits("escape.host-namespaces", obj) == [
        ("spec.hostNetwork", True),
        ("spec.hostPID", True),
    ]


def test_host_path_and_sensitive_paths():
    obj = pod(
        {
            "volumes": [
                {"name": "a", "hostPath": {"path": "/data/app"}},
                {"name": "b", "hostPath": {"path": "/var/run/docker.sock"}},
                {"name": "c", "hostPath": {"path": "//etc/./kubernetes"}},
                {"name": "d", "emptyDir": {}},
                {"name": "e", "hostPath": {"path": "/data/../etc"}},
                {"name": "f", "hostPath": {"path": "data"}},
            ]
        }
    )
    assert [p for p, _ in hits("escape.host-path", obj)] == [
        "spec.volumes[0].hostPath",
        "spec.volumes[1].hostPath",
        "spec.volumes[2].hostPath",
        "spec.volumes[4].hostPath",
        "spec.volumes[5].hostPath",
    ]
    assert [v for _, v in hits("escape.sensitive-host-path", obj)] == [
        "/var/run/docker.sock",
        "//etc/./kubernetes",
        "/data/../etc",
        "data",
    ]


def test_host_ports_zero_is_unset():
    obj = pod(
        {
            "containers": [
                {"name": "a", "image": "a:1", "ports": [{"hostPort": 0}, {"hostPort": 80}]}
            ]
        }
    )
    assert hits("escape.host-ports", obj) == [("spec.containers[0].ports[1].hostPort", 80)]


def test_capabilities_baseline_exact_spelling():
    caps = ["CHOWN", "chown", "CAP_CHOWN", "NET_RAW", "SYS_ADMIN", "NET_BIND_SERVICE"]
    obj = pod(
        {
            "containers": [
                {"name": "a", "image": "a:1", "securityContext": {"capabilities": {"add": caps}}}
            ]
        }
    )
    assert [v for _, v in hits("escape.capabilities-baseline", obj)] == [
        "chown",
        "CAP_CHOWN",
        "NET_RAW",
        "SYS_ADMIN",
    ]


def test_capabilities_restricted():
    obj = restricted_pod()
    assert hits("escape.capabilities-restricted", obj) == []
    ctx = obj["spec"]["containers"][0]["securityContext"]
    ctx["capabilities"] = {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}
    assert hits("escape.capabilities-restricted", obj) == [
        ("spec.containers[0].securityContext.capabilities.add[1]", "CHOWN")
    ]
    ctx["capabilities"] = {"drop": ["all"]}
    assert len(hits("escape.capabilities-restricted", obj)) == 1
    assert hits("escape.capabilities-restricted", obj, pss_version=(1, 21)) == []


def test_windows_pods_exempt_from_some_restricted_controls_since_1_25():
    obj = pod({"os": {"name": "windows"}})
    for rid in (
        "escape.capabilities-restricted",
        "escape.privilege-escalation",
        "escape.seccomp-required",
    ):
        assert hits(rid, obj) == []
        assert hits(rid, obj, pss_version=(1, 24)) != []


def test_run_as_non_root_inheritance():
    obj = restricted_pod()
    assert hits("escape.run-as-non-root", obj) == []
    # the container overrides the pod
    obj["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    assert hits("escape.run-as-non-root", obj) == [
        ("spec.containers[0].securityContext.runAsNonRoot", False)
    ]
    # set on every container instead of the pod
    obj = restricted_pod()
    del obj["spec"]["securityContext"]["runAsNonRoot"]
    assert len(hits("escape.run-as-non-root", obj)) == 1
    obj["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = True
    assert hits("escape.run-as-non-root", obj) == []
    obj["spec"]["securityContext"]["runAsNonRoot"] = False
    assert hits("escape.run-as-non-root", obj) == [("spec.securityContext.runAsNonRoot", False)]


def test_run_as_user_zero_not_false():
    obj = restricted_pod()
    obj["spec"]["securityContext"]["runAsUser"] = 0
    obj["spec"]["containers"][0]["securityContext"]["runAsUser"] = False
    assert hits("escape.run-as-user", obj) == [("spec.securityContext.runAsUser", 0)]
    assert hits("escape.run-as-user", obj, pss_version=(1, 22)) == []


def test_seccomp_restricted_inheritance():
    obj = restricted_pod()
    assert hits("escape.seccomp-required", obj) == []
    del obj["spec"]["securityContext"]["seccompProfile"]
    assert hits("escape.seccomp-required", obj) == [
        ("spec.securityContext.seccompProfile.type", None)
    ]
    obj["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Localhost"}
    assert hits("escape.seccomp-required", obj) == []
    obj["spec"]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    obj["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert hits("escape.seccomp-required", obj) == [
        ("spec.containers[0].securityContext.seccompProfile.type", "Unconfined")
    ]
    assert len(hits("escape.seccomp-unconfined", obj)) == 1


def test_seccomp_annotations():
    obj = pod(annotations={"seccomp.security.alpha.kubernetes.io/pod": "unconfined"})
    assert hits("escape.seccomp-unconfined", obj) == [
        ("metadata.annotations['seccomp.security.alpha.kubernetes.io/pod']", "unconfined")
    ]


def test_apparmor_annotation_and_fields_by_version():
    ann = {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
    assert len(hits("escape.apparmor", pod(annotations=ann))) == 1
    ok = {"container.apparmor.security.beta.kubernetes.io/app": "localhost/x"}
    assert hits("escape.apparmor", pod(annotations=ok)) == []
    field = pod({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}})
    assert hits("escape.apparmor", field) == [
        ("spec.securityContext.appArmorProfile.type", "Unconfined")
    ]
    assert hits("escape.apparmor", field, pss_version=(1, 29)) == []


def test_selinux():
    obj = pod(
        {"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "u", "level": "s0"}}}
    )
    assert [p for p, _ in hits("escape.selinux", obj)] == [
        "spec.securityContext.seLinuxOptions.type",
        "spec.securityContext.seLinuxOptions.user",
    ]
    engine = pod({"securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}})
    assert hits("escape.selinux", engine) == []
    assert len(hits("escape.selinux", engine, pss_version=(1, 30))) == 1


def test_proc_mount_user_namespaces_by_version():
    ctx = {"procMount": "Unmasked"}
    obj = pod(
        {"hostUsers": False, "containers": [{"name": "a", "image": "a:1", "securityContext": ctx}]}
    )
    assert hits("escape.proc-mount", obj) == []
    assert len(hits("escape.proc-mount-restricted", obj)) == 1
    assert len(hits("escape.proc-mount", obj, pss_version=(1, 34))) == 1
    assert hits("escape.proc-mount-restricted", obj, pss_version=(1, 34)) == []
    obj["spec"]["hostUsers"] = True
    assert len(hits("escape.proc-mount", obj)) == 1
    assert hits("escape.proc-mount-restricted", obj) == []


def test_sysctls_by_version():
    obj = pod(
        {
            "securityContext": {
                "sysctls": [
                    {"name": "net.ipv4.tcp_rmem", "value": "1"},
                    {"name": "kernel.msgmax", "value": "1"},
                ]
            }
        }
    )
    assert [v for _, v in hits("escape.sysctls", obj)] == ["kernel.msgmax"]
    assert [v for _, v in hits("escape.sysctls", obj, pss_version=(1, 31))] == [
        "net.ipv4.tcp_rmem",
        "kernel.msgmax",
    ]


def test_host_probes_since_1_34():
    c = {
        "name": "a",
        "image": "a:1",
        "lifecycle": {"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 1}}},
    }
    obj = pod({"containers": [c]})
    assert hits("escape.host-probes", obj) == [
        ("spec.containers[0].lifecycle.preStop.tcpSocket.host", "10.0.0.1")
    ]
    assert hits("escape.host-probes", obj, pss_version=(1, 33)) == []


def test_volume_types():
    vols = [{"name": "a"}, {"name": "b", "nfs": {}}, {"name": "c", "image": {"reference": "x"}}]
    assert [p for p, _ in hits("escape.volume-types", pod({"volumes": vols}))] == [
        "spec.volumes[1].nfs"
    ]
    assert len(hits("escape.volume-types", pod({"volumes": vols}), pss_version=(1, 34))) == 2


def test_privilege_escalation_must_be_false():
    obj = restricted_pod()
    assert hits("escape.privilege-escalation", obj) == []
    obj["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = None
    assert len(hits("escape.privilege-escalation", obj)) == 1


def test_windows_host_process():
    obj = pod({"securityContext": {"windowsOptions": {"hostProcess": True}}})
    assert hits("escape.windows-host-process", obj) == [
        ("spec.securityContext.windowsOptions.hostProcess", True)
    ]


def test_hardening_rules():
    obj = restricted_pod()
    ctx = obj["spec"]["containers"][0]["securityContext"]
    assert len(hits("escape.read-only-root-fs", obj)) == 1
    ctx["readOnlyRootFilesystem"] = True
    assert hits("escape.read-only-root-fs", obj) == []
    obj["spec"]["securityContext"]["runAsGroup"] = 0
    assert hits("escape.run-as-group-root", obj) == [("spec.securityContext.runAsGroup", 0)]
    ctx["runAsGroup"] = 10
    assert hits("escape.run-as-group-root", obj) == []
    obj["spec"]["shareProcessNamespace"] = True
    assert hits("escape.share-process-namespace", obj) == [("spec.shareProcessNamespace", True)]


def test_malformed_fields_do_not_stop_the_scan():
    obj = pod(
        {
            "containers": [
                {
                    "name": "a",
                    "image": "a:1",
                    "securityContext": {"capabilities": {"add": [{"x": 1}]}},
                }
            ]
        }
    )
    findings = Scanner(ALL_RULES, Settings()).check(Subject(obj))
    assert any(f.rule_id == "escape.capabilities-baseline" for f in findings)
    spec_not_mapping = {"kind": "Pod", "metadata": {"name": "x"}, "spec": ["a"]}
    ids = {f.rule_id for f in Scanner(ALL_RULES, Settings()).check(Subject(spec_not_mapping))}
    assert "escape.unreadable" in ids


# risks.pods is the product's one list of escape risks: every risk it sees, posture reports.
RISK_RULES = {
    "privileged": "escape.privileged",
    "host-namespaces": "escape.host-namespaces",
    "host-path": "escape.host-path",
    "capabilities": "escape.capabilities-restricted",
    "privilege-escalation": "escape.privilege-escalation",
    "host-ports": "escape.host-ports",
    "unreadable": "escape.unreadable",
}
RISKY = [
    pod({"hostPID": True}),
    pod({"volumes": [{"name": "h", "hostPath": {"path": "/x"}}]}),
    pod({"initContainers": [{"name": "i", "image": "a", "securityContext": {"privileged": True}}]}),
    pod(
        {
            "containers": [
                {"name": "a", "image": "a", "securityContext": {"capabilities": {"add": ["CHOWN"]}}}
            ]
        }
    ),
    pod(
        {
            "containers": [
                {"name": "a", "image": "a", "securityContext": {"allowPrivilegeEscalation": True}}
            ]
        }
    ),
    pod({"ephemeralContainers": [{"name": "e", "image": "a", "ports": [{"hostPort": 1}]}]}),
    pod({"hostNetwork": "yes"}),
    wrap("CronJob", pod({"hostIPC": True})),
]


@pytest.mark.parametrize("obj", RISKY)
def test_posture_reports_every_risk_of_risks_pods(obj):
    ids = {f.rule_id for f in Scanner(ALL_RULES, Settings()).check(Subject(copy.deepcopy(obj)))}
    risks = object_risks(obj)
    assert risks
    for risk in risks:
        assert RISK_RULES[risk.risk] in ids, risk


def test_every_rule_is_documented():
    assert len(ALL_RULES) >= 50
    for r in ALL_RULES:
        assert r.title and r.explanation and r.fix, r.id
        assert RULES_BY_ID[r.id] is r
