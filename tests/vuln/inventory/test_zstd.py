"""zstd-compressed layers (compressed by the real zstd tool), and broken ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

from casemate.vuln.inventory.sources import scan_docker_archive, scan_oci_layout
from tests.vuln.inventory.layers import OS_RELEASE, docker_archive, layer, oci_layout, status


def zstd(data: bytes) -> bytes:
    done = subprocess.run(["zstd", "-q", "-c", "-19"], input=data, capture_output=True, check=True)
    assert done.stdout[:4] == b"\x28\xb5\x2f\xfd"
    return done.stdout


BASE = layer(("etc/os-release", "file", OS_RELEASE),
             ("var/lib/dpkg/status", "file", status(("zlib1g", "1:1.2.13.dfsg-1"))))  # fmt: skip
FIXED = status(("zlib1g", "1:1.2.13.dfsg-1+deb12u1"))
UPPER = layer(("var/lib/dpkg/status", "file", FIXED), ("etc/.wh.os-release", "file", b""),
              ("etc/os-release", "file", OS_RELEASE))  # fmt: skip


def test_zstd_layers_apply_in_order(tmp_path: Path) -> None:
    for inventories in (
        scan_docker_archive(docker_archive(tmp_path / "img.tar", [zstd(BASE), zstd(UPPER)])),
        scan_oci_layout(oci_layout(tmp_path / "oci", [zstd(BASE), UPPER])),
    ):
        (inventory,) = inventories
        assert inventory.problems == ()
        assert [(p.name, p.version) for p in inventory.packages] == [
            ("zlib1g", "1:1.2.13.dfsg-1+deb12u1")
        ]


def test_a_broken_zstd_layer_is_a_problem_and_applies_nothing(tmp_path: Path) -> None:
    good = zstd(UPPER)
    broken = good[: len(good) // 2] + bytes(64) + good[len(good) // 2 :]
    (inventory,) = scan_docker_archive(docker_archive(tmp_path / "img.tar", [zstd(BASE), broken]))
    assert [(p.name, p.version) for p in inventory.packages] == [("zlib1g", "1:1.2.13.dfsg-1")]
    assert len(inventory.problems) == 1
    assert "layer" in inventory.problems[0] or "zstd" in inventory.problems[0]
