"""Container terminal latency: ``kubectl exec -it`` direct vs through Casemate's bastion.

Starts a disposable cluster with the real node (casemate.testenv), a busybox pod on it, and in
a temporary data directory a real installation (SQLite runtime, the cluster registered, a
system account provisioned with ``edit`` in the pod's namespace, a user granted it, an
approver) with the :class:`~casemate.gateway.service.Gateway` in this process.

(a) **Time to the container prompt**: direct, kubectl on a pty of its own with the admin
    kubeconfig straight to the apiserver, from its start to ``/ # ``; through Casemate, the
    line typed into the session's terminal (:class:`~casemate.gateway.terminal.TerminalShell`)
    to the prompt, excluding the review: (Enter → "waiting for approval") + ("approved by" →
    prompt); the time the session takes to notice an approval (the review's poll of the
    database) is printed apart. Aim: under 300 ms added.
(b) **Keystroke echo latency** in the container shell: one character typed, until its echo is
    on the screen, ``--keys`` times (a line is cleared with Ctrl-U every 50 keys); p50/p99
    direct and through Casemate. Aim: under 5 ms added at p99.

Everything shares this machine's CPUs (apiserver, etcd, kubelet, containerd, the gateway).

    sudo .venv/bin/python bench/container_terminal.py [--runs 10] [--keys 300]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROMPT = b"/ # "
KEYS = b"abcdfghijklmnopqrstuvwxyz"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class Screen:
    """A terminal's output with a way to wait for a text after a mark."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = asyncio.Event()

    async def __call__(self, data: bytes) -> None:
        self.data += data
        self.changed.set()

    async def wait_for(self, text: bytes, start: int, timeout: float = 60) -> float:
        deadline = time.perf_counter() + timeout
        while text not in self.data[start:]:
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise SystemExit(f"{text!r} not shown: {bytes(self.data[-500:])!r}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass
        return time.perf_counter()


class Direct:
    """``kubectl exec -it POD -- sh`` on a pty of its own (casemate.bastion.ptyrun's driver,
    with the admin kubeconfig: no Casemate in the path)."""

    def __init__(self, kubectl: str, kubeconfig: Path, ns: str, pod: str, cwd: Path) -> None:
        from casemate.bastion.ptyrun import PtyTerminal

        self.argv = [kubectl, "exec", "-it", "-n", ns, pod, "--", "sh"]
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "KUBECONFIG": str(kubeconfig),
            "TERM": "xterm",
        }
        self.cwd = cwd
        self.terminal = PtyTerminal(100, 30)
        self.screen = Screen()
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> float:
        from casemate.bastion.ptyrun import run_on_pty

        t0 = time.perf_counter()
        self.task = asyncio.ensure_future(
            run_on_pty(
                self.argv,
                cwd=self.cwd,
                environ=self.env,
                terminal=self.terminal,
                sink=self.screen,
            )
        )
        return await self.screen.wait_for(PROMPT, 0) - t0

    def feed(self, data: bytes) -> None:
        self.terminal.feed(data)

    async def stop(self) -> None:
        self.feed(b"\x15exit\r")
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


async def echo_latencies(feed: Any, screen: Screen, keys: int) -> list[float]:
    out: list[float] = []
    for i in range(keys):
        if i and i % 50 == 0:
            r = feed(b"\x15")
            if asyncio.iscoroutine(r):
                await r
            await asyncio.sleep(0.05)
        key = KEYS[i % len(KEYS) : i % len(KEYS) + 1]
        mark = len(screen.data)
        t0 = time.perf_counter()
        r = feed(key)
        if asyncio.iscoroutine(r):
            await r
        t1 = await screen.wait_for(key, mark)
        out.append(t1 - t0)
    r = feed(b"\x15")
    if asyncio.iscoroutine(r):
        await r
    await asyncio.sleep(0.05)
    return out


async def run_all(args: argparse.Namespace, kube: Any, node: Any, work: Path) -> None:
    from casemate.bastion.review import TicketState
    from casemate.bastion.runner import Tools
    from casemate.core.identity import Principal, powers
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings
    from casemate.gateway.service import Gateway
    from casemate.gateway.terminal import TerminalShell
    from casemate.k8s.client import Credential
    from casemate.k8s.clusters import Clusters
    from casemate.testenv.node import BUSYBOX_IMAGE, real_node_placement

    ns = f"bench-{secrets.token_hex(3)}"
    kube.create_namespace(ns)
    pod = "box"
    resp = kube.http.post(
        f"/api/v1/namespaces/{ns}/pods",
        json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns},
            "spec": {
                **real_node_placement(),
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "box",
                        "image": BUSYBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                    }
                ],
            },
        },
    )
    if resp.status_code != 201:
        raise SystemExit(f"the pod was not created: {resp.text}")
    kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{pod}", "--timeout=60s")

    settings = load_settings(
        data_dir=work / "data",
        admin_password=secrets.token_urlsafe(18),
        kubeproxy_listen="127.0.0.1:0",
        log_level="WARNING",
    )
    rt = await asyncio.to_thread(open_runtime, settings, create=True)
    rt.identity.ensure_first_admin(settings)
    password = secrets.token_urlsafe(18)
    rt.identity.create_user("bench", by=None, password=password, roles=["operator"])
    rt.identity.create_user("boss", by=None, password=password, roles=["approver"])
    clusters = Clusters(rt.db, rt.vault, rt.audit, token_wait=60.0)
    clusters.register_cluster("bench", kube.server_url, kube.ca_pem, by=None)
    clusters.provision_account(
        "bench", "bench-ops", [ns], "edit", admin=Credential.bearer(kube.admin_token), by=None
    )
    clusters.add_grant("bench", "bench-ops", by=None, user="bench", namespaces=[ns])

    def principal(name: str) -> Principal:
        u = rt.identity.get_user(name)
        return Principal(
            u.id, u.username, u.effective_roles, u.groups, "session", powers(u.effective_roles)
        )

    user, boss = principal("bench"), principal("boss")
    gateway = Gateway(
        rt, tools=Tools.find(kube.binaries.kubectl, kube.binaries.helm), clusters=clusters
    )
    await gateway.start()
    try:
        direct_prompt: list[float] = []
        via_prompt: list[float] = []
        via_parts: list[tuple[float, float, float]] = []
        direct_echo: list[float] = []
        via_echo: list[float] = []
        for run in range(args.runs):
            d = Direct(str(kube.binaries.kubectl), kube.admin_kubeconfig, ns, pod, work)
            direct_prompt.append(await d.start())
            if run == 0:
                await echo_latencies(d.feed, d.screen, 20)  # warm-up
                direct_echo += await echo_latencies(d.feed, d.screen, args.keys)
            await d.stop()

            session = await gateway.open_session(user, "bench", channel="web", term="xterm")
            screen = Screen()
            shell = TerminalShell(session, screen)
            await shell.start()
            await screen.wait_for(b"$ ", 0)
            mark = len(screen.data)

            def approve() -> float:
                while True:
                    found = gateway.reviews.list_tickets(
                        user="bench", states=(TicketState.PENDING,)
                    )
                    if found:
                        gateway.reviews.approve(found[0].id, boss)
                        return time.perf_counter()
                    time.sleep(0.005)

            t0 = time.perf_counter()
            await shell.feed(f"kubectl exec -it {pod} -- sh\r".encode())
            held = await screen.wait_for(b"waiting for approval", mark)
            approved = await asyncio.to_thread(approve)
            seen = await screen.wait_for(b"casemate: approved by", mark)
            shown = await screen.wait_for(PROMPT, mark)
            via_prompt.append((held - t0) + (shown - seen))
            via_parts.append((held - t0, shown - seen, seen - approved))
            if run == 0:
                await echo_latencies(shell.feed, screen, 20)
                via_echo += await echo_latencies(shell.feed, screen, args.keys)
            await shell.feed(b"\x15exit\r")
            await asyncio.wait_for(shell.wait_idle(), 30)
            await session.close()
    finally:
        await gateway.close()
        rt.close()
        kube.delete_namespace(ns)

    print(f"\n(a) Time to the container prompt, {args.runs} runs (review excluded)")
    dm, vm = statistics.median(direct_prompt), statistics.median(via_prompt)
    print(f"  direct kubectl exec -it     median {ms(dm)}  p90 {ms(pct(direct_prompt, 90))}")
    print(f"  through Casemate            median {ms(vm)}  p90 {ms(pct(via_prompt, 90))}")
    held = statistics.median(p[0] for p in via_parts)
    after = statistics.median(p[1] for p in via_parts)
    review = statistics.median(p[2] for p in via_parts)
    print(
        f"    of which: Enter -> held for review {ms(held)}; approval seen -> prompt "
        f"{ms(after)} (not counted: the session noticing the approval, {ms(review)}, "
        "the review's database poll)"
    )
    added = vm - dm
    print(f"  added: {ms(added)}  (aim < 300 ms: {'met' if added < 0.3 else 'NOT met'})")
    print(f"\n(b) Keystroke echo latency, {len(direct_echo)} keys each")
    for name, values in (("direct", direct_echo), ("through Casemate", via_echo)):
        print(f"  {name:<26}  p50 {ms(pct(values, 50))}  p99 {ms(pct(values, 99))}")
    added99 = pct(via_echo, 99) - pct(direct_echo, 99)
    added50 = pct(via_echo, 50) - pct(direct_echo, 50)
    print(
        f"  added: p50 {ms(added50)}, p99 {ms(added99)}  "
        f"(aim < 5 ms at p99: {'met' if added99 < 0.005 else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="exec starts per path")
    parser.add_argument("--keys", type=int, default=300, help="keystrokes per path")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from casemate.testenv.kube import ClusterError, LocalCluster, find_binaries
    from casemate.testenv.node import RealNode

    print("Casemate container terminal benchmark")
    print(f"  load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    try:
        binaries = find_binaries()
    except ClusterError as e:
        raise SystemExit(str(e)) from None
    with tempfile.TemporaryDirectory(prefix="casemate-bench-term-") as tmp:
        work = Path(tmp)
        kube = LocalCluster(work / "kube", binaries=binaries)
        kube.start()
        node = RealNode(kube, work / "node")
        try:
            node.start()
            asyncio.run(run_all(args, kube, node, work))
        finally:
            node.stop()
            kube.stop()
    assert threading.active_count() >= 1
    sys.stdout.flush()


if __name__ == "__main__":
    main()
