"""The Debian 12 test rootfs (testenv: debootstrap at point-release versions), unpacked once."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from casemate.testenv.images import debian12_rootfs


@pytest.fixture(scope="session")
def debian12_tarball() -> Path:
    return debian12_rootfs()


@pytest.fixture(scope="session")
def debian12_dir(debian12_tarball: Path) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="cmv-rootfs-", dir="/tmp"))
    subprocess.run(
        ["tar", "-C", str(directory), "--numeric-owner", "-xf", str(debian12_tarball)],
        check=True,
        timeout=300,
    )
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def debian12_save(debian12_tarball: Path) -> Iterator[Path]:
    """A ``docker save``-format archive whose one layer is the Debian 12 rootfs."""
    directory = Path(tempfile.mkdtemp(prefix="cmv-save-", dir="/tmp"))
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["casemate-test/debian12:1"],
          "Layers": ["rootfs/layer.tar"]}]
    ).encode()  # fmt: skip
    archive = directory / "debian12.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("manifest.json", manifest), (config_name, config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(str(debian12_tarball), arcname="rootfs/layer.tar")
    yield archive
    shutil.rmtree(directory, ignore_errors=True)
