"""Faults under load, with real parts: what the Kubernetes API proxy does while its database is
away, and what a flood of malformed requests costs it.

Starts a disposable cluster (casemate.testenv.kube), a PostgreSQL of its own
(casemate.testenv.services) holding Casemate's audit log, and the API proxy in this process
(plain HTTP on loopback, the default rules, every request audited with write-ahead records).

* **Database outage**: ``--clients`` clients create ConfigMaps back to back for
  ``--duration`` seconds; after ``--outage-after`` seconds PostgreSQL is stopped (fast
  shutdown) for ``--outage`` seconds and started again on the same port. Prints the writes
  completed and refused, the **records missing** (ConfigMaps on the cluster without a decided
  record: must be 0), answers without a record (must be 0), and the **recovery time** from the
  database's return to the first completed write.
* **Malformed-request flood**: ``--flood`` connections each send one malformed request
  (garbage, oversized heads, bad framing, truncated bodies), ``--flood-concurrency`` at a
  time. Prints the proxy process's RSS before, its peak during and after, the answers by
  status, and whether the proxy still serves a valid request afterwards.

The SIGKILL of a whole gateway mid-load is measured by tests/faults/test_recovery.py (it needs
a gateway process of its own); this script covers what can be measured in one process.

    .venv/bin/python bench/faults.py [--clients 8] [--duration 12] [--outage-after 3]
        [--outage 3] [--flood 4000] [--flood-concurrency 400] [--only outage|flood]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from casemate.core.audit import entries_between
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.k8s.client import Credential
from casemate.kubeproxy.proxy import AuditWriter, KubeProxy
from casemate.kubeproxy.sessions import SessionGrant, SessionStore, Upstream
from casemate.testenv.kube import LocalCluster
from casemate.testenv.services import PostgresServer


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def writer_client(
    client: httpx.AsyncClient, path: str, until: float, prefix: str, tally: dict[str, Any]
) -> None:
    n = 0
    while time.monotonic() < until:
        name = f"{prefix}-{n}"
        n += 1
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        try:
            resp = await client.post(path, json=body)
        except httpx.HTTPError:
            tally["errors"] += 1
            await asyncio.sleep(0.05)
            continue
        if resp.status_code == 201:
            tally["completed"] += 1
            tally["completed_at"].append(time.monotonic())
        elif resp.status_code == 503:
            tally["refused"] += 1
            await asyncio.sleep(0.02)
        else:
            tally["other"][resp.status_code] = tally["other"].get(resp.status_code, 0) + 1


async def outage(args: argparse.Namespace, work: Path) -> None:
    cluster = LocalCluster(work / "kube")
    cluster.start()
    pg_dir = Path(tempfile.mkdtemp(prefix="cmbench-", dir="/tmp"))
    pg_dir.chmod(0o755)
    pg = PostgresServer(pg_dir / "postgres")
    pg.start()
    try:
        ns = f"faults-{secrets.token_hex(3)}"
        cluster.create_namespace(ns)
        k = cluster.kubectl
        k("-n", ns, "create", "serviceaccount", "bench")
        k("-n", ns, "create", "rolebinding", "bench", "--clusterrole=edit",
          f"--serviceaccount={ns}:bench")  # fmt: skip
        token = k("-n", ns, "create", "token", "bench", "--duration=1h").stdout.strip()
        settings = load_settings(data_dir=work / "data", database_url=pg.url)
        rt = open_runtime(settings, create=True)
        writer = AuditWriter(rt.audit)
        store = SessionStore()
        grant = SessionGrant(
            user="bench",
            groups=frozenset(),
            cluster="bench",
            account="bench",
            namespaces=(ns,),
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        )
        issued = store.issue(
            grant, Upstream(cluster.server_url, cluster.ca_pem, Credential.bearer(token))
        )
        proxy = KubeProxy(store, writer)
        await proxy.start()
        tally: dict[str, Any] = {
            "completed": 0, "refused": 0, "errors": 0, "other": {}, "completed_at": [],
        }  # fmt: skip
        path = f"/api/v1/namespaces/{ns}/configmaps"
        start = time.monotonic()
        until = start + args.duration
        async with httpx.AsyncClient(
            base_url=proxy.url,
            headers={"Authorization": f"Bearer {issued.token}"},
            timeout=30,
            limits=httpx.Limits(max_connections=args.clients),
        ) as client:
            load = asyncio.gather(
                *(writer_client(client, path, until, f"c{i}", tally) for i in range(args.clients))
            )
            await asyncio.sleep(args.outage_after)
            await asyncio.to_thread(pg.stop)
            down_at = time.monotonic()
            await asyncio.sleep(args.outage)
            await asyncio.to_thread(pg.resume)
            back_at = time.monotonic()
            await load
        await proxy.close()
        await writer.close()

        on_cluster = {
            item["metadata"]["name"]
            for item in cluster.http.get(path).json()["items"]
            if item["metadata"]["name"] != "kube-root-ca.crt"
        }
        head = rt.audit.head_seq()
        decided_entries = list(entries_between(rt.audit, 0, head, kind="kubeproxy.request.decided"))
        bodies = "\n".join(json.dumps(e.details.get("body")) for e in decided_entries)
        decided_ids = {e.details.get("request_id") for e in decided_entries}
        answered_ids = {
            e.details.get("request_id")
            for e in entries_between(rt.audit, 0, head, kind="kubeproxy.request")
        }
        missing = sorted(name for name in on_cluster if f'"{name}"' not in bodies)
        after = [t for t in tally["completed_at"] if t >= back_at]
        recovery = (min(after) - back_at) if after else float("nan")
        during = [t for t in tally["completed_at"] if down_at <= t < back_at]
        print("database outage (PostgreSQL stopped and resumed on its port)")
        print(f"  clients {args.clients}, {args.duration:.0f} s, outage {args.outage:.1f} s")
        print(f"  writes completed: {tally['completed']} ({len(during)} during the outage)")
        print(f"  writes refused (503): {tally['refused']}; transport errors: {tally['errors']}")
        if tally["other"]:
            print(f"  other answers: {tally['other']}")
        print(f"  ConfigMaps on the cluster: {len(on_cluster)}")
        print(f"  records missing (on the cluster, no decided record): {len(missing)}")
        print(f"  decided records without an outcome: {len(decided_ids - answered_ids)}")
        print(f"  recovery: first completed write {recovery * 1000:.0f} ms after the database")
        print(f"  audit chain verifies: {rt.audit.verify().ok}")
        rt.close()
    finally:
        pg.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        cluster.stop()


def malformed(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 1:
        return b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 70_000 + b"\r\n\r\n"
    if kind == 2:
        return (
            b"POST /api/v1/namespaces/a/configmaps HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"
        )
    if kind == 3:
        return b"GET /api/v1/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"
    if kind == 4:
        return (
            b"POST /api/v1/namespaces/a/configmaps HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 99999999\r\n\r\n{"
        )
    if kind == 5:
        return b"GET / HTTP/1.1\r\n" + b"H: v\r\n" * 500 + b"\r\n"
    if kind == 6:
        return b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(200)
    return b"GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x00\x01\r\n\r\n"


async def one_malformed(host: str, port: int, data: bytes, tally: dict[str, int]) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError):
        tally["refused connection"] = tally.get("refused connection", 0) + 1
        return
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 20)
        status = line.split(b" ")[1].decode() if line.startswith(b"HTTP/1.1 ") else "closed"
    except (OSError, TimeoutError, IndexError):
        status = "closed"
    finally:
        writer.close()
    tally[status] = tally.get(status, 0) + 1


async def flood(args: argparse.Namespace) -> None:
    store = SessionStore()

    class Sink:
        async def record(self, event: object) -> None:
            return None

        def defer(self, event: object) -> None:
            return None

    proxy = KubeProxy(store, Sink())
    await proxy.start()
    host, port = proxy.address
    rng = random.Random(7)
    tally: dict[str, int] = {}
    before = rss_mib()
    peak = before
    sem = asyncio.Semaphore(args.flood_concurrency)

    async def bounded(data: bytes) -> None:
        nonlocal peak
        async with sem:
            await one_malformed(host, port, data, tally)
            peak = max(peak, rss_mib())

    started = time.monotonic()
    await asyncio.gather(*(bounded(malformed(rng)) for _ in range(args.flood)))
    took = time.monotonic() - started
    after = rss_mib()
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        probe = await client.get("/api", headers={"Authorization": "Bearer cmk_nope"})
    await proxy.close()
    print("malformed-request flood (the proxy in this process)")
    print(f"  {args.flood} requests, {args.flood_concurrency} at a time, {took:.1f} s")
    print(f"  answers: {dict(sorted(tally.items()))}")
    print(f"  RSS before {before:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB")
    print(f"  a valid request afterwards: HTTP {probe.status_code} (401: still answering)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--outage-after", type=float, default=3.0)
    parser.add_argument("--outage", type=float, default=3.0)
    parser.add_argument("--flood", type=int, default=4000)
    parser.add_argument("--flood-concurrency", type=int, default=400)
    parser.add_argument("--only", choices=("outage", "flood"), default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casemate-faults-"))
    try:
        if args.only in (None, "outage"):
            asyncio.run(outage(args, work))
        if args.only in (None, "flood"):
            asyncio.run(flood(args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
