"""Issue 12's bad inputs through the CLI, one case each: a clear problem naming the input (the
archive, or the image by its tag for its files), the rest of the image still reported, exit 2,
and nothing written outside the scan's own directories (the CLI's TMPDIR is empty afterwards,
the data directory holds only the index and the inventory cache, and no hostile name appears
anywhere on the host).

Cases proven elsewhere (with the same four properties or an explanation why a partial result
does not exist) are listed in docs/vuln.md, "Bad input"."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.vuln.inventory.layers import OS_RELEASE, docker_archive, layer, status
from tests.vuln.test_cli import casemate
from tests.vuln.test_cli import data as data  # noqa: F401  (the fixture: an index with zlib)

ZLIB_STATUS = status(("zlib1g", "1:1.2.13.dfsg-1")).replace(b"Version:", b"Source: zlib\nVersion:")
BASE = layer(("etc/os-release", "file", OS_RELEASE), ("var/lib/dpkg/status", "file", ZLIB_STATUS))


def sparse_layer(tmp_path: Path) -> bytes:
    """A layer with a 10 GiB sparse file and a 10 GiB sparse dpkg status.d entry."""
    root = tmp_path / "sparse-root"
    (root / "var/lib/dpkg/status.d").mkdir(parents=True)
    for name in ("big.img", "var/lib/dpkg/status.d/huge"):
        with open(root / name, "wb") as f:
            f.truncate(10 * 1024**3)
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-C", str(root), "-cf", str(archive), "."], check=True)
    assert archive.stat().st_size < 1024 * 1024
    return archive.read_bytes()


CASES = {
    "missing layer": "missing '",
    "layer member with ../": "refused '../../../tmp/cmv-bad-input-escaped'",
    "absolute member name": "refused '/tmp/cmv-bad-input-absolute'",
    "hard link out of the rootfs": "etc/shadow-link",
    "device file": "refused device file or FIFO 'dev/kmem'",
    "10 GiB sparse file": "status.d/huge is larger than",
    "malformed dpkg status": "/var/lib/dpkg/status.d/bad line 1",
}


def archive_for(case: str, tmp_path: Path) -> Path:
    path = tmp_path / "img.tar"
    if case == "missing layer":
        upper = layer(("etc/motd", "file", b"hi"))
        missing = f"{hashlib.sha256(upper).hexdigest()}/layer.tar"
        return docker_archive(path, [BASE, upper], missing=(missing,))
    extra = {
        "layer member with ../": layer(("../../../tmp/cmv-bad-input-escaped", "file", b"x")),
        "absolute member name": layer(("/tmp/cmv-bad-input-absolute", "file", b"x")),
        "hard link out of the rootfs": layer(("etc/shadow-link", "hard", "../../etc/shadow")),
        "device file": layer(("dev/kmem", "chr", b"")),
        "10 GiB sparse file": sparse_layer(tmp_path) if case == "10 GiB sparse file" else b"",
        "malformed dpkg status": layer(("var/lib/dpkg/status.d/bad", "file", b"not a field\n")),
    }[case]
    return docker_archive(path, [BASE, extra])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_layer_inputs(case: str, data: Path, tmp_path: Path) -> None:  # noqa: F811
    archive = archive_for(case, tmp_path)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    done = casemate(data, "vuln", "scan", "--tar", str(archive), "--format", "json",
                    env={"TMPDIR": str(scratch)})  # fmt: skip
    assert done.returncode == 2, done.stderr
    report = json.loads(done.stdout)
    assert [f["component"]["name"] for f in report["findings"]] == ["zlib"]  # the rest: read
    assert any(
        CASES[case] in p and p.startswith((str(archive), "test/img:1: "))
        for p in report["problems"]
    ), report["problems"]
    assert "casemate: the scan is partial" in done.stderr and "Traceback" not in done.stderr
    assert list(scratch.iterdir()) == []  # nothing left behind in the scratch area
    assert {p.name for p in (data / "vuln").iterdir()} <= {"db", "inventories"}
    assert not Path("/tmp/cmv-bad-input-escaped").exists()
    assert not Path("/tmp/cmv-bad-input-absolute").exists()


def test_unknown_os_is_a_problem_and_exit_2(data: Path, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "plan9"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=plan9\nVERSION_ID=4\n")
    done = casemate(data, "vuln", "scan", "--rootfs", str(root), "--format", "json")
    assert done.returncode == 2
    problems = json.loads(done.stdout)["problems"]
    assert problems[0] == (
        f"{root}: unsupported OS 'plan9' '4' (Debian, Ubuntu and Alpine are supported); "
        "packages not read"
    )
    assert f"{root}: no supported OS, nothing matched" in problems
