"""Posture: manifest scan seconds and peak memory for 10,000 objects; admission webhook
latency at 50 concurrent requests.

Writes a corpus of manifests (100 files of 100 documents across 50 namespaces: Deployments,
StatefulSets, CronJobs, Pods, Services, ConfigMaps, Roles, RoleBindings, NetworkPolicies), then
reads and checks them with every rule, as ``casemate posture scan DIR`` does (its own
``scan_items``) (findings kept,
namespace rules at the end). Peak memory is the process's maximum resident set (ru_maxrss),
interpreter included. Then the admission webhook (``casemate admission serve`` in its own process,
TLS on loopback) answers ``--requests`` AdmissionReviews (``--mix``: by default pods of 20
ReplicaSet templates in turn, each with its own name and uid) from ``--concurrency``
clients; p50 and p99 are per request, client side. As a peer, kube-score (built from its Go
module: ``go install github.com/zegl/kube-score/cmd/kube-score@v1.20.0``; found on PATH or in
~/go/bin) scores the same files, and the time ratio is printed. Aims (issue 13): under 5 s and under
300 MB for the scan, p99 under 20 ms for the webhook.

    .venv/bin/python bench/posture.py [--objects 10000] [--per-file 100]
        [--requests 2000] [--concurrency 50] [--no-webhook] [--no-manifests]
        [--live 2000,10000]

``--live`` starts a fresh test cluster, fills it up to each count (suspended CronJobs, Roles,
ConfigMaps) and scans it live in a new process after each step: seconds, CPU and that
process's peak memory (VmHWM), to show that memory does not grow with the object count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import ipaddress
import json
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from casemate.cli.posture_common import scan_items
from casemate.posture.admission import AdmissionPolicy, review_response
from casemate.posture.engine import Scanner
from casemate.posture.manifests import load_paths

T = TypeVar("T")

AIM_SECONDS = 5.0
AIM_MB = 300.0
AIM_P99_MS = 20.0


def _container(i: int) -> dict[str, object]:
    c: dict[str, object] = {
        "name": f"app{i}",
        "image": f"registry.example/team/app{i % 37}:1.{i % 9}",
        "ports": [{"containerPort": 8080}],
        "env": [{"name": "MODE", "value": "prod"}, {"name": "API_TOKEN", "value": f"tok{i}x"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    if i % 3 == 0:
        c["securityContext"] = {"privileged": i % 6 == 0, "runAsUser": 0}
    else:
        c["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        }
    return c


def _object(i: int) -> dict[str, object]:
    ns = f"team-{i % 50}"
    meta = {"name": f"obj-{i}", "namespace": ns, "labels": {"app": f"app{i % 20}"}}
    pod_spec = {"containers": [_container(i), _container(i + 1)], "hostNetwork": i % 11 == 0}
    template = {"metadata": {"labels": {"app": f"app{i % 20}"}}, "spec": pod_spec}
    kind = i % 9
    if kind == 0:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                "spec": {"replicas": 2, "template": template}}  # fmt: skip
    if kind == 1:
        return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                "spec": {"template": template}}  # fmt: skip
    if kind == 2:
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": "0 * * * *",
                         "jobTemplate": {"spec": {"template": template}}}}  # fmt: skip
    if kind == 3:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
    if kind == 4:
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"type": "NodePort" if i % 2 else "ClusterIP",
                         "ports": [{"port": 80}]}}  # fmt: skip
    if kind == 5:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {"app.conf": "x = 1\n" * 20, "db_password": "s3cret"}}  # fmt: skip
    if kind == 6:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                "rules": [{"apiGroups": [""], "resources": ["secrets", "pods"],
                           "verbs": ["get", "list"]}]}  # fmt: skip
    if kind == 7:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "cluster-admin"},
                "subjects": [{"kind": "User", "name": f"u{i}"}]}  # fmt: skip
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": {"matchLabels": {"app": f"app{i % 20}"}},
                     "ingress": [{"from": [{"podSelector": {}}]}]}}  # fmt: skip


TEMPLATES = 20


def _replica_pod(template: int, n: int, distinct: bool = False) -> dict[str, object]:
    """Pod ``n`` as a ReplicaSet creates it from template ``template``: the template's spec and
    labels, its own name, uid and managedFields (what admission reviews of pods look like).
    ``distinct``: also a different image tag per pod, so no two pods share a template."""
    t = template
    containers = [_container(t), _container(t + 1)]
    if distinct:
        containers[0]["image"] = f"registry.example/team/app{t}:{n}"
    rs = f"app{t}-7d9f4c"
    meta = {
        "name": f"{rs}-{n:05d}",
        "generateName": f"{rs}-",
        "namespace": f"team-{t % 50}",
        "uid": f"0b7c{n:08d}-{t:04d}-4c1e-9d7a-5e2f8a1b3c4d",
        "labels": {"app": f"app{t % 20}", "pod-template-hash": "7d9f4c"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                             "uid": f"rs-{t}", "controller": True,
                             "blockOwnerDeletion": True}],
        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                           "apiVersion": "v1", "time": f"2026-12-05T06:{n % 60:02d}:00Z",
                           "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:metadata": {"f:generateName": {}}}}],
    }  # fmt: skip
    spec = {"containers": containers, "hostNetwork": t % 11 == 0}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _review_body(obj: dict[str, object], uid: str) -> bytes:
    kind = obj["kind"]
    group = str(obj["apiVersion"]).rpartition("/")[0]
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "operation": "CREATE",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "object": obj,
            },
        }
    ).encode()


def review_bodies(count: int, mix: str) -> list[bytes]:
    """``templates``: pods of :data:`TEMPLATES` ReplicaSet templates in turn, each with its own
    name and uid; ``distinct``: every pod a template of its own; ``deployment``: the same
    Deployment every time (the figure before the memo)."""
    if mix == "deployment":
        return [_review_body(_object(0), "bench")] * count
    return [
        _review_body(_replica_pod(n % TEMPLATES, n, mix == "distinct"), f"review-{n}")
        for n in range(count)
    ]


def write_corpus(folder: Path, objects: int, per_file: int) -> int:
    total = 0
    for start in range(0, objects, per_file):
        docs = [_object(i) for i in range(start, min(start + per_file, objects))]
        text = yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
        path = folder / f"part-{start // per_file:04d}.yaml"
        path.write_text(text)
        total += path.stat().st_size
    return total


def _tls(folder: Path) -> tuple[Path, Path, ssl.SSLContext]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, ssl.create_default_context(cadata=pem.decode())


def bench_kube_score(folder: Path) -> float | None:
    """Seconds kube-score takes to score every file of ``folder`` (None if not installed)."""
    program = shutil.which("kube-score") or str(Path.home() / "go" / "bin" / "kube-score")
    if not Path(program).is_file():
        return None
    files = sorted(str(p) for p in folder.glob("*.yaml"))
    start = time.perf_counter()
    done = subprocess.run(
        [program, "score", "--output-format", "ci", *files], capture_output=True, check=False
    )
    elapsed = time.perf_counter() - start
    if not done.stdout:
        raise SystemExit(f"kube-score failed: {done.stderr.decode(errors='replace')[:500]}")
    return elapsed


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` and its live children (the --workers) so far."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for p in (pid, *map(int, children)):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _Connection:
    """One kept-alive HTTPS/1.1 connection to the webhook (as the API server keeps them): a
    raw client so the bench's own CPU stays small next to the server's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        return cls(reader, writer)

    async def review(self, request: bytes) -> bytes:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if status != b"200":
            raise SystemExit(f"webhook answered {status.decode()}: {body[:200]!r}")
        return body

    def close(self) -> None:
        self.writer.close()


def _run_fast(coro: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on uvloop when it is installed (as the server's uvicorn does):
    its CPU per review is then smaller, leaving more of the shared cores to the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    latencies = sorted(latencies)
    return (
        statistics.median(latencies) * 1000,
        latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
    )


def bench_webhook(
    requests: int, concurrency: int, rate: float, workers: int = 1, mix: str = "templates"
) -> None:
    with tempfile.TemporaryDirectory(prefix="casemate-webhook-bench-") as tmp:
        cert, key, client_ctx = _tls(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "casemate.cli", "admission", "serve", "--cert", str(cert),
             "--key", str(key), "--listen", f"127.0.0.1:{port}",
             "--max-in-flight", str(concurrency * 4), "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"https://127.0.0.1:{port}/healthz", verify=client_ctx, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the webhook did not start") from None
                time.sleep(0.2)
        head = (
            f"POST /validate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {{}}\r\n\r\n"
        )
        bodies = review_bodies(requests + concurrency, mix)
        wires = [head.format(len(b)).encode() + b for b in bodies]
        warm, wires = wires[:concurrency], wires[concurrency:]
        turn = iter(range(10**9))

        def request() -> bytes:
            """The next review of the mix (closed and open loop both go through it in turn)."""
            return wires[next(turn) % len(wires)]

        async def closed_loop(conns: list[_Connection]) -> tuple[list[float], float]:
            """Every client sends its next review as soon as the last one is answered."""
            latencies: list[float] = []
            per_client = max(1, requests // concurrency)

            async def client(conn: _Connection) -> None:
                for _ in range(per_client):
                    start = time.perf_counter()
                    await conn.review(request())
                    latencies.append(time.perf_counter() - start)

            start = time.perf_counter()
            await asyncio.gather(*(client(c) for c in conns))
            return latencies, time.perf_counter() - start

        async def open_loop(conns: list[_Connection]) -> list[float]:
            """Reviews arrive at ``rate`` per second (as admissions do), at most
            ``concurrency`` in flight; latency counts from the arrival, queueing included."""
            idle: asyncio.Queue[_Connection] = asyncio.Queue()
            for c in conns:
                idle.put_nowait(c)
            latencies: list[float] = []

            async def one(arrival: float) -> None:
                conn = await idle.get()
                try:
                    await conn.review(request())
                finally:
                    idle.put_nowait(conn)
                latencies.append(time.perf_counter() - arrival)

            tasks = []
            begin = time.perf_counter()
            for i in range(requests):
                arrival = begin + i / rate
                delay = arrival - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(arrival)))
            await asyncio.gather(*tasks)
            return latencies

        async def run() -> tuple[list[float], float, list[float], dict[str, float]]:
            conns = [await _Connection.open(port, client_ctx) for _ in range(concurrency)]
            await asyncio.gather(*(c.review(w) for c, w in zip(conns, warm, strict=True)))
            cpu0, me0 = _cpu_seconds(proc.pid), time.process_time()
            closed, elapsed = await closed_loop(conns)
            cpu1, me1 = _cpu_seconds(proc.pid), time.process_time()
            opened = await open_loop(conns)
            cpu2, me2 = _cpu_seconds(proc.pid), time.process_time()
            for c in conns:
                c.close()
            cpu = {
                "closed": (cpu1 - cpu0) / len(closed) * 1000,
                "closed-client": (me1 - me0) / len(closed) * 1000,
                "open": (cpu2 - cpu1) / len(opened) * 1000,
                "open-client": (me2 - me1) / len(opened) * 1000,
            }
            return closed, elapsed, opened, cpu

        try:
            closed, elapsed, opened, cpu = _run_fast(run())
        finally:
            proc.terminate()
            proc.wait(10)
    closed_cpu = cpu["closed"]
    p50, p99 = _percentiles(closed)
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    client_loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    what = {"templates": f"pods of {TEMPLATES} ReplicaSet templates in turn, each with its own "
            "name and uid", "distinct": "pods each of its own template (no memo hit)",
            "deployment": "the same 1.1 KB Deployment every time"}[mix]  # fmt: skip
    print(f"webhook reviews: {what} ({len(bodies[0]):,} bytes)")
    print(f"webhook with {workers} worker process(es) ({parser} HTTP parser; load generator "
          f"on {client_loop}), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"webhook, closed loop ({concurrency} kept-alive clients, each sending its next review "
          f"when answered): {len(closed)} reviews in {elapsed:.1f} s "
          f"({len(closed) / elapsed:,.0f}/s); p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
          f"server CPU {closed_cpu:.2f} ms per review, load generator CPU "
          f"{cpu['closed-client']:.2f} ms per review")  # fmt: skip
    o50, o99 = _percentiles(opened)
    print(f"webhook, open loop ({rate:.0f} reviews/s arriving, at most {concurrency} in flight): "
          f"{len(opened)} reviews; p50 {o50:.1f} ms, p99 {o99:.1f} ms; "
          f"server CPU {cpu['open']:.2f} ms per review, load generator CPU "
          f"{cpu['open-client']:.2f} ms per review")  # fmt: skip
    for label, sample in (
        (mix, bodies[:1000]),
        ("distinct", review_bodies(1000, "distinct")),
    ):
        policy = AdmissionPolicy.build()
        start = time.process_time()
        for body in sample:
            review_response(body, policy)
        per_review = (time.process_time() - start) / len(sample) * 1000
        print(f"webhook decision alone (in process, {label}): {per_review:.3f} ms CPU per review")
    cores = min(workers, os.cpu_count() or 1)
    both = closed_cpu + cpu["closed-client"]
    print(f"closed loop bound (Little's law): latency >= {concurrency} in flight x CPU per review "
          f"/ cores: server alone {concurrency * closed_cpu / cores:.0f} ms on {cores} "
          f"core(s); server + load generator on the {os.cpu_count()} shared cores "
          f"{concurrency * both / (os.cpu_count() or 1):.0f} ms")  # fmt: skip
    print(f"ratio to aim: webhook p99 {o99 / AIM_P99_MS:.2f}x (open loop), "
          f"{p99 / AIM_P99_MS:.2f}x (closed loop) of {AIM_P99_MS:.0f} ms")  # fmt: skip


# -- live scan of the test cluster

LIVE_NAMESPACES = 20


def _live_object(i: int) -> tuple[str, dict[str, object]]:
    """(collection path, object) of the i-th live object: suspended CronJobs (a pod template
    with findings, and no controller creating anything), Roles and ConfigMaps."""
    ns = f"bench-{i % LIVE_NAMESPACES}"
    meta = {"name": f"o{i}", "namespace": ns, "labels": {"app": f"app{i % 37}"}}
    if i % 3 == 0:
        pod = {"containers": [_container(i)], "restartPolicy": "Never"}
        return f"/apis/batch/v1/namespaces/{ns}/cronjobs", {
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": {"schedule": "0 3 * * *", "suspend": True,
                     "jobTemplate": {"spec": {"template": {"spec": pod}}}},
        }  # fmt: skip
    if i % 3 == 1:
        return f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["secrets", "pods/exec"],
                       "verbs": ["get", "list", "create"]}],
        }  # fmt: skip
    return f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
        "data": {"LOG_LEVEL": "info", "PORT": str(8000 + i % 100)},
    }  # fmt: skip


def _create(http: httpx.Client, first: int, last: int, threads: int = 8) -> float:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> None:
        path, obj = _live_object(i)
        resp = http.post(path, json=obj)
        if resp.status_code not in (201, 409):
            raise SystemExit(f"creating {path}: {resp.status_code} {resp.text[:200]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(first, last)))
    return time.perf_counter() - start


def live_child() -> None:
    """One live scan in this (fresh) process: every resource of every namespace, page by page,
    each object checked with every rule as it arrives; findings counted, not kept, so the
    process's peak memory is the reader's and the engine's. Prints one JSON line."""
    from casemate.k8s.client import Credential, KubeClient
    from casemate.posture.live import iter_cluster
    from casemate.posture.model import Subject

    ca = Path(os.environ["BENCH_CA"]).read_bytes()
    credential = Credential.bearer(os.environ.pop("BENCH_TOKEN"))
    rss_before = _vm_hwm_mb()
    scanner = Scanner()
    findings = problems = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    with KubeClient(os.environ["BENCH_SERVER"], ca, credential, cluster="bench") as client:
        for item in iter_cluster(client, cluster="bench"):
            if isinstance(item, Subject):
                findings += len(scanner.check(item))
            else:
                problems += 1
        findings += len(scanner.finish())
    print(json.dumps({
        "objects": scanner.objects, "findings": findings, "problems": problems,
        "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu_start,
        "rss_before_mb": rss_before,
        "peak_mb": _vm_hwm_mb(),
    }))  # fmt: skip


def _vm_hwm_mb() -> float:
    """This process's peak resident set since its exec (ru_maxrss would include the parent's
    high-water mark from before the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_live(steps: list[int]) -> None:
    """Start a fresh test cluster, fill it up to each of ``steps`` objects and scan it live in a
    new process each time (its peak memory then says whether memory grows with the count)."""
    from casemate.testenv.kube import LocalCluster

    with tempfile.TemporaryDirectory(prefix="casemate-posture-live-") as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.start()
        try:
            for n in range(LIVE_NAMESPACES):
                cluster.create_namespace(f"bench-{n}")
            ca_file = Path(tmp) / "ca.pem"
            ca_file.write_bytes(cluster.ca_pem)
            env = {**os.environ, "BENCH_SERVER": cluster.server_url, "BENCH_CA": str(ca_file),
                   "BENCH_TOKEN": cluster.admin_token}  # fmt: skip
            created = 0
            for target in steps:
                took = _create(cluster.http, created, target)
                print(f"live: created objects {created}..{target} in {took:.1f} s")
                created = target
                out = subprocess.run(
                    [sys.executable, __file__, "--live-child"],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"live scan, {target} bench objects ({r['objects']} objects read in all, "
                      f"{r['findings']} findings, {r['problems']} not checked): "
                      f"{r['seconds']:.2f} s wall, {r['cpu']:.2f} s CPU, peak memory "
                      f"{r['peak_mb']:.0f} MB (imports: {r['rss_before_mb']:.0f} MB)")  # fmt: skip
        finally:
            cluster.stop()
    print(f"load average: {os.getloadavg()[0]:.1f} (shared machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--per-file", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop reviews per second")
    parser.add_argument("--no-webhook", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="admission serve --workers")
    parser.add_argument(
        "--mix",
        choices=("templates", "distinct", "deployment"),
        default="templates",
        help="the webhook's reviews: pods of 20 templates in turn (default), pods that share no "
        "template, or one Deployment again and again",
    )
    parser.add_argument("--no-manifests", action="store_true")
    parser.add_argument(
        "--live", default="", help="object counts to scan live, e.g. 2000,10000 (a test cluster)"
    )
    parser.add_argument("--live-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.live_child:
        live_child()
        return
    if args.live:
        bench_live([int(n) for n in args.live.split(",")])
    if args.no_manifests:
        if not args.no_webhook:
            bench_webhook(args.requests, args.concurrency, args.rate, args.workers, args.mix)
        return
    with tempfile.TemporaryDirectory(prefix="casemate-posture-bench-") as tmp:
        folder = Path(tmp)
        size = write_corpus(folder, args.objects, args.per_file)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        cpu_start = time.process_time()
        scanner = Scanner()
        findings, problem_list = scan_items(load_paths([str(folder)]), scanner)
        problems = len(problem_list)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peer = bench_kube_score(folder)
    print(f"corpus: {scanner.objects} objects, {size / 1e6:.1f} MB of YAML, {problems} problems")
    print(f"manifest scan: {seconds:.2f} s wall, {cpu:.2f} s CPU, {len(findings)} findings "
          f"({scanner.objects / seconds:,.0f} objects/s)")  # fmt: skip
    print(f"peak memory (max RSS): {peak:.0f} MB (before the scan: {rss_before:.0f} MB)")
    print(f"ratio to aim: time {seconds / AIM_SECONDS:.2f}x of {AIM_SECONDS:.0f} s, "
          f"memory {peak / AIM_MB:.2f}x of {AIM_MB:.0f} MB")  # fmt: skip
    if peer is None:
        print(
            "kube-score: not found (go install github.com/zegl/kube-score/cmd/kube-score@v1.20.0)"
        )
    else:
        print(f"kube-score on the same files: {peer:.2f} s wall; casemate/kube-score time ratio "
              f"{seconds / peer:.2f}")  # fmt: skip
    if not args.no_webhook:
        bench_webhook(args.requests, args.concurrency, args.rate, args.workers, args.mix)


if __name__ == "__main__":
    main()
