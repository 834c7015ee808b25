"""Cloud authorization round trips over loopback MQTT: ``CloudLink.authorize()`` against a
running ``CloudService`` (automatic allow rule), each decision stored and audited on the cloud
(SQLite), signed, verified by the gateway.

Baseline: a bare QoS 1 request/reply echo between two aiomqtt clients on the same broker (no
crypto, no database; TCP_NODELAY like CloudLink's clients); the ratio shows what Casemate
adds. A private mosquitto (``set_tcp_nodelay true`` unless ``--broker-default-config``) is
started from casemate.testenv.services for the run.

    .venv/bin/python bench/cloud_roundtrip.py [--requests 500] [--concurrency 32]
        [--sqlite-sync FULL|NORMAL] [--broker-default-config]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiomqtt

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.vault import Keyring, MasterKey, Vault
from casemate.edge.cloud import CloudRegistry, CloudService, Effect
from casemate.edge.cloudlink import BrokerConfig, CloudLink, CloudLinkConfig, cancel_and_wait
from casemate.edge.messages import AuthorizationRequest
from casemate.testenv.services import MosquittoBroker

DIGEST = "sha256:" + "c" * 64
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class NoDelayBroker(MosquittoBroker):
    """mosquitto with ``set_tcp_nodelay true``: without it, Nagle's algorithm and delayed
    ACKs hold each forwarded message for ~40 ms on loopback."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        return argv


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and mean in milliseconds."""
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000, statistics.fmean(samples) * 1000


async def baseline(broker: MosquittoBroker, n: int) -> list[float]:
    """QoS 1 request → echo → QoS 1 reply, one at a time."""
    host, port = broker.host, broker.port
    req, resp = "bench/req", "bench/resp"
    async with (
        aiomqtt.Client(
            host, port, identifier=f"echo-{uuid.uuid4().hex[:6]}", socket_options=NODELAY
        ) as echo,
        aiomqtt.Client(
            host, port, identifier=f"asker-{uuid.uuid4().hex[:6]}", socket_options=NODELAY
        ) as asker,
    ):
        await echo.subscribe(req, qos=1)
        await asker.subscribe(resp, qos=1)

        async def responder() -> None:
            async for message in echo.messages:
                await echo.publish(resp, message.payload, qos=1)

        task = asyncio.create_task(responder())
        samples = []
        payload = b"x" * 400
        for _ in range(n + 20):
            t0 = time.perf_counter()
            await asker.publish(req, payload, qos=1)
            await anext(asker.messages)
            samples.append(time.perf_counter() - t0)
        await cancel_and_wait(task)
    return samples[20:]


async def casemate(
    broker: MosquittoBroker, directory: Path, n: int, concurrency: int, sync: str
) -> tuple[list[float], float]:
    keyring = Keyring([MasterKey.generate()], source=None)
    cloud_db = Database.open(f"sqlite:///{directory / 'cloud.db'}", sqlite_synchronous=sync)
    gw_db = Database.open(f"sqlite:///{directory / 'gateway.db'}", sqlite_synchronous=sync)
    audit = AuditLog(cloud_db)
    registry = CloudRegistry(cloud_db, Vault(cloud_db, keyring), audit)
    registry.add_rule(effect=Effect.ALLOW, by="bench")
    config = BrokerConfig(host=broker.host, port=broker.port)
    service = CloudService(registry, config, client_id="bench-cloud", persistent_session=False)
    link = CloudLink(
        gw_db,
        Vault(gw_db, keyring),
        CloudLinkConfig(
            gateway_id="gw-bench", mac_address="02:00:00:00:00:01", broker=config, authz_timeout=5
        ),
    )
    try:
        await service.start()
        await link.start()
        await link.wait_connected(10)
        await link.register(registry.create_enrolment_token(by="bench"))

        def request() -> AuthorizationRequest:
            return link.new_request(
                caller="alice",
                uid=1000,
                action="create",
                image="nginx:1.25",
                digest=DIGEST,
                details={"HostConfig": {"Privileged": False, "Memory": 268435456}},
            )

        samples = []
        for _ in range(n + 20):
            t0 = time.perf_counter()
            decision = await link.authorize(request())
            samples.append(time.perf_counter() - t0)
            if not decision.allowed:
                raise SystemExit(f"unexpected deny: {decision.reason}")

        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                decision = await link.authorize(request())
                if not decision.allowed:
                    raise SystemExit(f"unexpected deny: {decision.reason}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        throughput = n / (time.perf_counter() - t0)
        return samples[20:], throughput
    finally:
        await link.stop()
        await service.stop()
        audit.close()
        cloud_db.dispose()
        gw_db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sqlite-sync", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument(
        "--broker-default-config",
        action="store_true",
        help="Keep mosquitto's default set_tcp_nodelay false (adds ~40 ms per hop).",
    )
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="cmbench-", dir="/tmp"))
    directory.chmod(0o755)
    broker_class = MosquittoBroker if args.broker_default_config else NoDelayBroker
    broker = broker_class(directory / "mosquitto")
    try:
        broker.start()
        base = await baseline(broker, args.requests)
        runs, throughput = await casemate(
            broker, directory, args.requests, args.concurrency, args.sqlite_sync
        )
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)

    b50, b99, bmean = percentiles(base)
    c50, c99, cmean = percentiles(runs)
    nodelay = "false (default)" if args.broker_default_config else "true"
    print(
        f"requests: {args.requests} sequential, SQLite synchronous={args.sqlite_sync}, "
        f"mosquitto set_tcp_nodelay {nodelay}"
    )
    print(f"baseline MQTT QoS1 echo : p50 {b50:6.2f} ms  p99 {b99:6.2f} ms  mean {bmean:6.2f} ms")
    print(f"casemate authorize()    : p50 {c50:6.2f} ms  p99 {c99:6.2f} ms  mean {cmean:6.2f} ms")
    print(f"ratio to baseline       : p50 x{c50 / b50:.1f}  p99 x{c99 / b99:.1f}")
    print(f"throughput, {args.concurrency} in flight : {throughput:,.0f} decisions/s")


if __name__ == "__main__":
    asyncio.run(main())
