"""The user-side CLI (``casemate login``, ``exec``, ``connect``, ``kubeconfig``, ``session``)
as a user runs it: the real ``casemate`` binary in a subprocess, talking over HTTP to a real
server. The end-to-end tests run a gateway in front of the real test cluster (uvicorn in a
thread, the user ``alice`` granted namespace A through a system account); the others run
``casemate serve`` or no server at all."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest
import uvicorn
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from casemate.bastion.runner import Tools
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.gateway.service import Gateway
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Clusters
from casemate.server.app import create_app
from casemate.testenv.kube import LocalCluster, find_binaries
from tests.cli.conftest import CASEMATE, Server, cli_env, free_port, start_server
from tests.gateway.conftest import PASSWORD, bastion_namespaces, principal

__all__ = ["bastion_namespaces"]  # the module-scoped fixture, used here

_BINARY = Path(sys.executable).with_name("casemate")
CLI = [str(_BINARY)] if _BINARY.exists() else CASEMATE


# Running the client ------------------------------------------------------------------------


def client_env(home: Path, url: str | None = None, token: str | None = None) -> dict[str, str]:
    """A user's environment: their own home and config directory, no proxies."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CASEMATE_") and "proxy" not in k.lower()
    }
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    if url is not None:
        env["CASEMATE_URL"] = url
    if token is not None:
        env["CASEMATE_TOKEN"] = token
    return env


def casemate(
    *args: str, env: dict[str, str], stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        start_new_session=True,  # no controlling terminal: prompts read standard input
    )


def one_line_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("casemate: error: "), r.stderr
    return lines[0]


def login_token(url: str, username: str, password: str = PASSWORD, totp: str | None = None) -> str:
    r = httpx.post(
        url + "/api/v1/auth/login",
        json={"username": username, "password": password, "totp": totp},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


# Tests without a cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``casemate serve`` with a known admin password (no cluster behind it)."""
    data = tmp_path_factory.mktemp("serve") / "data"
    s = start_server(data, env=cli_env(data, CASEMATE_ADMIN_PASSWORD=PASSWORD))
    yield s
    s.stop()


def test_login_stores_a_private_token_and_logout_deletes_it(serve: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    r = casemate(
        "login", "--url", serve.url + "/", "--user", "admin", stdin=PASSWORD + "\n", env=env
    )
    assert r.returncode == 0, r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    path = tmp_path / ".config" / "casemate" / "client.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert stored["url"] == serve.url and stored["user"] == "admin"
    token = stored["token"]
    assert token not in r.stdout + r.stderr
    assert httpx.get(serve.url + "/api/v1/auth/me", headers=auth(token)).status_code == 200

    # later commands use the stored server and token
    r = casemate("session", "list", env=env)
    assert r.returncode == 0, r.stderr
    assert "no live sessions" in r.stderr

    r = casemate("logout", env=env)
    assert r.returncode == 0, r.stderr
    assert "token" not in json.loads(path.read_text())
    assert httpx.get(serve.url + "/api/v1/auth/me", headers=auth(token)).status_code == 401
    line = one_line_error(casemate("session", "list", env=env))
    assert "not logged in" in line and "casemate login" in line

    # the next login remembers the server and the user: only the password is asked for
    r = casemate("login", stdin=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.stderr
    assert "as admin" in r.stderr


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_wrong_password_is_one_line_that_mentions_totp(serve: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    r = casemate("login", "--url", serve.url, "--user", "admin", stdin="not-it\n", env=env)
    line = one_line_error(r)
    assert "login failed: invalid credentials" in line and "--totp" in line
    assert "not-it" not in r.stdout + r.stderr
    assert not (tmp_path / ".config" / "casemate" / "client.json").exists()


def test_a_locked_account_says_until_when_once_the_password_is_right(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = cli_env(data, CASEMATE_ADMIN_PASSWORD=PASSWORD, CASEMATE_LOGIN_MAX_FAILURES="2")
    s = start_server(data, env=env)
    try:
        env = client_env(tmp_path)
        login = ("login", "--url", s.url, "--user", "admin")
        for _ in range(2):
            casemate(*login, stdin="not-it-at-all\n", env=env)
        line = one_line_error(casemate(*login, stdin="not-it-at-all\n", env=env))
        assert "invalid credentials" in line  # a wrong password learns nothing more
        line = one_line_error(casemate(*login, stdin=PASSWORD + "\n", env=env))
        assert re.fullmatch(
            r"casemate: error: login failed: account locked until "
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
            line,
        ), line
        assert PASSWORD not in line
    finally:
        s.stop()


def test_login_with_a_totp_code(serve: Server, tmp_path: Path) -> None:
    password = "Granite-Heron-Mosaic-71"
    admin = login_token(serve.url, "admin")
    r = httpx.post(
        serve.url + "/api/v1/users",
        json={"username": "tara", "password": password, "roles": ["operator"]},
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text
    tara = login_token(serve.url, "tara", password)
    secret = httpx.post(serve.url + "/api/v1/auth/totp", headers=auth(tara)).json()["secret"]
    totp = pyotp.TOTP(secret)
    r = httpx.post(
        serve.url + "/api/v1/auth/totp/confirm", json={"code": totp.now()}, headers=auth(tara)
    )
    assert r.status_code == 204, r.text

    env = client_env(tmp_path)
    base = ("login", "--url", serve.url, "--user", "tara")
    line = one_line_error(casemate(*base, stdin=password + "\n", env=env))
    assert "add --totp" in line
    code = totp.at(time.time() + 30)  # the next step: the current one was just used
    r = casemate(*base, "--totp", stdin=f"{password}\n{code}\n", env=env)
    assert r.returncode == 0, r.stderr
    token = json.loads((tmp_path / ".config/casemate/client.json").read_text())["token"]
    me = httpx.get(serve.url + "/api/v1/auth/me", headers=auth(token)).json()
    assert me["username"] == "tara"


def test_a_bad_token_is_one_line_suggesting_login_and_never_echoed(
    serve: Server, tmp_path: Path
) -> None:
    bad = "cms_" + secrets.token_urlsafe(32)
    env = client_env(tmp_path, serve.url, bad)
    for args in (
        ("session", "list"),
        ("exec", "prod", "--", "kubectl", "get", "pods"),
        ("kubeconfig", "prod", "-o", "-"),
        ("session", "watch", "bs-0000"),
    ):
        r = casemate(*args, env=env)
        line = one_line_error(r)
        assert "casemate login" in line, args
        assert bad not in r.stdout + r.stderr
    # a token that cannot be one is refused before anything is sent, and not shown either
    weird = "cms_ab\ncd"
    r = casemate("session", "list", env=client_env(tmp_path, serve.url, weird))
    assert "CASEMATE_TOKEN does not hold a valid token" in one_line_error(r)
    assert "cms_ab" not in r.stderr


def test_server_down_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = client_env(tmp_path, url, "cms_" + secrets.token_urlsafe(32))
    for args in (
        ("exec", "prod", "--", "kubectl get pods"),
        ("session", "list"),
        ("session", "watch", "bs-1"),
        ("login", "--user", "alice"),
    ):
        r = casemate(*args, env=env, stdin="pw\n")
        line = one_line_error(r)
        assert line == f"casemate: error: cannot reach the Casemate server at {url}: " + (
            "connection refused"
        ), (args, line)


def test_the_config_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / ".config" / "casemate" / "client.json"
    path.parent.mkdir(parents=True)
    secret = "cms_" + secrets.token_urlsafe(32)
    path.write_text(json.dumps({"url": "http://127.0.0.1:9", "token": secret}))
    path.chmod(0o644)
    env = client_env(tmp_path)
    r = casemate("session", "list", env=env)
    line = one_line_error(r)
    assert str(path) in line and "0644" in line and "chmod 600" in line
    assert secret not in r.stderr
    # XDG_CONFIG_HOME is honoured
    other = tmp_path / "xdg"
    env["XDG_CONFIG_HOME"] = str(other)
    line = one_line_error(casemate("session", "list", env=env))
    assert "no Casemate server configured" in line
    # a stored token is never sent to another server than its own
    path.chmod(0o600)
    env = client_env(tmp_path, url="http://127.0.0.1:10")
    line = one_line_error(casemate("session", "list", env=env))
    assert "not logged in to http://127.0.0.1:10" in line


def test_connect_needs_a_terminal_and_the_token_is_no_option(tmp_path: Path) -> None:
    env = client_env(tmp_path, "http://127.0.0.1:9", "cms_x")
    line = one_line_error(casemate("connect", "prod", env=env), code=2)
    assert "needs a terminal" in line
    r = casemate("exec", "--token", "cms_x", "prod", "--", "kubectl", env=env)
    assert r.returncode == 2 and "No such option" in r.stderr


# End to end against the real cluster ------------------------------------------------------


@dataclass
class Remote:
    url: str
    rt: Runtime
    gateway: Gateway
    kube: LocalCluster
    cluster: str
    ns_a: str
    ns_b: str
    alice: str  # alice's session token
    admin: str
    bob: str

    def ws(self, path: str, token: str) -> ClientConnection:
        return ws_connect(
            self.url.replace("http://", "ws://") + "/api/v1" + path,
            additional_headers=auth(token),
            proxy=None,
        )


@pytest.fixture(scope="module")
def remote(
    tmp_path_factory: pytest.TempPathFactory,
    kube_cluster: LocalCluster,
    bastion_namespaces: tuple[str, str],
) -> Iterator[Remote]:
    """A server with the gateway in front of the real cluster, in a thread of this process."""
    ns_a, ns_b = bastion_namespaces
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("remote") / "data",
        admin_password=PASSWORD,
        kubeproxy_listen="127.0.0.1:0",
        sqlite_synchronous="NORMAL",
    )
    rt = open_runtime(settings, create=True)
    rt.identity.ensure_first_admin(settings)
    admin = principal(rt, "admin")
    rt.identity.create_user("alice", by=admin, password=PASSWORD, roles=["operator"])
    rt.identity.create_user("bob", by=admin, password=PASSWORD, roles=["operator"])
    clusters = Clusters(rt.db, rt.vault, rt.audit, token_wait=60.0)
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=admin)
    account = f"ops-{secrets.token_hex(3)}"
    clusters.provision_account(
        "test",
        account,
        [ns_a],
        "edit",
        admin=Credential.bearer(kube_cluster.admin_token),
        by=admin,
    )
    clusters.add_grant("test", account, by=admin, user="alice", namespaces=[ns_a])
    bins = find_binaries()
    gateway = Gateway(rt, tools=Tools.find(bins.kubectl, bins.helm), clusters=clusters)
    config = uvicorn.Config(
        create_app(rt, gateway),
        lifespan="on",
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="casemate-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        thread.join(10)
        rt.close()
        pytest.fail("the test server did not start")
    url = f"http://127.0.0.1:{port}"
    try:
        yield Remote(
            url,
            rt,
            gateway,
            kube_cluster,
            "test",
            ns_a,
            ns_b,
            login_token(url, "alice"),
            login_token(url, "admin"),
            login_token(url, "bob"),
        )
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        rt.close()


def configmap(remote: Remote, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    remote.kube.kubectl("-n", remote.ns_a, "create", "configmap", name, "--from-literal=k=v")
    return name


@pytest.mark.k8s
def test_exec_lists_configmaps_in_the_granted_namespace(remote: Remote, tmp_path: Path) -> None:
    name = configmap(remote, "exec")
    env = client_env(tmp_path, remote.url, remote.alice)
    r = casemate("exec", "test", "--", "kubectl", "get", "configmaps", "-o", "name", env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"configmap/{name}" in r.stdout
    r = casemate("exec", "test", "-n", remote.ns_a, "--", "kubectl", "get", "cm", env=env)
    assert r.returncode == 0 and name in r.stdout, (r.stdout, r.stderr)
    assert r.stderr == ""


@pytest.mark.k8s
def test_exec_applies_a_local_manifest_put_into_the_workspace(
    remote: Remote, tmp_path: Path
) -> None:
    env = client_env(tmp_path, remote.url, remote.alice)
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-file\ndata:\n  k: v\n"
    )
    r = casemate(
        "exec", "test", "-F", str(manifest), "--", "kubectl", "apply", "-f", "cm.yaml", env=env
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "configmap/from-file" in r.stdout
    r = casemate("exec", "test", "-F", f"../evil={manifest}", "--", "kubectl", "get", "cm", env=env)
    assert r.returncode == 1 and "relative path" in r.stderr, (r.stdout, r.stderr)


@pytest.mark.k8s
def test_exec_of_a_refused_command_exits_126(remote: Remote, tmp_path: Path) -> None:
    env = client_env(tmp_path, remote.url, remote.alice)
    r = casemate("exec", "test", "--", "kubectl", "delete", "namespace", remote.ns_a, env=env)
    assert r.returncode == 126, (r.stdout, r.stderr)
    assert "refused" in r.stdout
    phase = remote.kube.kubectl("get", "namespace", remote.ns_a, "-o", "jsonpath={.status.phase}")
    assert phase.stdout == "Active"


@pytest.mark.k8s
def test_exec_in_another_namespace_is_forbidden(remote: Remote, tmp_path: Path) -> None:
    env = client_env(tmp_path, remote.url, remote.alice)
    r = casemate("exec", "test", "--", "kubectl", "get", "pods", "-n", remote.ns_b, env=env)
    assert r.returncode not in (0, 126), (r.stdout, r.stderr)
    assert "Forbidden" in r.stdout
    # a session in a namespace outside the grant is refused by the server: one line
    r = casemate("exec", "test", "-n", remote.ns_b, "--", "kubectl", "get", "pods", env=env)
    assert remote.ns_b in one_line_error(r)
    # so is a cluster one has no grant for
    line = one_line_error(casemate("exec", "nope", "--", "kubectl", "get", "pods", env=env))
    assert "casemate: error:" in line


@pytest.mark.k8s
def test_exec_of_one_argument_is_a_command_line_with_a_pipeline(
    remote: Remote, tmp_path: Path
) -> None:
    name = configmap(remote, "pipe")
    env = client_env(tmp_path, remote.url, remote.alice)
    line = f"kubectl get configmaps -o name | grep {name} | wc -l"
    r = casemate("exec", "test", "--", line, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.strip() == "1"


@pytest.mark.k8s
def _ctrl_c_as_at_a_terminal() -> None:
    """The child starts with SIGINT at its default, as under a terminal: a test run started as
    a background job of a script inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_command_on_the_server(remote: Remote, tmp_path: Path) -> None:
    name = configmap(remote, "watch")
    env = client_env(tmp_path, remote.url, remote.alice)
    proc = subprocess.Popen(
        [*CLI, "exec", "test", "--", "kubectl", "get", "configmaps", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=_ctrl_c_as_at_a_terminal,
    )
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 60
        while name.encode() not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read1(4096) or b""
        assert name.encode() in seen
        assert [s.user for s in remote.gateway.live_sessions()].count("alice") >= 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    deadline = time.monotonic() + 20
    while any(s.channel == "exec" for s in remote.gateway.live_sessions()):
        assert time.monotonic() < deadline, "the server did not end the session"
        time.sleep(0.1)


@pytest.mark.k8s
def test_exec_into_a_closed_pipe_stops_quietly(remote: Remote, tmp_path: Path) -> None:
    name = configmap(remote, "epipe")
    proc = subprocess.Popen(
        [*CLI, "exec", "test", "--", "kubectl", "get", "configmaps", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=client_env(tmp_path, remote.url, remote.alice),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        seen = b""
        while name.encode() not in seen:
            chunk = proc.stdout.read1(4096)
            assert chunk, seen
            seen += chunk
        proc.stdout.close()  # like '| head -1'
        configmap(remote, "epipe")  # more output, into the closed pipe
        assert proc.wait(60) == 141
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    deadline = time.monotonic() + 20
    while any(s.channel == "exec" for s in remote.gateway.live_sessions()):
        assert time.monotonic() < deadline, "the server did not end the session"
        time.sleep(0.1)


@pytest.mark.k8s
def test_exec_waits_for_approval_then_runs(remote: Remote, tmp_path: Path) -> None:
    name = f"web-{secrets.token_hex(3)}"
    remote.kube.kubectl(
        "-n", remote.ns_a, "create", "deployment", name, "--image=registry.invalid/web:1"
    )
    env = client_env(tmp_path, remote.url, remote.alice)
    proc = subprocess.Popen(
        [*CLI, "exec", "test", "--", "kubectl", "scale", "deployment", name, "--replicas=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        seen = b""
        while not (m := re.search(rb"waiting for approval \(ticket (\d+)\)", seen)):
            chunk = proc.stdout.read1(4096)
            assert chunk, seen
            seen += chunk
        ticket = int(m.group(1))
        assert proc.poll() is None  # it waits
        r = httpx.post(
            f"{remote.url}/api/v1/reviews/{ticket}/approve", headers=auth(remote.admin), timeout=30
        )
        assert r.status_code == 200, r.text
        assert proc.wait(60) == 0
        rest = proc.stdout.read()
        assert proc.stderr is not None
        # not a terminal: the notice is also on standard error, where a person looks
        assert f"waiting for approval (ticket {ticket})" in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert b"scaled" in seen + rest
    replicas = remote.kube.kubectl(
        "-n", remote.ns_a, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}"
    )
    assert replicas.stdout == "0"


@pytest.mark.k8s
def test_kubeconfig_works_through_the_proxy_within_the_grant(
    remote: Remote, tmp_path: Path
) -> None:
    name = configmap(remote, "kc")
    env = client_env(tmp_path, remote.url, remote.alice)
    path = tmp_path / "kc.yaml"
    r = casemate("kubeconfig", "test", "-o", str(path), "--ttl", "1h", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "valid until" in r.stderr and str(path) in r.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kubectl = str(find_binaries().kubectl)

    def k(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "--kubeconfig", str(path), *args], capture_output=True, text=True, timeout=60
        )

    got = k("get", "configmaps", "-n", remote.ns_a, "-o", "name")
    assert got.returncode == 0 and f"configmap/{name}" in got.stdout, got.stderr
    got = k("get", "pods", "-n", remote.ns_b)
    assert got.returncode != 0 and "Forbidden" in got.stderr

    before = path.read_bytes()
    line = one_line_error(casemate("kubeconfig", "test", "-o", str(path), env=env), code=2)
    assert "exists" in line and "--force" in line
    assert path.read_bytes() == before
    r = casemate("kubeconfig", "test", "-o", str(path), "--force", env=env)
    assert r.returncode == 0, r.stderr
    assert path.read_bytes() != before and stat.S_IMODE(path.stat().st_mode) == 0o600

    r = casemate("kubeconfig", "test", "-o", "-", env=env)
    assert r.returncode == 0 and "apiVersion: v1" in r.stdout and "valid until" in r.stderr
    line = one_line_error(casemate("kubeconfig", "test", "--ttl", "2d", env=env), code=2)
    assert "at most 24h" in line


def receive_until(ws: ClientConnection, needle: str, timeout: float = 60) -> str:
    """Terminal output until ``needle`` shows up."""
    text = ""
    deadline = time.monotonic() + timeout
    while needle not in text:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never came; got {text!r}"
        msg = json.loads(ws.recv(timeout=left))
        if msg["type"] == "output":
            text += msg["data"]
        elif msg["type"] == "exit":
            text += f"<exit {msg['reason']}>"
    return text


@pytest.mark.k8s
def test_sessions_listed_shared_watched_and_terminated(remote: Remote, tmp_path: Path) -> None:
    name = configmap(remote, "live")
    alice = client_env(tmp_path, remote.url, remote.alice)
    admin = client_env(tmp_path, remote.url, remote.admin)
    with remote.ws("/clusters/test/terminal?cols=100&rows=30", remote.alice) as ws:
        banner = receive_until(ws, "$ ")
        m = re.search(r"Casemate session (bs-[0-9a-f]+)", banner)
        assert m, banner
        sid = m.group(1)

        r = casemate("session", "list", env=alice)
        assert r.returncode == 0, r.stderr
        row = next(line for line in r.stdout.splitlines() if sid in line)
        assert "alice" in row and "web" in row and remote.ns_a in row
        r = casemate("session", "list", "--json", env=admin)
        assert sid in [s["session_id"] for s in json.loads(r.stdout)]
        # bob sees nothing until alice shares it with him; then he may watch it
        bob = client_env(tmp_path, remote.url, remote.bob)
        assert sid not in casemate("session", "list", env=bob).stdout
        line = one_line_error(casemate("session", "watch", sid, env=bob))
        assert "may not watch" in line
        r = casemate("session", "share", sid, "bob", env=alice)
        assert r.returncode == 0, r.stderr
        assert sid in casemate("session", "list", env=bob).stdout

        watcher = subprocess.Popen(
            [*CLI, "session", "watch", sid],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=bob,
            start_new_session=True,
        )
        try:
            live = remote.gateway.get(sid)
            deadline = time.monotonic() + 60
            while not live._watchers.queues:
                assert watcher.poll() is None, watcher.communicate()
                assert time.monotonic() < deadline, "the watcher never connected"
                time.sleep(0.05)
            ws.send(json.dumps({"type": "input", "data": "kubectl get configmaps -o name\r"}))
            receive_until(ws, f"configmap/{name}")

            # only admins terminate
            line = one_line_error(casemate("session", "terminate", sid, env=alice))
            assert "only admins" in line
            r = casemate("session", "terminate", sid, env=admin)
            assert r.returncode == 0, r.stderr
            assert "<exit terminated>" in receive_until(ws, "<exit")
            watched, why = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.communicate()
        assert watcher.returncode == 0, why
        assert f"configmap/{name}" in watched and "session ended" in why
    assert sid not in casemate("session", "list", env=admin).stdout
    line = one_line_error(casemate("session", "terminate", sid, env=admin))
    assert "no live session" in line


def test_a_watcher_that_leaves_a_quiet_session_is_dropped_at_once(remote: Remote) -> None:
    with remote.ws("/clusters/test/terminal?cols=100&rows=30", remote.alice) as ws:
        banner = receive_until(ws, "$ ")
        m = re.search(r"Casemate session (bs-[0-9a-f]+)", banner)
        assert m, banner
        live = remote.gateway.get(m.group(1))
        with remote.ws(f"/sessions/{live.id}/watch", remote.admin):
            deadline = time.monotonic() + 30
            while len(live._watchers.queues) != 1:
                assert time.monotonic() < deadline, "the watcher never connected"
                time.sleep(0.05)
        # the session stays quiet: nothing is published that would reveal the dead watcher
        deadline = time.monotonic() + 5
        while live._watchers.queues:
            assert time.monotonic() < deadline, "the departed watcher is still queued"
            time.sleep(0.05)
        ws.send(json.dumps({"type": "input", "data": "exit\r"}))


class Pty:
    """``casemate ARGS`` on a pseudo-terminal of 100x30 (no controlling terminal)."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.master, self.slave = os.openpty()
        self.resize(100, 30)
        self.settings = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [*CLI, *args],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=env,
            start_new_session=True,
        )
        self.screen = b""

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, needle: bytes, after: bytes = b"\n", timeout: float = 60) -> None:
        """Until ``needle`` shows up after (the first) ``after``."""
        deadline = time.monotonic() + timeout
        while after not in self.screen or needle not in self.screen.partition(after)[2]:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, self.screen.decode(errors="replace")
            self._read(min(left, 0.5))

    def _read(self, timeout: float) -> bool:
        if not select.select([self.master], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return False
        self.screen += chunk
        return bool(chunk)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 30) -> int:
        """Wait for the exit code; the rest of the output is read; settings must be back."""
        try:
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                self._read(0.2)
            code = self.proc.wait(1)
            while self._read(0.2):
                pass
            assert termios.tcgetattr(self.slave) == self.settings, "terminal not restored"
            assert b"Traceback" not in self.screen
            return code
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)
            os.close(self.slave)

    def text(self) -> str:
        return self.screen.decode(errors="replace")


def test_connect_with_a_bad_token_restores_the_terminal(serve: Server, tmp_path: Path) -> None:
    bad = "cms_" + secrets.token_urlsafe(32)
    tty = Pty("connect", "prod", env=client_env(tmp_path, serve.url, bad))
    assert tty.finish() == 1
    lines = tty.text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("casemate: error: "), lines
    assert "casemate login" in lines[0] and bad not in tty.text()


@pytest.mark.k8s
def test_a_terminal_client_outside_the_fixed_set_is_refused(remote: Remote) -> None:
    from websockets.exceptions import ConnectionClosed

    with remote.ws("/clusters/test/terminal?client=kubectl", remote.alice) as ws:
        first = json.loads(ws.recv(timeout=60))
        assert first == {"type": "exit", "reason": "client must be one of: cli, web"}
        with pytest.raises(ConnectionClosed) as exc:
            ws.recv(timeout=60)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 4400
    assert exc.value.rcvd.reason == "client must be one of: cli, web"
    assert not [s for s in remote.gateway.live_sessions() if s.channel == "kubectl"]


def test_connect_is_an_interactive_terminal(remote: Remote, tmp_path: Path) -> None:
    name = configmap(remote, "tty")
    env = client_env(tmp_path, remote.url, remote.alice)
    tty = Pty("connect", "test", env=env)
    try:
        prompt = f"alice@test:{remote.ns_a}$ ".encode()
        tty.read_until(prompt)
        # the local terminal is raw while connected: no local echo, no line editing
        assert not termios.tcgetattr(tty.slave)[3] & (termios.ECHO | termios.ICANON)
        tty.resize(120, 40)
        tty.proc.send_signal(signal.SIGWINCH)
        tty.write(b"kubectl get configmaps\r")
        tty.read_until(prompt, after=name.encode())
        tty.write(b"exit\r")
    except BaseException:
        tty.proc.kill()
        tty.finish()
        raise
    assert tty.finish() == 0, tty.text()
    # the recording has the starting size and the resize
    recordings = remote.rt.settings.data_dir / "recordings"
    sid = re.search(r"Casemate session (bs-[0-9a-f]+)", tty.text())
    assert sid
    (cast,) = [p for p in recordings.rglob("*") if sid.group(1) in p.name]
    lines = [json.loads(line) for line in cast.read_text().splitlines()]
    assert (lines[0]["width"], lines[0]["height"]) == (100, 30)
    assert any(e[1] == "r" and e[2] == "120x40" for e in lines[1:]), lines
    # casemate connect labels its session cli (the web UI's stay web)
    started = remote.rt.audit.query(kind="bastion.session.started", limit=10_000)
    (entry,) = [e for e in started if e.details.get("session_id") == sid.group(1)]
    assert entry.details["channel"] == "cli"

    # refused by the server (no grant for that namespace): one line, terminal restored
    tty = Pty("connect", "test", "-n", remote.ns_b, env=env)
    assert tty.finish() == 1
    lines = tty.text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("casemate: error: "), lines
    assert remote.ns_b in lines[0]
