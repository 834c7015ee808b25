"""Issue 16 for the edge: registration is retried, and a broker outage heals by itself.

``casemate edge serve`` runs as a process in front of the real test dockerd, on a private
mosquitto, with the real cloud service *not yet running*: privileged calls are refused (fail
closed) saying the gateway waits for its registration, and ``casemate edge status`` says what
it waits for. Once the cloud service starts, the gateway registers without a restart and the
calls go through. Then the broker is restarted: during the outage the calls are refused within
the authorization timeout, and afterwards they work again, all without touching the gateway.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.core.vault import Keyring, MasterKey, Vault, write_key_file
from casemate.edge.cloud import CloudRegistry, CloudService, Effect
from casemate.edge.cloudlink import BrokerConfig, LinkState, retry_delay, waiting_for
from casemate.testenv.docker import DockerEngine, docker_cli
from tests.edge.test_cloudlink import private_broker
from tests.edge.test_conformance import dockerd_state
from tests.edge.test_proxy import LoopThread, docker_config_dir, short_tmpdir

BUSYBOX_REPO = "casemate-test/busybox"
AUTHZ_TIMEOUT = 2.0
T = TypeVar("T")


def wait_for(what: Callable[[], T | None], timeout: float = 45.0, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last: {value!r}")
        time.sleep(every)


# Pure ------------------------------------------------------------------------------------------


def test_retry_delay_doubles_up_to_the_maximum() -> None:
    assert [retry_delay(n, 1.0, 60.0) for n in (1, 2, 3, 6, 7, 100)] == [1, 2, 4, 32, 60, 60]


def _state(**kw: Any) -> LinkState:
    base: dict[str, Any] = {
        "gateway_id": "gw-1",
        "broker": "mqtt:1883",
        "connected": True,
        "status": "approved",
        "registered": True,
        "registering": False,
    }
    return LinkState(**{**base, **kw})


def test_waiting_for() -> None:
    assert waiting_for(_state()) == ""
    assert waiting_for(_state(connected=False)).startswith("the MQTT broker at mqtt:1883")
    at = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    waiting = waiting_for(
        _state(
            status="unregistered",
            registered=False,
            registering=True,
            failures=2,
            last_error="the cloud did not answer the registration within 10 s",
            retry_at=at,
        )
    )
    assert waiting == (
        "registration with the cloud (2 attempt(s) failed, last: the cloud did not answer the "
        "registration within 10 s; next attempt at 12:00:05 UTC)"
    )
    assert "first attempt" in waiting_for(
        _state(status="unregistered", registered=False, registering=True)
    )
    assert "restart" in waiting_for(_state(status="unregistered", registered=False))
    assert waiting_for(_state(status="pending")).startswith("approval of this gateway")
    assert waiting_for(_state(status="rejected", last_error="revoked")).startswith("nothing")


# The process -----------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.mqtt
def test_registers_when_the_cloud_comes_up_and_survives_a_broker_restart(
    docker_engine: DockerEngine, busybox_image: str
) -> None:
    directory = short_tmpdir("cmr-")
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
    image_id = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", busybox_image)
    assert edge("image", "allow", BUSYBOX_REPO, "--digest", image_id.stdout.strip()).returncode == 0

    # The cloud's side exists (an allow-all rule, an enrolment token) but does not serve yet.
    key_file = directory / "cloud.key"
    write_key_file(key_file, [MasterKey.generate()])
    cloud_db = Database.open(f"sqlite:///{directory / 'cloud.db'}")
    cloud_audit = AuditLog(cloud_db)
    registry = CloudRegistry(
        cloud_db, Vault(cloud_db, Keyring.from_file(key_file, create=False)), cloud_audit
    )
    registry.add_rule(effect=Effect.ALLOW, by="test", note="allow everything")
    env["CASEMATE_EDGE_ENROL_TOKEN"] = registry.create_enrolment_token(by="test")
    gateway_id = f"gw-{uuid.uuid4().hex[:10]}"

    sock = directory / "edge.sock"
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
            stdin=subprocess.DEVNULL,
        )

    def status(code: int) -> dict[str, Any] | None:
        done = edge("status", "--json")
        return json.loads(done.stdout) if done.returncode == code else None

    loop = LoopThread()
    service: CloudService | None = None
    proc: subprocess.Popen[str] | None = None
    output = directory / "serve.log"
    name = f"cmr-{uuid.uuid4().hex[:8]}"
    with private_broker() as broker, output.open("w") as log_file:
        try:
            proc = subprocess.Popen(
                [*runner, "serve", "--listen", f"unix://{sock}"]
                + ["--docker", f"unix://{docker_engine.socket_path}"]
                + ["--broker", f"{broker.host}:{broker.port}", "--gateway-id", gateway_id]
                + ["--authz-timeout", str(AUTHZ_TIMEOUT), "--register-timeout", "1"]
                + ["--register-retry-max", "1"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
            wait_for(lambda: sock.exists())

            # No cloud: waiting for the registration, privileged calls refused, dockerd untouched.
            waiting = wait_for(
                lambda: (doc := status(2)) and doc["gateway"]["registration_failures"] >= 1 and doc
            )
            assert waiting["running"] and waiting["gateway"]["status"] == "unregistered"
            assert waiting["waiting_for"].startswith("registration with the cloud")
            assert "did not answer the registration within 1 s" in waiting["waiting_for"]
            assert waiting["privileged_calls"] == "refused"
            text = edge("status")
            assert text.returncode == 2
            assert "waiting for: registration with the cloud" in text.stdout, text.stdout
            before = dockerd_state(docker_engine)
            refused = docker("run", "--rm", "--name", name, busybox_image, "true")
            assert refused.returncode != 0
            assert (
                "this gateway is not registered with the cloud; waiting for registration "
                "with the cloud"
            ) in refused.stderr, refused.stderr
            assert "[cloud_unavailable]" in refused.stderr
            assert dockerd_state(docker_engine) == before
            assert docker("ps").returncode == 0  # reads need no cloud

            # The cloud comes up late: the gateway registers by itself.
            service = CloudService(
                registry,
                BrokerConfig(host=broker.host, port=broker.port, timeout=5.0),
                client_id=f"cloud-{uuid.uuid4().hex[:8]}",
                persistent_session=False,
                poll_interval=0.05,
                reconnect_max=0.3,
            )
            loop.run(service.start())
            ready = wait_for(lambda: status(0), timeout=30)
            assert ready["gateway"]["status"] == "approved" and ready["waiting_for"] == ""
            assert proc.poll() is None  # the same process: no restart
            ran = docker("run", "--rm", busybox_image, "true")
            assert ran.returncode == 0, ran.stderr

            # The broker restarts: refused within the timeout while it is away, then healed.
            broker.stop()
            offline = wait_for(lambda: status(2), timeout=15)
            assert offline["waiting_for"].startswith(f"the MQTT broker at {broker.host}:")
            started = time.monotonic()
            refused = docker("create", "--name", name, busybox_image, "true")
            elapsed = time.monotonic() - started
            assert refused.returncode != 0 and "[cloud_unavailable]" in refused.stderr
            assert elapsed < AUTHZ_TIMEOUT + 3, elapsed
            broker.resume()
            wait_for(lambda: status(0), timeout=30)
            ran = wait_for(
                lambda: (r := docker("run", "--rm", busybox_image, "true")).returncode == 0 and r,
                timeout=20,
                every=0.5,
            )
            assert ran.returncode == 0
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            if service is not None:
                loop.run(service.stop())
            loop.close()
            cloud_audit.close()
            cloud_db.dispose()
            docker_engine.docker("rm", "-f", name, check=False)
    log_text = output.read_text()
    stopped = edge("status")
    shutil.rmtree(directory, ignore_errors=True)
    assert proc is not None and proc.returncode == 0, log_text
    assert token not in log_text and env["CASEMATE_EDGE_ENROL_TOKEN"] not in log_text
    assert "retrying in" in log_text  # the backoff was logged
    assert stopped.returncode == 1 and "not running" in stopped.stdout  # the file is gone
