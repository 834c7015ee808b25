"""Issue 10 §4 on the real dockerd through the proxy, with the docker CLI: network connect to
the host network (by name and by its ID), container update under the same limits as create,
and legitimate use of both. The cloud allows everything: only the local guard decides."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from casemate.edge.decide import RiskPolicy
from casemate.testenv.docker import DockerEngine
from tests.edge.test_proxy import ProxyStack

pytestmark = pytest.mark.docker

BUSYBOX_REPO = "casemate-test/busybox"
MAX_MEMORY = 256 * 1024 * 1024
MAX_PIDS = 200


@pytest.fixture(scope="module")
def stack(docker_engine: DockerEngine, busybox_image: str) -> Iterator[ProxyStack]:
    policy = RiskPolicy(required_scope="write", max_memory=MAX_MEMORY, max_pids=MAX_PIDS)
    s = ProxyStack(docker_engine.socket_path, cloud="fake", policy=policy)
    s.fake_cloud.allow = True
    s.start()
    image_id = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", busybox_image)
    s.store.allow_image(BUSYBOX_REPO, [image_id.stdout.strip()], by="test")
    s.reload()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def container(stack: ProxyStack, docker_engine: DockerEngine, busybox_image: str) -> Iterator[str]:
    name = f"cmg-{uuid.uuid4().hex[:8]}"
    run = stack.docker(
        "run", "-d", "--name", name, "--memory", "64m", "--pids-limit", "50",
        busybox_image, "sleep", "600",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        yield name
    finally:
        docker_engine.docker("rm", "-f", name, check=False)


def inspect(engine: DockerEngine, *args: str) -> dict[str, object]:
    doc: list[dict[str, object]] = json.loads(engine.docker(*args).stdout)
    return doc[0]


def test_network_connect_to_the_host_network_is_refused(
    stack: ProxyStack, docker_engine: DockerEngine, container: str
) -> None:
    host_id = str(inspect(docker_engine, "network", "inspect", "host")["Id"])
    for network in ("host", host_id, host_id[:12]):
        refused = stack.docker("network", "connect", network, container)
        assert refused.returncode != 0 and "[network_host]" in refused.stderr, refused.stderr
    networks = inspect(docker_engine, "container", "inspect", container)["NetworkSettings"]
    assert set(networks["Networks"]) == {"bridge"}  # type: ignore[index]
    # a user-defined network works
    net = f"cmg-net-{uuid.uuid4().hex[:6]}"
    assert stack.docker("network", "create", net).returncode == 0
    try:
        joined = stack.docker("network", "connect", net, container)
        assert joined.returncode == 0, joined.stderr
        missing = stack.docker("network", "connect", "cmg-no-such-net", container)
        assert missing.returncode != 0 and "[network_unresolved]" in missing.stderr
    finally:
        stack.docker("network", "disconnect", "-f", net, container)
        docker_engine.docker("network", "rm", net, check=False)


def test_run_by_the_host_network_id_is_refused(
    stack: ProxyStack, docker_engine: DockerEngine, busybox_image: str
) -> None:
    host_id = str(inspect(docker_engine, "network", "inspect", "host")["Id"])
    run = stack.docker(
        "run", "--rm", "--network", host_id, "--memory", "64m", "--pids-limit", "50",
        busybox_image, "true",
    )  # fmt: skip
    assert run.returncode != 0 and "[network_host]" in run.stderr, run.stderr


def test_update_is_held_to_the_create_limits(
    stack: ProxyStack, docker_engine: DockerEngine, container: str
) -> None:
    for args in (
        ["--memory", "1g", "--memory-swap", "2g"],
        ["--pids-limit", "-1"],
        ["--pids-limit", "100000"],
    ):
        refused = stack.docker("update", *args, container)
        assert refused.returncode != 0 and "[limits]" in refused.stderr, (args, refused.stderr)
    host_config = inspect(docker_engine, "container", "inspect", container)["HostConfig"]
    assert (host_config["Memory"], host_config["PidsLimit"]) == (64 * 1024 * 1024, 50)  # type: ignore[index]
    ok = stack.docker(
        "update", "--memory", "128m", "--memory-swap", "128m", "--pids-limit", "100", container
    )
    assert ok.returncode == 0, ok.stderr
    host_config = inspect(docker_engine, "container", "inspect", container)["HostConfig"]
    assert (host_config["Memory"], host_config["PidsLimit"]) == (128 * 1024 * 1024, 100)  # type: ignore[index]


def test_create_without_limits_is_refused_and_says_which(
    stack: ProxyStack, busybox_image: str
) -> None:
    run = stack.docker("run", "--rm", busybox_image, "true")
    assert run.returncode != 0 and "[limits]" in run.stderr
    assert "--memory" in run.stderr
