"""The edge proxy driver against a scripted fake dockerd: identity, token handling, framing,
streaming without buffering, hijacks, errors, audit-before-forward, secrets.

The harness at the top (:class:`LoopThread`, :class:`ProxyStack`, :class:`FakeCloud`, raw
clients) is shared with test_e2e.py and test_conformance.py, which run the proxy in front of
the real test dockerd.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from casemate.core.audit import AuditEntry, AuditLog
from casemate.core.db import Database
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.core.vault import Keyring, MasterKey, Vault, write_key_file
from casemate.edge import messages as m
from casemate.edge.cloud import CloudRegistry, CloudService, Effect
from casemate.edge.cloudlink import BrokerConfig, CloudLink, CloudLinkConfig
from casemate.edge.decide import RiskPolicy
from casemate.edge.proxy import EdgeProxy, ProxyConfig
from casemate.edge.store import ProxyStore
from casemate.errors import ConfigError
from casemate.testenv.docker import docker_cli
from casemate.testenv.services import MosquittoBroker

T = TypeVar("T")

SUPER_USER = "admin1"
ORDINARY_USER = "alice"
NOBODY_UID = 65534
TOKEN_HEADER = "X-Casemate-Token"
IMAGE_A = "sha256:" + "a" * 64


# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------


def short_tmpdir(prefix: str) -> Path:
    """A fresh directory under /tmp that other accounts (nobody) can traverse."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o755)
    return directory


class LoopThread:
    """An asyncio loop on its own thread: the proxy (and cloud) run there while sync tests run
    the docker CLI and blocking sockets against them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="edge-test-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


class FakeCloud:
    """A CloudAuthorizer double: records requests, answers allow or deny."""

    def __init__(self, allow: bool = False) -> None:
        self.allow = allow
        self.requests: list[m.AuthorizationRequest] = []

    def new_request(self, **fields: Any) -> m.AuthorizationRequest:
        fields["details"] = fields.get("details") or {}
        return m.AuthorizationRequest(
            request_id=str(uuid.uuid4()), gateway_id="gw-fake", ts=datetime.now(UTC), **fields
        )

    async def authorize(self, request: m.AuthorizationRequest) -> m.Decision:
        self.requests.append(request)
        now = datetime.now(UTC)
        return m.Decision(
            request_id=request.request_id,
            gateway_id=request.gateway_id,
            request_hash=m.request_hash(request),
            allowed=self.allow,
            held=False,
            cacheable=False,
            reason="fake cloud says " + ("yes" if self.allow else "no"),
            rule="rule:fake",
            issued_at=now,
            valid_until=now + timedelta(seconds=60),
        )


def docker_config_dir(directory: Path, token: str | None) -> Path:
    """A DOCKER_CONFIG directory whose config.json makes the CLI send ``token``."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    config: dict[str, Any] = {}
    if token is not None:
        config["HttpHeaders"] = {TOKEN_HEADER: token}
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return directory


CloudMode = Literal["none", "fake", "service"]


class ProxyStack:
    """A Casemate installation with the edge proxy on a unix socket (mode 0666) in front of
    ``docker_socket``, uid 0 mapped to the super user ``admin1`` (operator, with a write
    token) and uid 65534 (nobody) to the ordinary user ``alice``.

    ``cloud``: ``none`` (no link: privileged calls fail closed), ``fake`` (:class:`FakeCloud`),
    or ``service`` (a real CloudService with its own database on ``broker``, an allow-all rule,
    and a registered CloudLink).
    """

    def __init__(
        self,
        docker_socket: Path,
        *,
        cloud: CloudMode = "fake",
        broker: MosquittoBroker | None = None,
        authz_timeout: float = 3.0,
        policy: RiskPolicy | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.dir = short_tmpdir("cmp-")
        self.docker_socket = docker_socket
        self.cloud_mode = cloud
        self.broker = broker
        self.authz_timeout = authz_timeout
        self.policy = policy or RiskPolicy(required_scope="write")
        self.socket_path = self.dir / "proxy.sock"
        self.loop = LoopThread()
        self.fake_cloud = FakeCloud()
        self.service: CloudService | None = None
        self.link: CloudLink | None = None
        self.registry: CloudRegistry | None = None
        self._cloud_db: Database | None = None
        self._cloud_audit: AuditLog | None = None
        self.data_dir = data_dir or self.dir / "data"
        self.rt: Runtime = open_runtime(load_settings(data_dir=self.data_dir), create=True)
        ident = self.rt.identity
        ident.create_user(SUPER_USER, by=None, password=None, roles=["operator"])
        ident.create_user(ORDINARY_USER, by=None, password=None, roles=["operator"])
        ident.create_user("auditor1", by=None, password=None, roles=["auditor"])
        hour = timedelta(hours=1)
        self.super_token = ident.issue_token(
            SUPER_USER, "docker", ["read", "write"], hour, by=None
        ).token
        self.read_token = ident.issue_token(SUPER_USER, "ro", ["read"], hour, by=None).token
        self.alice_token = ident.issue_token(
            ORDINARY_USER, "a", ["read", "write"], hour, by=None
        ).token
        self.store = ProxyStore(self.rt.db, self.rt.audit)
        self.store.map_user(0, SUPER_USER, "super", by="test")
        self.store.map_user(NOBODY_UID, ORDINARY_USER, "ordinary", by="test")
        self.proxy = EdgeProxy(
            ProxyConfig(
                listen=self.socket_path,
                docker=docker_socket,
                socket_mode=0o666,
                policy=self.policy,
                refresh_interval=0.2,
                linger=1.0,
            ),
            store=self.store,
            identity=ident,
            audit=self.rt.audit,
        )
        self.home = self.dir / "home"
        self.home.mkdir(mode=0o777)
        self.home.chmod(0o777)

    # lifecycle

    def start(self) -> ProxyStack:
        try:
            self.loop.run(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        if self.cloud_mode == "fake":
            self.proxy.cloud = self.fake_cloud
        elif self.cloud_mode == "service":
            await self._start_cloud()
        await self.proxy.start()

    async def _start_cloud(self) -> None:
        assert self.broker is not None
        key_file = self.dir / "cloud.key"
        write_key_file(key_file, [MasterKey.generate()])
        self._cloud_db = Database.open(f"sqlite:///{self.dir / 'cloud.db'}")
        self._cloud_audit = AuditLog(self._cloud_db)
        vault = Vault(self._cloud_db, Keyring.from_file(key_file, create=False))
        self.registry = CloudRegistry(self._cloud_db, vault, self._cloud_audit)
        self.registry.add_rule(effect=Effect.ALLOW, by="test", note="auto-allow")
        broker = BrokerConfig(host=self.broker.host, port=self.broker.port, timeout=5.0)
        self.service = CloudService(
            self.registry,
            broker,
            client_id=f"cloud-{uuid.uuid4().hex[:8]}",
            persistent_session=False,
            poll_interval=0.05,
        )
        await self.service.start()
        gateway_id = f"gw-{uuid.uuid4().hex[:10]}"
        self.gateway_id = gateway_id
        self.link = CloudLink(
            self.rt.db,
            self.rt.vault,
            CloudLinkConfig(
                gateway_id=gateway_id,
                mac_address="02:42:ac:11:00:02",
                broker=broker,
                authz_timeout=self.authz_timeout,
                reconnect_max=0.3,
            ),
        )
        await self.link.start()
        assert await self.link.wait_connected(10)
        token = self.registry.create_enrolment_token(by="test")
        assert await self.link.register(token) == "approved"
        self.proxy.cloud = self.link

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run(self._stop())
        self.loop.close()
        self.rt.close()
        if self._cloud_audit is not None:
            self._cloud_audit.close()
        if self._cloud_db is not None:
            self._cloud_db.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _stop(self) -> None:
        await self.proxy.stop()
        if self.link is not None:
            await self.link.stop()
        if self.service is not None:
            await self.service.stop()

    def stop_cloud_service(self) -> None:
        if self.service is not None:
            self.loop.run(self.service.stop())

    # clients

    def reload(self) -> None:
        self.loop.run(self.proxy.reload())

    def map_uid0(self, role: Literal["super", "ordinary"]) -> None:
        user = SUPER_USER if role == "super" else ORDINARY_USER
        self.store.map_user(0, user, role, by="test")
        self.reload()

    def docker_env(self, name: str, token: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = f"unix://{self.socket_path}"
        env["DOCKER_CONFIG"] = str(docker_config_dir(self.dir / f"cli-{name}", token))
        env["HOME"] = str(self.home)
        return env

    def docker(
        self,
        *args: str,
        user: Literal["super", "ordinary"] = "super",
        token: str | None | Literal["default"] = "default",
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI through the proxy, as root (super) or nobody (ordinary)."""
        if token == "default":
            token = self.super_token if user == "super" else self.alice_token
        name = f"{user}-{abs(hash(token)) % 10**8}"
        kwargs: dict[str, Any] = {}
        if user == "ordinary":
            kwargs = {"user": NOBODY_UID, "group": NOBODY_UID, "extra_groups": []}
        return subprocess.run(
            [docker_cli(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.docker_env(name, token),
            timeout=timeout,
            check=False,
            cwd=self.dir,
            stdin=None if input is not None else subprocess.DEVNULL,
            **kwargs,
        )

    def docker_popen(
        self, *args: str, user: Literal["super", "ordinary"] = "super"
    ) -> subprocess.Popen[str]:
        token = self.super_token if user == "super" else self.alice_token
        kwargs: dict[str, Any] = {}
        if user == "ordinary":
            kwargs = {"user": NOBODY_UID, "group": NOBODY_UID, "extra_groups": []}
        return subprocess.Popen(
            [docker_cli(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.docker_env(f"{user}-popen", token),
            cwd=self.dir,
            **kwargs,
        )

    def audit(self, after: int = 0) -> list[AuditEntry]:
        return self.rt.audit.query(kind="edge.docker", after_seq=after, limit=10000)

    def audit_mark(self) -> int:
        return self.rt.audit.head_seq()

    def exchange(self, data: bytes, *, token: str | None = None, timeout: float = 30.0) -> Response:
        """Send raw bytes on a fresh connection (adding the token header after the request
        line if given) and read one response."""
        if token is not None and b"\r\n" in data:
            line, rest = data.split(b"\r\n", 1)
            data = line + f"\r\n{TOKEN_HEADER}: {token}\r\n".encode() + rest
        return raw_exchange(self.socket_path, data, timeout=timeout)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        try:
            doc = self.json()
        except ValueError:
            return ""
        return str(doc.get("message", "")) if isinstance(doc, dict) else ""


def parse_response(buf: bytes, *, head_only: bool = False) -> tuple[Response | None, int]:
    """One response from ``buf`` if complete: (response, bytes used)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None, 0
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    rest = buf[end + 4 :]
    if head_only or 100 <= status < 200 or status in (204, 304):
        return Response(status, headers, b"", buf[: end + 4]), end + 4
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) < n:
            return None, 0
        return Response(status, headers, rest[:n], buf[: end + 4]), end + 4 + n
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        pos = 0
        while True:
            line_end = rest.find(b"\r\n", pos)
            if line_end < 0:
                return None, 0
            size = int(rest[pos:line_end].split(b";")[0], 16)
            if size == 0:
                if rest[line_end + 2 : line_end + 4] != b"\r\n":
                    return None, 0
                return Response(
                    status, headers, bytes(body), buf[: end + 4]
                ), end + 4 + line_end + 4
            start = line_end + 2
            if len(rest) < start + size + 2:
                return None, 0
            body += rest[start : start + size]
            pos = start + size + 2
    return None, 0  # until close


def raw_exchange(
    path: Path, data: bytes, *, timeout: float = 30.0, half_close: bool = False
) -> Response:
    """Blocking: send ``data`` (then shut down the write side if ``half_close``), read until
    one full response (or the proxy closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            resp, _ = parse_response(buf)
            if resp is not None and resp.status >= 200:
                return resp
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                resp, _ = parse_response(buf)
                if resp is not None:
                    return resp
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    raise AssertionError(f"connection closed without a response: {buf[:200]!r}")
                head, _ = parse_response(buf, head_only=True)
                assert head is not None
                head.body = buf[end + 4 :]
                return head
            buf += chunk


def ping(path: Path) -> Response:
    return raw_exchange(path, b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", timeout=10)


# ---------------------------------------------------------------------------------------------
# A scripted fake dockerd
# ---------------------------------------------------------------------------------------------


@dataclass
class SeenRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked", "none"
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


Handler = Callable[
    [SeenRequest, asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]
]


class FakeDockerd:
    """Reads requests strictly enough for tests and answers with the handler for the path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[SeenRequest] = []
        self.handlers: dict[str, Handler] = {}
        self.open_connections = 0
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.open_connections += 1
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ")
            headers = [
                (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])
            ]
            seen = SeenRequest(method, target, headers, b"", "none")
            hmap = {k.lower(): v for k, v in headers}
            if "content-length" in hmap:
                seen.framing = "length"
                n = int(hmap["content-length"])
                while len(rest) < n:
                    more = await reader.read(65536)
                    if not more:
                        break
                    rest += more
                seen.body, rest = rest[:n], rest[n:]
            elif hmap.get("transfer-encoding") == "chunked":
                seen.framing = "chunked"
                body = bytearray()
                while True:
                    while b"\r\n" not in rest:
                        rest += await reader.read(65536)
                    size_line, _, rest = rest.partition(b"\r\n")
                    size = int(size_line, 16)
                    while len(rest) < size + 2:
                        rest += await reader.read(65536)
                    if size == 0:
                        rest = rest[2:]
                        break
                    seen.chunks.append(rest[:size])
                    body += rest[:size]
                    rest = rest[size + 2 :]
                seen.body = bytes(body)
            self.seen.append(seen)
            path = target.split("?")[0]
            for prefix in sorted(self.handlers, key=len, reverse=True):
                if path.endswith(prefix) or path == prefix:
                    await self.handlers[prefix](seen, reader, writer, rest)
                    break
            else:
                await respond(writer, 200, b'{"ok":true}')
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            self.closed.set()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)


async def respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    extra: str = "",
) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nApi-Version: 1.41\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


# ---------------------------------------------------------------------------------------------
# Fixtures for the fake-dockerd tests (the proxy runs on the test's own loop)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installation() -> Iterator[tuple[Runtime, ProxyStore, str]]:
    directory = short_tmpdir("cmu-")
    rt = open_runtime(load_settings(data_dir=directory / "data"), create=True)
    rt.identity.create_user(SUPER_USER, by=None, password=None, roles=["operator"])
    rt.identity.create_user(ORDINARY_USER, by=None, password=None, roles=["operator"])
    token = rt.identity.issue_token(
        SUPER_USER, "docker", ["read", "write"], timedelta(hours=1), by=None
    ).token
    store = ProxyStore(rt.db, rt.audit)
    store.map_user(0, SUPER_USER, "super", by="test")
    store.allow_image("casemate-test/busybox", [IMAGE_A], by="test")
    try:
        yield rt, store, token
    finally:
        rt.close()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Unit:
    rt: Runtime
    store: ProxyStore
    token: str
    proxy: EdgeProxy
    docker: FakeDockerd
    cloud: FakeCloud
    mark: int

    @property
    def socket(self) -> Path:
        return self.proxy.socket_path

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self.socket))

    async def exchange(
        self, data: bytes, timeout: float = 10.0, half_close: bool = False
    ) -> Response:
        return await asyncio.to_thread(
            raw_exchange, self.socket, data, timeout=timeout, half_close=half_close
        )

    def with_token(self, data: bytes, token: str | None = None) -> bytes:
        line, rest = data.split(b"\r\n", 1)
        return line + f"\r\n{TOKEN_HEADER}: {token or self.token}\r\n".encode() + rest

    def audit(self) -> list[AuditEntry]:
        return self.rt.audit.query(kind="edge.docker", after_seq=self.mark, limit=1000)

    async def set_role(self, role: str) -> None:
        user = SUPER_USER if role == "super" else ORDINARY_USER
        await asyncio.to_thread(self.store.map_user, 0, user, role, by="test")
        await self.proxy.reload()


@pytest.fixture
async def unit(installation: tuple[Runtime, ProxyStore, str]) -> AsyncIterator[Unit]:
    rt, store, token = installation
    store.map_user(0, SUPER_USER, "super", by="test")
    directory = short_tmpdir("cmf-")
    docker = FakeDockerd(directory / "docker.sock")
    await docker.start()
    cloud = FakeCloud(allow=True)
    proxy = EdgeProxy(
        ProxyConfig(
            listen=directory / "proxy.sock",
            docker=docker.path,
            socket_mode=0o660,
            linger=0.5,
            refresh_interval=30,
        ),
        store=store,
        identity=rt.identity,
        audit=rt.audit,
        cloud=cloud,
    )
    await proxy.start()
    try:
        yield Unit(rt, store, token, proxy, docker, cloud, rt.audit.head_seq())
    finally:
        await proxy.stop()
        await docker.stop()
        shutil.rmtree(directory, ignore_errors=True)


PING = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
_CREATE_BODY = b'{"Image":"sha256:' + b"a" * 64 + b'","Cmd" :  ["true"] , "hostconfig":{}}'
CREATE_BUSYBOX = (
    b"POST /v1.41/containers/create?name=c1 HTTP/1.1\r\nHost: d\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%s\r\n" % (16, _CREATE_BODY[:16])
    + b"%x\r\n%s\r\n0\r\n\r\n" % (len(_CREATE_BODY) - 16, _CREATE_BODY[16:])
)


async def inspect_ok(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
    await respond(w, 200, json.dumps({"Id": "sha256:" + "a" * 64, "RepoDigests": []}).encode())


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_config_validation(tmp_path: Path) -> None:
    for kwargs in (
        {"token_header": "X_Bad"},
        {"token_header": "X-Registry-Auth"},
        {"socket_mode": 0o1777},
        {"refresh_interval": 0},
    ):
        with pytest.raises(ConfigError):
            ProxyConfig(listen=tmp_path / "a", docker=tmp_path / "b", **kwargs)


def test_parse_unix_url() -> None:
    from casemate.edge.proxy import parse_unix_url

    assert parse_unix_url("unix:///var/run/docker.sock") == Path("/var/run/docker.sock")
    assert parse_unix_url("/x.sock") == Path("/x.sock")
    for bad in ("tcp://1.2.3.4:2375", "unix://relative", "unix:///" + "x" * 200):
        with pytest.raises(ConfigError):
            parse_unix_url(bad)


async def test_socket_mode_and_stale_socket(unit: Unit) -> None:
    assert (unit.socket.stat().st_mode & 0o777) == 0o660
    # A second proxy on a live socket is refused; a stale socket file is replaced.
    other = EdgeProxy(
        ProxyConfig(listen=unit.socket, docker=unit.docker.path),
        store=unit.store,
        identity=unit.rt.identity,
        audit=unit.rt.audit,
    )
    with pytest.raises(ConfigError, match="another server"):
        await other.start()
    stale = unit.socket.parent / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    async with EdgeProxy(
        ProxyConfig(listen=stale, docker=unit.docker.path, socket_mode=0o600),
        store=unit.store,
        identity=unit.rt.identity,
        audit=unit.rt.audit,
    ) as fresh:
        assert (stale.stat().st_mode & 0o777) == 0o600
        assert (await asyncio.to_thread(ping, fresh.socket_path)).status == 200
    assert not stale.exists()
    plain = unit.socket.parent / "plain"
    plain.write_text("x")
    with pytest.raises(ConfigError, match="not a socket"):
        await EdgeProxy(
            ProxyConfig(listen=plain, docker=unit.docker.path),
            store=unit.store,
            identity=unit.rt.identity,
            audit=unit.rt.audit,
        ).start()


async def test_read_forwarded_and_audited(unit: Unit) -> None:
    resp = await unit.exchange(PING)
    assert resp.status == 200 and resp.body == b'{"ok":true}'
    assert resp.headers["api-version"] == "1.41"  # dockerd's headers reach the client
    [seen] = unit.docker.seen
    assert (seen.method, seen.target) == ("GET", "/_ping")
    [record] = unit.audit()
    assert record.kind == "edge.docker" and record.outcome == "allowed"
    d = record.details
    assert (d["user"], d["uid"], d["action"], d["allowed"], d["code"]) == (
        SUPER_USER,
        0,
        "ping",
        True,
        "read_allowed",
    )


async def test_token_header_is_stripped_and_json_recanonicalised(unit: Unit) -> None:
    unit.docker.handlers["/json"] = inspect_ok
    resp = await unit.exchange(unit.with_token(CREATE_BUSYBOX))
    assert resp.status == 200, resp.body
    inspect, create = unit.docker.seen
    assert inspect.target == "/images/sha256:" + "a" * 64 + "/json"
    assert create.target == "/v1.41/containers/create?name=c1"
    assert create.framing == "length"  # chunked from the client, Content-Length to dockerd
    assert json.loads(create.body) == {
        "Image": "sha256:" + "a" * 64,
        "Cmd": ["true"],
        "HostConfig": {},
    }
    for r in unit.docker.seen:
        assert r.header(TOKEN_HEADER) is None
        assert unit.token not in repr(r.headers)
    [cloud_request] = unit.cloud.requests
    assert (cloud_request.caller, cloud_request.action, cloud_request.container) == (
        SUPER_USER,
        "create",
        "c1",
    )
    assert cloud_request.digest == "sha256:" + "a" * 64
    [record] = unit.audit()
    assert record.details["cloud_rule"] == "rule:fake" and record.details["allowed"]


async def test_ordinary_and_unmapped_callers_only_read(unit: Unit) -> None:
    await unit.set_role("ordinary")
    resp = await unit.exchange(unit.with_token(CREATE_BUSYBOX))
    assert resp.status == 403
    assert resp.message.startswith("casemate: user alice may only make read-only calls")
    assert resp.message.endswith("[ordinary_read_only]")
    assert (await unit.exchange(PING)).status == 200
    await asyncio.to_thread(unit.store.unmap_user, 0, by="test")
    await unit.proxy.reload()
    resp = await unit.exchange(unit.with_token(CREATE_BUSYBOX))
    assert resp.status == 403 and "user uid:0 may only make read-only calls" in resp.message
    assert (await unit.exchange(PING)).status == 200
    assert [r.target for r in unit.docker.seen] == ["/_ping", "/_ping"]
    assert unit.cloud.requests == []
    users = [(r.details["user"], r.details["allowed"]) for r in unit.audit()]
    assert users == [("alice", False), ("alice", True), ("uid:0", False), ("uid:0", True)]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, "token_missing"),
        ("cmt_notatoken", "token_invalid"),
        ("read", "token_scope"),
        ("alice", "token_invalid"),
    ],
)
async def test_token_problems(unit: Unit, token: str | None, code: str) -> None:
    raw = b"POST /v1.41/containers/x/start HTTP/1.1\r\nHost: d\r\n\r\n"
    if token == "read":
        token = unit.rt.identity.issue_token(
            SUPER_USER, "ro", ["read"], timedelta(hours=1), by=None
        ).token
    elif token == "alice":  # a valid token of another user
        token = unit.rt.identity.issue_token(
            ORDINARY_USER, "x", ["read", "write"], timedelta(hours=1), by=None
        ).token
    resp = await unit.exchange(unit.with_token(raw, token) if token else raw)
    assert resp.status == 403 and resp.message.endswith(f"[{code}]"), resp.message
    assert unit.docker.seen == [] and unit.cloud.requests == []


async def test_tokens_without_expiry_are_refused(unit: Unit) -> None:
    """decide() wants an expiry on the token (fail closed): never-expiring tokens cannot be
    used for privileged Docker calls."""
    forever = unit.rt.identity.issue_token(SUPER_USER, "f", ["write"], None, by=None).token
    raw = b"POST /v1.41/containers/x/start HTTP/1.1\r\nHost: d\r\n\r\n"
    resp = await unit.exchange(unit.with_token(raw, forever))
    assert resp.status == 403 and resp.message.endswith("[token_expired]")


async def test_valid_tokens_are_cached_briefly(unit: Unit) -> None:
    unit.proxy.config = dataclasses.replace(unit.proxy.config, token_cache_ttl=0.3)
    issued = unit.rt.identity.issue_token(
        SUPER_USER, "short", ["write"], timedelta(hours=1), by=None
    )
    raw = unit.with_token(
        b"POST /v1.41/containers/x/start HTTP/1.1\r\nHost: d\r\n\r\n", issued.token
    )
    assert (await unit.exchange(raw)).status == 200
    unit.rt.identity.revoke_token(issued.info.id, by=None)
    assert (await unit.exchange(raw)).status == 200  # within the cache lifetime
    await asyncio.sleep(0.35)
    resp = await unit.exchange(raw)
    assert resp.status == 403 and resp.message.endswith("[token_invalid]")
    # Invalid results are never cached; a cache of 0 looks up every time.
    unit.proxy.config = dataclasses.replace(unit.proxy.config, token_cache_ttl=0)
    other = unit.rt.identity.issue_token(SUPER_USER, "o", ["write"], timedelta(hours=1), by=None)
    raw = unit.with_token(
        b"POST /v1.41/containers/x/start HTTP/1.1\r\nHost: d\r\n\r\n", other.token
    )
    assert (await unit.exchange(raw)).status == 200
    unit.rt.identity.revoke_token(other.info.id, by=None)
    assert (await unit.exchange(raw)).status == 403


async def test_cloud_denial_and_missing_cloud(unit: Unit) -> None:
    raw = unit.with_token(b"POST /v1.41/containers/x/start HTTP/1.1\r\nHost: d\r\n\r\n")
    unit.cloud.allow = False
    resp = await unit.exchange(raw)
    assert resp.status == 403
    assert resp.message == "casemate: the cloud denied start: fake cloud says no [cloud_denied]"
    unit.proxy.cloud = None
    resp = await unit.exchange(raw)
    assert resp.status == 403 and resp.message.endswith("[cloud_unavailable]")
    assert "no cloud link is configured" in resp.message
    # dockerd was only asked for the container's mounts (check at use), never to start it
    assert [(r.method, r.target) for r in unit.docker.seen] == [("GET", "/containers/x/json")] * 2
    codes = [r.details["code"] for r in unit.audit()]
    assert codes == ["cloud_denied", "cloud_unavailable"]


async def test_audit_is_committed_before_forwarding(unit: Unit) -> None:
    seen_at: list[int] = []

    async def check(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        seen_at.append(len(unit.audit()))
        await respond(w, 200, b"{}")

    unit.docker.handlers["/_ping"] = check
    assert (await unit.exchange(PING)).status == 200
    assert seen_at == [1]


async def test_audit_failure_refuses(unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(unit.rt.audit, "append", broken)
    monkeypatch.setattr(unit.rt.audit, "append_many", broken)
    resp = await unit.exchange(PING)
    assert resp.status == 503 and "audit record cannot be written" in resp.message
    assert unit.docker.seen == []


async def test_keep_alive_and_fresh_reader_per_request(unit: Unit) -> None:
    reader, writer = await unit.connect()
    try:
        for _ in range(3):
            writer.write(PING)
            await writer.drain()
            data = await reader.readuntil(b'{"ok":true}')
            assert data.startswith(b"HTTP/1.1 200")
        # A denied request keeps the connection too (its body was read).
        writer.write(b"POST /v1.41/containers/x/start HTTP/1.1\r\nHost: d\r\n\r\n")
        await writer.drain()
        data = await reader.readuntil(b"\n")
        while not data.endswith(b"}\n"):
            data += await reader.readuntil(b"\n")
        assert data.startswith(b"HTTP/1.1 403") and b"Connection: close" not in data
        writer.write(PING)
        assert (await reader.readuntil(b'{"ok":true}')).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        await writer.wait_closed()
    assert len(unit.audit()) == 5


async def test_pipelining_is_refused(unit: Unit) -> None:
    resp = await unit.exchange(PING + PING)
    assert resp.status == 400 and resp.message.endswith("[pipelining]")
    assert unit.docker.seen == []
    [record] = unit.audit()
    assert (record.details["code"], record.outcome) == ("pipelining", "denied")


async def test_bytes_during_the_response_end_the_connection(unit: Unit) -> None:
    release = asyncio.Event()

    async def slow(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        await release.wait()
        await respond(w, 200, b"{}")

    unit.docker.handlers["/_ping"] = slow
    reader, writer = await unit.connect()
    try:
        writer.write(PING)
        await writer.drain()
        while not unit.docker.seen:
            await asyncio.sleep(0.01)
        writer.write(PING)  # before the answer: pipelining
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        release.set()
        writer.close()
        await writer.wait_closed()


async def test_streamed_response_is_not_buffered(unit: Unit) -> None:
    step = asyncio.Event()

    async def logs(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        w.write(b"6\r\nline1\n\r\n")
        await w.drain()
        await step.wait()
        w.write(b"6\r\nline2\n\r\n0\r\n\r\n")
        await w.drain()

    unit.docker.handlers["/logs"] = logs
    reader, writer = await unit.connect()
    try:
        writer.write(b"GET /v1.41/containers/c/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: d\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"line1\n\r\n"), 5)
        assert b"Transfer-Encoding: chunked" in first  # dockerd's framing, relayed as is
        step.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert rest == b"6\r\nline2\n\r\n0\r\n\r\n"
        writer.write(PING)  # still keep-alive after a chunked response
        assert (await reader.readuntil(b'{"ok":true}')).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_client_disconnect_closes_the_upstream_stream(unit: Unit) -> None:
    async def events(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        w.write(b"Transfer-Encoding: chunked\r\n\r\n")
        await w.drain()
        await r.read()  # until the proxy closes its side

    unit.docker.handlers["/events"] = events
    reader, writer = await unit.connect()
    writer.write(b"GET /v1.41/events HTTP/1.1\r\nHost: d\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert unit.docker.open_connections == 1
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(5):
        while unit.docker.open_connections:
            await asyncio.sleep(0.02)


async def test_upgrade_becomes_a_pipe_with_half_close(unit: Unit) -> None:
    async def attach(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        w.write(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
            b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\nhello "
        )
        await w.drain()
        received = rest
        while chunk := await r.read(65536):  # until the client's half-close reaches us
            received += chunk
        w.write(b"got:" + received)
        await w.drain()

    unit.docker.handlers["/attach"] = attach
    reader, writer = await unit.connect()
    try:
        writer.write(
            unit.with_token(
                b"POST /v1.41/containers/c/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: d\r\n"
                b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            )
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"hello "
        writer.write(b"stdin data")
        await writer.drain()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"got:stdin data"
    finally:
        writer.close()
        await writer.wait_closed()
    [seen] = unit.docker.seen
    assert seen.header("Upgrade") == "tcp" and seen.header(TOKEN_HEADER) is None
    assert [r.action for r in unit.cloud.requests] == ["attach"]


async def test_old_style_hijack_without_upgrade(unit: Unit) -> None:
    async def start(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n")
        await w.drain()
        data = await r.read(5)
        w.write(data.upper())
        await w.drain()

    unit.docker.handlers["/start"] = start
    reader, writer = await unit.connect()
    body = b'{"Detach":false,"Tty":false}'
    try:
        writer.write(
            unit.with_token(
                b"POST /v1.41/exec/e1/start HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        )
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"abcde")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b"ABCDE"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_stream_body_is_rechunked(unit: Unit) -> None:
    policy = RiskPolicy(required_scope="write", allow_load=True)
    unit.proxy.config = dataclasses.replace(unit.proxy.config, policy=policy)

    async def load(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        await respond(w, 200, b'{"stream":"Loaded"}')

    unit.docker.handlers["/images/load"] = load
    raw = (
        b"POST /v1.41/images/load?quiet=1 HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar"
        b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    resp = await unit.exchange(unit.with_token(raw))
    assert resp.status == 200, resp.body
    [seen] = unit.docker.seen
    assert seen.framing == "chunked" and seen.body == b"hello world"
    raw = (
        b"POST /v1.41/images/load HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar"
        b"\r\nContent-Length: 4\r\n\r\ntar!"
    )
    assert (await unit.exchange(unit.with_token(raw))).status == 200
    assert unit.docker.seen[1].framing == "length" and unit.docker.seen[1].body == b"tar!"


async def test_denied_stream_is_not_read(unit: Unit) -> None:
    raw = (
        b"POST /v1.41/images/load HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar"
        b"\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 100000
    )
    resp = await unit.exchange(unit.with_token(raw))
    assert resp.status == 403 and resp.message.endswith("[unverified_image_source]")
    assert resp.headers.get("connection") == "close"


async def test_dockerd_unreachable_is_502(unit: Unit) -> None:
    await unit.docker.stop()
    os.unlink(unit.docker.path)
    resp = await unit.exchange(PING)
    assert resp.status == 502 and resp.message.startswith("casemate: cannot reach dockerd")
    # An image inspect that cannot be made is a 502 too (not "untrusted").
    resp = await unit.exchange(unit.with_token(CREATE_BUSYBOX))
    assert resp.status == 502
    await unit.docker.start()  # for the fixture's stop()


async def test_dockerd_closing_without_answer_is_502(unit: Unit) -> None:
    async def hang_up(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        return

    async def garbage(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        w.write(b"NOT HTTP\r\n\r\n")
        await w.drain()

    unit.docker.handlers["/_ping"] = hang_up
    unit.docker.handlers["/version"] = garbage
    resp = await unit.exchange(PING)
    assert resp.status == 502 and "without answering" in resp.message
    resp = await unit.exchange(b"GET /version HTTP/1.1\r\nHost: d\r\n\r\n")
    assert resp.status == 502 and "malformed" in resp.message


async def test_response_until_close_and_head(unit: Unit) -> None:
    async def info(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        w.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"until":"close"}')
        await w.drain()

    async def head_ping(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nApi-Version: 1.41\r\n\r\n")
        await w.drain()

    unit.docker.handlers["/info"] = info
    reader, writer = await unit.connect()
    try:
        writer.write(b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        unit.docker.handlers["/_ping"] = head_ping
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /info HTTP/1.1\r\nHost: d\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)  # the proxy closes after it
        assert data.endswith(b'{"until":"close"}')
    finally:
        writer.close()
        await writer.wait_closed()


async def test_expect_100_continue(unit: Unit) -> None:
    unit.docker.handlers["/json"] = inspect_ok
    body = b'{"Image":"sha256:' + b"a" * 64 + b'"}'
    reader, writer = await unit.connect()
    try:
        writer.write(
            unit.with_token(
                b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        writer.write(body)
        await writer.drain()
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(
            b"HTTP/1.1 200"
        )
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x02",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nHost: e\r\n\r\n",
        b"G" * 70000,
        b"GET /_ping HTTP/1.1\r\nHost: d\r\n",  # truncated, then EOF
        b"POST /containers/create HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
    ],
)
async def test_malformed_requests_never_crash(unit: Unit, raw: bytes) -> None:
    resp = await unit.exchange(raw, half_close=True)
    assert 400 <= resp.status < 600 and resp.message.startswith("casemate: ")
    assert resp.headers.get("connection") == "close"
    assert (await unit.exchange(PING)).status == 200
    assert [r.target for r in unit.docker.seen] == ["/_ping"]


async def test_idle_client_is_dropped(installation: Any, tmp_path: Path) -> None:
    rt, store, _ = installation
    directory = short_tmpdir("cmi-")
    try:
        async with EdgeProxy(
            ProxyConfig(listen=directory / "p.sock", docker=directory / "none", idle_timeout=0.3),
            store=store,
            identity=rt.identity,
            audit=rt.audit,
        ) as proxy:
            reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_secrets_never_logged_audited_or_echoed(
    unit: Unit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def no_image(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        await respond(w, 404, b'{"message":"No such image"}')

    unit.docker.handlers["/json"] = no_image
    registry_auth = "eyJ1c2VybmFtZSI6ImJvYiIsInBhc3N3b3JkIjoiaHVudGVyMiJ9"
    secret_values = [unit.token, registry_auth, "hunter2"]
    responses = []
    pull = (
        b"POST /v1.41/images/create?fromImage=nginx&tag=1.25 HTTP/1.1\r\nHost: d\r\n"
        b"X-Registry-Auth: " + registry_auth.encode() + b"\r\n\r\n"
    )
    responses.append(await unit.exchange(unit.with_token(pull)))
    # The token where a parser refusal happens: duplicate token header, token in a bad head.
    dup = unit.with_token(unit.with_token(PING))
    responses.append(await unit.exchange(dup))
    bad = unit.with_token(
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nContent-Length: " + unit.token.encode() + b"\r\n\r\n"
    )
    responses.append(await unit.exchange(bad))
    responses.append(await unit.exchange(unit.with_token(PING, unit.token + "x")))
    unit.docker.handlers["/json"] = inspect_ok
    responses.append(await unit.exchange(unit.with_token(CREATE_BUSYBOX)))
    assert [r.status for r in responses] == [403, 400, 400, 200, 200]
    records = json.dumps([r.to_dict() for r in unit.rt.audit.query(limit=10000)])
    texts = [caplog.text, records, *(r.raw_head.decode() + r.body.decode() for r in responses)]
    texts += [repr(r) for r in unit.cloud.requests]
    for secret in secret_values:
        for text in texts:
            assert secret not in text
    # X-Registry-Auth is forwarded to dockerd (it needs it), the token never is.
    assert all(r.header(TOKEN_HEADER) is None for r in unit.docker.seen)


async def test_stop_closes_open_connections(installation: Any) -> None:
    rt, store, _ = installation
    directory = short_tmpdir("cms-")
    try:
        proxy = EdgeProxy(
            ProxyConfig(listen=directory / "p.sock", docker=directory / "none"),
            store=store,
            identity=rt.identity,
            audit=rt.audit,
        )
        await proxy.start()
        reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
        writer.write(b"GET /_pi")
        await writer.drain()
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await proxy.stop()
        assert time.monotonic() - t0 < 5
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not (directory / "p.sock").exists()
        writer.close()
        await writer.wait_closed()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_audit_failure_cause() -> None:
    from casemate.edge.auditing import audit_failure_cause

    def chained(inner: BaseException) -> Exception:
        try:
            try:
                raise inner
            except BaseException as e:
                raise ConfigError("database error: OperationalError") from e
        except ConfigError as outer:
            return outer

    assert audit_failure_cause(chained(OSError(28, "No space left on device"))) == (
        "the data directory is full"
    )
    assert audit_failure_cause(chained(Exception("database or disk is full"))) == (
        "the data directory is full"
    )
    assert audit_failure_cause(chained(Exception("attempt to write a readonly database"))) == (
        "the audit database is read-only"
    )
    assert audit_failure_cause(RuntimeError("closed")) == "the audit database is unavailable"


async def test_a_tag_that_does_not_name_the_pulled_digest_is_removed(unit: Unit) -> None:
    """After a pull by digest the proxy tags the image and checks the tag; if dockerd's tag
    names other content (someone retagged in between), the tag is removed and it says so."""
    name, digest = "registry.example/team/app", "sha256:" + "d" * 64
    pulled, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64

    def inspect(image_id: str) -> Any:
        async def handler(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
            await respond(w, 200, json.dumps({"Id": image_id, "RepoDigests": []}).encode())

        return handler

    async def created(seen: SeenRequest, r: Any, w: asyncio.StreamWriter, rest: bytes) -> None:
        await respond(w, 201, b"")

    unit.docker.handlers[f"app@{digest}/json"] = inspect(pulled)
    unit.docker.handlers["app:1/json"] = inspect(other)
    unit.docker.handlers["/tag"] = created
    ok, message, image_id = await unit.proxy.tag_pulled(name, digest, "1")
    assert (ok, image_id) == (False, None)
    assert "did not name the pulled" in message and "removed" in message
    assert [(r.method, r.target.split("?")[0]) for r in unit.docker.seen][-1] == (
        "DELETE",
        f"/images/{name}:1",
    )
    unit.docker.handlers["app:1/json"] = inspect(pulled)
    ok, message, image_id = await unit.proxy.tag_pulled(name, digest, "1")
    assert (ok, image_id) == (True, pulled)


def test_stream_errors_are_recognised() -> None:
    from casemate.edge.connection import _stream_error

    assert _stream_error(b'{"error":"manifest unknown","errorDetail":{"message":"x"}}')
    assert _stream_error(b' {"errorDetail":{"message":"x"}}\r')
    assert not _stream_error(b'{"status":"Pull complete","id":"abc"}')
    assert not _stream_error(b"not json")
    assert not _stream_error(b"")


def test_a_path_changing_while_resolved_is_left_unresolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from casemate.edge import authorize as proxy_module

    (tmp_path / "d").mkdir()
    real = os.path.realpath

    def racing(path: str) -> str:
        if path.endswith("/swapped"):
            raise FileNotFoundError(2, "No such file or directory", path)
        return real(path)

    monkeypatch.setattr(proxy_module.os.path, "realpath", racing)
    resolved, present = proxy_module.resolve_host_paths(
        [str(tmp_path / "d"), str(tmp_path / "swapped"), str(tmp_path / "missing")]
    )
    assert resolved == {
        str(tmp_path / "d"): str(tmp_path / "d"),
        str(tmp_path / "missing"): str(tmp_path / "missing"),
    }
    assert present == frozenset({str(tmp_path / "d")})
