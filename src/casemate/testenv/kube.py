"""A disposable, real Kubernetes control plane for tests and demos.

``LocalCluster`` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the kwok
controller (fake nodes whose pods become Running/Ready without a kubelet) as local processes on
free loopback ports, from the binaries that ``scripts/build-testenv`` builds from Go modules.
Everything a run needs (certificates, keys, kubeconfigs, data, logs) lives in its work
directory; every component logs to ``<workdir>/<component>.log``.

    with LocalCluster(workdir) as cluster:
        cluster.kubectl("get", "nodes")

Authentication is by static tokens (``tokens.csv``); the apiserver also trusts client
certificates signed by the cluster CA. Authorization is Node+RBAC, so RBAC tests are real.
Pods labelled ``casemate.test/fail: "true"`` are kept Running but not ready, waiting in
CrashLoopBackOff (see ``kwok-stages.yaml``).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

from casemate.testenv.binaries import (
    ETCD_VERSION,
    HELM_VERSION,
    K8S_VERSION,
    KWOK_VERSION,
    ClusterError,
    KubeBinaries,
    find_binaries,
    testenv_cache_dir,
)
from casemate.testenv.pki import (
    _kubeconfig,
    _User,
    _write_pki,
    client_cert,
    kubeconfig_document,
)
from casemate.testenv.process import Component, _Process, _reserve_ports

__all__ = [
    "ETCD_VERSION",
    "FAIL_LABEL",
    "HELM_VERSION",
    "K8S_VERSION",
    "KWOK_VERSION",
    "POD_CIDR",
    "SERVICE_CIDR",
    "ClusterError",
    "KubeBinaries",
    "LocalCluster",
    "client_cert",
    "find_binaries",
    "kubeconfig_document",
    "testenv_cache_dir",
]

log = logging.getLogger(__name__)

FAIL_LABEL = "casemate.test/fail"
"""Label (value ``"true"``) that makes kwok keep a pod crash-looping and never ready."""


SERVICE_CIDR = "10.96.0.0/16"


POD_CIDR = "10.244.0.0/16"


_ISSUER = "https://kubernetes.default.svc.cluster.local"


class LocalCluster(Component):
    """A real control plane with ``nodes`` kwok nodes, run from ``workdir``.

    ``start()`` returns once the cluster is ready (see ``wait_ready``); if it fails, everything
    it started is stopped and ``ClusterError`` carries the failing component's log tail.
    ``stop()`` is idempotent and leaves no process behind.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int = 1,
        binaries: KubeBinaries | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.workdir = workdir
        self.nodes = nodes
        self.binaries = binaries
        self.start_timeout = start_timeout
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self._procs: list[_Process] = []
        self._pids: dict[str, int] = {}
        self._env: dict[str, str] = {}
        self._etcd_url = ""
        self._server_url: str | None = None
        self._ca_pem: bytes | None = None
        self._admin_token = ""
        self._http: httpx.Client | None = None

    # -- public surface

    @property
    def server_url(self) -> str:
        if self._server_url is None:
            raise ClusterError("the test cluster is not running")
        return self._server_url

    @property
    def ca_pem(self) -> bytes:
        if self._ca_pem is None:
            raise ClusterError("the test cluster is not running")
        return self._ca_pem

    @property
    def admin_token(self) -> str:
        """Bearer token of ``casemate-admin`` (group ``system:masters``)."""
        if not self._admin_token:
            raise ClusterError("the test cluster is not running")
        return self._admin_token

    @property
    def http(self) -> httpx.Client:
        """An admin ``httpx.Client`` for the API (base URL set, CA verified)."""
        if self._http is None:
            raise ClusterError("the test cluster is not running")
        return self._http

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each component of the last start, kept after ``stop()`` for checks."""
        return dict(self._pids)

    @property
    def node_names(self) -> list[str]:
        return [f"kwok-node-{i}" for i in range(self.nodes)]

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts only this cluster's CA."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def http_client(self, token: str, *, timeout: float = 15.0) -> httpx.Client:
        """A new client for the API authenticating with ``token``; the caller closes it."""
        return httpx.Client(
            base_url=self.server_url,
            verify=self.ssl_context(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl as the admin; ``ClusterError`` with its stderr if it fails."""
        return self._run_tool(self._bins().kubectl, args, input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this cluster as the admin (helm's state is in workdir)."""
        return self._run_tool(self._bins().helm, args, input, check, timeout)

    def create_namespace(self, name: str, *, timeout: float = 30.0) -> None:
        """Create ``name`` and wait until its ``default`` ServiceAccount exists (pods need it)."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        self._check(self.http.post("/api/v1/namespaces", json=body), f"create namespace {name}")
        self._poll(
            lambda: self.http.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").is_success,
            timeout,
            f"ServiceAccount {name}/default was not created",
            "kube-controller-manager",
        )

    def delete_namespace(self, name: str, *, wait: bool = False, timeout: float = 60.0) -> None:
        """Delete ``name`` (absent is fine); with ``wait``, until the namespace is gone."""
        resp = self.http.delete(f"/api/v1/namespaces/{name}")
        if resp.status_code != 404:
            self._check(resp, f"delete namespace {name}")
        if wait:
            self._poll(
                lambda: self.http.get(f"/api/v1/namespaces/{name}").status_code == 404,
                timeout,
                f"namespace {name} was not deleted",
                "kube-controller-manager",
            )

    # -- lifecycle

    def start(self) -> None:
        if self._procs:
            raise ClusterError("the test cluster was already started")
        started = time.monotonic()
        self._pids = {}
        try:
            self._start()
            self.wait_ready(timeout=max(1.0, self.start_timeout - (time.monotonic() - started)))
        except BaseException:
            self.stop()
            raise
        log.info("test cluster ready at %s in %.1fs", self.server_url, time.monotonic() - started)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for /readyz, the ``default`` ServiceAccount and every node being Ready."""
        self._poll(self._readyz, timeout, "kube-apiserver is not ready", "kube-apiserver")
        self._poll(
            lambda: self.http.get("/api/v1/namespaces/default/serviceaccounts/default").is_success,
            timeout,
            "ServiceAccount default/default was not created",
            "kube-controller-manager",
        )
        self._poll(self._nodes_ready, timeout, "nodes did not become Ready", "kwok")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the components in reverse start order: SIGTERM to each process group, SIGKILL
        after ``timeout``. The clients go together, then kube-apiserver (which still needs
        etcd to shut down cleanly), then etcd."""
        if self._http is not None:
            self._http.close()
            self._http = None
        procs, self._procs = self._procs, []
        servers = {"kube-apiserver", "etcd"}
        clients = [p for p in procs if p.name not in servers]
        for group in (clients, *([p] for p in reversed(procs) if p.name in servers)):
            for p in group:
                p.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for p in group:
                try:
                    p.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.0fs; killing it", p.name, timeout)
                    p.signal(signal.SIGKILL)
                    p.popen.wait()
        self._server_url = None

    # -- internals

    def _bins(self) -> KubeBinaries:
        if self.binaries is None:
            self.binaries = find_binaries()
        return self.binaries

    def _start(self) -> None:
        bins = self._bins()
        work = self.workdir
        (work / "home").mkdir(parents=True, exist_ok=True)
        # A clean environment: no user kubeconfig, ~/.kwok or helm settings leak in.
        self._env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work / "home")}
        if "TMPDIR" in os.environ:
            self._env["TMPDIR"] = os.environ["TMPDIR"]
        self._env["KWOK_WORKDIR"] = str(work / "home" / "kwok")
        self._ca_pem = _write_pki(work / "pki")

        users = {
            "admin": _User("casemate-admin", ("system:masters",), secrets.token_urlsafe(24)),
            "controller-manager": _User(
                "system:kube-controller-manager", (), secrets.token_urlsafe(24)
            ),
            "scheduler": _User("system:kube-scheduler", (), secrets.token_urlsafe(24)),
            "kwok": _User("kwok-controller", ("system:masters",), secrets.token_urlsafe(24)),
        }
        tokens = work / "pki" / "tokens.csv"
        tokens.write_text(
            "".join(f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in users.values())
        )
        tokens.chmod(0o600)
        self._admin_token = users["admin"].token

        self._start_etcd(bins)
        self._start_apiserver(bins)
        for role, user in users.items():
            path = work / f"{role}.kubeconfig"
            path.write_text(yaml.safe_dump(_kubeconfig(self.server_url, self.ca_pem, user)))
            path.chmod(0o600)

        self._spawn(
            "kube-controller-manager",
            [
                str(bins.kube_controller_manager),
                f"--kubeconfig={work / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={work / 'pki/sa.key'}",
                f"--root-ca-file={work / 'pki/ca.crt'}",
                f"--cluster-signing-cert-file={work / 'pki/ca.crt'}",
                f"--cluster-signing-key-file={work / 'pki/ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--node-monitor-period=25s",
                "--node-monitor-grace-period=3m20s",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bins.kube_scheduler),
                f"--kubeconfig={work / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
            ],
        )
        stages = work / "kwok-stages.yaml"
        stages.write_bytes(
            resources.files("casemate.testenv").joinpath("kwok-stages.yaml").read_bytes()
        )
        self._spawn(
            "kwok",
            [
                str(bins.kwok),
                f"--config={stages}",
                f"--kubeconfig={work / 'kwok.kubeconfig'}",
                # Only the fake nodes: a real node (casemate.testenv.node) has its kubelet.
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
                # kubelet-bound requests (logs, exec, port-forward) stay on this machine.
                "--node-ip=127.0.0.1",
            ],
        )
        for name in self.node_names:
            self._check(self.http.post("/api/v1/nodes", json=_node(name)), f"create node {name}")

    def _start_etcd(self, bins: KubeBinaries) -> None:
        data = self.workdir / "etcd"
        for attempt in range(3):
            shutil.rmtree(data, ignore_errors=True)  # a disposable cluster starts empty
            client, peer = _reserve_ports(2)
            proc = self._spawn(
                "etcd",
                [
                    str(bins.etcd),
                    "--name=casemate",
                    f"--data-dir={data}",
                    f"--listen-client-urls=http://127.0.0.1:{client}",
                    f"--advertise-client-urls=http://127.0.0.1:{client}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=casemate=http://127.0.0.1:{peer}",
                    "--initial-cluster-state=new",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
            )
            self._etcd_url = f"http://127.0.0.1:{client}"

            def healthy() -> bool:
                try:
                    return httpx.get(f"{self._etcd_url}/health", timeout=2).is_success
                except httpx.TransportError:
                    return False

            if self._wait_for(proc, healthy, 30.0, "etcd is not healthy", attempt):
                return

    def _start_apiserver(self, bins: KubeBinaries) -> None:
        pki = self.workdir / "pki"
        for attempt in range(3):
            (port,) = _reserve_ports(1)
            proc = self._spawn(
                "kube-apiserver",
                [
                    str(bins.kube_apiserver),
                    f"--etcd-servers={self._etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}",
                    f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}",
                    f"--token-auth-file={pki / 'tokens.csv'}",
                    "--authorization-mode=Node,RBAC",
                    f"--service-account-issuer={_ISSUER}",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--allow-privileged=true",
                    f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                    f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                    # A real node is reached on its InternalIP (no DNS for node names here).
                    "--kubelet-preferred-address-types=InternalIP,Hostname",
                    # The kubernetes Service cannot point at a loopback address.
                    "--endpoint-reconciler-type=none",
                    "--profiling=false",
                ],
            )
            self._server_url = f"https://127.0.0.1:{port}"
            if self._http is not None:
                self._http.close()
            self._http = self.http_client(self._admin_token)
            if self._wait_for(proc, self._readyz, 60.0, "kube-apiserver is not ready", attempt):
                return

    def _wait_for(
        self, proc: _Process, ready: Callable[[], bool], timeout: float, what: str, attempt: int
    ) -> bool:
        """Wait for ``ready``; False if ``proc`` lost a port race (retry), raise if it failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.running():
                if proc.bind_failed() and attempt < 2:
                    log.info("%s lost a race for its port; retrying on another", proc.name)
                    proc.popen.wait()
                    self._procs.remove(proc)
                    return False
                raise ClusterError(proc.describe_failure(what))
            if ready():
                return True
            time.sleep(0.1)
        raise ClusterError(proc.describe_failure(f"{what} after {timeout:.0f}s"))

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.workdir, self._env)
        self._procs.append(proc)
        self._pids[name] = proc.pid
        return proc

    def _poll(self, ready: Callable[[], bool], timeout: float, what: str, suspect: str) -> None:
        """Poll ``ready``; on a dead component or a timeout raise with the relevant log."""
        deadline = time.monotonic() + timeout
        while True:
            for p in self._procs:
                if not p.running():
                    raise ClusterError(p.describe_failure(what))
            if ready():
                return
            if time.monotonic() > deadline:
                proc = next((p for p in self._procs if p.name == suspect), None)
                if proc is None:
                    raise ClusterError(f"{what} after {timeout:.0f}s")
                raise ClusterError(proc.describe_failure(f"{what} after {timeout:.0f}s"))
            time.sleep(0.1)

    def _readyz(self) -> bool:
        try:
            return self.http.get("/readyz", timeout=5).is_success
        except httpx.TransportError:
            return False

    def _nodes_ready(self) -> bool:
        resp = self.http.get("/api/v1/nodes")
        if not resp.is_success:
            return False
        ready = {
            item["metadata"]["name"]
            for item in resp.json()["items"]
            for cond in item.get("status", {}).get("conditions", [])
            if cond["type"] == "Ready" and cond["status"] == "True"
        }
        return ready >= set(self.node_names)

    def _check(self, resp: httpx.Response, what: str) -> None:
        if not resp.is_success:
            raise ClusterError(f"{what}: HTTP {resp.status_code}: {resp.text[:500]}")

    def _run_tool(
        self,
        binary: Path,
        args: tuple[str, ...],
        input: str | None,
        check: bool,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self._env)
        env["KUBECONFIG"] = str(self.admin_kubeconfig)
        command = " ".join([binary.name, *args])
        try:
            result = subprocess.run(
                [str(binary), *args],
                input=input,
                capture_output=True,
                text=True,
                env=env,
                cwd=self.workdir,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{command} timed out after {timeout:.0f}s") from None
        if check and result.returncode != 0:
            raise ClusterError(
                f"{command} failed with status {result.returncode}:\n{result.stderr.strip()}"
            )
        return result


def _node(name: str) -> dict[str, Any]:
    """A Node object for kwok to take over (it fills in the status)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
    }
