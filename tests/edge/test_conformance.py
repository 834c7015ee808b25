"""Every bypass case, as raw bytes, through the real proxy in front of the real test dockerd.

For each case the proxy must answer what :mod:`tests.edge.bypass_cases` says (refusals with the
parser's status and code, denials with 403 and the decision's code, ``cloud`` cases only after
asking the cloud, ``allowed`` reads answered by dockerd itself), and dockerd's state —
containers, images, volumes, networks, plugins, swarm — must be exactly what it was before,
asked directly on dockerd's own socket. A hypothesis test then throws random and mutated bytes
at the live socket and checks that the proxy still answers ``_ping`` and dockerd is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.edge.decide import RiskPolicy
from casemate.testenv.docker import DockerEngine
from tests.edge.bypass_cases import CASES, CONTEXT, SHARE, WORLD, BypassCase
from tests.edge.test_proxy import ProxyStack, ping

pytestmark = pytest.mark.docker


def dockerd_state(engine: DockerEngine) -> dict[str, Any]:
    """What could change, asked on dockerd's own socket (never through the proxy)."""
    transport = httpx.HTTPTransport(uds=str(engine.socket_path))
    with httpx.Client(transport=transport, base_url="http://docker", timeout=10) as client:

        def get(path: str, **params: str) -> Any:
            response = client.get(path, params=params)
            response.raise_for_status()
            return response.json()

        return {
            "containers": sorted(
                (c["Id"], c["State"], tuple(c["Names"])) for c in get("/containers/json", all="1")
            ),
            "images": sorted(
                (i["Id"], tuple(i.get("RepoTags") or ())) for i in get("/images/json", all="1")
            ),
            "volumes": sorted(v["Name"] for v in get("/volumes")["Volumes"] or []),
            "networks": sorted((n["Id"], n["Name"]) for n in get("/networks")),
            "plugins": sorted(p["Id"] for p in get("/plugins")),
            "swarm": get("/info")["Swarm"]["LocalNodeState"],
        }


def _docker_api(engine: DockerEngine) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(engine.socket_path))
    return httpx.Client(transport=transport, base_url="http://docker", timeout=30)


def remove_world(engine: DockerEngine) -> None:
    with _docker_api(engine) as api:
        for name in CONTEXT["containers"]:
            api.delete(f"/containers/{name}", params={"force": "1"})
        for name in CONTEXT["volumes"]:
            api.delete(f"/volumes/{name}", params={"force": "1"})
        for name in CONTEXT["networks"]:
            api.delete(f"/networks/{name}")
    shutil.rmtree(WORLD, ignore_errors=True)


def build_world(engine: DockerEngine, image: str) -> None:
    """The host CONTEXT describes, made directly (never through the proxy): the attacker's
    containers were created while their sources were plain directories, then swapped."""
    remove_world(engine)
    for directory in CONTEXT["dirs"]:
        Path(directory).mkdir(parents=True, exist_ok=True)
    for file in CONTEXT["files"]:
        Path(file).write_text("x")
    for source in CONTEXT["swaps"]:
        Path(source).mkdir(parents=True)
    with _docker_api(engine) as api:
        for name, driver in CONTEXT["networks"].items():
            api.post("/networks/create", json={"Name": name, "Driver": driver}).raise_for_status()
        for name, opts in CONTEXT["volumes"].items():
            body = {"Name": name, "Driver": "local", "DriverOpts": opts}
            api.post("/volumes/create", json=body).raise_for_status()
        for name, host_config in CONTEXT["containers"].items():
            body = {"Image": image, "Cmd": ["sleep", "600"], "HostConfig": host_config}
            created = api.post("/containers/create", params={"name": name}, json=body)
            assert created.status_code == 201, created.text
    for source, target in CONTEXT["swaps"].items():
        Path(source).rmdir()
        Path(source).symlink_to(target)
    for link, target in CONTEXT["symlinks"].items():
        Path(link).symlink_to(target)


def context_policy() -> RiskPolicy:
    return RiskPolicy(
        required_scope="write",
        host_path_allowlist=frozenset(CONTEXT["host_path_allowlist"]),
        max_memory=CONTEXT["max_memory"],
        max_pids=CONTEXT["max_pids"],
    )


@pytest.fixture(scope="module")
def stack(docker_engine: DockerEngine, busybox_image: str) -> Iterator[ProxyStack]:
    build_world(docker_engine, busybox_image)
    s = ProxyStack(docker_engine.socket_path, cloud="fake", policy=context_policy())
    s.start()
    for repo, digests in CONTEXT["allowlist"].items():
        s.store.allow_image(repo, digests, by="test")
    s.reload()
    try:
        yield s
    finally:
        s.stop()
        remove_world(docker_engine)


def test_the_world_is_as_described(stack: ProxyStack, docker_engine: DockerEngine) -> None:
    """The swapped sources really lead to the host's / now, and dockerd holds the containers
    that would mount them (created, never started)."""
    assert os.path.realpath(f"{SHARE}/victim1") == "/"
    with _docker_api(docker_engine) as api:
        for name in CONTEXT["containers"]:
            state = api.get(f"/containers/{name}/json").json()["State"]["Status"]
            assert state == "created", name


def send_case(stack: ProxyStack, case: BypassCase) -> Any:
    stack.map_uid0(case.caller)
    token = stack.super_token if case.caller == "super" else None
    return stack.exchange(case.raw, token=token)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bypass_case_against_real_dockerd(
    stack: ProxyStack, docker_engine: DockerEngine, case: BypassCase
) -> None:
    stack.fake_cloud.allow = False
    stack.fake_cloud.requests.clear()
    before = dockerd_state(docker_engine)
    mark = stack.audit_mark()
    resp = send_case(stack, case)
    after = dockerd_state(docker_engine)
    assert after == before, "dockerd's state changed"
    records = stack.audit(mark)
    assert len(records) == 1, [r.details for r in records]
    [record] = records
    if case.outcome in ("refused", "denied"):
        assert resp.status == case.status, resp.message
        assert resp.message.startswith("casemate: ") and resp.message.endswith(f"[{case.code}]")
        assert stack.fake_cloud.requests == []
        assert (record.details["code"], record.details["allowed"]) == (case.code, False)
    elif case.outcome == "cloud":
        # Allowed locally, forwarded only after the cloud said yes: this cloud says no.
        [asked] = stack.fake_cloud.requests
        assert asked.caller == "admin1" and asked.action == record.details["action"]
        assert resp.status == 403 and resp.message.endswith("[cloud_denied]")
        assert record.details["code"] == "cloud_denied"
    else:
        assert case.outcome == "allowed"
        # dockerd answered in its own words (this dockerd tops out at API 1.41, so the
        # cases' /v1.45/ paths get its 400 "client version ... is too new").
        assert resp.headers.get("server", "").startswith("Docker/"), resp.message
        assert not resp.message.startswith("casemate"), resp.message
        assert (record.details["code"], record.details["allowed"]) == ("read_allowed", True)


def test_cloud_cases_are_forwarded_when_the_cloud_allows(
    stack: ProxyStack, docker_engine: DockerEngine
) -> None:
    """The positive control: create with the pinned digest reaches dockerd (which has no such
    image and says so in its own words)."""
    [case] = [c for c in CASES if c.name == "unversioned"]
    stack.fake_cloud.allow = True
    try:
        before = dockerd_state(docker_engine)
        resp = send_case(stack, case)
        assert dockerd_state(docker_engine) == before
    finally:
        stack.fake_cloud.allow = False
    assert resp.status == 404 and "No such image" in resp.message, resp.message


def test_every_case_is_covered() -> None:
    assert len(CASES) >= 140
    assert {c.outcome for c in CASES} == {"refused", "denied", "cloud", "allowed"}


# Fuzzing the live socket ----------------------------------------------------------------------


def fuzz_send(path: Path, data: bytes, timeout: float = 5.0) -> bytes:
    """Send, half-close, read whatever comes until the proxy closes (or a quiet timeout)."""
    out = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                out += chunk
    return out


SEEDS = [c.raw for c in CASES if len(c.raw) < 4096] + [
    b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n",
    b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
    b'Content-Length: 40\r\n\r\n{"Image":"busybox","HostConfig":{"A":1}}',
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup", "truncate", "crlf"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "dup":
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[end:end] = data[pos:end]
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n\r\n", b":"]))
    return bytes(data)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.one_of(mutated(), st.binary(max_size=2048)), as_super=st.booleans())
def test_fuzzed_bytes_never_break_the_proxy(
    stack: ProxyStack, docker_engine: DockerEngine, data: bytes, as_super: bool
) -> None:
    if as_super and b"\r\n" in data:
        line, rest = data.split(b"\r\n", 1)
        data = line + f"\r\nX-Casemate-Token: {stack.super_token}\r\n".encode() + rest
    answer = fuzz_send(stack.socket_path, data)
    if answer:
        assert answer.startswith(b"HTTP/1.1 ")
    assert ping(stack.socket_path).status == 200


def test_fuzzing_changed_nothing(stack: ProxyStack, docker_engine: DockerEngine) -> None:
    """Runs after the fuzz test (same module): the cloud said no to everything, the policy
    the rest, so dockerd must be unchanged and the proxy alive."""
    before = dockerd_state(docker_engine)
    stack.fake_cloud.allow = False
    for seed in SEEDS:
        fuzz_send(stack.socket_path, seed)
    assert dockerd_state(docker_engine) == before
    assert ping(stack.socket_path).status == 200
    assert stack.rt.audit.verify().ok
