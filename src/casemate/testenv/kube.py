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

import base64
import ctypes
import datetime
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from casemate.errors import CasemateError

log = logging.getLogger(__name__)

# Must match the wrapper modules in testenv/*/go.mod (tests/testenv/test_kube.py checks).
K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"
HELM_VERSION = "v3.19.5"

FAIL_LABEL = "casemate.test/fail"
"""Label (value ``"true"``) that makes kwok keep a pod crash-looping and never ready."""

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
_KUBERNETES_SERVICE_IP = "10.96.0.1"
_ISSUER = "https://kubernetes.default.svc.cluster.local"
_BUILD_HINT = "run scripts/build-testenv to build them"


class ClusterError(CasemateError):
    """The test cluster's binaries are missing, or it failed to start, answer or stop."""


def testenv_cache_dir() -> Path:
    """Where ``scripts/build-testenv`` puts the binaries (same rule as the script)."""
    if explicit := os.environ.get("CASEMATE_TESTENV_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "casemate" / "testenv"


@dataclass(frozen=True)
class KubeBinaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kubelet: Path
    etcd: Path
    kwok: Path
    helm: Path


def find_binaries(cache: Path | None = None) -> KubeBinaries:
    """The test environment's binaries; ``ClusterError`` naming what is missing if any is."""
    root = cache or testenv_cache_dir()
    k8s = root / f"kubernetes-{K8S_VERSION}"
    binaries = KubeBinaries(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        kubelet=k8s / "kubelet",
        etcd=root / f"etcd-{ETCD_VERSION}" / "etcd",
        kwok=root / f"kwok-{KWOK_VERSION}" / "kwok",
        helm=root / f"helm-{HELM_VERSION}" / "helm",
    )
    paths: list[Path] = [getattr(binaries, f.name) for f in fields(binaries)]
    missing = [str(p) for p in paths if not os.access(p, os.X_OK)]
    if missing:
        raise ClusterError(
            f"test environment binaries missing: {', '.join(missing)}; {_BUILD_HINT}"
        )
    return binaries


# --- certificates and credentials -------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A one-year certificate: self-signed CA if ``issuer`` is None, else a serving cert."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(x509.SubjectAlternativeName(sans or []), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write_pki(pki: Path) -> bytes:
    """CA, apiserver serving cert and service-account key pair in ``pki``; returns the CA PEM."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("casemate-testenv-ca", ca_key, None)
    serving_key = ec.generate_private_key(ec.SECP256R1())
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [
        x509.IPAddress(ipaddress.ip_address(ip))
        for ip in ("127.0.0.1", "::1", _KUBERNETES_SERVICE_IP)
    ]
    serving = _cert("kube-apiserver", serving_key, (ca, ca_key), sans)
    # The apiserver's client certificate towards kubelets (logs, exec, port-forward): a real
    # node's kubelet authenticates it by the cluster CA and authorizes it by webhook.
    kubelet_client_key = ec.generate_private_key(ec.SECP256R1())
    kubelet_client = client_cert(
        "kube-apiserver-kubelet-client", ("system:masters",), kubelet_client_key, (ca, ca_key)
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    files = {
        "ca.crt": ca_pem,
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": serving.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(serving_key),
        "sa.key": _pem_key(sa_key),
        "kubelet-client.crt": kubelet_client.public_bytes(serialization.Encoding.PEM),
        "kubelet-client.key": _pem_key(kubelet_client_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        path = pki / name
        path.write_bytes(data)
        path.chmod(0o600)
    return ca_pem


def client_cert(
    user: str,
    groups: tuple[str, ...],
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> x509.Certificate:
    """A one-year client certificate for ``user`` in ``groups`` (O=), signed by ``issuer``."""
    now = datetime.datetime.now(datetime.UTC)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer[1], hashes.SHA256())
    )


@dataclass(frozen=True)
class _User:
    name: str
    groups: tuple[str, ...]
    token: str


def _kubeconfig(server: str, ca_pem: bytes, user: _User) -> dict[str, Any]:
    return kubeconfig_document(server, ca_pem, user.name, {"token": user.token})


def kubeconfig_document(
    server: str, ca_pem: bytes, user_name: str, credential: dict[str, str]
) -> dict[str, Any]:
    """A kubeconfig with one cluster (CA inline) and one user with ``credential`` (a token,
    or client-certificate/client-key paths)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "casemate-testenv",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user_name, "user": credential}],
        "contexts": [
            {
                "name": "casemate-testenv",
                "context": {"cluster": "casemate-testenv", "user": user_name},
            }
        ],
        "current-context": "casemate-testenv",
    }


# --- processes ----------------------------------------------------------------------------------


def _reserve_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together while choosing, then released).

    Another process can still take one before the component binds it; callers retry then.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


if sys.platform == "linux":
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _PR_SET_PDEATHSIG = 1

    def _die_with_parent() -> None:
        """Runs in the child before exec: the kernel kills it if the parent dies first, so a
        killed test run leaves no control plane behind."""
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

else:  # pragma: no cover - the test environment runs on Linux
    _die_with_parent = None


class _Process:
    """One component, in its own process group, logging to ``<workdir>/<name>.log``.

    It gets SIGKILL if the thread that started it ends: start clusters from a long-lived thread.
    """

    def __init__(self, name: str, argv: list[str], workdir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("ab") as logfile:
            logfile.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            logfile.flush()
            self.log_offset = logfile.tell()
            self.popen = subprocess.Popen(
                argv,
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def describe_failure(self, what: str) -> str:
        code = self.popen.poll()
        state = "is still running" if code is None else f"exited with status {code}"
        return (
            f"{what}: {self.name} {state}; last lines of {self.log_path}:\n"
            f"{_tail(self.log_path, self.log_offset)}"
        )

    def bind_failed(self) -> bool:
        return "address already in use" in _tail(self.log_path, self.log_offset, 200)


# --- the cluster --------------------------------------------------------------------------------


class LocalCluster:
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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
