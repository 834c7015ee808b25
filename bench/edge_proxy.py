"""Edge proxy overhead: the docker CLI directly against dockerd vs through the proxy, and the
proxy's decision latency with and without the cloud round trip.

One run starts everything fresh: a private dockerd (casemate.testenv.docker.DockerEngine in a
temporary directory) with the busybox test image, mosquitto, the cloud (CloudRegistry +
CloudService with an allow-all rule), a registered CloudLink and the proxy (uid 0 mapped to a
super user with a write token, busybox allowlisted by image ID).

* **CLI end to end**: ``docker run --rm casemate-test/busybox:1 true`` and ``docker ps``,
  ``--runs`` times each, direct and proxied interleaved; medians and proxied/direct ratios
  (aim <= 1.10). A proxied ``docker run`` makes three cloud round trips (create, attach, start).
* **Decision latency** on the requests the real docker CLI sends (captured first):
  ``evaluate`` = identity (token lookup) + facts (image inspect on dockerd, realpath) +
  ``decide()``, without the cloud (aim p99 < 2 ms); ``decide()`` alone; and ``evaluate`` +
  the cloud round trip over loopback MQTT.

    .venv/bin/python bench/edge_proxy.py [--runs 15] [--decisions 500] [--cloud-decisions 200]
        [--cpu-requests 2000] [--skip-cli] [--sqlite-sync FULL|NORMAL] [--broker-default-config]

* **Proxy CPU per proxied GET**: a client in another process sends ``--cpu-requests`` GETs
  (``/_ping``, ``/containers/json``) on one keep-alive connection; the bench process's CPU time
  over them (the proxy, its audit commits, the idle cloud parts) divided by the count (aim
  <= 0.5 ms). Every one of them is decided and audited.

mosquitto runs with ``set_tcp_nodelay true`` unless ``--broker-default-config``. Valid token
lookups are cached for ``ProxyConfig.token_cache_ttl`` (2 s), so repeated evaluations
measure the cached path; the uncached lookup is reported as a phase.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.core.vault import Keyring, MasterKey, Vault, write_key_file
from casemate.edge.cloud import CloudRegistry, CloudService, Effect
from casemate.edge.cloudlink import BrokerConfig, CloudLink, CloudLinkConfig
from casemate.edge.decide import decide
from casemate.edge.dockerapi import DockerRequest, read_request
from casemate.edge.proxy import EdgeProxy, ProxyConfig
from casemate.edge.store import ProxyStore
from casemate.events import DockerCallDecided
from casemate.testenv.docker import DockerEngine, docker_cli
from casemate.testenv.images import ensure_busybox_image
from casemate.testenv.services import MosquittoBroker

T = TypeVar("T")
AIM_RATIO = 1.10
AIM_P99_MS = 2.0
TOKEN_HEADER = "X-Casemate-Token"


class NoDelayBroker(MosquittoBroker):
    """mosquitto with ``set_tcp_nodelay true`` (as a production broker should run): without
    it, Nagle's algorithm and delayed ACKs hold each forwarded message ~40 ms on loopback."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        return argv


class Loop:
    """The proxy and the cloud run on an event loop thread; the CLI runs from the main one."""

    def __init__(self, use_uvloop: bool = False) -> None:
        if use_uvloop:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True, name="proxy-loop")
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def cli(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [docker_cli(), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return elapsed


async def capture(docker_env: dict[str, str], args: list[str], directory: Path) -> list[bytes]:
    """The raw requests the docker CLI sends for ``args`` (answered with 500 after _ping)."""
    path = directory / f"capture-{uuid.uuid4().hex[:6]}.sock"
    seen: list[bytes] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
                try:
                    read_request(buf)
                except Exception:  # incomplete: read more
                    continue
                seen.append(buf)
                line = buf.split(b"\r\n", 1)[0]
                if b"/_ping" in line:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"
                    )
                elif line.startswith(b"GET ") and b"/containers/some-container/json" in line:
                    body = b'{"Id":"some-container","State":{"Running":true}}'
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                else:
                    body = b'{"message":"captured"}'
                    writer.write(
                        b"HTTP/1.1 500 X\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                await writer.drain()
                buf = b""
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, path=str(path))
    env = dict(docker_env, DOCKER_HOST=f"unix://{path}")
    proc = await asyncio.create_subprocess_exec(
        docker_cli(),
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()
    server.close()
    await server.wait_closed()

    def wanted(raw: bytes) -> bool:
        line = raw.split(b"\r\n", 1)[0]
        return b"/_ping" not in line and b"/containers/some-container/json" not in line

    return [r for r in seen if wanted(r)]


#: A client in its own process: ``n`` sequential GETs on one keep-alive connection, each answer
#: read to its end (Content-Length), so the bench process's CPU is the proxy's (and its audit).
_CPU_CLIENT = r"""
import socket, sys
path, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX); s.connect(path)
req = f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
buf = b""
for _ in range(n):
    s.sendall(req)
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, buf = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    while len(buf) < length:
        buf += s.recv(65536)
    buf = buf[length:]
s.close()
"""


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of this process (``/proc/self/task``), named by Python's
    thread names (the proxy's loop is ``proxy-loop``; ``asyncio_N`` are to_thread workers)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tid = int(task.name)
        name = names.get(tid, "other")
        name = "to_thread workers" if name.startswith("asyncio_") else name
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


async def _call(fn: Any) -> None:
    fn()  # on the loop's thread (cProfile profiles the thread that enables it)


def cpu_client(socket_path: str, target: str, n: int) -> None:
    subprocess.run(
        [sys.executable, "-c", _CPU_CLIENT, socket_path, target, str(n)], check=True, timeout=600
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--cloud-decisions", type=int, default=200)
    parser.add_argument("--cpu-requests", type=int, default=2000)
    parser.add_argument("--skip-cli", action="store_true", help="skip the docker CLI timings")
    parser.add_argument("--uvloop", action="store_true", help="run the proxy on uvloop")
    parser.add_argument(
        "--profile", type=Path, help="write a cProfile of the proxy's loop thread (CPU phase)"
    )
    parser.add_argument(
        "--sqlite-sync",
        default="FULL",
        choices=["FULL", "NORMAL"],
        help="SQLite synchronous mode of the gateway's and the cloud's databases",
    )
    parser.add_argument(
        "--broker-default-config",
        action="store_true",
        help="run mosquitto without set_tcp_nodelay (adds ~40 ms per MQTT hop)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    top = Path(tempfile.mkdtemp(prefix="cmb-", dir="/tmp"))
    top.chmod(0o755)
    engine = DockerEngine(top / "d")
    broker: MosquittoBroker = (
        MosquittoBroker(top / "mq") if args.broker_default_config else NoDelayBroker(top / "mq")
    )
    loop = Loop(args.uvloop)
    rt: Runtime | None = None
    cloud_db: Database | None = None
    cloud_audit: AuditLog | None = None
    proxy: EdgeProxy | None = None
    link: CloudLink | None = None
    service: CloudService | None = None
    try:
        print(
            f"starting dockerd, mosquitto, cloud and proxy (SQLite synchronous={args.sqlite_sync},"
            f" broker {'default' if args.broker_default_config else 'set_tcp_nodelay'}) ...",
            flush=True,
        )
        engine.dir.mkdir()
        engine.start()
        image = ensure_busybox_image(engine)
        image_id = engine.docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()
        (top / "mq").mkdir()
        broker.start()

        rt = open_runtime(
            load_settings(data_dir=top / "data", sqlite_synchronous=args.sqlite_sync), create=True
        )
        rt.identity.create_user("bench", by=None, password=None, roles=["operator"])
        token = rt.identity.issue_token(
            "bench", "bench", ["read", "write"], timedelta(hours=2), by=None
        ).token
        store = ProxyStore(rt.db, rt.audit)
        store.map_user(os.getuid(), "bench", "super", by="bench")
        store.allow_image("casemate-test/busybox", [image_id], by="bench")

        key_file = top / "cloud.key"
        write_key_file(key_file, [MasterKey.generate()])
        cloud_db = Database.open(
            f"sqlite:///{top / 'cloud.db'}", sqlite_synchronous=args.sqlite_sync
        )
        cloud_audit = AuditLog(cloud_db)
        registry = CloudRegistry(
            cloud_db, Vault(cloud_db, Keyring.from_file(key_file, create=False)), cloud_audit
        )
        registry.add_rule(effect=Effect.ALLOW, by="bench", note="auto-allow")
        broker_config = BrokerConfig(host=broker.host, port=broker.port)
        service = CloudService(registry, broker_config, persistent_session=False)
        link = CloudLink(
            rt.db,
            rt.vault,
            CloudLinkConfig(
                gateway_id="gw-bench", mac_address="02:00:00:00:be:ec", broker=broker_config
            ),
        )
        proxy = EdgeProxy(
            ProxyConfig(listen=top / "proxy.sock", docker=engine.socket_path),
            store=store,
            identity=rt.identity,
            audit=rt.audit,
            cloud=link,
        )

        async def start() -> None:
            assert service is not None and link is not None and proxy is not None
            await service.start()
            await link.start()
            await link.wait_connected(10)
            await link.register(registry.create_enrolment_token(by="bench"))
            await proxy.start()

        loop.run(start())

        config_dir = top / "cli"
        config_dir.mkdir()
        (config_dir / "config.json").write_text(
            f'{{"HttpHeaders": {{"{TOKEN_HEADER}": "{token}"}}}}'
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        base["DOCKER_CONFIG"] = str(config_dir)
        direct = dict(base, DOCKER_HOST=engine.host)
        proxied = dict(base, DOCKER_HOST=f"unix://{proxy.socket_path}")

        # --- CLI end to end, interleaved ---------------------------------------------------
        commands = {
            "docker run --rm busybox true": ["run", "--rm", image, "true"],
            "docker ps": ["ps"],
        }
        if args.skip_cli:
            commands = {}
        for argv in commands.values():  # warm up both paths
            cli(direct, *argv)
            cli(proxied, *argv)
        print(f"\nCLI, {args.runs} runs each, interleaved (seconds, median)")
        print(f"{'command':32} {'direct':>9} {'proxy':>9} {'ratio':>7}   aim <= {AIM_RATIO:.2f}")
        for label, argv in commands.items():
            times: dict[str, list[float]] = {"direct": [], "proxy": []}
            for _ in range(args.runs):
                times["direct"].append(cli(direct, *argv))
                times["proxy"].append(cli(proxied, *argv))
            d, p = statistics.median(times["direct"]), statistics.median(times["proxy"])
            print(f"{label:32} {d:9.4f} {p:9.4f} {p / d:7.3f}")

        # --- proxy CPU per proxied GET (with its audit record) ------------------------------
        print(f"\nproxy process CPU per proxied GET, {args.cpu_requests} requests (aim <= 0.5 ms)")
        for path in ("/v1.41/_ping", "/v1.41/containers/json"):
            cpu_client(str(proxy.socket_path), path, 50)  # warm up
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                loop.run(_call(profiler.enable))
            threads0 = thread_cpu()
            before_seq, cpu0, wall0 = proxy.decisions, time.process_time(), time.perf_counter()
            cpu_client(str(proxy.socket_path), path, args.cpu_requests)
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            if profiler is not None:
                loop.run(_call(profiler.disable))
                profiler.dump_stats(f"{args.profile}.{path.rsplit('/', 1)[-1]}")
            audited = proxy.decisions - before_seq
            print(
                f"  GET {path:28} {cpu / args.cpu_requests * 1000:7.3f} ms CPU/request, "
                f"{wall / args.cpu_requests * 1000:7.3f} ms wall/request, {audited} audited"
            )
            by_thread: dict[str, float] = {}
            for tid, (name, seconds) in thread_cpu().items():
                spent = seconds - threads0.get(tid, (name, 0.0))[1]
                by_thread[name] = by_thread.get(name, 0.0) + spent
            print(
                "      per request by thread: "
                + ", ".join(
                    f"{name} {spent / args.cpu_requests * 1000:.3f} ms"
                    for name, spent in sorted(by_thread.items(), key=lambda kv: -kv[1])
                    if spent / args.cpu_requests >= 0.00001
                )
            )

        # --- decision latency ---------------------------------------------------------------
        captured: list[bytes] = []
        for argv in (
            ["create", image, "true"],
            ["ps"],
            ["exec", "-u", "1000:1000", "some-container", "true"],
        ):
            captured += loop.run(capture(proxied, argv, top))
        requests = {r.action.value: r for r in (read_request(raw) for raw in captured)}
        print("\ncaptured real CLI requests: " + ", ".join(requests))

        async def measure(
            request: DockerRequest, n: int, with_cloud: bool
        ) -> tuple[list[float], list[float]]:
            assert proxy is not None
            full: list[float] = []
            pure: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                evaluation = await proxy.evaluate(request, os.getuid(), token)
                if with_cloud:
                    outcome = await proxy.authorize(evaluation)
                    assert outcome.allowed, outcome.reason
                full.append((time.perf_counter() - t0) * 1000)
                t1 = time.perf_counter()
                decide(request, evaluation.caller, evaluation.facts, proxy.config.policy)
                pure.append((time.perf_counter() - t1) * 1000)
            return full, pure

        async def phases(n: int) -> dict[str, list[float]]:
            """Where a privileged create's time goes (each phase on its own)."""
            assert proxy is not None
            out: dict[str, list[float]] = {
                "token lookup (uncached)": [],
                "image inspect (dockerd)": [],
                "audit append (committed)": [],
            }
            create = requests["create"]
            evaluation = await proxy.evaluate(create, os.getuid(), token)
            for _ in range(n):
                t0 = time.perf_counter()
                await asyncio.to_thread(proxy.check_token, token)
                t1 = time.perf_counter()
                await proxy.inspect_image(image)
                t2 = time.perf_counter()
                await proxy.record(
                    DockerCallDecided(actor="bench", action="create", reason="bench", code="x")
                )
                t3 = time.perf_counter()
                out["token lookup (uncached)"].append((t1 - t0) * 1000)
                out["image inspect (dockerd)"].append((t2 - t1) * 1000)
                out["audit append (committed)"].append((t3 - t2) * 1000)
            del evaluation
            return out

        rows: list[tuple[str, list[float]]] = []
        for action in ("list_containers", "create", "exec_create"):
            if action not in requests:
                continue
            loop.run(measure(requests[action], 20, False))  # warm up
            local, pure = loop.run(measure(requests[action], args.decisions, False))
            rows.append((f"{action}: identity+facts+decide", local))
            rows.append((f"{action}: decide() alone", pure))
        for action in ("create", "exec_create"):
            if action in requests:
                cloud, _ = loop.run(measure(requests[action], args.cloud_decisions, True))
                rows.append((f"{action}: ... + cloud round trip", cloud))
        for name, values in loop.run(phases(min(args.decisions, 200))).items():
            rows.append((f"phase: {name}", values))
        print(
            f"\n{'latency (ms)':44} {'p50':>8} {'p99':>8}   aim: identity+facts+decide "
            f"p99 < {AIM_P99_MS} ms"
        )
        for name, values in rows:
            print(f"{name:44} {pct(values, 50):8.3f} {pct(values, 99):8.3f}")
        print(f"\n{proxy.decisions} decisions audited by the proxy during the run")
    finally:

        async def stop() -> None:
            if proxy is not None:
                await proxy.stop()
            if link is not None:
                await link.stop()
            if service is not None:
                await service.stop()

        try:
            loop.run(stop())
        finally:
            loop.close()
            if rt is not None:
                rt.close()
            if cloud_audit is not None:
                cloud_audit.close()
            if cloud_db is not None:
                cloud_db.dispose()
            broker.stop()
            engine.stop()
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
