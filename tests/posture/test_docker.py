"""``casemate posture docker`` against the real test dockerd."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from casemate.testenv.docker import DockerEngine

pytestmark = pytest.mark.docker


@pytest.fixture
def risky_container(docker_engine: DockerEngine, busybox_image: str):
    name = "posture-risky"
    docker_engine.docker("rm", "-f", name, check=False)
    # created, not started: this nested test machine cannot start privileged containers, and a
    # stopped container can be started again as configured, so it is checked too
    docker_engine.docker(
        "create", "--name", name, "--privileged", "--pid", "host", "--cap-add", "SYS_ADMIN",
        "-v", f"{docker_engine.socket_path}:/var/run/docker.sock", busybox_image, "sleep", "300",
    )  # fmt: skip
    yield name
    docker_engine.docker("rm", "-f", name, check=False)


def test_docker_host_scan(docker_engine: DockerEngine, risky_container: str):
    r = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "posture", "docker", "-H", docker_engine.host,
         "-f", "json", "--fail-on", "critical"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    found = {(f["rule_id"], dict(f["properties"])["object"]) for f in doc["findings"]}
    container = f"DockerContainer/{risky_container}"
    for rule_id in (
        "engine.container-privileged",
        "engine.container-host-namespaces",
        "engine.container-sensitive-mount",
        "engine.container-capabilities",
        "engine.container-no-memory-limit",
        "engine.container-no-pids-limit",
    ):
        assert (rule_id, container) in found, rule_id
    # the test daemon runs without user namespaces and live restore
    daemon = {rule for rule, obj in found if obj.startswith("DockerDaemon/")}
    assert {"engine.docker-userns", "engine.docker-live-restore"} <= daemon
    assert doc["problems"] == []


def test_unreachable_docker_host_is_named(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "posture", "docker", "-H",
         f"unix://{tmp_path}/none.sock", "-f", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "cannot read /info" in r.stderr and "none.sock" in r.stderr


def test_tcp_hosts_are_refused():
    r = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "posture", "docker", "-H", "tcp://10.0.0.1:2375"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "only unix://" in r.stderr
