"""Bastion gateway overhead: kubectl commands direct vs through Casemate's gateway.

Starts a disposable cluster (casemate.testenv.kube, the cached test binaries) and, in a temporary
data directory, a real installation: SQLite runtime (``--sqlite-sync``, FULL like ``casemate
serve``), the cluster registered, a system account provisioned (``edit`` in namespace A), a user
``bench`` (operator) granted it, the :class:`~casemate.gateway.service.Gateway` with the test
kubectl/helm and, in the same process and event loop, the HTTP API under uvicorn on loopback.
Namespace A holds ``--configmaps`` ConfigMaps and two Deployments (12 kwok pods).

(a) **Per command**: the same kubectl command lines, ``--runs`` times each, interleaved (each
    repetition rotates the order of the paths so all share the machine's noise):
      direct    kubectl (a subprocess; pipelines connected by pipes, no shell) with the system
                account's kubeconfig straight to the apiserver, discovery cache kept;
      session   ``BastionSession.run(line, write)`` on a session opened once beforehand;
      http      ``POST /api/v1/clusters/{c}/exec`` (NDJSON) with one persistent httpx client:
                this includes opening and closing a session for every command.
    Median and p90 per path, and the added time (median of the paired through − direct
    differences). Aim: under 15 ms added per command. kubectl's own process start and API
    round trips are in every path; the added time is the gateway's overhead.
(b) **Session start**: ``Gateway.open_session`` then ``close_session`` (aim: open + close under
    300 ms), and the time to the first byte of output of ``kubectl get configmaps`` from a cold
    start: in-process (open + run), over HTTP exec, and direct kubectl as the baseline.
(c) **Throughput**: ``--sessions`` sessions open at once, each running ``kubectl get configmaps``
    back to back for ``--duration`` seconds, vs the same number of direct kubectl loops: commands
    per second and the ratio gateway/direct.
(d) **API proxy alone** (bench/kubeproxy.py's measurement functions, against the gateway's own
    proxy with a ``casemate kubeconfig`` credential): ``GET /api/v1/namespaces/A/pods`` from
    ``--clients`` concurrent clients (a separate load process) for ``--proxy-duration`` seconds,
    and ``kubectl get pods`` one after another, direct vs through the proxy. Aims: p99 added
    under 5 ms, throughput at least 0.8 of direct.

Everything (load generators, gateway, apiserver, etcd) shares this machine's CPUs: the load
average and CPU count are printed first.

    .venv/bin/python bench/bastion.py [--runs 30] [--duration 20] [--sessions 50]
        [--clients 50] [--proxy-duration 10] [--sqlite-sync FULL|NORMAL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import platform
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import yaml

AIM_ADDED_MS = 15.0
AIM_SESSION_MS = 300.0
AIM_PROXY_P99_MS = 5.0
AIM_PROXY_RATIO = 0.8

NS = "bench-a"
CLUSTER = "bench"
USER = "bench"
COMMANDS = (
    f"kubectl get configmaps -n {NS}",
    f"kubectl get deployments -n {NS} -o name",
    f"kubectl get configmaps -n {NS} -o name | wc -l",
)
LOOP_COMMAND = COMMANDS[0]
PATHS = ("direct", "session", "http")


def _kubeproxy_bench() -> ModuleType:
    """bench/kubeproxy.py, for its load generator and helpers."""
    spec = importlib.util.spec_from_file_location(
        "bench_kubeproxy", Path(__file__).with_name("kubeproxy.py")
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


# Statistics --------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``, in the values' unit."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def ms(seconds: float) -> float:
    return seconds * 1000.0


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# Direct kubectl ----------------------------------------------------------------------------------


@dataclass
class Direct:
    """kubectl straight to the apiserver with the system account's credential."""

    env: dict[str, str]
    cwd: Path
    programs: dict[str, str]

    def argvs(self, line: str) -> list[list[str]]:
        stages = [stage.split() for stage in line.split("|")]
        return [[self.programs[argv[0]], *argv[1:]] for argv in stages]


@dataclass
class Ran:
    code: int
    output: bytes
    elapsed: float
    first_output: float  # seconds from start to the first byte of output (inf if none)


async def run_direct(direct: Direct, line: str) -> Ran:
    """Run ``line``'s stages connected by pipes (no shell), like the gateway's runner does."""
    t0 = time.perf_counter()
    stages = direct.argvs(line)
    procs: list[asyncio.subprocess.Process] = []
    previous: int | None = None
    for index, argv in enumerate(stages):
        last = index == len(stages) - 1
        read_end, write_end = (-1, -1) if last else os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=previous if previous is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if last else write_end,
                stderr=asyncio.subprocess.STDOUT if last else asyncio.subprocess.DEVNULL,
                cwd=direct.cwd,
                env=direct.env,
            )
        finally:
            if previous is not None:
                os.close(previous)
            if not last:
                os.close(write_end)
        previous = None if last else read_end
        procs.append(proc)
    stream = procs[-1].stdout
    assert stream is not None
    first = float("inf")
    chunks: list[bytes] = []
    while data := await stream.read(65536):
        if not chunks:
            first = time.perf_counter() - t0
        chunks.append(data)
    codes = [await p.wait() for p in procs]
    code = next((c for c in codes if c != 0), 0)
    return Ran(code, b"".join(chunks), time.perf_counter() - t0, first)


# Through the gateway -----------------------------------------------------------------------------


async def run_session(session: Any, line: str, *, since: float | None = None) -> Ran:
    """``BastionSession.run`` on an open session (times from ``since``, else from now)."""
    chunks: list[bytes] = []
    t0 = time.perf_counter() if since is None else since
    first = float("inf")

    async def write(data: bytes) -> None:
        nonlocal first
        if not chunks:
            first = time.perf_counter() - t0
        chunks.append(data)

    result = await session.run(line, write)
    return Ran(result.exit_code, b"".join(chunks), time.perf_counter() - t0, first)


async def run_http(client: httpx.AsyncClient, line: str) -> Ran:
    """``POST /api/v1/clusters/{c}/exec``: session start, the command, session end."""
    t0 = time.perf_counter()
    first = float("inf")
    chunks: list[bytes] = []
    code = -1
    async with client.stream(
        "POST", f"/api/v1/clusters/{CLUSTER}/exec", json={"line": line}
    ) as resp:
        if resp.status_code != 200:
            await resp.aread()
            raise SystemExit(f"exec {line!r}: HTTP {resp.status_code}: {resp.text[:300]}")
        async for raw in resp.aiter_lines():
            if not raw:
                continue
            msg = json.loads(raw)
            if msg["type"] == "output":
                if not chunks:
                    first = time.perf_counter() - t0
                chunks.append(msg["data"].encode())
            elif msg["type"] == "exit":
                code = msg["code"]
            elif msg["type"] == "error":
                raise SystemExit(f"exec {line!r}: {msg['message']}")
    return Ran(code, b"".join(chunks), time.perf_counter() - t0, first)


def first_words(output: bytes) -> list[str]:
    """What must agree between paths (ages in kubectl tables move between runs)."""
    return [ln.split()[0] for ln in output.decode(errors="replace").splitlines() if ln.strip()]


def check(ran: Ran, what: str) -> None:
    if ran.code != 0:
        text = ran.output.decode(errors="replace")[-500:]
        raise SystemExit(f"{what}: exit code {ran.code}:\n{text}")


# The installation --------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    kube: Any  # LocalCluster
    gateway: Any  # Gateway
    principal: Any  # Principal
    direct: Direct
    http: httpx.AsyncClient
    url: str
    sa_token: str
    work: Path
    kubectl: Path
    report: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def aim(self, what: str, value: str, ok: bool | None) -> None:
        self.report.append((what, value, ok))


def _created(resp: httpx.Response, what: str) -> None:
    if not resp.is_success:
        raise SystemExit(f"cannot create {what}: HTTP {resp.status_code}: {resp.text[:300]}")


def setup_cluster(kube: Any, configmaps: int) -> None:
    kube.create_namespace(NS)
    for i in range(configmaps):
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"settings-{i:03d}"},
            "data": {"key": "value " * 20},
        }
        _created(kube.http.post(f"/api/v1/namespaces/{NS}/configmaps", json=body), "a configmap")
    for name, replicas in (("web", 10), ("api", 2)):
        labels = {"app": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": name, "image": "nginx:1.27"}]},
                },
            },
        }
        resp = kube.http.post(f"/apis/apps/v1/namespaces/{NS}/deployments", json=body)
        _created(resp, f"deployment {name}")


def machine_line() -> str:
    load = os.getloadavg()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return (
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{os.cpu_count()} CPUs ({usable} usable)"
    )


# (a) per command ---------------------------------------------------------------------------------


async def per_command(b: Bench) -> None:
    runs = b.args.runs
    print(f"\n(a) Per command: {runs} runs of each command on each path, interleaved")
    print(
        "    direct = kubectl to the apiserver; session = BastionSession.run on an open "
        "session;\n    http = POST /exec (NDJSON), a session opened and closed per command"
    )
    session = await b.gateway.open_session(b.principal, CLUSTER, namespace=NS)
    try:

        async def one(path: str, line: str) -> Ran:
            if path == "direct":
                return await run_direct(b.direct, line)
            if path == "session":
                return await run_session(session, line)
            return await run_http(b.http, line)

        # warm-up (discovery caches, connections) and a check that every path agrees
        for line in COMMANDS:
            seen = {}
            for path in PATHS:
                ran = await one(path, line)
                check(ran, f"{path}: {line}")
                seen[path] = first_words(ran.output)
            if not seen["direct"] == seen["session"] == seen["http"]:
                raise SystemExit(f"the paths disagree on {line!r}: {seen}")

        times: dict[tuple[str, str], list[float]] = {
            (line, path): [] for line in COMMANDS for path in PATHS
        }
        for rep in range(runs):
            for line in COMMANDS:
                order = PATHS[rep % 3 :] + PATHS[: rep % 3]
                for path in order:
                    ran = await one(path, line)
                    check(ran, f"{path}: {line}")
                    times[(line, path)].append(ran.elapsed)
    finally:
        await session.close()

    print(f"\n    {'command':50s} {'path':8s} {'median':>8s} {'p90':>8s} {'added':>8s}  (ms)")
    worst: dict[str, float] = {"session": float("-inf"), "http": float("-inf")}
    for line in COMMANDS:
        direct = times[(line, "direct")]
        for index, path in enumerate(PATHS):
            values = times[(line, path)]
            shown = line if index == 0 else ""
            added = ""
            if path != "direct":
                diff = statistics.median(v - d for v, d in zip(values, direct, strict=True))
                worst[path] = max(worst[path], ms(diff))
                added = f"{ms(diff):+8.1f}"
            print(
                f"    {shown:50s} {path:8s} {ms(statistics.median(values)):8.1f} "
                f"{ms(pct(values, 0.9)):8.1f} {added:>8s}"
            )
    print(
        "    added = median over runs of (path − direct) in the same repetition; kubectl's own\n"
        "    start (~tens of ms) is in every path, the added time is the gateway's work: parse,\n"
        "    policy, audit records committed before and after, the proxy hop (TLS, its audit)."
    )
    b.aim(
        "(a) added per command, open session (worst command, median)",
        f"{worst['session']:.1f} ms (aim < {AIM_ADDED_MS:.0f} ms)",
        worst["session"] < AIM_ADDED_MS,
    )
    b.aim(
        "(a) added per command, HTTP exec incl. session start/end (worst command, median)",
        f"{worst['http']:.1f} ms (aim < {AIM_ADDED_MS:.0f} ms)",
        worst["http"] < AIM_ADDED_MS,
    )


# (b) session start -------------------------------------------------------------------------------


async def session_start(b: Bench) -> None:
    runs = b.args.runs
    line = LOOP_COMMAND
    print(f"\n(b) Session start: {runs} runs, interleaved; first output of '{line}'")
    opens: list[float] = []
    closes: list[float] = []
    totals: list[float] = []
    first_session: list[float] = []
    first_http: list[float] = []
    first_direct: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session = await b.gateway.open_session(b.principal, CLUSTER, namespace=NS)
        t1 = time.perf_counter()
        await session.close()
        t2 = time.perf_counter()
        opens.append(t1 - t0)
        closes.append(t2 - t1)
        totals.append(t2 - t0)

        t0 = time.perf_counter()
        session = await b.gateway.open_session(b.principal, CLUSTER, namespace=NS)
        try:
            ran = await run_session(session, line, since=t0)
        finally:
            await session.close()
        check(ran, f"session: {line}")
        first_session.append(ran.first_output)

        ran = await run_http(b.http, line)
        check(ran, f"http: {line}")
        first_http.append(ran.first_output)

        ran = await run_direct(b.direct, line)
        check(ran, f"direct: {line}")
        first_direct.append(ran.first_output)

    print(f"    {'':52s} {'median':>8s} {'p90':>8s}  (ms)")
    rows: list[tuple[str, list[float]]] = [
        ("Gateway.open_session", opens),
        ("close_session", closes),
        ("open + close", totals),
        ("first output: open_session + run (in-process)", first_session),
        ("first output: HTTP exec (from sending the request)", first_http),
        ("first output: direct kubectl (baseline)", first_direct),
    ]
    for name, values in rows:
        print(f"    {name:52s} {ms(statistics.median(values)):8.1f} {ms(pct(values, 0.9)):8.1f}")
    median_total = ms(statistics.median(totals))
    b.aim(
        "(b) session open + close (median)",
        f"{median_total:.1f} ms, p90 {ms(pct(totals, 0.9)):.1f} ms (aim < {AIM_SESSION_MS:.0f} ms)",
        median_total < AIM_SESSION_MS,
    )
    b.aim(
        "(b) time to first output, in-process / HTTP / direct (median)",
        f"{ms(statistics.median(first_session)):.0f} / {ms(statistics.median(first_http)):.0f}"
        f" / {ms(statistics.median(first_direct)):.0f} ms",
        None,
    )


# (c) throughput ----------------------------------------------------------------------------------


@dataclass
class Load:
    commands: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.commands / self.wall if self.wall else 0.0


async def loops(
    load: Load, count: int, duration: float, run: Callable[[int], Awaitable[Ran]]
) -> None:
    """``count`` loops running commands back to back until ``duration`` has passed (a loop
    finishes the command it started); adds to ``load``."""
    start = time.perf_counter()
    until = start + duration

    async def loop(index: int) -> None:
        while time.perf_counter() < until:
            ran = await run(index)
            load.latencies.append(ran.elapsed)
            load.commands += 1
            if ran.code != 0:
                load.failures += 1
                if load.failures <= 3:
                    print(f"    failure (exit {ran.code}): {ran.output[-300:]!r}")

    await asyncio.gather(*(loop(i) for i in range(count)))
    load.wall += time.perf_counter() - start


async def throughput(b: Bench) -> None:
    n, duration = b.args.sessions, b.args.duration
    line = LOOP_COMMAND
    print(f"\n(c) Throughput: {n} concurrent loops of '{line}' for {duration:.0f} s each")
    t0 = time.perf_counter()
    sessions = await asyncio.gather(
        *(b.gateway.open_session(b.principal, CLUSTER, namespace=NS) for _ in range(n))
    )
    opened = time.perf_counter() - t0
    direct, gateway = Load(), Load()
    try:
        # A B B A, half the duration each: drift of the machine's load hits both paths alike
        for which in ("direct", "gateway", "gateway", "direct"):
            if which == "direct":
                await loops(direct, n, duration / 2, lambda _i: run_direct(b.direct, line))
            else:
                await loops(gateway, n, duration / 2, lambda i: run_session(sessions[i], line))
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    print(f"    opening {n} sessions at once took {ms(opened):.0f} ms")
    print(f"    order: direct, gateway, gateway, direct ({duration / 2:.1f} s each)")
    print(f"    {'path':10s} {'cmds/s':>8s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'n':>6s}  failed")
    for name, load in (("direct", direct), ("gateway", gateway)):
        lat = load.latencies
        print(
            f"    {name:10s} {load.rate:8.1f} {ms(statistics.median(lat)):8.0f} "
            f"{ms(pct(lat, 0.9)):8.0f} {ms(pct(lat, 0.99)):8.0f} {len(lat):6d}  {load.failures}"
        )
    ratio = gateway.rate / direct.rate
    print(f"    ratio gateway/direct {ratio:.2f}")
    b.aim(
        f"(c) commands/s, {n} sessions, gateway vs direct",
        f"{gateway.rate:.1f} vs {direct.rate:.1f} cmds/s, ratio {ratio:.2f} (no set aim)",
        None,
    )
    if direct.failures or gateway.failures:
        b.aim("(c) failed commands", f"direct {direct.failures}, gateway {gateway.failures}", False)


# (d) API proxy alone -----------------------------------------------------------------------------


async def load_child(
    base: str, token: str, ca: str, path: str, clients: int, duration: float, warmup: float
) -> dict[str, float]:
    """bench/kubeproxy.py's ``load`` in another process (the gateway keeps this loop)."""
    config = {
        "base": base,
        "token": token,
        "ca": ca,
        "path": path,
        "clients": clients,
        "duration": duration,
        "warmup": warmup,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--load-child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(json.dumps(config).encode())
    if proc.returncode != 0:
        raise SystemExit(f"the load process failed ({proc.returncode}): {out[-500:]!r}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def run_load_child() -> None:
    config = json.loads(sys.stdin.readline())
    kp = _kubeproxy_bench()
    result = asyncio.run(
        kp.load(
            config["base"],
            config["token"],
            config["ca"],
            config["path"],
            config["clients"],
            config["duration"],
            config["warmup"],
        )
    )
    print(json.dumps(result), flush=True)


async def api_proxy(b: Bench) -> None:
    kp = _kubeproxy_bench()
    clients, duration, warmup = b.args.clients, b.args.proxy_duration, b.args.warmup
    path = f"/api/v1/namespaces/{NS}/pods"
    kube_ca = b.kube.ca_pem.decode()
    proxy_ca = b.gateway.certificates.ca_pem.decode()
    # the two credentials the proxy answers: a bastion session's token (what the session's
    # kubectl uses) and a 'casemate kubeconfig' credential (the person's own kubectl)
    session = await b.gateway.open_session(b.principal, CLUSTER, namespace=NS)
    kubeconfigs: dict[str, Path] = {
        "direct": kp.kubeconfig(
            b.work / "d-direct.kubeconfig", b.kube.server_url, kube_ca, b.sa_token
        ),  # fmt: skip
        "session": Path(session.env.env["KUBECONFIG"]),
        "kubeconfig": b.work / "d-kubeconfig.kubeconfig",
    }
    text, _ = await b.gateway.issue_kubeconfig(b.principal, CLUSTER, namespace=NS)
    kubeconfigs["kubeconfig"].write_text(text)
    kubeconfigs["kubeconfig"].chmod(0o600)
    targets: dict[str, tuple[str, str, str]] = {}
    for name, kc in kubeconfigs.items():
        doc = yaml.safe_load(kc.read_text())
        targets[name] = (
            doc["clusters"][0]["cluster"]["server"],
            doc["users"][0]["user"]["token"],
            kube_ca if name == "direct" else proxy_ca,
        )
    print(
        f"\n(d) API proxy alone (bench/kubeproxy.py's load generator and kubectl timing, against"
        f"\n    the gateway's proxy; every proxied request audited): GET {path},"
        f"\n    {clients} concurrent clients (a separate process), {duration:.0f} s per path after "
        f"{warmup:.1f} s warm-up"
    )
    print(
        "    session = a bastion session's token (cmk_), kubeconfig = a 'casemate kubeconfig'\n"
        "    credential (cmkc_; its grant is re-checked on every request)"
    )
    try:
        results: dict[str, dict[str, float]] = {}
        for name, (base, token, ca) in targets.items():
            results[name] = await load_child(base, token, ca, path, clients, duration, warmup)
        direct = results["direct"]
        print(f"    {'path':11s} {'p50':>8s} {'p99':>8s} {'req/s':>9s} {'n':>7s} "
              f"{'+p50':>8s} {'+p99':>8s} {'ratio':>6s}  (ms)")  # fmt: skip
        for name, r in results.items():
            extra = ""
            if name != "direct":
                extra = (
                    f"{r['p50'] - direct['p50']:+8.2f} {r['p99'] - direct['p99']:+8.2f} "
                    f"{r['rps'] / direct['rps']:6.2f}"
                )
            print(
                f"    {name:11s} {r['p50']:8.2f} {r['p99']:8.2f} {r['rps']:9.1f} {r['n']:7.0f} "
                f"{extra}"
            )
        for name in ("session", "kubeconfig"):
            r = results[name]
            added_p99 = r["p99"] - direct["p99"]
            ratio = r["rps"] / direct["rps"]
            b.aim(
                f"(d) proxy p99 added, {clients} clients, {name} credential",
                f"{added_p99:+.2f} ms (aim < {AIM_PROXY_P99_MS:.0f} ms)",
                added_p99 < AIM_PROXY_P99_MS,
            )
            b.aim(
                f"(d) proxy throughput ratio, {clients} clients, {name} credential",
                f"{ratio:.2f} ({r['rps']:.0f} vs {direct['rps']:.0f} req/s; "
                f"aim >= {AIM_PROXY_RATIO})",
                ratio >= AIM_PROXY_RATIO,
            )

        runs = b.args.runs
        samples: dict[str, list[float]] = {name: [] for name in kubeconfigs}
        chunk, done = 5, 0
        while done < runs:
            step = min(chunk, runs - done)
            for name, kc in kubeconfigs.items():
                home = b.work / f"d-home-{name}"
                home.mkdir(exist_ok=True)
                samples[name] += await asyncio.to_thread(
                    kp.kubectl_times, b.kubectl, kc, home, NS, step
                )
            done += step
    finally:
        await session.close()
    stats = {name: kp.summary(values) for name, values in samples.items()}
    print(
        f"    kubectl get pods -n {NS}: {runs} runs one after another per path (chunks of "
        f"{chunk}, paths alternating)"
    )
    kd = stats["direct"]
    for name, st in stats.items():
        added = ""
        if name != "direct":
            added = (
                f"  added p50 {st['p50'] - kd['p50']:+6.1f} ms  "
                f"p99 {st['p99'] - kd['p99']:+6.1f} ms"
            )
        print(f"    {name:11s} p50 {st['p50']:7.1f} ms  p99 {st['p99']:7.1f} ms{added}")
    for name in ("session", "kubeconfig"):
        st = stats[name]
        b.aim(
            f"(d) kubectl get pods, {name} credential, added (p50 / p99)",
            f"{st['p50'] - kd['p50']:+.1f} / {st['p99'] - kd['p99']:+.1f} ms",
            None,
        )


# Main --------------------------------------------------------------------------------------------


async def run_all(
    args: argparse.Namespace, kube: Any, work: Path
) -> list[tuple[str, str, bool | None]]:
    import uvicorn

    from casemate.bastion.runner import Tools
    from casemate.core.identity import Principal, powers
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings
    from casemate.gateway.service import Gateway
    from casemate.k8s.client import Credential
    from casemate.k8s.clusters import Clusters
    from casemate.server.app import create_app

    password = secrets.token_urlsafe(18)
    settings = load_settings(
        data_dir=work / "data",
        admin_password=secrets.token_urlsafe(18),
        kubeproxy_listen="127.0.0.1:0",
        sqlite_synchronous=args.sqlite_sync,
        log_level="WARNING",
    )
    rt = await asyncio.to_thread(open_runtime, settings, create=True)
    try:
        rt.identity.ensure_first_admin(settings)
        rt.identity.create_user(USER, by=None, password=password, roles=["operator"])
        clusters = Clusters(rt.db, rt.vault, rt.audit, token_wait=60.0)
        await asyncio.to_thread(
            clusters.register_cluster, CLUSTER, kube.server_url, kube.ca_pem, by=None
        )
        await asyncio.to_thread(
            clusters.provision_account,
            CLUSTER,
            "bench-ops",
            [NS],
            "edit",
            admin=Credential.bearer(kube.admin_token),
            by=None,
        )
        clusters.add_grant(CLUSTER, "bench-ops", by=None, user=USER, namespaces=[NS])
        u = rt.identity.get_user(USER)
        principal = Principal(
            u.id, u.username, u.effective_roles, u.groups, "session", powers(u.effective_roles)
        )
        access = clusters.resolve_access(principal, CLUSTER)
        sa_token = clusters.account_credential(access).token
        assert sa_token

        kp = _kubeproxy_bench()
        direct_kc = kp.kubeconfig(work / "direct.kubeconfig", kube.server_url,
                                  kube.ca_pem.decode(), sa_token)  # fmt: skip
        for sub in ("direct-home", "direct-cache", "direct-cwd"):
            (work / sub).mkdir()
        direct = Direct(
            env={
                "PATH": "/nonexistent",
                "HOME": str(work / "direct-home"),
                "KUBECONFIG": str(direct_kc),
                "KUBECACHEDIR": str(work / "direct-cache"),
                "KUBECTL_KUBERC": "false",
                "KUBERC": "off",
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "TERM": "dumb",
                "NO_PROXY": "*",
            },
            cwd=work / "direct-cwd",
            programs={"kubectl": str(kube.binaries.kubectl), "wc": shutil.which("wc") or "wc"},
        )

        gateway = Gateway(
            rt, tools=Tools.find(kube.binaries.kubectl, kube.binaries.helm), clusters=clusters
        )
        app = create_app(rt, gateway)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, server_header=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                    raise SystemExit("the HTTP server did not start")
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=url, timeout=120) as anon:
                resp = await anon.post(
                    "/api/v1/auth/login", json={"username": USER, "password": password}
                )
                resp.raise_for_status()
                token = resp.json()["token"]
            async with httpx.AsyncClient(
                base_url=url,
                timeout=120,
                headers={"Authorization": f"Bearer {token}"},
                limits=httpx.Limits(max_connections=args.sessions + 10),
            ) as client:
                bench = Bench(
                    args,
                    kube,
                    gateway,
                    principal,
                    direct,
                    client,
                    url,
                    sa_token,
                    work,
                    kube.binaries.kubectl,
                )
                await per_command(bench)
                await session_start(bench)
                await throughput(bench)
                await api_proxy(bench)
                return bench.report
        finally:
            server.should_exit = True
            await serving
            sock.close()
    finally:
        rt.close()


def print_aims(report: list[tuple[str, str, bool | None]]) -> None:
    print("\nAims")
    width = max((len(what) for what, _, _ in report), default=0)
    for what, value, ok in report:
        verdict = "" if ok is None else f"  [{met(ok)}]"
        print(f"  {what:{width}s}  {value}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="repetitions in (a), (b), (d)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per path in (c)")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent sessions in (c)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients in (d)")
    parser.add_argument("--proxy-duration", type=float, default=10.0, help="seconds in (d)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds in (d)")
    parser.add_argument("--configmaps", type=int, default=20)
    parser.add_argument("--sqlite-sync", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument("--load-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_child:
        run_load_child()
        return
    if args.quick:
        args.runs, args.duration, args.sessions, args.clients = 3, 3.0, 5, 5
        args.proxy_duration, args.warmup = 2.0, 0.5
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from casemate.testenv.kube import ClusterError, LocalCluster, find_binaries

    print("Casemate bastion gateway benchmark")
    print(f"  machine: {machine_line()}; Python {platform.python_version()}")
    print(
        f"  runs {args.runs}, throughput {args.sessions} sessions x {args.duration:.0f} s, "
        f"proxy {args.clients} clients x {args.proxy_duration:.0f} s, audit database SQLite "
        f"synchronous={args.sqlite_sync}{'  (--quick)' if args.quick else ''}"
    )
    try:
        binaries = find_binaries()
    except ClusterError as e:
        raise SystemExit(str(e)) from None
    with tempfile.TemporaryDirectory(prefix="casemate-bench-bastion-") as tmp:
        work = Path(tmp)
        kube = LocalCluster(work / "kube", binaries=binaries)
        t0 = time.monotonic()
        kube.start()
        try:
            setup_cluster(kube, args.configmaps)
            print(
                f"  cluster started in {time.monotonic() - t0:.1f} s; namespace {NS}: "
                f"{args.configmaps} configmaps, deployments web (10) and api (2)"
            )
            report = asyncio.run(run_all(args, kube, work))
        finally:
            kube.stop()
    print_aims(report)
    print(f"\n  machine at the end: {machine_line()}")


if __name__ == "__main__":
    main()
