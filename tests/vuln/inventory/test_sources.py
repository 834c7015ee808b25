"""Inventories of the real Debian 12 test image, every way it can arrive, checked against
what real dpkg-query says about the same rootfs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from casemate.testenv.docker import DockerEngine
from casemate.vuln.inventory.cache import InventoryCache
from casemate.vuln.inventory.parsers import InventoryError
from casemate.vuln.inventory.sources import scan_docker_archive, scan_docker_image, scan_rootfs
from casemate.vuln.model import Inventory


def dpkg_query(rootfs: Path) -> set[tuple[str, str, str, str]]:
    out = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f",
         "${Package} ${Version} ${source:Package} ${source:Version} ${db:Status-Status}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = (line.split() for line in out.splitlines())
    return {(r[0], r[1], r[2], r[3]) for r in rows if r[4] == "installed"}


def rows(inventory: Inventory) -> set[tuple[str, str, str, str]]:
    return {(p.name, p.version, p.source, p.source_version) for p in inventory.packages}


def test_rootfs_agrees_with_dpkg_query(debian12_dir: Path) -> None:
    inventory = scan_rootfs(debian12_dir)
    assert inventory.problems == ()
    assert inventory.os is not None and inventory.os.ecosystem == "Debian:12"
    expected = dpkg_query(debian12_dir)
    assert len(expected) > 80
    assert rows(inventory) == expected
    assert inventory.tools == ("bin/sh", "usr/bin/dpkg", "usr/bin/apt-get")
    assert inventory.user == ""
    bsdutils = next(p for p in inventory.packages if p.name == "bsdutils")
    assert bsdutils.version.startswith("1:") and bsdutils.source == "util-linux"
    assert not bsdutils.source_version.startswith("1:")


def test_docker_save_archive_is_cached_by_digest(
    debian12_save: Path, debian12_dir: Path, tmp_path: Path
) -> None:
    cache = InventoryCache(tmp_path / "cache")
    (inventory,) = scan_docker_archive(debian12_save, cache=cache)
    assert inventory.problems == ()
    assert rows(inventory) == dpkg_query(debian12_dir)
    assert inventory.digest is not None
    cached_file = tmp_path / "cache" / f"{inventory.digest.removeprefix('sha256:')}.json"
    assert cached_file.is_file()
    (again,) = scan_docker_archive(debian12_save, name="renamed:1", cache=cache)
    assert again.image == "renamed:1"
    assert again.packages == inventory.packages


@pytest.mark.docker
def test_local_engine_export(
    docker_engine: DockerEngine, debian12_image: str, debian12_dir: Path, tmp_path: Path
) -> None:
    cache = InventoryCache(tmp_path / "cache")
    inventory = scan_docker_image(
        debian12_image, docker_host=docker_engine.host, cache=cache, scratch=tmp_path
    )
    assert inventory.problems == ()
    assert rows(inventory) == dpkg_query(debian12_dir)
    assert inventory.digest is not None
    assert (tmp_path / "cache" / f"{inventory.digest.removeprefix('sha256:')}.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the export is gone
    with pytest.raises(InventoryError, match="'casemate-test/absent:1' is not in the Docker"):
        scan_docker_image("casemate-test/absent:1", docker_host=docker_engine.host)


@pytest.mark.docker
def test_reference_cannot_steer_the_engine_path(docker_engine: DockerEngine) -> None:
    """A name with '..' or empty parts is refused before any request reaches the engine."""
    for hostile in ("../containers/json", "casemate-test//x", "a/../../info", "x?all=1"):
        with pytest.raises(InventoryError, match="invalid image reference"):
            scan_docker_image(hostile, docker_host=docker_engine.host)
