"""``casemate doctor`` on real data directories, a real TLS server standing in for a cluster's
API server (with a Date header 5 minutes off, then right), and a cluster nobody answers for."""

from __future__ import annotations

import http.server
import os
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from casemate.cli.doctor import run_checks
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.k8s.clusters import Clusters
from casemate.testenv.pki import _write_pki
from tests.cli.conftest import cli_env, run_cli

PASSWORD = "correct-horse-battery-staple-42"


class Apiserver(http.server.BaseHTTPRequestHandler):
    skew = 0.0

    def do_GET(self) -> None:
        import time

        self.send_response_only(401)
        self.send_header("Date", formatdate(time.time() + type(self).skew, usegmt=True))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    ca = _write_pki(tmp_path / "pki")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Apiserver)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "pki" / "apiserver.crt", tmp_path / "pki" / "apiserver.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_doctor_names_each_problem_and_its_fix(
    tmp_path: Path, apiserver: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    r = run_cli("doctor", data_dir=data)
    assert r.returncode == 1, r.stdout
    assert f"FAIL  data directory: {data} does not exist" in r.stdout
    assert "fix: start the gateway once" in r.stdout and "Traceback" not in r.stderr

    settings = load_settings(data_dir=data, admin_password=PASSWORD)
    runtime = open_runtime(settings, create=True)
    server, ca = apiserver
    clusters = Clusters(runtime.db, runtime.vault, runtime.audit)
    clusters.register_cluster("good", server, ca, by=None, check=False)
    clusters.register_cluster(
        "gone", f"https://127.0.0.1:{closed_port()}", ca, by=None, check=False
    )
    runtime.close()

    for name in list(os.environ):
        if name.startswith("CASEMATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CASEMATE_KUBEPROXY_LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("CASEMATE_LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no kubectl, no helm
    Apiserver.skew = 300.0
    checks = {c.name: c for c in run_checks(data)}
    assert checks["database"].status == "ok"
    assert checks["vault key"].status == "ok"
    assert checks["kubectl"].status == "fail" and "CASEMATE_KUBECTL_PATH" in checks["kubectl"].fix
    assert checks["helm"].status == "fail" and "install helm" in checks["helm"].fix
    assert checks["cluster good"].status == "ok"
    clock = checks["clock vs good"]
    # The Date header has whole seconds, so a 300 s skew reads as 299 to 301 s.
    found = re.search(r"clock is \+(\d+) s off", clock.detail)
    assert clock.status == "fail" and found is not None, clock.detail
    assert 298 <= int(found.group(1)) <= 302, clock.detail
    assert checks["cluster gone"].status == "fail"
    assert "cannot reach" in checks["cluster gone"].detail

    Apiserver.skew = 0.0
    checks = {c.name: c for c in run_checks(data)}
    assert checks["clock vs good"].status == "ok"

    (data / "master.key").chmod(0o644)
    checks = {c.name: c for c in run_checks(data)}
    assert checks["vault key"].status == "fail" and "chmod 600" in checks["vault key"].fix
    (data / "master.key").chmod(0o600)

    # through the command: kubectl found on the real PATH with its version, exit 1 (helm, gone)
    env = cli_env(data, CASEMATE_LISTEN="127.0.0.1:0")
    r = run_cli("doctor", data_dir=data, env=env)
    assert r.returncode == 1
    assert "ok    kubectl:" in r.stdout or "FAIL  kubectl:" in r.stdout
    assert "FAIL  cluster gone: cannot reach" in r.stdout
