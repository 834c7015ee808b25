"""Layers applied in memory: order, whiteouts, opaque directories, links; hostile members
refused and named; nothing written anywhere."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from casemate.vuln.inventory.parsers import InventoryError
from casemate.vuln.inventory.scan import inventory_of
from casemate.vuln.inventory.sources import scan_docker_archive, scan_oci_layout, scan_rootfs
from casemate.vuln.inventory.tree import LayeredTree, RootDir
from tests.vuln.inventory.layers import OS_RELEASE, docker_archive, layer, oci_layout, status


def tree_of(*layers: bytes) -> tuple[LayeredTree, list[str]]:
    tree = LayeredTree()
    problems: list[str] = []
    for index, data in enumerate(layers):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            problems += tree.apply_layer(tar, f"layer{index}")
    return tree, problems


BASE = layer(
    ("usr/lib/os-release", "file", OS_RELEASE),
    ("etc/os-release", "sym", "../usr/lib/os-release"),
    ("var/lib/dpkg/status", "file", status(("bash", "5.2.15-2+b2"), ("zlib1g", "1:1.2.13"))),
    ("etc/keep/a", "file", b"a"),
    ("etc/keep/b", "file", b"b"),
)


def test_layers_apply_in_order_with_whiteouts_and_opaque_dirs() -> None:
    upper = layer(
        ("var/lib/dpkg/status", "file", status(("bash", "5.2.15-2+b3"))),
        ("etc/keep/.wh..wh..opq", "file", b""),
        ("etc/keep/c", "file", b"c"),
        ("usr/lib/.wh.os-release", "file", b""),
    )
    tree, problems = tree_of(BASE, upper)
    assert problems == []
    assert tree.listdir("etc/keep") == ["c"]
    assert tree.read("etc/os-release") is None  # its target was whited out
    inventory = inventory_of(tree, "img")
    assert [(p.name, p.version) for p in inventory.packages] == [("bash", "5.2.15-2+b3")]
    assert inventory.problems == ("img: no /etc/os-release or /usr/lib/os-release: unknown OS",)


def test_symlinks_resolve_inside_the_image(tmp_path: Path) -> None:
    host_secret = tmp_path / "host-status"
    host_secret.write_bytes(status(("host-only", "9.9")))
    hostile = layer(
        ("usr/lib/os-release", "file", OS_RELEASE),
        ("var/lib/dpkg/status", "sym", "../../../../../../../../" + str(host_secret)),
        ("etc/os-release", "sym", "/usr/lib/os-release"),
    )
    tree, problems = tree_of(hostile)
    inventory = inventory_of(tree, "img")
    assert inventory.os is not None and inventory.os.id == "debian"
    assert inventory.packages == ()  # the host file was never read


@pytest.mark.parametrize(
    ("entry", "refused"),
    [
        (("../../escape", "file", b"x"), "outside the image"),
        (("/abs/escape", "file", b"x"), "outside the image"),
        (("etc/../../x", "file", b"x"), "outside the image"),
        (("dev/sda", "chr", b""), "device file"),
        (("run/fifo", "fifo", b""), "device file"),
        (("etc/shadow-link", "hard", "../../etc/shadow"), "hard link"),
        (("etc/abs-link", "hard", "/etc/shadow"), "hard link"),
        (("etc/dangling", "hard", "etc/nothing"), "missing file"),
    ],
)
def test_hostile_members_are_refused_and_named(
    entry: tuple[str, str, bytes | str], refused: str, tmp_path: Path
) -> None:
    before = set(os.listdir("/tmp")), set(os.listdir(tmp_path))
    tree, problems = tree_of(BASE, layer(entry))
    assert len(problems) == 1
    assert problems[0].startswith("layer1: ")
    assert refused in problems[0]
    assert entry[0] in problems[0]
    assert (set(os.listdir("/tmp")), set(os.listdir(tmp_path))) == before
    assert len(inventory_of(tree, "img").packages) == 2  # the rest is still read


def test_hard_links_share_data() -> None:
    tree, problems = tree_of(
        layer(
            ("usr/lib/os-release", "file", OS_RELEASE),
            ("etc/os-release", "hard", "usr/lib/os-release"),
        )
    )
    assert problems == []
    assert tree.read("etc/os-release") == OS_RELEASE
    assert tree.exists("etc/os-release") and not tree.exists("bin/sh")
    assert inventory_of(tree, "img").tools == ()


def test_symlink_loop_is_an_error() -> None:
    tree, _ = tree_of(layer(("etc/os-release", "sym", "os-release")))
    with pytest.raises(InventoryError, match="too many levels"):
        tree.read("etc/os-release")
    looped, _ = tree_of(
        BASE, layer(("var/lib/dpkg/status.d", "sym", "status.d"), ("var/lib/dpkg/status", "sym",
                                                                     "../dpkg/status"))
    )  # fmt: skip
    inventory = inventory_of(looped, "img")  # problems, not an exception
    assert any("status.d: too many levels" in p for p in inventory.problems)
    assert any("/var/lib/dpkg/status: too many levels" in p for p in inventory.problems)


def test_ten_gigabyte_sparse_file_costs_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_bytes(OS_RELEASE)
    for name in ("big.img", "var/lib/dpkg/status"):
        with open(root / name, "wb") as f:
            f.truncate(10 * 1024**3)
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-C", str(root), "-cf", str(archive), "."], check=True)
    assert archive.stat().st_size < 1024 * 1024
    started = time.monotonic()
    tree, problems = tree_of(archive.read_bytes())
    inventory = inventory_of(tree, "img")
    assert time.monotonic() - started < 10
    assert problems == []
    assert inventory.packages == ()
    assert any("status is larger than" in p for p in inventory.problems)
    # the same rootfs read in place: refused by its size, never read
    direct = scan_rootfs(root)
    assert any("status" in p and "larger than" in p for p in direct.problems)


def test_rootfs_reader_stays_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside-status"
    outside.write_bytes(status(("host-only", "1.0")))
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_bytes(OS_RELEASE)
    (root / "var/lib/dpkg/status").symlink_to(outside)  # absolute: means root/… inside
    assert scan_rootfs(root).packages == ()
    (root / "var/lib/dpkg/status").unlink()
    (root / "var/lib/dpkg/status").symlink_to("../../../../outside-status")
    assert scan_rootfs(root).packages == ()
    (root / "var/lib/dpkg/status").unlink()
    os.mkfifo(root / "var/lib/dpkg/status")
    inventory = scan_rootfs(root)  # a FIFO is never opened for a blocking read
    assert any("not a regular file" in p for p in inventory.problems)
    with pytest.raises(InventoryError, match="is not a directory"):
        RootDir(tmp_path / "nope")


def test_unknown_os_is_named(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=fedora\nVERSION_ID=40\n")
    inventory = scan_rootfs(root)
    expected = f"{root}: unsupported OS 'fedora' '40' (Debian, Ubuntu and Alpine are supported)"
    assert inventory.problems == (f"{expected}; packages not read",)


def test_docker_archive_and_oci_layout(tmp_path: Path) -> None:
    upper = layer(("var/lib/dpkg/status", "file", status(("bash", "5.2.15-2+b3"))), gzip=True)
    archive = docker_archive(tmp_path / "img.tar", [BASE, upper])
    (inventory,) = scan_docker_archive(archive)
    assert inventory.image == "test/img:1"
    assert inventory.digest is not None and inventory.digest.startswith("sha256:")
    assert [(p.name, p.version) for p in inventory.packages] == [("bash", "5.2.15-2+b3")]
    assert inventory.problems == ()
    (oci,) = scan_oci_layout(oci_layout(tmp_path / "oci", [BASE, upper], ref="2"))
    assert oci.image == "oci:2"
    assert oci.packages == inventory.packages


def test_corrupt_and_incomplete_archives(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InventoryError, match=f"^{bad}"):
        scan_docker_archive(bad)
    with pytest.raises(InventoryError, match="no such file"):
        scan_docker_archive(tmp_path / "absent.tar")
    upper = layer(("var/lib/dpkg/status", "file", status(("bash", "5.2.15-2+b3"))))

    missing = f"{hashlib.sha256(upper).hexdigest()}/layer.tar"
    archive = docker_archive(tmp_path / "partial.tar", [BASE, upper], missing=(missing,))
    (inventory,) = scan_docker_archive(archive)
    assert inventory.problems == (f"{archive}: missing {missing!r}",)
    assert {p.name for p in inventory.packages} == {"bash", "zlib1g"}  # partial result
    truncated = tmp_path / "truncated.tar"
    whole = docker_archive(tmp_path / "whole.tar", [BASE, upper]).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2 + 700])  # inside the second layer
    with pytest.raises(InventoryError, match=f"^{truncated} is not a readable tar archive"):
        scan_docker_archive(truncated)
    hostile = tmp_path / "hostile.tar"
    with tarfile.open(hostile, "w") as tar:
        data = b'[{"Config": "../../etc/passwd", "Layers": []}]'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InventoryError, match="refused path '../../etc/passwd'"):
        scan_docker_archive(hostile)


def test_oci_layout_refuses_bad_digests(tmp_path: Path) -> None:
    directory = oci_layout(tmp_path / "oci", [BASE])
    index = (directory / "index.json").read_text()
    (directory / "index.json").write_text(index.replace('"sha256:', '"sha256:../../'))
    with pytest.raises(InventoryError, match="invalid digest"):
        scan_oci_layout(directory)
    with pytest.raises(InventoryError, match="not an OCI image layout"):
        scan_oci_layout(tmp_path)


def test_alpine_layer_reads_origins_and_matches_secdb() -> None:
    from casemate.vuln.advisories.alpine import AlpineSecdbSource
    from casemate.vuln.advisories.index import AdvisoryIndex
    from casemate.vuln.match import match
    from tests.vuln.advisories.samples import SECDB, dumps

    installed = (
        b"P:musl\nV:1.2.5-r0\nA:x86_64\no:musl\n\n"
        b"P:libcrypto3\nV:3.3.1-r0\nA:x86_64\no:openssl\n\n"
        b"P:busybox\nV:1.36.1-r29\nA:x86_64\no:busybox\n"
    )
    tree, problems = tree_of(
        layer(
            ("etc/os-release", "file", b"ID=alpine\nVERSION_ID=3.20.3\n"),
            ("lib/apk/db/installed", "file", installed),
            ("bin/sh", "sym", "/bin/busybox"),
            ("bin/busybox", "file", b"\x7fELF"),
            ("sbin/apk", "file", b"\x7fELF"),
        )
    )
    inventory = inventory_of(tree, "alpine:3.20")
    assert problems == [] and inventory.problems == ()
    assert inventory.tools == ("bin/sh", "sbin/apk")
    assert {(p.name, p.source) for p in inventory.packages} == {
        ("musl", "musl"), ("libcrypto3", "openssl"), ("busybox", "busybox")}  # fmt: skip
    index = AdvisoryIndex(AlpineSecdbSource().parse(dumps(SECDB), "main.json").advisories)
    found = {(f.package, f.advisory, f.binaries) for f in match(inventory, index).findings}
    assert found == {
        ("openssl", "CVE-2024-6119", ("libcrypto3",)),
        ("openssl", "CVE-2024-5535", ("libcrypto3",)),
    }  # busybox 1.36.1-r29 is the fixed version itself
