"""The images a real node runs (:mod:`casemate.testenv.node`): a static pause program compiled
once, and ``docker save`` archives of the pause, busybox and Debian 12 test images, built
locally and cached (no registry is reachable), to be imported into the node's containerd."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from casemate.testenv.images import (
    _locked,
    busybox_rootfs_tar,
    debian12_rootfs,
    testenv_cache_dir,
)
from casemate.testenv.kube import ClusterError

__all__ = [
    "BUSYBOX_IMAGE",
    "DEBIAN12_IMAGE",
    "PAUSE_IMAGE",
    "docker_archive",
    "node_images",
    "pause_binary",
]

PAUSE_IMAGE = "casemate-test/pause:1"
BUSYBOX_IMAGE = "casemate-test/busybox:1"
DEBIAN12_IMAGE = "casemate-test/debian12:1"
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


def pause_binary(cache: Path | None = None) -> Path:
    """A tiny static pause program, compiled once with ``gcc -static`` into the cache."""
    out = (cache or testenv_cache_dir()) / "pause-1" / "pause"
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent / ".lock"):
        if out.exists():
            return out
        source = out.parent / "pause.c"
        source.write_text(_PAUSE_C)
        result = subprocess.run(
            ["gcc", "-static", "-O2", "-s", "-o", str(out) + ".tmp", str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"compiling the pause program failed:\n{result.stderr[-2000:]}")
        os.replace(str(out) + ".tmp", out)
    return out


def _pause_rootfs_tar(binary: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        info.mode = 0o755
        data = binary.read_bytes()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def docker_archive(out: Path, name: str, layer: Path, config: dict[str, Any]) -> Path:
    """Write a ``docker save``-format archive of one layer (an uncompressed tar) as ``name``."""
    layer_id = _sha256_file(layer)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "casemate testenv"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [f"{layer_id}/layer.tar"]}]
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in (
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(str(layer), arcname=f"{layer_id}/layer.tar")
    os.replace(tmp, out)
    return out


def node_images(cache: Path | None = None) -> dict[str, Path]:
    """``docker save`` archives of the pause, busybox and Debian 12 test images (cached)."""
    root = cache or testenv_cache_dir()
    folder = root / "node-images"
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    with _locked(folder / ".lock"):
        pause = folder / "pause.tar"
        if not pause.exists():
            layer = folder / "pause-layer.tar"
            layer.write_bytes(_pause_rootfs_tar(pause_binary(root)))
            docker_archive(pause, PAUSE_IMAGE, layer, {"Entrypoint": ["/pause"], "Env": [_PATH]})
            layer.unlink()
        images[PAUSE_IMAGE] = pause
        busybox = folder / "busybox.tar"
        if not busybox.exists():
            layer = folder / "busybox-layer.tar"
            layer.write_bytes(busybox_rootfs_tar())
            docker_archive(busybox, BUSYBOX_IMAGE, layer, {"Cmd": ["sh"], "Env": [_PATH]})
            layer.unlink()
        images[BUSYBOX_IMAGE] = busybox
    rootfs = debian12_rootfs(root)  # takes its own lock; built once
    with _locked(folder / ".lock"):
        debian = folder / "debian12.tar"
        if not debian.exists() or debian.stat().st_mtime < rootfs.stat().st_mtime:
            docker_archive(debian, DEBIAN12_IMAGE, rootfs, {"Cmd": ["bash"], "Env": [_PATH]})
        images[DEBIAN12_IMAGE] = debian
    return images
