"""``casemate vuln`` end to end, as a user runs it (a real process, the real test rootfs and
the real test dockerd): outputs, exit statuses, clear errors, partial results."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from casemate.testenv.docker import DockerEngine
from tests.vuln.advisories.samples import OSV_UNKNOWN, dumps
from tests.vuln.inventory.layers import OS_RELEASE, docker_archive, layer, status

FIXED = "1:1.2.13.dfsg-1+deb12u1"
ZLIB = {
    "id": "DSA-TEST-1",
    "upstream": ["CVE-2023-45853"],
    "affected": [{"package": {"ecosystem": "Debian:12", "name": "zlib"},
                  "ranges": [{"type": "ECOSYSTEM",
                              "events": [{"introduced": "0"}, {"fixed": FIXED}]}],
                  "ecosystem_specific": {"urgency": "high"}}],
}  # fmt: skip
UTIL_LINUX = {
    "id": "DEBIAN-CVE-2024-28085",
    "affected": [{"package": {"ecosystem": "Debian:12", "name": "util-linux"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
}  # fmt: skip


def casemate(data: Path, *args: str, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "casemate.cli", *args],
        env={**os.environ, "CASEMATE_DATA_DIR": str(data), **(env or {})},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "zlib.json").write_bytes(dumps(ZLIB))
    (feed / "util-linux.json").write_bytes(dumps(UTIL_LINUX))
    directory = tmp_path / "data"
    done = casemate(directory, "vuln", "db", "import", str(feed))
    assert done.returncode == 0, done.stderr
    assert f"imported 2 advisories (osv) for Debian:12 from {feed}" in done.stdout
    return directory


def test_scan_rootfs_formats_and_fail_on(data: Path, debian12_dir: Path) -> None:
    table = casemate(data, "vuln", "scan", "--rootfs", str(debian12_dir))
    assert table.returncode == 0, table.stderr
    assert "2 findings (1 fixable)" in table.stdout
    report = json.loads(casemate(data, "vuln", "scan", "--rootfs", str(debian12_dir),
                                 "--format", "json").stdout)  # fmt: skip
    by = {f["component"]["name"]: f for f in report["findings"]}
    assert by["zlib"]["fixed_version"] == "1:1.2.13.dfsg-1+deb12u1"
    assert by["zlib"]["severity"] == "high"
    assert dict(by["zlib"]["properties"])["binaries"] == "zlib1g"
    assert by["util-linux"]["fixed_version"] is None
    binaries = dict(by["util-linux"]["properties"])["binaries"].split()
    assert {"bsdutils", "mount", "libblkid1"} <= set(binaries)
    assert len(report["components"]) > 80
    sbom = casemate(data, "vuln", "scan", "--rootfs", str(debian12_dir), "--format", "cyclonedx")
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(sbom.stdout) is None
    sarif = json.loads(casemate(data, "vuln", "scan", "--rootfs", str(debian12_dir),
                                "--format", "sarif").stdout)  # fmt: skip
    rules = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert rules == {"CVE-2023-45853", "DEBIAN-CVE-2024-28085"}
    failing = casemate(data, "vuln", "scan", "--rootfs", str(debian12_dir), "--fail-on", "high")
    assert failing.returncode == 1
    passing = casemate(data, "vuln", "scan", "--rootfs", str(debian12_dir), "--fail-on", "critical")
    assert passing.returncode == 0


def test_db_status(data: Path) -> None:
    done = casemate(data, "vuln", "db", "status")
    assert done.returncode == 0
    assert "2 advisories from 1 sources" in done.stdout
    assert "Debian:12" in done.stdout


def test_bad_input_is_one_clear_line(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = casemate(data, "vuln", "db", "import", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith(f"casemate: error: {bad} is not valid JSON")
    assert "Traceback" not in done.stderr
    unknown = tmp_path / "pypi.json"
    unknown.write_bytes(dumps(OSV_UNKNOWN))
    done = casemate(data, "vuln", "db", "import", str(unknown))
    assert done.returncode == 2
    assert f"problem: {unknown}: PYSEC-2024-1: unknown ecosystem 'PyPI'" in done.stderr
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(b"\x00not a tar" * 50)
    done = casemate(data, "vuln", "scan", "--tar", str(corrupt))
    assert done.returncode == 2
    assert done.stderr.startswith(f"casemate: error: {corrupt} is not a readable tar archive")
    done = casemate(data, "vuln", "scan", "--rootfs", str(tmp_path), "--tar", str(corrupt))
    assert done.returncode == 2 and "exactly one of" in done.stderr
    done = casemate(tmp_path / "empty", "vuln", "scan", "--rootfs", str(tmp_path))
    assert done.returncode == 2 and "no advisories are loaded" in done.stderr


def test_partial_scan_still_reports(data: Path, tmp_path: Path) -> None:
    zlib_status = status(("zlib1g", "1:1.2.13.dfsg-1")).replace(
        b"Version:", b"Source: zlib\nVersion:"
    )
    good = layer(
        ("etc/os-release", "file", OS_RELEASE),
        ("var/lib/dpkg/status", "file", zlib_status),
    )
    hostile = layer(("../../../tmp/escaped", "file", b"x"), ("dev/kmem", "chr", b""))
    archive = docker_archive(tmp_path / "img.tar", [good, hostile], tag="partial:1")
    done = casemate(data, "vuln", "scan", "--tar", str(archive), "--format", "json")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert [f["component"]["name"] for f in report["findings"]] == ["zlib"]
    assert len(report["problems"]) == 2
    assert "refused '../../../tmp/escaped'" in done.stderr
    assert "refused device file or FIFO 'dev/kmem'" in done.stderr
    assert "the scan is partial" in done.stderr
    assert not Path("/tmp/escaped").exists()


def test_rpm_images_are_recognised_as_not_supported(data: Path, tmp_path: Path) -> None:
    root = tmp_path / "fedora"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=fedora\nVERSION_ID=40\nNAME="Fedora Linux"\n')
    (root / "var" / "lib" / "rpm").mkdir(parents=True)
    with sqlite3.connect(root / "var" / "lib" / "rpm" / "rpmdb.sqlite") as db:  # as rpm 4.16+
        db.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB)")
    db.close()
    for output in ("table", "json"):
        done = casemate(data, "vuln", "scan", "--rootfs", str(root), "--format", output,
                        env={"COLUMNS": "400"})  # fmt: skip
        assert done.returncode == 2
        assert (
            f"{root}: 'fedora' '40' with the rpm database /var/lib/rpm/rpmdb.sqlite: "
            "rpm-based images are recognised and reported as not supported"
        ) in done.stderr
        assert "Traceback" not in done.stderr
    assert "rpm-based images are recognised" in json.loads(done.stdout)["problems"][0]
    (root / "etc" / "os-release").unlink()  # no os-release: the rpm database still tells
    done = casemate(data, "vuln", "scan", "--rootfs", str(root), env={"COLUMNS": "400"})
    assert done.returncode == 2
    assert "unknown OS with the rpm database /var/lib/rpm/rpmdb.sqlite" in done.stderr


@pytest.mark.docker
def test_scan_local_engine_image(data: Path, docker_engine: DockerEngine,
                                 debian12_image: str) -> None:  # fmt: skip
    done = casemate(data, "vuln", "scan", debian12_image, "--format", "json",
                    env={"DOCKER_HOST": docker_engine.host})  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {f["component"]["name"] for f in report["findings"]} == {"zlib", "util-linux"}
    assert all(f["target"] == debian12_image for f in report["findings"])
    cached = list((data / "vuln" / "inventories").glob("*.json"))
    assert len(cached) == 1
    missing = casemate(data, "vuln", "scan", "casemate-test/none:1",
                       env={"DOCKER_HOST": docker_engine.host})  # fmt: skip
    assert missing.returncode == 2
    assert "'casemate-test/none:1' is not in the Docker engine" in missing.stderr
