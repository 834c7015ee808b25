"""A real Kubernetes node for tests and demos: a kubelet on a private containerd.

``RealNode(cluster, workdir)`` joins a :class:`~casemate.testenv.kube.LocalCluster` with a node
whose pods really run (runc containers in their own network namespaces on a bridge of the
node's own), so exec, logs, port-forward, init containers, postStart hooks and real rollout
failures can be tested. It starts, all as local processes under ``workdir``:

* a containerd of its own (own root, state and sockets; CRI with the locally built pause image
  as sandbox image, cgroupfs, ``restrict_oom_score_adj`` because root here lacks
  CAP_SYS_RESOURCE), into which the test images are imported (no registry is reachable);
* a CNI network of its own (``bridge`` with its own name and /24, ``host-local``, ``portmap``);
* a kubelet with its own root and certificate directories, a client certificate
  ``system:node:NAME`` signed by the cluster CA, webhook authentication and authorization of
  its API (the apiserver presents its kubelet client certificate), a cgroup subtree of its own.

The node is tainted ``casemate.test/real-node=true:NoSchedule`` and labelled
``casemate.test/real-node=true``, so the kwok-based tests never land on it; a pod meant for it
carries :func:`real_node_placement`. Pods reach the host on :attr:`RealNode.gateway` (the
bridge address), never on 127.0.0.1: servers that pods must reach bind that address.

``stop()`` leaves the host as it found it: the pods' processes are killed through the node's
cgroup subtree, every mount below the work directory is unmounted, the bridge, the cgroups and
any iptables chains the run added are deleted, and ``net.ipv4.ip_forward`` is restored. A run
that was killed leaves a state file in :func:`_state_dir`; the next ``start()`` cleans up after
it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.testenv.kube import (
    ClusterError,
    LocalCluster,
    client_cert,
    kubeconfig_document,
)
from casemate.testenv.nodeimages import BUSYBOX_IMAGE as BUSYBOX_IMAGE  # importable here too
from casemate.testenv.nodeimages import DEBIAN12_IMAGE as DEBIAN12_IMAGE
from casemate.testenv.nodeimages import PAUSE_IMAGE, node_images
from casemate.testenv.pki import _pem_key
from casemate.testenv.process import Component, _Process, _reserve_ports

log = logging.getLogger(__name__)

REAL_NODE_LABEL = "casemate.test/real-node"
CNI_BIN_DIR = Path("/usr/lib/cni")
CONTAINERD = "containerd"
CTR = "ctr"
RUNC = "/usr/sbin/runc"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def real_node_placement() -> dict[str, Any]:
    """The pod spec fields that put a pod on the real node (merge them into ``spec``)."""
    return {
        "nodeSelector": {REAL_NODE_LABEL: "true"},
        "tolerations": [
            {"key": REAL_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ],
    }


# -- prerequisites and images -------------------------------------------------------------------


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a real node (empty when it can), each with its reason."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the kubelet and containerd run as root)")
    for tool, package in (
        (CONTAINERD, "containerd"),
        (CTR, "containerd"),
        (RUNC, "runc"),
        ("ip", "iproute2"),
        ("gcc", "gcc"),
    ):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    missing.extend(
        f"{CNI_BIN_DIR / plugin} (Debian package containernetworking-plugins)"
        for plugin in ("bridge", "host-local", "portmap", "loopback")
        if not (CNI_BIN_DIR / plugin).exists()
    )
    if not (_CGROUP_ROOT / "memory").is_dir():
        missing.append("cgroup v1 controllers under /sys/fs/cgroup (the kubelet uses cgroupfs)")
    return missing


# -- host state: what a run changes and how a later run cleans up after a crash -----------------


def _state_dir() -> Path:
    return Path(os.environ.get("CASEMATE_NODE_STATE_DIR", "/run/casemate-testenv/nodes"))


def _run(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)


def _iptables_chains() -> set[tuple[str, str]]:
    """(table, chain) of every chain on the host (empty when iptables is not installed)."""
    chains: set[tuple[str, str]] = set()
    if shutil.which("iptables-save") is None:
        return chains
    result = _run("iptables-save")
    table = ""
    for line in result.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.add((table, line[1:].split()[0]))
    return chains


def _cgroup_dirs(name: str) -> list[Path]:
    """The node's cgroup directory under each v1 controller (and the unified hierarchy)."""
    return [
        controller / name
        for controller in sorted(_CGROUP_ROOT.iterdir())
        if controller.is_dir() and not controller.is_symlink()
    ]


def _kill_cgroup_tree(top: Path) -> None:
    """SIGKILL every process in ``top`` and below, then remove the directories bottom-up."""
    if not top.is_dir():
        return
    for _ in range(50):
        pids: set[int] = set()
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


def _unmount_below(root: Path) -> None:
    """Unmount every mount point at or below ``root``, deepest first (lazily if busy)."""
    prefix = str(root.resolve())
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(set(points), key=lambda p: -p.count("/")):
        if _run("umount", point).returncode != 0:
            _run("umount", "-l", point)


def _clean(state: dict[str, Any]) -> None:
    """Undo what the run described by ``state`` did to the host (idempotent)."""
    for top in _cgroup_dirs(state["cgroup"]):
        _kill_cgroup_tree(top)
    workdir = Path(state["workdir"])
    sockdir = Path(state.get("sockdir") or workdir)
    for pid in state.get("pids", []):  # containerd shims outlive containerd: kill by pid group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for proc in Path("/proc").iterdir():  # shims and anything else started from the work dir
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            named = str(workdir).encode() in cmdline or str(sockdir).encode() in cmdline
            if named and b"containerd-shim" in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)
    if workdir.exists():
        _unmount_below(workdir)
    if sockdir != workdir and sockdir.exists():
        _unmount_below(sockdir)  # the kubelet's root (pod volumes) lives there
        shutil.rmtree(sockdir, ignore_errors=True)
    if _run("ip", "link", "show", state["bridge"]).returncode == 0:
        _run("ip", "link", "del", state["bridge"])
    added = {tuple(c) for c in state.get("chains_added", [])}
    for table, chain in added:
        _run("iptables", "-t", table, "-F", chain)
    for table, chain in added:
        _run("iptables", "-t", table, "-X", chain)
    forward = state.get("ip_forward")
    if forward is not None:
        with contextlib.suppress(OSError):
            _IP_FORWARD.write_text(f"{forward}\n")


def clean_leftovers() -> list[str]:
    """Clean up after real-node runs whose process died; returns their ids."""
    cleaned: list[str] = []
    folder = _state_dir()
    if not folder.is_dir():
        return cleaned
    for path in folder.glob("*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        owner = int(state.get("owner", 0))
        alive = owner > 0 and Path(f"/proc/{owner}").exists()
        if alive:
            continue
        _clean(state)
        path.unlink(missing_ok=True)
        cleaned.append(str(state.get("id", path.stem)))
    return cleaned


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.89.0.0/16 that no route on this host overlaps."""
    routes = _run("ip", "-4", "route", "show", "table", "all").stdout
    used = []
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if first[:1].isdigit():
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(first, strict=False))
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.89.{secrets.randbelow(254) + 1}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise ClusterError("no free /24 in 10.89.0.0/16 for the real node's bridge")


# -- the node ------------------------------------------------------------------------------------


class RealNode(Component):
    """One real node joined to ``cluster``; see the module docstring."""

    def __init__(
        self,
        cluster: LocalCluster,
        workdir: Path,
        *,
        name: str = "real-node",
        images: tuple[str, ...] = (BUSYBOX_IMAGE,),
        start_timeout: float = 60.0,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.name = name
        self.images = images
        self.start_timeout = start_timeout
        self.id = secrets.token_hex(3)
        self.bridge = f"cmnode{self.id}"
        self.cgroup = f"casemate-node-{self.id}"
        self.subnet = ipaddress.IPv4Network("10.89.0.0/24")
        self._procs: list[_Process] = []
        self._state: dict[str, Any] = {}
        self._state_path = _state_dir() / f"{self.id}.json"
        # containerd's sockets and the kubelet's root (which holds the kubelet's own sockets):
        # a short path, as a unix socket path has at most 104 bytes
        self.sockdir = _state_dir().parent / f"sock-{self.id}"
        self._chains_before: set[tuple[str, str]] = set()
        self._env: dict[str, str] = {}

    # -- public surface

    @property
    def gateway(self) -> str:
        """The host's address on the node's bridge: where pods reach servers on this host."""
        return str(next(self.subnet.hosts()))

    @property
    def containerd_socket(self) -> Path:
        return self.sockdir / "containerd.sock"

    def ctr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against the node's containerd in the ``k8s.io`` namespace."""
        return _run(
            CTR, "--address", str(self.containerd_socket), "-n", "k8s.io", *args, timeout=timeout
        )

    def import_image(self, image: str) -> None:
        """Import one of the test images (see :func:`node_images`) into the node's containerd."""
        archives = node_images()
        if image not in archives:
            raise ClusterError(f"no archive for image {image}; known: {', '.join(archives)}")
        result = self.ctr("images", "import", str(archives[image]), timeout=300)
        if result.returncode != 0:
            raise ClusterError(f"importing {image} into containerd failed: {result.stderr}")

    def start(self) -> None:
        missing = missing_prerequisites()
        if missing:
            raise ClusterError("a real node cannot run here; missing: " + "; ".join(missing))
        clean_leftovers()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything and restore the host (idempotent)."""
        with contextlib.suppress(Exception):
            self.cluster.http.delete(f"/api/v1/nodes/{self.name}")
        for proc in reversed(self._procs):
            if proc.name == "kubelet":
                proc.signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(10)
        if self._state:
            self._state["chains_added"] = sorted(_iptables_chains() - self._chains_before)
            _clean(self._state)  # pods first (through the cgroups), then mounts and network
        for proc in reversed(self._procs):
            proc.signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                proc.popen.wait(5)
        self._procs.clear()
        if self._state:
            _clean(self._state)  # again: anything containerd left while stopping
            self._state_path.unlink(missing_ok=True)
            self._state = {}

    # -- internals

    def _save_state(self) -> None:
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        self._state["pids"] = [p.pid for p in self._procs]
        self._state["chains_added"] = sorted(_iptables_chains() - self._chains_before)
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, self._state_path)

    def _start(self) -> None:
        work = self.workdir
        work.mkdir(parents=True, exist_ok=True)
        self._env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        self.subnet = _free_subnet()
        self._chains_before = _iptables_chains()
        self._state = {
            "id": self.id,
            "owner": os.getpid(),
            "workdir": str(work),
            "sockdir": str(self.sockdir),
            "bridge": self.bridge,
            "cgroup": self.cgroup,
            "ip_forward": _IP_FORWARD.read_text().strip(),
        }
        self._save_state()
        self._start_containerd()
        for image in dict.fromkeys((PAUSE_IMAGE, *self.images)):
            self.import_image(image)
        self._make_cgroups()
        self._make_bridge()
        self._start_kubelet()
        self._save_state()
        self._wait_ready()

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.workdir, self._env)
        self._procs.append(proc)
        return proc

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": f"casemate-{self.id}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.subnet), "gateway": self.gateway}]],
                        "dataDir": str(cni / "ipam"),
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-casemate.conflist").write_text(json.dumps(conflist, indent=2))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[{cri}]
  sandbox_image = "docker.io/{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni / "net.d"}"
    max_conf_num = 1
"""
        base.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (base / "config.toml").write_text(config)
        proc = self._spawn(CONTAINERD, [CONTAINERD, "--config", str(base / "config.toml")])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not proc.running():
                raise ClusterError(proc.describe_failure("containerd did not start"))
            if self.containerd_socket.exists() and self.ctr("version").returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterError(proc.describe_failure("containerd did not answer within 30 s"))

    def _make_cgroups(self) -> None:
        for top in _cgroup_dirs(self.cgroup):
            if top.parent.name == "unified":
                continue
            top.mkdir(exist_ok=True)
            if top.parent.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (top / knob).write_text((top.parent / knob).read_text())

    def _make_bridge(self) -> None:
        """The bridge with the gateway address before the first pod: it is the node's IP,
        where the apiserver reaches the kubelet (a node IP cannot be a loopback address)."""
        for argv in (
            ("ip", "link", "add", self.bridge, "type", "bridge"),
            ("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge),
            ("ip", "link", "set", self.bridge, "up"),
        ):
            result = _run(*argv)
            if result.returncode != 0:
                raise ClusterError(f"{' '.join(argv)} failed: {result.stderr.strip()}")

    def _node_credentials(self) -> tuple[bytes, bytes]:
        pki = self.cluster.workdir / "pki"
        ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ClusterError("the test cluster's CA key is not an EC key")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = client_cert(f"system:node:{self.name}", ("system:nodes",), key, (ca, ca_key))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def _start_kubelet(self) -> None:
        work = self.workdir
        pki = work / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        cert, key = self._node_credentials()
        (pki / "node.crt").write_bytes(cert)
        (pki / "node.key").write_bytes(key)
        (pki / "node.key").chmod(0o600)
        (pki / "ca.crt").write_bytes(self.cluster.ca_pem)
        kubeconfig = kubeconfig_document(
            self.cluster.server_url,
            self.cluster.ca_pem,
            f"system:node:{self.name}",
            {"client-certificate": str(pki / "node.crt"), "client-key": str(pki / "node.key")},
        )
        (work / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        (port,) = _reserve_ports(1)
        endpoint = f"unix://{self.containerd_socket}"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.gateway,
            "port": port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup}",
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "failCgroupV1": False,
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "registerNode": True,
            "registerWithTaints": [
                {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
            ],
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "volumePluginDir": str(work / "volume-plugins"),
            "resolvConf": "/etc/resolv.conf",
            "localStorageCapacityIsolation": False,
            "nodeStatusReportFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "protectKernelDefaults": False,
        }
        (work / "kubelet.yaml").write_text(yaml.safe_dump(config))
        kubelet = self.cluster._bins().kubelet
        self._spawn(
            "kubelet",
            [
                str(kubelet),
                f"--config={work / 'kubelet.yaml'}",
                f"--kubeconfig={work / 'kubelet.kubeconfig'}",
                f"--root-dir={self.sockdir / 'kubelet'}",
                f"--cert-dir={work / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.gateway}",
                f"--node-labels={REAL_NODE_LABEL}=true",
                "--v=1",
            ],
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        kubelet = next(p for p in self._procs if p.name == "kubelet")
        while time.monotonic() < deadline:
            if not kubelet.running():
                raise ClusterError(kubelet.describe_failure("the kubelet stopped"))
            resp = self.cluster.http.get(f"/api/v1/nodes/{self.name}")
            if resp.is_success:
                for cond in resp.json().get("status", {}).get("conditions", []):
                    if cond["type"] == "Ready" and cond["status"] == "True":
                        self._save_state()
                        return
            time.sleep(0.2)
        raise ClusterError(kubelet.describe_failure("the real node did not become Ready"))
