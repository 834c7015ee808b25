"""A private Docker engine for tests: Debian's dockerd and containerd as child processes.

Everything lives under one short directory (unix socket paths are limited to 107 bytes)::

    DIR/docker.sock  DIR/dockerd.log  DIR/docker.pid  DIR/daemon.json  DIR/data/  DIR/exec/
    DIR/containerd.log  DIR/ctr/{containerd.toml,containerd.sock,root/,state/,opt/}
    DIR/cli/  (DOCKER_CONFIG for the CLI, so ~/.docker is never read)

dockerd is given its own containerd (``--containerd``): left alone, dockerd 20.10 uses the
system containerd whenever /run/containerd/containerd.sock exists, sharing its ``moby``
namespace with the system dockerd. ``--config-file`` keeps /etc/docker/daemon.json out, and
``--cgroup-parent`` puts the containers into a cgroup of their own (not the system ``/docker``),
which is also how ``stop()`` finds any container process that outlived its shim.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from casemate.testenv.process import Component
from casemate.testenv.services import ComponentError, ManagedProcess

log = logging.getLogger(__name__)

#: Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107
_CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Programs an engine runs outside its containers (containerd-shim-runc-v2 included).
_OUR_PROGRAMS = (b"dockerd", b"containerd", b"runc", b"docker-")


def docker_cli() -> str:
    """The docker CLI: Debian's (same API version as its dockerd) or whatever is on PATH."""
    for candidate in ("/usr/bin/docker", "/usr/local/bin/docker"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("docker")
    if found is None:
        raise ComponentError("the docker CLI is not installed; run scripts/setup-system")
    return found


def _require(binary: str) -> str:
    found = shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise ComponentError(f"{binary} is not installed; run scripts/setup-system")
    return found


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory``, deepest first."""
    top = str(Path(directory).absolute())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == top or point.startswith(top + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


class DockerEngine(Component):
    """dockerd + containerd of our own, on ``DIR/docker.sock``."""

    def __init__(
        self,
        directory: Path,
        *,
        storage_driver: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.dir = Path(directory).absolute()
        #: vfs works everywhere (also nested in a container) but copies the whole image for every
        #: container; overlay2 is about 20x faster where the kernel and filesystem allow it.
        self.storage_driver = (
            storage_driver or os.environ.get("CASEMATE_DOCKER_STORAGE_DRIVER") or "vfs"
        )
        self.socket_path = self.dir / "docker.sock"
        self.host = f"unix://{self.socket_path}"
        self.log_path = self.dir / "dockerd.log"
        self.containerd_log_path = self.dir / "containerd.log"
        self.containerd_socket = self.dir / "ctr" / "containerd.sock"
        self.cgroup_parent = "/casemate-" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.dir.name)
        self.extra_args = list(extra_args)
        self._containerd: ManagedProcess | None = None
        self._dockerd: ManagedProcess | None = None
        longest = self.dir / "exec" / "libnetwork" / "0123456789ab.sock"
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            raise ComponentError(
                f"{self.dir} is too long for dockerd's unix sockets ({longest} would exceed "
                f"{MAX_SOCKET_PATH} bytes); use a short directory such as /tmp/cmd-XXXX"
            )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        if self._dockerd is not None:
            raise ComponentError("dockerd is already started")
        started = time.monotonic()
        try:
            self._start_containerd(timeout)
            self._start_dockerd(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("dockerd ready on %s in %.2f s", self.socket_path, time.monotonic() - started)

    def _start_containerd(self, timeout: float) -> None:
        ctr = self.containerd_socket.parent
        for sub in ("root", "state", "opt"):
            (ctr / sub).mkdir(parents=True, exist_ok=True)
        config = ctr / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{ctr / "root"}"\n'
            f'state = "{ctr / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.containerd_socket}"\n'
            f'[ttrpc]\n  address = "{self.containerd_socket}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{ctr / "opt"}"\n'
        )
        self._containerd = ManagedProcess(
            "containerd",
            [_require("containerd"), "--config", str(config)],
            self.containerd_log_path,
        )
        self._containerd.start()
        self._containerd.wait_ready(self._containerd_answers, timeout)

    def _start_dockerd(self, timeout: float) -> None:
        config = self.dir / "daemon.json"  # instead of /etc/docker/daemon.json
        config.write_text(json.dumps({"deprecated-key-path": str(self.dir / "key.json")}) + "\n")
        argv = [
            _require("dockerd"),
            "--config-file",
            str(config),
            "--containerd",
            str(self.containerd_socket),
            "--host",
            self.host,
            "--data-root",
            str(self.dir / "data"),
            "--exec-root",
            str(self.dir / "exec"),
            "--pidfile",
            str(self.dir / "docker.pid"),
            f"--storage-driver={self.storage_driver}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--bridge=none",
            "--userland-proxy=false",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--cgroup-parent",
            self.cgroup_parent,
            *self.extra_args,
        ]
        self._dockerd = ManagedProcess("dockerd", argv, self.log_path)
        self._dockerd.start()
        try:
            self._dockerd.wait_ready(self.ping, timeout)
        except ComponentError as e:
            if self._containerd is not None and self._containerd.exited():
                raise ComponentError(
                    f"{e}\n{self._containerd.failure('exited while dockerd started')}"
                ) from None
            raise

    def _containerd_answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.containerd_socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        """Remove all containers, stop dockerd and containerd, then make sure that no process,
        shim, container process or mount of this engine is left."""
        if self._dockerd is not None:
            if not self._dockerd.exited():
                self._remove_containers()
            self._dockerd.stop(signal.SIGTERM, timeout=30)
        if self._containerd is not None:
            self._containerd.stop(signal.SIGTERM, timeout=15)
        self._dockerd = self._containerd = None
        self._sweep()

    # -- API and CLI ------------------------------------------------------------------------

    def _client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket_path)),
            base_url="http://docker",
            timeout=timeout,
        )

    def ping(self) -> bool:
        """Whether ``GET /_ping`` answers OK. A plain socket: httpcore 1.0 leaks the socket (a
        ResourceWarning) when a unix connect fails, as it does until dockerd listens."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.settimeout(2)
                s.connect(str(self.socket_path))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                response = b""
                while chunk := s.recv(4096):
                    response += chunk
            except OSError:
                return False
        return (
            response.startswith(b"HTTP/1.")
            and b" 200 " in response.split(b"\r\n")[0]
            and response.endswith(b"\r\n\r\nOK")
        )

    def _remove_containers(self) -> None:
        """Force-remove every container (dockerd's own shutdown would give each one 10 s)."""
        try:
            with self._client(timeout=30) as client:
                response = client.get("/containers/json", params={"all": "1"})
                response.raise_for_status()
                for container in response.json():
                    client.delete(f"/containers/{container['Id']}", params={"force": "1", "v": "1"})
        except (httpx.HTTPError, ValueError) as e:
            log.warning("could not remove the containers of %s: %s", self.host, e)

    @property
    def cli_env(self) -> dict[str, str]:
        """Environment for docker CLI calls: only this engine, no user configuration."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.dir / "cli")
        return env

    def docker(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine; raise ComponentError if it fails and
        ``check``."""
        argv = [docker_cli(), *args]
        done = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            env=self.cli_env,
            timeout=timeout,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        result = subprocess.CompletedProcess(
            argv,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise ComponentError(
                f"docker {' '.join(args)} failed (status {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def image_exists(self, reference: str) -> bool:
        return self.docker("image", "inspect", reference, check=False).returncode == 0

    def stats(self, container: str) -> dict[str, str]:
        """One ``docker stats --no-stream`` sample of ``container``."""
        out = self.docker("stats", "--no-stream", "--format", "{{json .}}", container).stdout
        sample: dict[str, str] = json.loads(out)
        return sample

    def cpu_seconds(self, container: str) -> float:
        """CPU time ``container`` has used so far (the engine's ``cpu_usage.total_usage`` from
        its cgroup), in seconds: unlike ``CPUPerc`` it does not depend on how loaded the machine
        is."""
        with self._client(timeout=30) as client:
            response = client.get(
                f"/containers/{container}/stats", params={"stream": "false", "one-shot": "true"}
            )
            response.raise_for_status()
            usage: int = response.json()["cpu_stats"]["cpu_usage"]["total_usage"]
        return usage / 1e9

    # -- clean-up ---------------------------------------------------------------------------

    def _cgroups(self) -> Iterator[Path]:
        """Our containers' parent cgroup in every hierarchy (v1) or the unified one (v2)."""
        relative = self.cgroup_parent.lstrip("/")
        roots = [_CGROUP_ROOT] + sorted(p for p in _CGROUP_ROOT.glob("*") if p.is_dir())
        for root in roots:
            if (root / relative / "cgroup.procs").is_file():
                yield root / relative

    def leftover_pids(self) -> set[int]:
        """Processes of this engine still alive: anything naming our directory on its command
        line (dockerd, containerd, shims) and anything in our containers' cgroups."""
        marker = os.fsencode(self.dir) + b"/"
        pids: set[int] = set()
        with os.scandir("/proc") as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes()
                except OSError:
                    continue
                program = os.path.basename(cmdline.split(b"\0", 1)[0])
                if program.startswith(_OUR_PROGRAMS) and marker in cmdline:
                    pids.add(int(entry.name))
        for cgroup in self._cgroups():
            for procs in cgroup.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(pid) for pid in procs.read_text().split())
        pids.discard(os.getpid())
        return pids

    def leftover_mounts(self) -> list[str]:
        return mounts_under(self.dir)

    def _sweep(self) -> None:
        pids = self.leftover_pids()
        if pids:
            log.warning("killing leftover processes of %s: %s", self.host, sorted(pids))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while (pids := pids & self.leftover_pids()) and time.monotonic() < deadline:
                time.sleep(0.05)
        for point in self.leftover_mounts():
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        for cgroup in self._cgroups():
            subs = [p for p in cgroup.rglob("*") if p.is_dir()]
            for sub in sorted(subs, key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        if pids:
            raise ComponentError(f"processes of {self.host} survived SIGKILL: {sorted(pids)}")
