"""Pure decisions added for issue 10: host paths judged at use (start/restart), the structural
host-path rules that leave no container able to swap another's bind source, one limits policy
for create and update, network connect, and reading mounts from dockerd's answers."""

from __future__ import annotations

from typing import Any

import pytest

from casemate.edge.decide import (
    Code,
    NetworkInfo,
    RiskPolicy,
    facts_needed,
)
from casemate.edge.dockerapi import read_request
from casemate.edge.mounts import (
    ContainerMounts,
    HostSource,
    bind_read_only,
    container_mounts,
    local_bind_device,
    volume_names,
)
from casemate.errors import PolicyError
from tests.edge.helpers import create, http, verdict_for

CLOUD = Code.CLOUD_REQUIRED
SHARE = "/srv/share"
ALLOW = RiskPolicy(host_path_allowlist=frozenset({SHARE, f"{SHARE}/proj/inner"}))
START = http("POST", "/containers/web/start")
RESTART = http("POST", "/v1.41/containers/web/restart")


def start_code(sources: list[HostSource], host_paths: dict[str, str] | None = None, **kw: Any):
    mounts = {"web": ContainerMounts(sources=tuple(sources))}
    return verdict_for(START, policy=ALLOW, containers=mounts, host_paths=host_paths, **kw).code


# --- check at use ------------------------------------------------------------------------------


def test_start_and_restart_need_the_container_mounts():
    needed = facts_needed(read_request(START))
    assert needed.containers == frozenset({"web"})
    assert facts_needed(read_request(RESTART)).containers == frozenset({"web"})
    verdict = verdict_for(START, policy=ALLOW, containers={})
    assert verdict.code is Code.CONTAINER_UNRESOLVED
    gone = {"web": ContainerMounts(found=False)}
    assert verdict_for(START, policy=ALLOW, containers=gone).code is CLOUD
    broken = {"web": ContainerMounts(problems=("mount type 'image' is not understood",))}
    assert verdict_for(RESTART, policy=ALLOW, containers=broken).code is (Code.CONTAINER_UNRESOLVED)


def test_start_judges_each_source_again():
    ok = HostSource("mount point", f"{SHARE}/data")
    assert start_code([ok]) is CLOUD
    # swapped for a symlink to / after create
    assert start_code([ok], host_paths={f"{SHARE}/data": "/"}) is Code.DOCKER_SOCKET
    # swapped for a symlink to another allowed entry
    assert start_code([ok], host_paths={f"{SHARE}/data": f"{SHARE}/x"}) is Code.HOST_PATH
    # removed (dockerd would create it, or follow whatever is put there)
    assert start_code([ok], present=()) is Code.HOST_PATH
    # not resolved at all
    assert start_code([ok], host_paths={}) is Code.HOST_PATH_UNRESOLVED
    # outside the allowlist (created directly on dockerd, or the allowlist changed)
    assert start_code([HostSource("mount point", "/etc", True)]) is Code.HOST_PATH
    bind_volume = HostSource("volume v bind device", SHARE)
    assert start_code([bind_volume]) is Code.HOST_PATH


def test_other_actions_do_not_look_at_mounts():
    for raw in (http("POST", "/containers/web/stop"), http("POST", "/containers/web/kill")):
        assert facts_needed(read_request(raw)).containers == frozenset()


# --- the structural rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "code"),
    [
        (HostSource("b", SHARE, read_only=True), CLOUD),
        (HostSource("b", SHARE), Code.HOST_PATH),
        (HostSource("b", f"{SHARE}/data"), CLOUD),
        (HostSource("b", f"{SHARE}/data", read_only=True), CLOUD),
        (HostSource("b", f"{SHARE}/data/sub", read_only=True), Code.HOST_PATH),
        (HostSource("b", f"{SHARE}/proj", read_only=True), CLOUD),
        (HostSource("b", f"{SHARE}/proj"), Code.HOST_PATH),  # contains an allowed directory
        (HostSource("b", f"{SHARE}/proj/inner"), Code.HOST_PATH),  # an allowed directory rw
        (HostSource("b", f"{SHARE}/proj/inner", read_only=True), CLOUD),
        (HostSource("b", f"{SHARE}/proj/inner/x"), CLOUD),
        (HostSource("b", f"{SHARE}/proj/inner/x/y", read_only=True), Code.HOST_PATH),
        (HostSource("b", "/srv"), Code.HOST_PATH),
        (HostSource("b", "/srv/sharex"), Code.HOST_PATH),
    ],
)
def test_host_path_structure(source: HostSource, code: Code):
    assert start_code([source]) is code


def test_the_reasons_say_what_to_do():
    rw_root = verdict_for(
        START,
        policy=ALLOW,
        containers={"web": ContainerMounts(sources=(HostSource("HostConfig.Binds", SHARE),))},
    )
    assert "read-only (:ro)" in rw_root.reason
    deep = verdict_for(create({"HostConfig": {"Binds": [f"{SHARE}/a/b:/x:ro"]}}), policy=ALLOW)
    assert deep.code is Code.HOST_PATH and f"allow {SHARE}/a too" in deep.reason
    missing = verdict_for(
        create({"HostConfig": {"Binds": [f"{SHARE}/new:/x"]}}), policy=ALLOW, present=()
    )
    assert "create it on the host first" in missing.reason


def test_create_checks_existence_and_read_only_flags():
    def code(binds: list[str], **kw: Any) -> Code:
        return verdict_for(create({"HostConfig": {"Binds": binds}}), policy=ALLOW, **kw).code

    assert code([f"{SHARE}/new:/x"], present=()) is Code.HOST_PATH
    assert code([f"{SHARE}/new:/x"]) is CLOUD
    assert code([f"{SHARE}:/x:ro"]) is CLOUD
    assert code([f"{SHARE}:/x:rw"]) is Code.HOST_PATH
    assert code([f"{SHARE}:/x:rprivate"]) is Code.HOST_PATH
    assert code([f"{SHARE}:/x:nocopy,ro"]) is CLOUD
    mounts = [{"Type": "bind", "Source": SHARE, "Target": "/x", "ReadOnly": 1}]
    assert verdict_for(create({"HostConfig": {"Mounts": mounts}}), policy=ALLOW).code is (
        Code.HOST_PATH
    )


def test_bind_volumes_count_as_read_write():
    volume = http(
        "POST",
        "/volumes/create",
        {"Name": "v", "DriverOpts": {"type": "none", "o": "bind,ro", "device": SHARE}},
    )
    assert verdict_for(volume, policy=ALLOW).code is Code.HOST_PATH
    entry = http(
        "POST",
        "/volumes/create",
        {"Name": "v", "DriverOpts": {"type": "none", "o": "bind", "device": f"{SHARE}/v"}},
    )
    assert verdict_for(entry, policy=ALLOW).code is CLOUD
    assert verdict_for(entry, policy=ALLOW, present=()).code is Code.HOST_PATH


# --- limits ------------------------------------------------------------------------------------

LIMITED = RiskPolicy(max_memory=1 << 30, max_pids=500)


@pytest.mark.parametrize(
    ("host_config", "top", "code"),
    [
        ({"Memory": 1 << 28, "PidsLimit": 100}, {}, CLOUD),
        ({"Memory": 1 << 30, "PidsLimit": 500}, {}, CLOUD),
        ({"Memory": (1 << 30) + 1, "PidsLimit": 100}, {}, Code.LIMITS),
        ({"PidsLimit": 100}, {}, Code.LIMITS),
        ({"Memory": 1 << 28}, {}, Code.LIMITS),
        ({"Memory": 1 << 28, "PidsLimit": 0}, {}, Code.LIMITS),
        ({"Memory": 1 << 28, "PidsLimit": -1}, {}, Code.LIMITS),
        ({"Memory": -1, "PidsLimit": 100}, {}, Code.LIMITS),
        ({"Memory": "1g", "PidsLimit": 100}, {}, Code.LIMITS),
        ({"Memory": True, "PidsLimit": 100}, {}, Code.LIMITS),
        ({"PidsLimit": 100}, {"Memory": 1 << 28}, CLOUD),  # legacy top level fills it in
        ({"PidsLimit": 100}, {"Memory": 1 << 34}, Code.LIMITS),
        ({"Memory": 1 << 28, "PidsLimit": 100}, {"Memory": 1 << 34}, Code.LIMITS),
        ({"memory": 1 << 28, "pidslimit": 100}, {}, CLOUD),
        # with a HostConfig, dockerd ignores a legacy top-level PidsLimit
        ({"Memory": 1 << 28}, {"PidsLimit": 100}, Code.LIMITS),
        ({"Memory": 1 << 28, "PidsLimit": 100}, {"PidsLimit": 100000}, Code.LIMITS),
        ({"Memory": 0, "PidsLimit": 100}, {"Memory": 1 << 28}, CLOUD),
    ],
)
def test_create_limits(host_config: dict[str, Any], top: dict[str, Any], code: Code):
    raw = create({"HostConfig": host_config, **top})
    assert verdict_for(raw, policy=LIMITED).code is code
    assert verdict_for(raw).code in (CLOUD, Code.MALFORMED_FIELD)  # no maximum: no limit rule


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"Memory": 1 << 28}, CLOUD),
        ({"Memory": 0}, CLOUD),  # 0 leaves the limit alone in update
        ({"CpuShares": 512}, CLOUD),
        ({"Memory": 1 << 34}, Code.LIMITS),
        ({"Memory": -1}, Code.LIMITS),
        ({"memory": 1 << 34}, Code.LIMITS),
        ({"PidsLimit": 0}, Code.LIMITS),
        ({"PidsLimit": -1}, Code.LIMITS),
        ({"PidsLimit": 501}, Code.LIMITS),
        ({"PidsLimit": 500}, CLOUD),
        ({"PidsLimit": None}, Code.LIMITS),
    ],
)
def test_update_limits_follow_the_same_policy(body: dict[str, Any], code: Code):
    raw = http("POST", "/containers/web/update", body)
    assert verdict_for(raw, policy=LIMITED).code is code


def test_limits_policy_validation():
    with pytest.raises(PolicyError):
        RiskPolicy(max_memory=0)
    with pytest.raises(PolicyError):
        RiskPolicy(max_pids=-5)


# --- networks ----------------------------------------------------------------------------------

HOST_NET = NetworkInfo("host", "host")


def test_network_connect():
    def code(name: str, info: NetworkInfo | None | str = "default") -> Code:
        raw = http("POST", f"/networks/{name}/connect", {"Container": "web"})
        networks = None if info == "default" else {name: info}
        return verdict_for(raw, networks=networks).code  # type: ignore[arg-type]

    assert code("host") is Code.NETWORK_HOST
    assert code("host", HOST_NET) is Code.NETWORK_HOST
    assert code("9f3c0ffee", HOST_NET) is Code.NETWORK_HOST  # the host network by its ID
    assert code("9f3c", NetworkInfo("renamed", "host")) is Code.NETWORK_HOST
    assert code("net1") is CLOUD
    assert code("net1", None) is Code.NETWORK_UNRESOLVED
    raw = http("POST", "/networks/net1/connect", {"Container": "web"})
    assert verdict_for(raw, networks={}).code is Code.NETWORK_UNRESOLVED
    assert facts_needed(read_request(raw)).networks == frozenset({"net1"})


def test_create_networks_named_by_id_are_looked_up():
    by_id = create({"HostConfig": {"NetworkMode": "9f3c0ffee"}})
    assert facts_needed(read_request(by_id)).networks == frozenset({"9f3c0ffee"})
    assert verdict_for(by_id, networks={"9f3c0ffee": HOST_NET}).code is Code.NETWORK_HOST
    assert verdict_for(by_id).code is CLOUD
    endpoint = create({"NetworkingConfig": {"EndpointsConfig": {"9f3c0ffee": {}}}})
    assert verdict_for(endpoint, networks={"9f3c0ffee": HOST_NET}).code is Code.NETWORK_HOST
    builtin = create({"HostConfig": {"NetworkMode": "bridge"}})
    assert facts_needed(read_request(builtin)).networks == frozenset()


# --- reading mounts from dockerd's answers -----------------------------------------------------


def test_bind_read_only():
    assert bind_read_only("/a:/b:ro")
    assert bind_read_only("/a:/b:z,ro")
    assert not bind_read_only("/a:/b")
    assert not bind_read_only("/a:/b:rw")
    assert not bind_read_only("/a:/b:rprivate")


def test_local_bind_device():
    assert local_bind_device({"type": "none", "o": "bind", "device": "/x"}) == "/x"
    assert local_bind_device({"o": "rbind", "device": "/x"}) == "/x"
    assert local_bind_device({"Type": "NONE", "Device": "/x"}) == "/x"
    assert local_bind_device({"type": "tmpfs", "device": "tmpfs"}) is None


def test_container_mounts_from_an_inspect():
    inspect = {
        "Mounts": [
            {"Type": "bind", "Source": "/srv/share/a", "RW": True},
            {"Type": "bind", "Source": "/srv/share/b", "RW": False},
            {"Type": "volume", "Name": "bindvol", "Driver": "local"},
            {"Type": "volume", "Name": "plain", "Driver": "local"},
            {"Type": "volume", "Name": "gone", "Driver": "local"},
            {"Type": "volume", "Name": "remote", "Driver": "rexray"},
            {"Type": "tmpfs", "Destination": "/t"},
        ],
        "HostConfig": {
            "Binds": ["/srv/share/c:/c:ro", "named:/n"],
            "Mounts": [{"Type": "bind", "Source": "/srv/share/d", "ReadOnly": True}],
        },
    }
    assert volume_names(inspect) == ("bindvol", "gone", "plain")
    volumes = {
        "bindvol": {"Options": {"type": "none", "o": "bind", "device": "/srv/share/v"}},
        "plain": {"Options": None},
        "gone": None,
    }
    mounts = container_mounts(inspect, volumes)
    assert mounts.found and mounts.problems == ()
    assert [(s.path, s.read_only) for s in mounts.sources] == [
        ("/srv/share/a", False),
        ("/srv/share/b", True),
        ("/srv/share/v", False),
        ("/srv/share/c", True),
        ("/srv/share/d", True),
    ]


def test_container_mounts_fail_closed():
    assert container_mounts([], {}).problems
    odd = {"Mounts": ["x", {"Type": "bind"}, {"Type": "image", "Source": "x"}]}
    assert len(container_mounts(odd, {}).problems) == 3
    unreadable = {"Mounts": [{"Type": "volume", "Name": "v"}]}
    assert container_mounts(unreadable, {"v": {"Options": ["x"]}}).problems
