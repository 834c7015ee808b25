"""End to end: the docker CLI → the edge proxy → the real test dockerd, with the real cloud
(CloudService + CloudLink on mosquitto) deciding privileged calls.

uid 0 (this process) is the super user ``admin1`` with a write token in its docker config;
uid 65534 (``nobody``, the CLI run with ``user=``) is the ordinary user ``alice``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.testenv.docker import DockerEngine, docker_cli
from casemate.testenv.services import MosquittoBroker
from tests.edge.test_cloudlink import private_broker
from tests.edge.test_proxy import (
    ORDINARY_USER,
    SUPER_USER,
    ProxyStack,
    docker_config_dir,
    short_tmpdir,
)
from tests.risks.test_signatures import cosign_payload, pub_pem

pytestmark = [pytest.mark.docker, pytest.mark.mqtt]

BUSYBOX_REPO = "casemate-test/busybox"


def image_id(engine: DockerEngine, image: str) -> str:
    return engine.docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()


def containers(engine: DockerEngine) -> list[dict[str, object]]:
    """What dockerd has, asked directly (not through the proxy)."""
    transport = httpx.HTTPTransport(uds=str(engine.socket_path))
    with httpx.Client(transport=transport, base_url="http://docker", timeout=10) as client:
        found: list[dict[str, object]] = client.get("/containers/json", params={"all": "1"}).json()
        return found


def remove_container(engine: DockerEngine, name: str) -> None:
    engine.docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def stack(
    docker_engine: DockerEngine, busybox_image: str, mosquitto_broker: MosquittoBroker
) -> Iterator[ProxyStack]:
    s = ProxyStack(docker_engine.socket_path, cloud="service", broker=mosquitto_broker)
    s.start()
    s.store.allow_image(BUSYBOX_REPO, [image_id(docker_engine, busybox_image)], by="test")
    s.reload()
    try:
        yield s
    finally:
        s.stop()


def test_ordinary_user_reads_but_cannot_run(stack: ProxyStack, busybox_image: str) -> None:
    ps = stack.docker("ps", "-a", user="ordinary")
    assert ps.returncode == 0, ps.stderr
    assert "CONTAINER ID" in ps.stdout
    images = stack.docker("images", user="ordinary")
    assert BUSYBOX_REPO in images.stdout
    mark = stack.audit_mark()
    run = stack.docker("run", "--rm", busybox_image, "echo", "hi", user="ordinary")
    assert run.returncode != 0
    assert "casemate: user alice may only make read-only calls" in run.stderr
    assert "[ordinary_read_only]" in run.stderr and "hi" not in run.stdout
    [create] = [r for r in stack.audit(mark) if r.details["action"] == "create"]
    assert (create.actor, create.details["uid"], create.outcome) == (ORDINARY_USER, 65534, "denied")
    assert create.details["code"] == "ordinary_read_only"


def test_super_user_runs_after_cloud_approval(stack: ProxyStack, busybox_image: str) -> None:
    mark = stack.audit_mark()
    run = stack.docker("run", "--rm", busybox_image, "echo", "hi")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hi\n"
    records = stack.audit(mark)
    by_action = {r.details["action"]: r for r in records}
    for action in ("create", "attach", "start"):
        record = by_action[action]
        assert record.outcome == "allowed" and record.actor == SUPER_USER
        assert record.details["cloud_rule"].startswith("rule:")
        assert record.details["cloud_request"]
    create = by_action["create"]
    assert create.details["image"] == busybox_image
    assert create.details["digest"].startswith("sha256:")
    assert by_action["wait"].details["code"] == "read_allowed"  # no cloud round trip
    assert stack.registry is not None
    decided = [e.details for e in stack.registry.audit.query(kind="edge.decision", limit=1000)]
    ids = {r.details["cloud_request"] for r in records if r.details.get("cloud_request")}
    assert ids <= {d["request_id"] for d in decided}


def test_stdin_is_piped_through_the_hijack(stack: ProxyStack, busybox_image: str) -> None:
    run = stack.docker("run", "-i", "--rm", busybox_image, "cat", input="hello\nworld\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hello\nworld\n"


def test_privileged_is_blocked(
    stack: ProxyStack, docker_engine: DockerEngine, busybox_image: str
) -> None:
    name = f"priv-{uuid.uuid4().hex[:6]}"
    run = stack.docker("run", "--rm", "--privileged", "--name", name, busybox_image, "true")
    assert run.returncode != 0
    assert "casemate:" in run.stderr and "[privileged]" in run.stderr
    assert not [c for c in containers(docker_engine) if f"/{name}" in c["Names"]]  # type: ignore[operator]
    for flags, code in (
        (["-v", "/var/run/docker.sock:/s"], "docker_socket"),
        (["--cap-add", "SYS_ADMIN"], "cap_add"),
        (["--pid", "host"], "namespace"),
    ):
        run = stack.docker("run", "--rm", *flags, busybox_image, "true")
        assert run.returncode != 0 and f"[{code}]" in run.stderr, run.stderr


def test_missing_token_is_blocked(stack: ProxyStack, busybox_image: str) -> None:
    run = stack.docker("run", "--rm", busybox_image, "true", token=None)
    assert run.returncode != 0 and "[token_missing]" in run.stderr
    run = stack.docker("run", "--rm", busybox_image, "true", token=stack.read_token)
    assert run.returncode != 0 and "[token_scope]" in run.stderr
    # Reads need no token.
    assert stack.docker("ps", token=None).returncode == 0


def test_untrusted_images_are_blocked(
    stack: ProxyStack, docker_engine: DockerEngine, busybox_image: str, debian12_image: str
) -> None:
    # Not on the allowlist at all.
    run = stack.docker("run", "--rm", debian12_image, "true")
    assert run.returncode != 0 and "[image_untrusted]" in run.stderr
    # On the allowlist with another digest.
    repo = debian12_image.split(":")[0]
    stack.store.allow_image(repo, ["sha256:" + "0" * 64], by="test")
    stack.reload()
    run = stack.docker("run", "--rm", debian12_image, "true")
    assert run.returncode != 0 and "[image_untrusted]" in run.stderr
    # The right digest, but a signature is required and there is none.
    debian_id = image_id(docker_engine, debian12_image)
    stack.store.allow_image(repo, [debian_id], by="test", require_signature=True)
    stack.reload()
    run = stack.docker("run", "--rm", debian12_image, "true")
    assert run.returncode != 0 and "[image_untrusted]" in run.stderr
    # Signed (cosign simple signing over the image ID: the image was imported locally).
    key = ec.generate_private_key(ec.SECP256R1())
    payload = cosign_payload(repo, debian_id)
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    stack.store.add_key(f"release-{uuid.uuid4().hex[:6]}", pub_pem(key), by="test")
    stack.store.add_signature(repo, payload, signature, by="test")
    stack.reload()
    try:
        run = stack.docker("run", "--rm", debian12_image, "echo", "signed")
        assert run.returncode == 0, run.stderr
        assert run.stdout == "signed\n"
    finally:
        stack.store.remove_image(repo, by="test")
        stack.reload()
    # An image ID of an allowlisted image is trusted; a tag of another repository is not.
    busybox_id = image_id(docker_engine, busybox_image)
    run = stack.docker("run", "--rm", busybox_id, "echo", "by-id")
    assert run.returncode == 0 and run.stdout == "by-id\n", run.stderr


def test_exec_and_logs_follow(
    stack: ProxyStack, docker_engine: DockerEngine, busybox_image: str
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    script = "i=0; while :; do echo line$i; i=$((i+1)); sleep 0.2; done"
    run = stack.docker("run", "-d", "--name", name, busybox_image, "sh", "-c", script)
    assert run.returncode == 0, run.stderr
    try:
        exec_ = stack.docker("exec", "-u", "1000:1000", name, "sh", "-c", "echo hi from $(id -u)")
        assert exec_.returncode == 0, exec_.stderr
        assert exec_.stdout == "hi from 1000\n"
        exec_root = stack.docker("exec", name, "true")
        assert exec_root.returncode != 0 and "[exec_user]" in exec_root.stderr
        assert "docker exec -u 1000:1000" in exec_root.stderr  # says how to do it right
        # issue 10: a name the container maps to uid 0 in its own /etc/passwd
        passwd = "echo rtadmin:x:0:0::/root:/bin/sh >> /etc/passwd"
        appended = docker_engine.docker("exec", name, "sh", "-c", passwd, check=False)
        assert appended.returncode == 0, appended.stderr
        by_name = stack.docker("exec", "-u", "rtadmin", name, "id", "-u")
        assert by_name.returncode != 0 and "[exec_user]" in by_name.stderr
        assert by_name.stdout == ""
        for user in ("1000", "1000:0", "0:1000"):
            refused = stack.docker("exec", "-u", user, name, "id", "-u")
            assert refused.returncode != 0 and refused.stdout == "", user
        # the ordinary user may use every read-only call
        for args in (["top", name], ["network", "ls"], ["volume", "ls"], ["system", "df"]):
            read = stack.docker(*args, user="ordinary")
            assert read.returncode == 0, (args, read.stderr)
        # docker logs -f by the ordinary user: lines arrive while the stream is open.
        follower = stack.docker_popen("logs", "-f", name, user="ordinary")
        try:
            assert follower.stdout is not None
            seen = [follower.stdout.readline() for _ in range(3)]
            assert all(line.startswith("line") for line in seen), seen
            before = int(seen[-1][4:])
            time.sleep(1.0)
            later = follower.stdout.readline()
            assert later.startswith("line") and int(later[4:]) > before
        finally:
            follower.kill()
            follower.communicate(timeout=10)
        # The proxy notices the client went away and closes its dockerd stream.
        deadline = time.monotonic() + 10
        while stack.proxy._connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not stack.proxy._connections
    finally:
        remove_container(docker_engine, name)


def test_audit_records_every_decision(stack: ProxyStack, busybox_image: str) -> None:
    mark = stack.audit_mark()
    stack.docker("ps")
    stack.docker("run", "--rm", "--privileged", busybox_image, "true")
    records = stack.audit(mark)
    assert [r.details["action"] for r in records if r.details["action"] != "ping"] == [
        "list_containers",
        "create",
    ]
    for record in records:
        details = record.details
        assert set(details) >= {"user", "uid", "action", "route", "allowed", "reason", "code"}
        assert stack.super_token not in json.dumps(record.to_dict())
    assert stack.rt.audit.verify().ok


def test_cloud_silent_is_blocked_within_the_timeout(
    docker_engine: DockerEngine, busybox_image: str
) -> None:
    # A broker of its own: the module's cloud service would answer this gateway's
    # registration on the shared one.
    with private_broker() as broker:
        _cloud_silent(docker_engine, busybox_image, broker)


def _cloud_silent(docker_engine: DockerEngine, busybox_image: str, broker: MosquittoBroker) -> None:
    s = ProxyStack(docker_engine.socket_path, cloud="service", broker=broker, authz_timeout=1.5)
    s.start()
    try:
        s.store.allow_image(BUSYBOX_REPO, [image_id(docker_engine, busybox_image)], by="test")
        s.reload()
        s.stop_cloud_service()
        started = time.monotonic()
        run = s.docker("run", "--rm", busybox_image, "echo", "hi")
        elapsed = time.monotonic() - started
        assert run.returncode != 0 and "hi" not in run.stdout
        assert "[cloud_unavailable]" in run.stderr
        assert "no decision from the cloud within 1.5 s" in run.stderr
        assert elapsed < 10, elapsed
        [create] = [r for r in s.audit() if r.details["action"] == "create"]
        assert create.details["cloud_rule"] == "gateway:timeout"
    finally:
        s.stop()


def test_no_cloud_link_fails_closed(docker_engine: DockerEngine, busybox_image: str) -> None:
    s = ProxyStack(docker_engine.socket_path, cloud="none")
    s.start()
    try:
        s.store.allow_image(BUSYBOX_REPO, [image_id(docker_engine, busybox_image)], by="test")
        s.reload()
        run = s.docker("run", "--rm", busybox_image, "true")
        assert run.returncode != 0 and "no cloud link is configured" in run.stderr
        assert s.docker("ps").returncode == 0
    finally:
        s.stop()


def test_cli_serve_end_to_end(docker_engine: DockerEngine, busybox_image: str) -> None:
    """``casemate edge serve`` as a process: map a user, allowlist, serve, docker ps/run."""
    directory = short_tmpdir("cme-")
    data = directory / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env["CASEMATE_DATA_DIR"] = str(data)
    rt = open_runtime(load_settings(data_dir=data), create=True)
    rt.identity.create_user("ops", by=None, password=None, roles=["operator"])
    token = rt.identity.issue_token("ops", "d", ["write"], timedelta(hours=1), by=None).token
    rt.close()
    runner = [sys.executable, "-c", "from casemate.cli.edge import app; app()"]

    def edge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*runner, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert edge("user", "map", "0", "ops", "--role", "super").returncode == 0
    digest = image_id(docker_engine, busybox_image)
    assert edge("image", "allow", BUSYBOX_REPO, "--digest", digest).returncode == 0
    sock = directory / "edge.sock"
    proc = subprocess.Popen(
        [*runner, "serve", "--listen", f"unix://{sock}"]
        + ["--docker", f"unix://{docker_engine.socket_path}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    cli_env["DOCKER_HOST"] = f"unix://{sock}"
    cli_env["DOCKER_CONFIG"] = str(docker_config_dir(directory / "cli", token))

    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [docker_cli(), *args],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("casemate edge proxy listening on unix://"), first
        assert (sock.stat().st_mode & 0o777) == 0o660
        ps = docker("ps")
        assert ps.returncode == 0, ps.stderr
        run = docker("run", "--rm", busybox_image, "true")
        assert run.returncode != 0 and "[cloud_unavailable]" in run.stderr  # no --broker
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    assert proc.returncode == 0, out
    assert "casemate edge proxy stopped" in out
