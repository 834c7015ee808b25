"""Kubernetes API proxy overhead: ``GET /api/v1/namespaces/A/pods`` straight to the apiserver
with the system account's token vs through the proxy with a session token.

Starts a disposable cluster (casemate.testenv.kube) with ``--pods`` kwok pods in namespace A,
a ServiceAccount bound to ``edit`` there, and the proxy in its own process (TLS, the default
rules, every request audited through a real SQLite audit log with group commit). Then

* one client issuing ``--sequential`` GETs one after another, direct and through the proxy:
  the latency the proxy adds to a single request when nothing queues;
* ``--concurrency`` httpx async clients (one connection each) issue the GET back to back for
  ``--duration`` seconds, direct and through the proxy (after a warm-up): p50/p99 latency and
  requests/s;
* ``--kubectl-runs`` real ``kubectl get pods -n A`` invocations one after another, direct and
  through the proxy (discovery cached per mode, as on a workstation): p50/p99 wall time.

Prints the added p50/p99 latency (aim: p99 < 5 ms) and the throughput ratio proxy/direct
(aim: >= 0.8). The load generator, the proxy, the apiserver and etcd share this machine's CPUs.

    .venv/bin/python bench/kubeproxy.py [--duration 10] [--concurrency 50] [--pods 10]
        [--sequential 300] [--kubectl-runs 20] [--no-audit | --sqlite-sync FULL|NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

AIM_P99_MS = 5.0
AIM_RATIO = 0.8


# The proxy process ------------------------------------------------------------------------------


async def serve_proxy(config: dict[str, Any]) -> None:
    """Run in the child: a proxy for one session; prints its address, then serves until
    stdin closes."""
    from casemate.core.audit import AuditLog
    from casemate.core.db import Database
    from casemate.events import Event
    from casemate.k8s.client import Credential
    from casemate.kubeproxy.proxy import AuditWriter, KubeProxy, generate_certificates
    from casemate.kubeproxy.sessions import SessionGrant, SessionStore, Upstream

    class NoAudit:  # the proxy's AuditSink, writing nothing
        async def record(self, event: Event) -> None:
            return None

        def defer(self, event: Event) -> None:
            return None

    db = None
    writer: AuditWriter | None = None
    sink: Any
    if config["audit"]:
        db = Database.open(
            f"sqlite:///{config['workdir']}/audit.db", sqlite_synchronous=config["sqlite_sync"]
        )
        writer = AuditWriter(AuditLog(db))
        sink = writer
    else:
        sink = NoAudit()
    store = SessionStore()
    upstream = Upstream(config["server"], config["ca"].encode(), Credential.bearer(config["token"]))
    grant = SessionGrant(
        user="bench",
        groups=frozenset(),
        cluster="bench",
        account="bench",
        namespaces=(config["namespace"],),
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
    )
    issued = store.issue(grant, upstream)
    certs = generate_certificates()
    proxy = KubeProxy(store, sink)
    await proxy.start(tls=certs.server_context())
    print(
        json.dumps({"url": proxy.url, "ca": certs.ca_pem.decode(), "token": issued.token}),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await proxy.close()
    if writer is not None:
        await writer.close()
    if db is not None:
        db.dispose()


# Load ------------------------------------------------------------------------------------------


async def one_client(
    base: str, token: str, ca: str, path: str, until: float, latencies: list[float]
) -> int:
    ctx = ssl.create_default_context(cadata=ca)
    count = 0
    async with httpx.AsyncClient(
        base_url=base,
        verify=ctx,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=30,
        limits=httpx.Limits(max_connections=1),
    ) as client:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            resp = await client.get(path)
            elapsed = time.perf_counter() - t0
            if resp.status_code != 200:
                raise SystemExit(f"{base}{path}: HTTP {resp.status_code}: {resp.text[:200]}")
            latencies.append(elapsed)
            count += 1
    return count


async def load(
    base: str, token: str, ca: str, path: str, concurrency: int, duration: float, warmup: float
) -> dict[str, float]:
    scratch: list[float] = []
    until = time.perf_counter() + warmup
    await asyncio.gather(
        *(one_client(base, token, ca, path, until, scratch) for _ in range(concurrency))
    )
    latencies: list[float] = []
    start = time.perf_counter()
    until = start + duration
    counts = await asyncio.gather(
        *(one_client(base, token, ca, path, until, latencies) for _ in range(concurrency))
    )
    wall = time.perf_counter() - start
    return summary(latencies, sum(counts) / wall)


async def sequential(base: str, token: str, ca: str, path: str, count: int) -> dict[str, float]:
    latencies: list[float] = []
    warm: list[float] = []
    await one_client(base, token, ca, path, time.perf_counter() + 1.0, warm)
    ctx = ssl.create_default_context(cadata=ca)
    async with httpx.AsyncClient(
        base_url=base,
        verify=ctx,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=30,
    ) as client:
        for _ in range(count):
            t0 = time.perf_counter()
            resp = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                raise SystemExit(f"{base}{path}: HTTP {resp.status_code}")
    return summary(latencies)


def summary(latencies: list[float], rps: float = 0.0) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "rps": rps,
    }


def kubectl_times(kubectl: Path, kubeconfig: Path, home: Path, ns: str, runs: int) -> list[float]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    times = []
    subprocess.run([str(kubectl), "get", "pods", "-n", ns], env=env, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(kubectl), "get", "pods", "-n", ns], env=env, check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        times.append(time.perf_counter() - t0)
    return times


def kubeconfig(path: Path, server: str, ca: str, token: str) -> Path:
    import base64

    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
                },
            }
        ],
        "users": [{"name": "c", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--kubectl-runs", type=int, default=20)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--no-audit", action="store_true")
    parser.add_argument(
        "--sqlite-sync", default="FULL", choices=["FULL", "NORMAL"], help="audit database mode"
    )
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        asyncio.run(serve_proxy(json.loads(sys.stdin.readline())))
        return

    from casemate.testenv.kube import LocalCluster

    ns = "bench-a"
    with tempfile.TemporaryDirectory(prefix="casemate-bench-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "kube")
        cluster.start()
        proxy_proc = None
        try:
            cluster.create_namespace(ns)
            cluster.kubectl("-n", ns, "create", "serviceaccount", "bench")
            cluster.kubectl("-n", ns, "create", "rolebinding", "bench-edit",
                            "--clusterrole=edit", f"--serviceaccount={ns}:bench")  # fmt: skip
            for i in range(args.pods):
                cluster.kubectl("-n", ns, "run", f"pod-{i}", "--image=busybox")
            token = cluster.kubectl("-n", ns, "create", "token", "bench", "--duration=2h")
            sa_token = token.stdout.strip()
            ca = cluster.ca_pem.decode()
            proxy_proc = subprocess.Popen(
                [sys.executable, __file__, "--serve-proxy"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proxy_proc.stdin is not None and proxy_proc.stdout is not None
            proxy_proc.stdin.write(
                json.dumps(
                    {
                        "server": cluster.server_url,
                        "ca": ca,
                        "token": sa_token,
                        "namespace": ns,
                        "audit": not args.no_audit,
                        "sqlite_sync": args.sqlite_sync,
                        "workdir": str(work),
                    }
                )
                + "\n"
            )
            proxy_proc.stdin.flush()
            proxy = json.loads(proxy_proc.stdout.readline())
            path = f"/api/v1/namespaces/{ns}/pods"

            if args.sequential:
                print(f"GET {path} ({args.pods} pods), one client, {args.sequential} requests:")
                one = {
                    name: asyncio.run(sequential(base, token, ca, path, args.sequential))
                    for name, base, token, ca in (
                        ("direct", cluster.server_url, sa_token, ca),
                        ("proxy", proxy["url"], proxy["token"], proxy["ca"]),
                    )
                }
                for name, s in one.items():
                    print(f"  {name:7s} p50 {s['p50']:7.2f} ms  p99 {s['p99']:7.2f} ms")
                print(f"  added   p50 {one['proxy']['p50'] - one['direct']['p50']:7.2f} ms  "
                      f"p99 {one['proxy']['p99'] - one['direct']['p99']:7.2f} ms")  # fmt: skip
            audit_mode = "off" if args.no_audit else f"on (SQLite {args.sqlite_sync}, group commit)"
            print(
                f"GET {path} ({args.pods} pods), {args.concurrency} concurrent clients, "
                f"{args.duration:.0f}s each (after {args.warmup:.0f}s warm-up); "
                f"audit {audit_mode}"
            )
            direct = asyncio.run(load(cluster.server_url, sa_token, ca, path,
                                      args.concurrency, args.duration, args.warmup))  # fmt: skip
            proxied = asyncio.run(load(proxy["url"], proxy["token"], proxy["ca"], path,
                                       args.concurrency, args.duration, args.warmup))  # fmt: skip
            for name, s in (("direct", direct), ("proxy", proxied)):
                print(
                    f"  {name:7s} p50 {s['p50']:7.2f} ms  p99 {s['p99']:7.2f} ms  "
                    f"{s['rps']:8.1f} req/s  (n={s['n']:.0f})"
                )
            added_p50 = proxied["p50"] - direct["p50"]
            added_p99 = proxied["p99"] - direct["p99"]
            ratio = proxied["rps"] / direct["rps"]
            met_p99 = "met" if added_p99 < AIM_P99_MS else "NOT met"
            met_ratio = "met" if ratio >= AIM_RATIO else "NOT met"
            print(f"  added   p50 {added_p50:7.2f} ms  p99 {added_p99:7.2f} ms "
                  f"(aim p99 < {AIM_P99_MS:.0f} ms: {met_p99})")  # fmt: skip
            print(f"  throughput ratio proxy/direct {ratio:.2f} (aim >= {AIM_RATIO}: {met_ratio})")

            if args.kubectl_runs:
                kubectl = cluster.binaries.kubectl if cluster.binaries else None
                assert kubectl is not None
                direct_kc = kubeconfig(work / "direct.kubeconfig", cluster.server_url, ca,
                                       sa_token)  # fmt: skip
                proxy_kc = kubeconfig(work / "proxy.kubeconfig", proxy["url"], proxy["ca"],
                                      proxy["token"])  # fmt: skip
                (work / "home-direct").mkdir()
                (work / "home-proxy").mkdir()
                kd = summary(kubectl_times(kubectl, direct_kc, work / "home-direct", ns,
                                           args.kubectl_runs))  # fmt: skip
                kp = summary(kubectl_times(kubectl, proxy_kc, work / "home-proxy", ns,
                                           args.kubectl_runs))  # fmt: skip
                print(f"kubectl get pods -n {ns}, {args.kubectl_runs} runs one after another:")
                for name, s in (("direct", kd), ("proxy", kp)):
                    print(f"  {name:7s} p50 {s['p50']:7.1f} ms  p99 {s['p99']:7.1f} ms")
                print(f"  added   p50 {kp['p50'] - kd['p50']:7.1f} ms  "
                      f"p99 {kp['p99'] - kd['p99']:7.1f} ms")  # fmt: skip
        finally:
            if proxy_proc is not None:
                if proxy_proc.stdin is not None:
                    proxy_proc.stdin.close()
                proxy_proc.wait(timeout=30)
            cluster.stop()


if __name__ == "__main__":
    main()
