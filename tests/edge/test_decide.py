"""Pure decisions: roles, tokens, gates, escape risks, image trust, exceptions."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from casemate.edge.decide import (
    DEFAULT_ORDINARY_ACTIONS,
    Caller,
    Code,
    ImageRecord,
    ImageTrust,
    RiskException,
    RiskPolicy,
    Role,
    TokenCheck,
    TrustFacts,
    canonical_host_path,
    decide,
    facts_needed,
)
from casemate.edge.dockerapi import read_request
from casemate.edge.routes import READ_ONLY_ACTIONS, Action
from casemate.errors import InvalidInput, PolicyError
from tests.edge.helpers import (
    NOW,
    ORDINARY,
    OTHER_DIGEST,
    PINNED_DIGEST,
    PINNED_REF,
    PINNED_REPO,
    SUPER,
    create,
    facts,
    http,
    token,
    verdict_for,
)
from tests.edge.test_dockerapi import ROUTE_CASES, _route_request


def code_of(raw: bytes, **kw: Any) -> Code:
    return verdict_for(raw, **kw).code


def hc(**fields: Any) -> bytes:
    return create({"HostConfig": fields})


CLOUD = Code.CLOUD_REQUIRED


# --- totality, roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "action", "params"),
    ROUTE_CASES,
    ids=[f"{c[0]} {c[1]}" for c in ROUTE_CASES],
)
def test_every_route_gets_a_verdict(method, target, action, params):
    request = read_request(_route_request(method, target, True))
    as_ordinary = decide(request, ORDINARY, facts(), RiskPolicy())
    assert as_ordinary.allowed is (action in DEFAULT_ORDINARY_ACTIONS)
    assert not as_ordinary.needs_cloud
    as_super = decide(request, SUPER, facts(), RiskPolicy())
    if action in READ_ONLY_ACTIONS:
        assert (as_super.allowed, as_super.needs_cloud) == (True, False)
    else:
        assert as_super.needs_cloud is as_super.allowed


@pytest.mark.parametrize(
    "target",
    [
        "/_ping",
        "/version",
        "/info",
        "/events",
        "/containers/json",
        "/containers/web/json",
        "/containers/web/logs",
        "/containers/web/stats",
        "/images/json",
        "/images/nginx/json",
    ],
)
def test_ordinary_users_may_read(target):
    verdict = verdict_for(http("GET", target), caller=ORDINARY)
    assert (verdict.allowed, verdict.needs_cloud, verdict.code) == (True, False, Code.READ_ALLOWED)


@pytest.mark.parametrize(
    "raw",
    [
        http("POST", "/containers/web/start"),
        http("POST", "/containers/web/kill"),
        http("DELETE", "/containers/web"),
        http("POST", "/containers/web/exec", {"User": "1000"}),
        http("GET", "/containers/web/export"),
        http("GET", "/containers/web/archive?path=/etc"),
        http("GET", "/images/get?names=x"),
        http("POST", "/networks/net1/connect", {"Container": "web"}),
        http("POST", "/auth", {"username": "u"}),
        http("POST", "/images/create?fromImage=x&tag=1"),
        create({}),
    ],
)
def test_ordinary_users_may_not_do_anything_else(raw):
    verdict = verdict_for(raw, caller=ORDINARY)
    assert (verdict.allowed, verdict.code) == (False, Code.ORDINARY_READ_ONLY)
    assert "may only make read-only calls" in verdict.reason


@pytest.mark.parametrize(
    "target",
    ["/containers/web/top", "/networks", "/volumes", "/system/df", "/networks/n1", "/volumes/v"],
)
def test_ordinary_users_may_make_every_read_only_call(target):
    """issue 10: routes.py marks these read-only; ordinary users were refused them."""
    verdict = verdict_for(http("GET", target), caller=ORDINARY)
    assert (verdict.allowed, verdict.needs_cloud, verdict.code) == (True, False, Code.READ_ALLOWED)


def test_super_users_read_without_cloud_and_mutate_with_it():
    top = verdict_for(http("GET", "/containers/web/top"))
    assert (top.allowed, top.needs_cloud) == (True, False)
    start = verdict_for(http("POST", "/containers/web/start"))
    assert (start.allowed, start.needs_cloud, start.code) == (True, True, CLOUD)
    export = verdict_for(http("GET", "/containers/web/export"))
    assert (export.allowed, export.needs_cloud) == (True, True)


def test_policy_can_widen_ordinary_reads_only_to_read_only_actions():
    policy = RiskPolicy(ordinary_actions=DEFAULT_ORDINARY_ACTIONS | {Action.TOP})
    assert verdict_for(http("GET", "/containers/web/top"), ORDINARY, policy).allowed
    with pytest.raises(PolicyError):
        RiskPolicy(ordinary_actions=frozenset({Action.CREATE}))


# --- tokens ------------------------------------------------------------------------------------

START = http("POST", "/containers/web/start")


@pytest.mark.parametrize(
    ("check", "code"),
    [
        (TokenCheck(), Code.TOKEN_MISSING),
        (replace(token(), valid=False), Code.TOKEN_INVALID),
        (replace(token(), subject="mallory"), Code.TOKEN_INVALID),
        (token(expires_in=timedelta(0)), Code.TOKEN_EXPIRED),
        (token(expires_in=timedelta(seconds=-1)), Code.TOKEN_EXPIRED),
        (replace(token(), expires_at=None), Code.TOKEN_EXPIRED),
        (token(scopes=frozenset({"docker:read"})), Code.TOKEN_SCOPE),
        (token(scopes=frozenset()), Code.TOKEN_SCOPE),
        (token(), CLOUD),
    ],
)
def test_token_checks(check, code):
    caller = Caller(uid=0, username="admin", role=Role.SUPER, token=check)
    assert code_of(START, caller=caller) is code


def test_required_scope_is_configurable():
    caller = Caller(0, "admin", Role.SUPER, token(scopes=frozenset({"edge:ops"})))
    assert code_of(START, caller=caller, policy=RiskPolicy(required_scope="edge:ops")) is CLOUD


def test_naive_datetimes_are_refused():
    with pytest.raises(InvalidInput):
        TrustFacts(now=datetime(2025, 1, 1))
    with pytest.raises(InvalidInput):
        TokenCheck(present=True, valid=True, expires_at=datetime(2025, 1, 1))


# --- gates -------------------------------------------------------------------------------------

GATED = [
    (
        http("POST", "/session", headers=[("Connection", "Upgrade"), ("Upgrade", "h2c")]),
        Code.SESSION,
        None,
    ),
    (
        http("POST", "/grpc", headers=[("Connection", "Upgrade"), ("Upgrade", "h2c")]),
        Code.GRPC,
        None,
    ),
    (http("POST", "/plugins/pull?remote=x", []), Code.PLUGIN, None),
    (http("POST", "/plugins/x/upgrade?remote=x", []), Code.PLUGIN, None),
    (
        http("POST", "/plugins/create?name=x", b"tar", content_type="application/x-tar"),
        Code.PLUGIN,
        None,
    ),
    (http("POST", "/plugins/x/enable"), Code.PLUGIN, None),
    (http("POST", "/plugins/x/set", ["DEBUG=1"]), Code.PLUGIN, None),
    (
        http("PUT", "/containers/web/archive?path=/", b"tar", content_type="application/x-tar"),
        Code.ARCHIVE_PUT,
        RiskPolicy(allow_archive_put=True),
    ),
    (
        http("POST", "/commit?container=web&repo=snap", {}),
        Code.UNVERIFIED_IMAGE_SOURCE,
        RiskPolicy(allow_commit=True),
    ),
    (
        http("POST", "/images/create?fromSrc=-&repo=imp", b"tar", content_type=None),
        Code.UNVERIFIED_IMAGE_SOURCE,
        RiskPolicy(allow_import=True),
    ),
    (
        http("POST", "/images/create?fromSrc=http://x/a.tar"),
        Code.UNVERIFIED_IMAGE_SOURCE,
        RiskPolicy(allow_import=True),
    ),
    (
        http("POST", "/images/load", b"tar", content_type=None),
        Code.UNVERIFIED_IMAGE_SOURCE,
        RiskPolicy(allow_load=True),
    ),
    (
        http("POST", "/build?t=mine", b"tar", content_type="application/x-tar"),
        Code.UNVERIFIED_IMAGE_SOURCE,
        RiskPolicy(allow_build=True),
    ),
    (http("POST", "/swarm/init", {}), Code.SWARM, RiskPolicy(allow_swarm=True)),
    (http("POST", "/swarm/join", {}), Code.SWARM, RiskPolicy(allow_swarm=True)),
    (http("POST", "/swarm/leave"), Code.SWARM, RiskPolicy(allow_swarm=True)),
    (http("GET", "/swarm/unlockkey"), Code.SWARM, RiskPolicy(allow_swarm=True)),
    (http("POST", "/nodes/n1/update", {}), Code.SWARM, RiskPolicy(allow_swarm=True)),
    (http("POST", "/secrets/create", {}), Code.SWARM, RiskPolicy(allow_swarm=True)),
    (http("POST", "/configs/c/update", {}), Code.SWARM, RiskPolicy(allow_swarm=True)),
    (
        http(
            "POST", "/services/create", {"TaskTemplate": {"ContainerSpec": {"Image": PINNED_REF}}}
        ),
        Code.SERVICE,
        RiskPolicy(allow_services=True),
    ),
    (
        http(
            "POST", "/services/s/update", {"TaskTemplate": {"ContainerSpec": {"Image": PINNED_REF}}}
        ),
        Code.SERVICE,
        RiskPolicy(allow_services=True),
    ),
]


@pytest.mark.parametrize(("raw", "code", "opened"), GATED)
def test_gates(raw, code, opened):
    assert code_of(raw) is code
    if opened is not None:
        assert code_of(raw, policy=opened) is CLOUD


def test_unverified_sources_may_not_target_pinned_names():
    policy = RiskPolicy(allow_build=True, allow_commit=True, allow_import=True)
    build = http("POST", f"/build?t=mine&t={PINNED_REPO}:2", b"t", content_type="application/x-tar")
    assert code_of(build, policy=policy) is Code.PINNED_NAME
    commit = http("POST", f"/commit?container=web&repo={PINNED_REPO}&tag=evil", {})
    assert code_of(commit, policy=policy) is Code.PINNED_NAME
    imp = http("POST", f"/images/create?fromSrc=-&repo={PINNED_REPO}", b"t", content_type=None)
    assert code_of(imp, policy=policy) is Code.PINNED_NAME
    bad = http("POST", "/build?t=NOT_VALID", b"t", content_type="application/x-tar")
    assert code_of(bad, policy=policy) is Code.MALFORMED_FIELD


# --- container create: escape risks --------------------------------------------------------------


def test_benign_create_needs_cloud():
    verdict = verdict_for(
        hc(
            Memory=1 << 26,
            Init=True,
            CapDrop=["ALL"],
            NetworkMode="bridge",
            SecurityOpt=["no-new-privileges"],
            RestartPolicy={"Name": "always"},
        )
    )
    assert (verdict.allowed, verdict.needs_cloud, verdict.code) == (True, True, CLOUD)


@pytest.mark.parametrize("value", [True, "true", 1, {}, [True]])
def test_privileged(value):
    assert code_of(hc(Privileged=value)) is Code.PRIVILEGED


@pytest.mark.parametrize("value", [False, None])
def test_not_privileged(value):
    assert code_of(hc(Privileged=value)) is CLOUD


def test_legacy_top_level_host_config_fields_are_checked():
    assert code_of(create({"Privileged": True})) is Code.PRIVILEGED
    assert code_of(create({"Privileged": True, "HostConfig": {}})) is Code.PRIVILEGED
    assert code_of(create({"Privileged": True, "HostConfig": None})) is Code.PRIVILEGED
    assert code_of(create({"CapAdd": ["SYS_ADMIN"]})) is Code.CAP_ADD
    assert code_of(create({"Binds": ["/:/host"]})) is Code.DOCKER_SOCKET
    verdict = verdict_for(create({"Privileged": True}))
    assert "legacy" in verdict.reason


DANGEROUS_CAPS = [
    "SYS_ADMIN",
    "ALL",
    "SYS_PTRACE",
    "SYS_MODULE",
    "DAC_READ_SEARCH",
    "NET_ADMIN",
    "SYS_RAWIO",
    "SYS_BOOT",
    "BPF",
    "PERFMON",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "SYS_TIME",
    "SYSLOG",
    "AUDIT_CONTROL",
    "SYS_RESOURCE",
    "LINUX_IMMUTABLE",
    "CHECKPOINT_RESTORE",
    "AUDIT_READ",
    "BLOCK_SUSPEND",
    "MADE_UP",
]


@pytest.mark.parametrize("cap", DANGEROUS_CAPS)
@pytest.mark.parametrize(
    "spell",
    [
        str,
        str.lower,
        lambda c: "CAP_" + c,
        lambda c: "cap_" + c.lower(),
        lambda c: " " + c.title() + " ",
    ],
)
def test_dangerous_capabilities_in_any_spelling(cap, spell):
    assert code_of(hc(CapAdd=[spell(cap)])) is Code.CAP_ADD
    assert code_of(hc(CapAdd=spell(cap))) is Code.CAP_ADD  # StrSlice accepts one string
    assert code_of(hc(Capabilities=[spell(cap)])) is Code.CAP_ADD


@pytest.mark.parametrize(
    "cap", ["NET_BIND_SERVICE", "cap_chown", "Kill", "SYS_NICE", "CAP_IPC_LOCK"]
)
def test_harmless_capabilities(cap):
    assert code_of(hc(CapAdd=[cap])) is CLOUD


def test_capability_allowlist_is_configurable_and_malformed_values_fail_closed():
    policy = RiskPolicy(allowed_cap_add=frozenset({"net_admin"}))
    assert code_of(hc(CapAdd=["NET_ADMIN"]), policy=policy) is CLOUD
    assert code_of(hc(CapAdd=["CHOWN"]), policy=policy) is Code.CAP_ADD
    assert code_of(hc(CapAdd=[1])) is Code.MALFORMED_FIELD


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Devices", [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]),
        ("DeviceCgroupRules", ["c 1:3 rwm"]),
        ("DeviceRequests", [{"Driver": "nvidia", "Count": -1}]),
        ("Devices", "x"),
    ],
)
def test_devices(field, value):
    assert code_of(hc(**{field: value})) is Code.DEVICES
    assert code_of(hc(**{field: []})) is CLOUD


@pytest.mark.parametrize(
    "field", ["PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode", "Cgroup"]
)
@pytest.mark.parametrize("value", ["host", "HOST", " host", "container:db", "Container:db"])
def test_shared_namespaces(field, value):
    assert code_of(hc(**{field: value})) is Code.NAMESPACE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("IpcMode", "private"),
        ("IpcMode", "shareable"),
        ("IpcMode", "none"),
        ("PidMode", ""),
        ("CgroupnsMode", "private"),
        ("UsernsMode", ""),
    ],
)
def test_private_namespaces(field, value):
    assert code_of(hc(**{field: value})) is CLOUD


@pytest.mark.parametrize("value", ["host", "Host", "container:db"])
def test_host_network(value):
    assert code_of(hc(NetworkMode=value)) is Code.NETWORK_HOST


def test_network_modes_and_endpoints():
    for ok in ("bridge", "none", "default", "mynet"):
        assert code_of(hc(NetworkMode=ok)) is CLOUD
    assert code_of(hc(NetworkMode=5)) is Code.MALFORMED_FIELD
    joined = create({"NetworkingConfig": {"EndpointsConfig": {"host": {}}}})
    assert code_of(joined) is Code.NETWORK_HOST
    assert code_of(create({"NetworkingConfig": {"EndpointsConfig": {"mynet": {}}}})) is CLOUD
    assert code_of(create({"NetworkingConfig": []})) is Code.MALFORMED_FIELD


@pytest.mark.parametrize(
    "opt",
    [
        "seccomp=unconfined",
        "seccomp:unconfined",
        "SECCOMP=Unconfined",
        'seccomp={"defaultAction":"SCMP_ACT_ALLOW"}',
        "apparmor=unconfined",
        "apparmor:unconfined",
        "apparmor=my-profile",
        "label=disable",
        "label:disable",
        "label=type:spc_t",
        "label=user:root",
        "systempaths=unconfined",
        "writable-cgroups=true",
        "bogus",
        "no-new-privileges=maybe",
    ],
)
def test_security_opts(opt):
    assert code_of(hc(SecurityOpt=[opt])) is Code.SECURITY_OPT


@pytest.mark.parametrize(
    "opt",
    [
        "no-new-privileges",
        "no-new-privileges=true",
        "no-new-privileges:true",
        "no-new-privileges=false",
        "seccomp=builtin",
        "apparmor=docker-default",
    ],
)
def test_confining_security_opts(opt):
    assert code_of(hc(SecurityOpt=[opt])) is CLOUD


def test_masked_and_readonly_paths():
    assert code_of(hc(MaskedPaths=[])) is Code.MASKED_PATHS
    assert code_of(hc(ReadonlyPaths=[])) is Code.MASKED_PATHS
    assert code_of(hc(MaskedPaths=["/proc/kcore"])) is Code.MASKED_PATHS
    assert code_of(hc(MaskedPaths=3)) is Code.MALFORMED_FIELD
    full_masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/extra",
    ]
    full_ro = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert code_of(hc(MaskedPaths=full_masked, ReadonlyPaths=full_ro)) is CLOUD
    assert code_of(hc(MaskedPaths=None)) is CLOUD


SOCKETS = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd",
    "/run/user/1000/docker.sock",
    "/run",
    "/var/run",
    "/var",
    "/",
    "/var/lib/docker",
    "/var/lib/docker/volumes/x/_data",
    "/var/lib/containerd",
    "/home/alice/docker.sock",
    "/srv/data/app.sock",
]


@pytest.mark.parametrize("path", SOCKETS)
def test_runtime_sockets_and_state_are_refused_even_if_allowlisted(path):
    policy = RiskPolicy(host_path_allowlist=frozenset({"/", "/srv/data"}))
    assert code_of(hc(Binds=[f"{path}:/x"]), policy=policy) is Code.DOCKER_SOCKET
    mount = {"Type": "bind", "Source": path, "Target": "/x"}
    assert code_of(hc(Mounts=[mount]), policy=policy) is Code.DOCKER_SOCKET


ALLOW_SRV = RiskPolicy(host_path_allowlist=frozenset({"/srv/data"}))


@pytest.mark.parametrize(
    ("bind", "code"),
    [
        ("/srv/data:/data", Code.HOST_PATH),
        ("/srv/data:/data:ro", CLOUD),
        ("/srv/data:/data:rw", Code.HOST_PATH),
        ("/srv/data:/data:Z,ro", CLOUD),
        ("/srv/data/app:/data:ro", CLOUD),
        ("/srv/data/app:/data", CLOUD),
        ("/srv/data/app/sub:/data:ro", Code.HOST_PATH),
        ("/srv/data/:/data", Code.HOST_PATH),
        ("/srv/database:/data", Code.HOST_PATH),
        ("/srv:/data", Code.HOST_PATH),
        ("/etc:/etc", Code.HOST_PATH),
        ("/srv/data/../../etc:/x", Code.HOST_PATH),
        ("/srv/data/./x:/x", Code.HOST_PATH),
        ("/srv//data:/x", Code.HOST_PATH),
        ("myvolume:/data", CLOUD),
        ("myvolume:/data:ro", CLOUD),
    ],
)
def test_binds_against_the_allowlist(bind, code):
    assert code_of(hc(Binds=[bind]), policy=ALLOW_SRV) is code


def test_resolved_host_paths_are_checked_too():
    raw = hc(Binds=["/srv/data/link:/x"])
    to_socket = {"/srv/data/link": "/run/docker.sock"}
    assert code_of(raw, policy=ALLOW_SRV, host_paths=to_socket) is Code.DOCKER_SOCKET
    to_etc = {"/srv/data/link": "/etc"}
    verdict = verdict_for(raw, policy=ALLOW_SRV, host_paths=to_etc)
    assert verdict.code is Code.HOST_PATH
    assert "-> /etc" in verdict.reason
    assert code_of(raw, policy=ALLOW_SRV, host_paths={}) is Code.HOST_PATH_UNRESOLVED
    inside = {"/srv/data/link": "/srv/data/real"}
    verdict = verdict_for(raw, policy=ALLOW_SRV, host_paths=inside)
    assert verdict.code is Code.HOST_PATH and "symbolic link" in verdict.reason
    identity = {"/srv/data/link": "/srv/data/link"}
    assert code_of(raw, policy=ALLOW_SRV, host_paths=identity) is CLOUD
    missing = verdict_for(raw, policy=ALLOW_SRV, host_paths=identity, present=())
    assert missing.code is Code.HOST_PATH and "does not exist" in missing.reason


@pytest.mark.parametrize(
    ("mount", "code"),
    [
        ({"Type": "bind", "Source": "/etc", "Target": "/x"}, Code.HOST_PATH),
        ({"type": "BIND", "source": "/etc", "target": "/x"}, Code.HOST_PATH),
        ({"Type": "bind", "Source": "/srv/data", "Target": "/x"}, Code.HOST_PATH),
        ({"Type": "bind", "Source": "/srv/data", "Target": "/x", "ReadOnly": True}, CLOUD),
        ({"Type": "bind", "Source": "/srv/data/a", "Target": "/x"}, CLOUD),
        ({"Type": "tmpfs", "Target": "/x"}, CLOUD),
        ({"Type": "volume", "Source": "v", "Target": "/x"}, CLOUD),
        ({"Type": "npipe", "Source": "x", "Target": "/x"}, Code.MOUNT_TYPE),
        ({"Type": "image", "Source": "x", "Target": "/x"}, Code.MOUNT_TYPE),
        ({"Source": "/etc", "Target": "/x"}, Code.MOUNT_TYPE),
        (
            {
                "Type": "volume",
                "Target": "/x",
                "VolumeOptions": {
                    "DriverConfig": {
                        "Name": "local",
                        "Options": {"type": "none", "o": "bind", "device": "/etc"},
                    }
                },
            },
            Code.HOST_PATH,
        ),
        (
            {
                "Type": "volume",
                "Target": "/x",
                "VolumeOptions": {
                    "DriverConfig": {"Options": {"o": "rbind,ro", "device": "/var/run"}}
                },
            },
            Code.DOCKER_SOCKET,
        ),
        (
            {
                "Type": "volume",
                "Target": "/x",
                "VolumeOptions": {
                    "DriverConfig": {
                        "Name": "local",
                        "Options": {"type": "ext4", "device": "/dev/sda1"},
                    }
                },
            },
            Code.VOLUME_DRIVER,
        ),
        (
            {
                "Type": "volume",
                "Target": "/x",
                "VolumeOptions": {"DriverConfig": {"Name": "sshfs"}},
            },
            Code.VOLUME_DRIVER,
        ),
        (
            {"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": 3}},
            Code.MALFORMED_FIELD,
        ),
    ],
)
def test_mounts(mount, code):
    assert code_of(hc(Mounts=[mount]), policy=ALLOW_SRV) is code


def test_malformed_mounts_fail_closed():
    assert code_of(hc(Mounts={"Type": "bind"})) is Code.MALFORMED_FIELD
    assert code_of(hc(Mounts=["bind"])) is Code.MALFORMED_FIELD
    assert code_of(hc(Binds=5)) is Code.MALFORMED_FIELD
    assert code_of(hc(Binds=[5])) is Code.MALFORMED_FIELD


def test_volumes_from():
    assert code_of(hc(VolumesFrom=["db"])) is Code.VOLUMES_FROM
    assert code_of(hc(VolumesFrom=[])) is CLOUD


@pytest.mark.parametrize(
    ("sysctls", "network", "code"),
    [
        ({"kernel.shm_rmid_forced": "1"}, "bridge", Code.SYSCTL),
        ({"kernel/domainname": "x"}, "bridge", Code.SYSCTL),
        ({"Kernel.Msgmax": "1"}, "bridge", Code.SYSCTL),
        ({"vm.swappiness": "1"}, "bridge", Code.SYSCTL),
        ({"net.ipv4.ip_forward": "1"}, "bridge", CLOUD),
        ({"net.ipv4.ip_forward": "1"}, None, CLOUD),
        ({"fs.mqueue.msg_max": "20"}, "bridge", CLOUD),
    ],
)
def test_sysctls(sysctls, network, code):
    fields: dict[str, Any] = {"Sysctls": sysctls}
    if network:
        fields["NetworkMode"] = network
    assert code_of(hc(**fields)) is code


def test_net_sysctls_with_host_network():
    verdict = verdict_for(hc(NetworkMode="host", Sysctls={"net.ipv4.ip_forward": "1"}))
    assert {f.code for f in verdict.findings} == {Code.NETWORK_HOST, Code.SYSCTL}
    assert code_of(hc(Sysctls=["x"])) is Code.MALFORMED_FIELD


def test_runtime_oom_and_cgroup_parent():
    assert code_of(hc(Runtime="nvidia")) is Code.RUNTIME
    assert code_of(hc(Runtime="kata-runtime")) is Code.RUNTIME
    assert code_of(hc(Runtime="runc")) is CLOUD
    assert code_of(hc(Runtime="")) is CLOUD
    assert (
        code_of(
            hc(Runtime="nvidia"), policy=RiskPolicy(allowed_runtimes=frozenset({"runc", "nvidia"}))
        )
        is CLOUD
    )
    assert code_of(hc(OomKillDisable=True)) is Code.OOM_KILL_DISABLE
    assert code_of(hc(OomKillDisable=False)) is CLOUD
    assert code_of(hc(CgroupParent="/")) is Code.CGROUP_PARENT
    assert code_of(hc(Init=True)) is CLOUD


def test_annotations_and_default_volume_driver():
    assert code_of(hc(Annotations={"run.oci.keep_original_groups": "1"})) is Code.RUNTIME
    assert code_of(hc(Annotations={})) is CLOUD
    assert code_of(hc(VolumeDriver="sshfs", Binds=["v:/v"])) is Code.VOLUME_DRIVER
    assert code_of(hc(VolumeDriver="local")) is CLOUD
    assert code_of(hc(VolumeDriver=["x"])) is Code.MALFORMED_FIELD


def test_every_finding_is_reported():
    verdict = verdict_for(
        hc(Privileged=True, CapAdd=["SYS_ADMIN"], PidMode="host", Binds=["/:/host"])
    )
    assert [f.code for f in verdict.findings] == [
        Code.PRIVILEGED,
        Code.CAP_ADD,
        Code.NAMESPACE,
        Code.DOCKER_SOCKET,
    ]
    assert verdict.code is Code.PRIVILEGED
    assert all(f.reason in verdict.reason for f in verdict.findings)


def test_host_config_of_the_wrong_type():
    assert code_of(create({"HostConfig": ["Privileged"]})) is Code.MALFORMED_FIELD


# --- update, exec, volumes -----------------------------------------------------------------------


def test_container_update():
    update = "/containers/web/update"
    assert code_of(http("POST", update, {"Memory": 1 << 26})) is CLOUD
    assert code_of(http("POST", update, {"Devices": [{"PathOnHost": "/dev/mem"}]})) is (
        Code.DEVICES
    )
    assert code_of(http("POST", update, {"deviceCgroupRules": ["a *:* rwm"]})) is Code.DEVICES
    assert code_of(http("POST", update, {"OomKillDisable": True})) is Code.OOM_KILL_DISABLE
    assert code_of(http("POST", update, {"CgroupParent": "/x"})) is Code.CGROUP_PARENT


def exec_body(**fields: Any) -> bytes:
    return http("POST", "/containers/web/exec", {"Cmd": ["sh"], **fields})


@pytest.mark.parametrize(
    "user",
    ["root", "ROOT", "0", "00", "+0", "root:root", "0:0", " 0 ", "1000:0", ":0", "root:1000"],
)
def test_exec_as_root(user):
    assert code_of(exec_body(User=user)) is Code.EXEC_ROOT


@pytest.mark.parametrize(
    "user",
    [
        "1000",  # the group comes from the container's /etc/passwd
        "app",
        "rtadmin",  # a name the container may have mapped to uid 0
        "nobody:nogroup",
        "app:1000",
        "1000:wheel",
        "01000:1000",
        " 1000:1000",
        "1000:1000 ",
        "+1000:1000",
        "1_000:1000",
        "4294967296:1000",  # wraps to 0 in 32 bits
        "2147483648:1000",
        "1000:1000:1000",
        "١٠٠٠:1000",  # Arabic-Indic digits: int() takes them, Go does not
    ],
)
def test_exec_needs_a_numeric_non_root_uid_and_gid(user):
    verdict = verdict_for(exec_body(User=user))
    assert verdict.code is Code.EXEC_USER
    assert "docker exec -u 1000:1000" in verdict.reason


@pytest.mark.parametrize("user", ["1000:1000", "1:1", "65534:65534", "2147483647:1000"])
def test_exec_as_numeric_user(user):
    assert code_of(exec_body(User=user)) is CLOUD


def test_exec_default_user_and_privileged():
    no_user = verdict_for(exec_body())
    assert no_user.code is Code.EXEC_USER and "docker exec -u 1000:1000" in no_user.reason
    assert code_of(exec_body(User="")) is Code.EXEC_USER
    assert code_of(exec_body(), policy=RiskPolicy(exec_allow_default_user=True)) is CLOUD
    assert code_of(exec_body(User="1000:1000", Privileged=True)) is Code.EXEC_PRIVILEGED
    assert code_of(exec_body(User="1000:1000", privileged=True)) is Code.EXEC_PRIVILEGED
    assert code_of(exec_body(User=0)) is Code.MALFORMED_FIELD


def volume(driver: str | None = "local", **opts: str) -> bytes:
    body: dict[str, Any] = {"Name": "v", "DriverOpts": opts}
    if driver is not None:
        body["Driver"] = driver
    return http("POST", "/volumes/create", body)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (volume(), CLOUD),
        (volume(None), CLOUD),
        (http("POST", "/volumes/create", {"Name": "v"}), CLOUD),
        (volume(type="tmpfs", device="tmpfs", o="size=100m"), CLOUD),
        (volume(type="nfs", device=":/export", o="addr=10.0.0.1"), CLOUD),
        (volume(type="none", o="bind", device="/"), Code.DOCKER_SOCKET),
        (volume(type="none", o="bind", device="/etc"), Code.HOST_PATH),
        (volume(type="none", o="bind", device="/srv/data/v"), CLOUD),
        (volume(o="bind", device="/etc"), Code.HOST_PATH),
        (volume(type="none", device="/etc"), Code.HOST_PATH),
        (volume(type="ext4", device="/dev/sda1"), Code.VOLUME_DRIVER),
        (volume(type="nfs", device="/dev/sda1"), Code.VOLUME_DRIVER),
        (
            volume(type="overlay", device="overlay", o="lowerdir=/etc,upperdir=/u,workdir=/w"),
            Code.VOLUME_DRIVER,
        ),
        (volume("rexray/ebs"), Code.VOLUME_DRIVER),
        (
            http("POST", "/volumes/create", {"Name": "v", "DriverOpts": {"o": 1}}),
            Code.MALFORMED_FIELD,
        ),
        (http("POST", "/volumes/create", {"Name": "v", "Driver": 3}), Code.MALFORMED_FIELD),
    ],
)
def test_volume_create(raw, code):
    assert code_of(raw, policy=ALLOW_SRV) is code


def test_volume_drivers_are_configurable():
    policy = RiskPolicy(allowed_volume_drivers=frozenset({"local", "rexray/ebs"}))
    assert code_of(volume("rexray/ebs", size="10"), policy=policy) is CLOUD


# --- image trust -------------------------------------------------------------------------------

UNTRUSTED = ImageRecord("nginx:1.25", frozenset({OTHER_DIGEST}))


@pytest.mark.parametrize(
    ("image", "images", "code"),
    [
        (PINNED_REF, {}, CLOUD),
        (f"{PINNED_REPO}:1.0@{PINNED_DIGEST}", {}, CLOUD),
        (f"{PINNED_REPO}@{OTHER_DIGEST}", {}, Code.IMAGE_UNTRUSTED),
        (f"other/app@{PINNED_DIGEST}", {}, Code.IMAGE_UNTRUSTED),
        (f"{PINNED_REPO}:1.0", {}, Code.IMAGE_UNTRUSTED),
        (
            f"{PINNED_REPO}:1.0",
            {f"{PINNED_REPO}:1.0": ImageRecord(f"{PINNED_REPO}:1.0", frozenset({PINNED_DIGEST}))},
            CLOUD,
        ),
        (
            f"{PINNED_REPO}:1.0",
            {f"{PINNED_REPO}:1.0": ImageRecord(f"{PINNED_REPO}:1.0", frozenset({OTHER_DIGEST}))},
            Code.IMAGE_UNTRUSTED,
        ),
        ("nginx:1.25", {"nginx:1.25": UNTRUSTED}, Code.IMAGE_UNTRUSTED),
        ("nginx:1.25", {"nginx:1.25": replace(UNTRUSTED, signature_verified=True)}, CLOUD),
        (PINNED_DIGEST, {}, CLOUD),
        (PINNED_DIGEST.removeprefix("sha256:"), {}, CLOUD),  # a full hex ID is the digest
        (OTHER_DIGEST, {}, Code.IMAGE_UNTRUSTED),
        ("NOT VALID", {}, Code.IMAGE_UNTRUSTED),
        ("", {}, Code.IMAGE_MISSING),
    ],
)
def test_create_image_trust(image, images, code):
    raw = http("POST", "/containers/create", {"Image": image})
    assert code_of(raw, images=images) is code


def test_create_without_image():
    assert code_of(http("POST", "/containers/create", {})) is Code.IMAGE_MISSING
    assert code_of(http("POST", "/containers/create", {"Image": 3})) is Code.IMAGE_MISSING
    assert code_of(http("POST", "/containers/create")) is Code.IMAGE_MISSING


def test_pull_trust():
    pinned = http("POST", f"/images/create?fromImage={PINNED_REPO}&tag={PINNED_DIGEST}")
    assert code_of(pinned) is CLOUD
    by_tag = http("POST", "/images/create?fromImage=nginx&tag=1.25")
    # a tag is judged by the registry's digest for it, never by the local tag
    assert code_of(by_tag) is Code.TAG_UNRESOLVED
    assert code_of(by_tag, images={"nginx:1.25": UNTRUSTED}) is Code.TAG_UNRESOLVED
    locally_trusted = {"nginx:1.25": replace(UNTRUSTED, signature_verified=True)}
    assert code_of(by_tag, images=locally_trusted) is Code.TAG_UNRESOLVED
    served = {"nginx:1.25": OTHER_DIGEST}
    assert code_of(by_tag, images=locally_trusted, registry_digests=served) is (
        Code.IMAGE_UNTRUSTED
    )
    pinned_name = f"docker.io/library/nginx@{OTHER_DIGEST}"
    signed = {pinned_name: ImageRecord(pinned_name, frozenset(), signature_verified=True)}
    assert code_of(by_tag, images=signed, registry_digests=served) is CLOUD
    all_tags = http("POST", "/images/create?fromImage=nginx")
    assert code_of(all_tags) is Code.TAG_UNRESOLVED
    # the allowlisted repository: only its allowlisted digest, as served now
    ours = http("POST", f"/images/create?fromImage={PINNED_REPO}&tag=1")
    ref = f"{PINNED_REPO}:1"
    assert code_of(ours, registry_digests={ref: PINNED_DIGEST}) is CLOUD
    assert code_of(ours, registry_digests={ref: OTHER_DIGEST}) is Code.IMAGE_UNTRUSTED
    local = {ref: ImageRecord(ref, frozenset({PINNED_DIGEST}))}
    assert code_of(ours, images=local, registry_digests={ref: OTHER_DIGEST}) is (
        Code.IMAGE_UNTRUSTED
    )


@pytest.mark.parametrize(
    ("source", "images", "code"),
    [
        (
            "evil:latest",
            {"evil:latest": ImageRecord("evil:latest", frozenset({OTHER_DIGEST}))},
            Code.RETAG_UNTRUSTED,
        ),
        ("evil:latest", {}, Code.RETAG_UNTRUSTED),
        (
            "evil:latest",
            {
                "evil:latest": ImageRecord(
                    "evil:latest", frozenset({OTHER_DIGEST}), signature_verified=True
                )
            },
            Code.RETAG_UNTRUSTED,
        ),
        (
            "local:build",
            {"local:build": ImageRecord("local:build", frozenset({PINNED_DIGEST}))},
            CLOUD,
        ),
        (f"other@{PINNED_DIGEST}", {}, CLOUD),
        (PINNED_DIGEST, {}, CLOUD),
    ],
)
def test_retag_onto_an_allowlisted_name(source, images, code):
    raw = http("POST", f"/images/{source}/tag?repo={PINNED_REPO}&tag=latest")
    assert code_of(raw, images=images) is code


def test_retag_onto_other_names_is_not_a_trust_question():
    raw = http("POST", "/images/evil:latest/tag?repo=evil&tag=v2")
    assert code_of(raw) is CLOUD


def test_image_trust_from_names():
    trust = ImageTrust.from_names(
        {"nginx": ["sha256:" + "1" * 64], "docker.io/library/nginx": ["sha256:" + "2" * 64]}
    )
    assert set(trust.pinned) == {"docker.io/library/nginx"}
    assert len(trust.pinned["docker.io/library/nginx"]) == 2
    for bad in ("nginx:1", "NGINX", PINNED_DIGEST):
        with pytest.raises(PolicyError):
            ImageTrust.from_names({bad: []})


# --- exceptions --------------------------------------------------------------------------------


def test_user_exception_waives_listed_codes_only():
    policy = RiskPolicy(
        exceptions=(RiskException(frozenset({Code.PRIVILEGED}), users=frozenset({"admin"})),)
    )
    assert code_of(hc(Privileged=True), policy=policy) is CLOUD
    assert code_of(hc(Privileged=True, PidMode="host"), policy=policy) is Code.NAMESPACE
    other = Caller(0, "bob", Role.SUPER, token("bob"))
    assert code_of(hc(Privileged=True), caller=other, policy=policy) is Code.PRIVILEGED


def test_image_exception():
    policy = RiskPolicy(
        exceptions=(RiskException(frozenset({Code.DEVICES}), images=frozenset({PINNED_REPO})),)
    )
    assert code_of(hc(Devices=[{"PathOnHost": "/dev/ttyUSB0"}]), policy=policy) is CLOUD
    other = http(
        "POST",
        "/containers/create",
        {"Image": "nginx:1.25", "HostConfig": {"Devices": [{"PathOnHost": "/dev/ttyUSB0"}]}},
    )
    signed = {"nginx:1.25": replace(UNTRUSTED, signature_verified=True)}
    assert code_of(other, policy=policy, images=signed) is Code.DEVICES


def test_user_and_image_exception_needs_both():
    policy = RiskPolicy(
        exceptions=(
            RiskException(
                frozenset({Code.DOCKER_SOCKET, Code.HOST_PATH}),
                users=frozenset({"admin"}),
                images=frozenset({PINNED_REPO}),
            ),
        )
    )
    raw = hc(Binds=["/var/run/docker.sock:/var/run/docker.sock"])
    assert code_of(raw, policy=policy) is CLOUD
    bob = Caller(0, "bob", Role.SUPER, token("bob"))
    assert code_of(raw, caller=bob, policy=policy) is Code.DOCKER_SOCKET


def test_exceptions_cannot_waive_trust_or_be_unscoped():
    with pytest.raises(PolicyError):
        RiskException(frozenset({Code.IMAGE_UNTRUSTED}), users=frozenset({"admin"}))
    with pytest.raises(PolicyError):
        RiskException(frozenset({Code.PRIVILEGED}))
    with pytest.raises(PolicyError):
        RiskException(frozenset({Code.PRIVILEGED}), images=frozenset({PINNED_DIGEST}))
    policy = RiskPolicy(
        exceptions=(RiskException(frozenset({Code.HOST_PATH}), users=frozenset({"admin"})),)
    )
    raw = hc(Binds=["/etc:/x"])
    assert code_of(raw, policy=policy) is CLOUD
    assert code_of(raw, policy=policy, host_paths={}) is Code.HOST_PATH_UNRESOLVED


def test_exception_images_are_normalised():
    exc = RiskException(frozenset({Code.PRIVILEGED}), images=frozenset({"nginx"}))
    assert exc.images == frozenset({"docker.io/library/nginx"})


# --- services (when allowed) -------------------------------------------------------------------

SERVICES = RiskPolicy(allow_services=True)


def service(spec: dict[str, Any] | None = None, **task: Any) -> bytes:
    return http(
        "POST",
        "/services/create",
        {
            "Name": "s",
            "TaskTemplate": {"ContainerSpec": {"Image": PINNED_REF, **(spec or {})}, **task},
        },
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (service(), CLOUD),
        (service({"CapabilityAdd": ["CAP_SYS_ADMIN"]}), Code.CAP_ADD),
        (service({"CapabilityAdd": "x"}), Code.CAP_ADD),
        (service({"CapabilityAdd": 3}), Code.MALFORMED_FIELD),
        (service({"Privileges": {"Seccomp": {"Mode": "unconfined"}}}), Code.SECURITY_OPT),
        (
            service({"Privileges": {"Seccomp": {"Mode": "custom", "Profile": "e30="}}}),
            Code.SECURITY_OPT,
        ),
        (service({"Privileges": {"AppArmor": {"Mode": "disabled"}}}), Code.SECURITY_OPT),
        (service({"Privileges": {"SELinuxContext": {"Disable": True}}}), Code.SECURITY_OPT),
        (service({"Privileges": {"SELinuxContext": {"Type": "spc_t"}}}), Code.SECURITY_OPT),
        (service({"Privileges": {"NoNewPrivileges": True, "Seccomp": {"Mode": "default"}}}), CLOUD),
        (service({"Privileges": "x"}), Code.MALFORMED_FIELD),
        (service({"Sysctls": {"kernel.x": "1"}}), Code.SYSCTL),
        (
            service(
                {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]}
            ),
            Code.DOCKER_SOCKET,
        ),
        (service({"Image": "nginx:1.25"}), Code.IMAGE_UNTRUSTED),
        (service(Networks=[{"Target": "host"}]), Code.NETWORK_HOST),
        (service(Networks="host"), Code.MALFORMED_FIELD),
        (service(PluginSpec={"Name": "x"}), Code.PLUGIN),
        (service(Runtime="plugin"), Code.PLUGIN),
        (http("POST", "/services/create", {"Name": "s"}), Code.MALFORMED_FIELD),
        (http("POST", "/services/create", {"TaskTemplate": {}}), Code.MALFORMED_FIELD),
        (
            http(
                "POST",
                "/services/create",
                {
                    "TaskTemplate": {"ContainerSpec": {"Image": PINNED_REF}},
                    "Networks": [{"Target": "host"}],
                },
            ),
            Code.NETWORK_HOST,
        ),
    ],
)
def test_service_specs(raw, code):
    assert code_of(raw, policy=SERVICES) is code


def test_service_image_exception():
    policy = RiskPolicy(
        allow_services=True,
        exceptions=(RiskException(frozenset({Code.CAP_ADD}), images=frozenset({PINNED_REPO})),),
    )
    assert code_of(service({"CapabilityAdd": ["NET_ADMIN"]}), policy=policy) is CLOUD


# --- facts, verdict output, policy validation ----------------------------------------------------


def test_facts_needed():
    raw = create(
        {
            "HostConfig": {
                "Binds": ["/srv/a:/a", "vol:/v", "/srv/b/../c:/c", "/srv/t/:/t"],
                "Mounts": [
                    {"Type": "bind", "Source": "/srv/m", "Target": "/m"},
                    {
                        "Type": "volume",
                        "VolumeOptions": {
                            "DriverConfig": {"Options": {"o": "bind", "device": "/srv/d"}}
                        },
                    },
                ],
            },
            "Binds": ["/srv/legacy:/l"],
        }
    )
    needed = facts_needed(read_request(raw))
    assert needed.images == frozenset({PINNED_REF})
    assert needed.host_paths == frozenset({"/srv/a", "/srv/t", "/srv/m", "/srv/d", "/srv/legacy"})
    pull = read_request(http("POST", "/images/create?fromImage=nginx&tag=1"))
    assert facts_needed(pull).images == frozenset({"nginx:1"})
    tag = read_request(http("POST", "/images/evil/tag?repo=x"))
    assert facts_needed(tag).images == frozenset({"evil"})
    svc = read_request(service({"Mounts": [{"Type": "bind", "Source": "/srv/s"}]}))
    assert facts_needed(svc).host_paths == frozenset({"/srv/s"})
    vol = read_request(volume(type="none", o="bind", device="/srv/v"))
    assert facts_needed(vol).host_paths == frozenset({"/srv/v"})
    assert facts_needed(read_request(http("GET", "/_ping"))).images == frozenset()


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/", "/"),
        ("/a", "/a"),
        ("/a/", "/a"),
        ("/a/b", "/a/b"),
        ("a", None),
        ("", None),
        ("//a", None),
        ("/a//b", None),
        ("/a/./b", None),
        ("/a/../b", None),
        ("/a/..", None),
        ("/a\x00b", None),
        ("/a\nb", None),
    ],
)
def test_canonical_host_path(path, canonical):
    assert canonical_host_path(path) == canonical


def test_verdict_message_and_response():
    verdict = verdict_for(hc(Privileged=True))
    assert verdict.status == 403
    assert verdict.message.startswith("casemate: ")
    assert verdict.message.endswith("[privileged]")
    response = verdict.error_response()
    assert response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert json.loads(response.split(b"\r\n\r\n", 1)[1]) == {"message": verdict.message}
    assert verdict_for(START).status == 200


def test_policy_validation():
    with pytest.raises(PolicyError):
        RiskPolicy(host_path_allowlist=frozenset({"/srv/data/"}))
    with pytest.raises(PolicyError):
        RiskPolicy(host_path_allowlist=frozenset({"srv"}))
    assert "CAP_NET_ADMIN" in RiskPolicy(allowed_cap_add=frozenset({"net_admin"})).allowed_cap_add


def test_facts_default_to_empty():
    trust = TrustFacts(now=NOW)
    assert (dict(trust.images), dict(trust.host_paths), dict(trust.allowlist.pinned)) == (
        {},
        {},
        {},
    )


@pytest.mark.parametrize(
    "labels",
    [
        {"casemate.guard/exempt": "true"},
        {"Casemate.Guard/Exempt": "false"},
        {"app": "web", "casemate.guard/exempt": ""},
    ],
)
def test_guard_exempt_label_is_refused(labels):
    assert code_of(create({"Image": PINNED_REF, "Labels": labels})) is Code.GUARD_EXEMPT
    # dockerd matches field names case-insensitively: so does the check
    assert code_of(create({"Image": PINNED_REF, "labels": labels})) is Code.GUARD_EXEMPT


def test_other_labels_and_malformed_labels():
    assert code_of(create({"Image": PINNED_REF, "Labels": {"app": "web"}})) is CLOUD
    assert code_of(create({"Image": PINNED_REF, "Labels": ["x"]})) is Code.MALFORMED_FIELD
