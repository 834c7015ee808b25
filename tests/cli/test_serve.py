"""``casemate serve`` as a real process: first start, login, raw-HTTP abuse, crash safety."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
from pathlib import Path

import httpx

from tests.cli.conftest import Server, cli_env, run_cli, start_server


def initial_password(server: Server) -> str:
    path = server.data_dir / "initial-admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def test_first_start_prints_url_and_login(server: Server) -> None:
    assert "First start: created the admin user 'admin'" in server.output
    password = initial_password(server)
    assert password not in server.output  # not a terminal: the password went to the 0600 file
    assert stat.S_IMODE((server.data_dir / "master.key").stat().st_mode) == 0o600
    r = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"username": "admin", "password": password}
    )
    assert r.status_code == 200
    assert r.json()["user"]["roles"] == ["admin"]


def test_second_start_creates_no_admin(tmp_path: Path) -> None:
    first = start_server(tmp_path / "d")
    first.stop()
    second = start_server(tmp_path / "d")
    try:
        assert "First start" not in second.output
    finally:
        second.stop()


def test_admin_password_from_environment(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "d", CASEMATE_ADMIN_PASSWORD="quartz-meadow-lantern-9")
    s = start_server(tmp_path / "d", env=env)
    try:
        assert not (tmp_path / "d" / "initial-admin-password").exists()
        r = httpx.post(
            f"{s.url}/api/v1/auth/login",
            json={"username": "admin", "password": "quartz-meadow-lantern-9"},
        )
        assert r.status_code == 200
    finally:
        s.stop()


def test_weak_admin_password_refused_at_start(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "d", CASEMATE_ADMIN_PASSWORD="changeme")
    r = run_cli("serve", "--listen", "127.0.0.1:0", data_dir=tmp_path / "d", env=env)
    assert r.returncode == 1
    assert r.stderr.startswith("casemate: error: CASEMATE_ADMIN_PASSWORD")
    assert "Traceback" not in r.stderr and "changeme" not in r.stderr


def test_port_in_use_is_one_clear_line(tmp_path: Path, server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    r = run_cli("serve", "--listen", f"127.0.0.1:{port}", data_dir=tmp_path / "other")
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr


def raw(server: Server, request: bytes) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_ambiguous_framing_is_refused(server: Server) -> None:
    body = b'{"username":"admin","password":"x"}'
    two_lengths = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (len(body), len(body) - 5, body)
    )  # (identical repeated values are one value per RFC 9110; differing ones are ambiguous)
    assert raw(server, two_lengths).split(b" ", 2)[1] == b"400"
    both = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"0\r\n\r\n"
    )
    status = raw(server, both).split(b" ", 2)[1]
    assert status in (b"400", b"422")  # refused either by the HTTP parser or as an empty body
    garbage = raw(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    assert garbage == b"" or garbage.split(b" ", 2)[1] == b"400"
    assert httpx.get(server.url + "/healthz").status_code == 200  # still serving


def test_kill_during_writes_loses_no_committed_audit_event(server: Server) -> None:
    password = initial_password(server)
    token = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"username": "admin", "password": password}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(prefix: str) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=5) as c:
            i = 0
            while not stop.is_set():
                name = f"{prefix}{i}"
                try:
                    r = c.post("/api/v1/users", json={"username": name})
                except httpx.TransportError:
                    return
                if r.status_code == 201:
                    acknowledged.append(name)
                i += 1

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b", "c")]
    for t in threads:
        t.start()
    while len(acknowledged) < 30:
        threading.Event().wait(0.02)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join()

    verify = run_cli("audit", "verify", data_dir=server.data_dir)
    assert verify.returncode == 0, verify.stderr
    exported = run_cli("audit", "export", "--kind", "identity.user", data_dir=server.data_dir)
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    created = {json.loads(r["body"])["details"]["username"] for r in records}
    missing = set(acknowledged) - created
    assert not missing, f"acknowledged but not audited: {sorted(missing)[:5]}"


def test_audit_records_are_forwarded_to_syslog(tmp_path: Path) -> None:
    received = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            while b"server.started" not in received:
                data = conn.recv(65536)
                if not data:
                    return
                received.extend(data)

    t = threading.Thread(target=accept)
    t.start()
    env = cli_env(tmp_path / "d", CASEMATE_SYSLOG_TARGET=f"127.0.0.1:{port}")
    s = start_server(tmp_path / "d", env=env)
    try:
        t.join(30)
    finally:
        s.stop()
        listener.close()
    text = received.decode("utf-8", "replace")
    # RFC 6587 octet counting, RFC 5424 header with structured data naming seq and hash
    length, _, rest = text.partition(" ")
    assert length.isdigit() and rest.startswith("<")
    assert rest.startswith("<109>1 ") and '[casemate@32473 seq="1"' in rest
    assert "identity.user" in text and "server.started" in text
