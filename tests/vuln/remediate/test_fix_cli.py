"""``casemate vuln fix`` against the real test dockerd's Debian 12 image, and the commands it
writes run for real: the init container's command in one container (network: the machine's
Debian security mirror), the postStart command in a second container sharing the volume, then
``dpkg-query`` shows the fixed version installed. (On the real node, through a Deployment
rollout, is not done yet.)"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import yaml

from casemate.testenv.docker import DockerEngine
from casemate.testenv.images import debian_mirror
from tests.vuln.test_cli import casemate

pytestmark = pytest.mark.docker

ZLIB_FIXED = "1:1.2.13.dfsg-1+deb12u1"  # DSA-5940-1 era: already in bookworm-security


def advisories(directory: Path) -> None:
    directory.mkdir()
    for source, fixed, ident in (
        ("zlib", ZLIB_FIXED, "CVE-2023-45853"),
        ("glibc", "2.36-9+deb12u99", "CVE-2099-0002"),
    ):
        (directory / f"{source}.json").write_text(
            json.dumps(
                {
                    "id": f"TEST-{source}",
                    "upstream": [ident],
                    "affected": [
                        {
                            "package": {"ecosystem": "Debian:12", "name": source},
                            "ranges": [
                                {
                                    "type": "ECOSYSTEM",
                                    "events": [{"introduced": "0"}, {"fixed": fixed}],
                                }
                            ],
                        }
                    ],
                }
            )
        )
    # fmt: skip


def manifest(image: str) -> str:
    return f"""\
# deployed by hand
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: app
        image: {image}   # the app
        command: ["sleep", "infinity"]
      - name: locked
        image: {image}
        securityContext:
          readOnlyRootFilesystem: true
"""


def test_fix_writes_the_second_manifest_and_its_commands_work(
    docker_engine: DockerEngine, debian12_image: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    advisories(tmp_path / "feed")
    assert casemate(data, "vuln", "db", "import", str(tmp_path / "feed")).returncode == 0
    original = tmp_path / "web.yaml"
    original.write_text(manifest(debian12_image))
    mirror = debian_mirror("bookworm-security")
    done = casemate(data, "vuln", "fix", "--manifest", str(original), "--security-mirror", mirror,
                    env={"DOCKER_HOST": docker_engine.host, "COLUMNS": "400"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert original.read_text() == manifest(debian12_image)  # never modified
    second = tmp_path / "web.remediated.yaml"
    assert f"wrote {second}" in done.stdout
    assert "+      - name: casemate-fetch-app" in done.stdout  # the unified diff
    assert "install zlib1g >= 1:1.2.13.dfsg-1+deb12u1" in done.stdout
    assert "readOnlyRootFilesystem is set" in done.stdout
    assert "glibc: the running process keeps the old library" in done.stdout
    text = second.read_text()
    assert "# deployed by hand" in text and "# the app" in text
    spec = yaml.safe_load(text)["spec"]["template"]["spec"]
    (fetch,) = spec["initContainers"]
    app, locked = spec["containers"]
    assert "lifecycle" not in locked

    # resolved against the mirror's index: pinned versions, each file's SHA-256 from the index
    script = fetch["command"][-1]
    assert " zlib1g=1:1.2.13" in script and "has the SHA-256 of the index" in script
    volume = f"cmv-fixes-{uuid.uuid4().hex[:8]}"
    mount = f"{volume}:/casemate-fixes"
    try:
        wrong = re.sub(r"grep -q '\^[0-9a-f]{64} '", "grep -q '^" + "0" * 64 + " '", script)
        refused = docker_engine.docker(
            "run", "--rm", "--network", "host", "-v", mount, "--user", "0",
            debian12_image, "sh", "-c", wrong, check=False, timeout=600,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "has the SHA-256 of the index" in refused.stderr
        fetched = docker_engine.docker(
            "run", "--rm", "--network", "host", "-v", mount, "--user", "0",
            debian12_image, *fetch["command"], check=False, timeout=600,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr[-2000:]
        installed = docker_engine.docker(
            "run", "--rm", "-v", mount, debian12_image, "sh", "-c",
            app["lifecycle"]["postStart"]["exec"]["command"][2]
            + "; dpkg-query -W -f '${Version}' zlib1g",
            check=False, timeout=600,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr[-2000:]
        assert (
            installed.stdout.splitlines()[-1].endswith(ZLIB_FIXED) or ZLIB_FIXED in installed.stdout
        )
        # a corrupted package file fails the hook loudly
        tampered = docker_engine.docker(
            "run", "--rm", "-v", mount, debian12_image, "sh", "-c",
            "for f in /casemate-fixes/app/*.deb; do echo x >> $f; done; "
            + app["lifecycle"]["postStart"]["exec"]["command"][2],
            check=False, timeout=600,
        )  # fmt: skip
        assert tampered.returncode != 0
        assert "FAILED" in tampered.stdout + tampered.stderr
    finally:
        docker_engine.docker("volume", "rm", "-f", volume, check=False)


def test_fix_refuses_templated_manifests(tmp_path: Path) -> None:
    bad = tmp_path / "chart.yaml"
    bad.write_text("kind: Pod\nmetadata:\n  name: {{ .Release.Name }}\n")
    done = casemate(tmp_path / "data", "vuln", "fix", "--manifest", str(bad))
    assert done.returncode == 2
    assert f"{bad} line 3: templating left in" in done.stderr


def test_scan_manifest_reads_each_image_once_and_reports_partially(
    docker_engine: DockerEngine, debian12_image: str, busybox_image: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    advisories(tmp_path / "feed")
    assert casemate(data, "vuln", "db", "import", str(tmp_path / "feed")).returncode == 0
    text = (
        manifest(debian12_image)
        + f"""\
---
apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    spec:
      initContainers:
      - name: tools
        image: {busybox_image}
      containers:
      - name: gone
        image: casemate-test/none:1
"""
    )
    path = tmp_path / "all.yaml"
    path.write_text(text)
    done = casemate(data, "vuln", "scan", "--manifest", str(path), "--format", "json",
                    env={"DOCKER_HOST": docker_engine.host})  # fmt: skip
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert {(f["target"], f["component"]["name"]) for f in report["findings"]} == {
        (debian12_image, "zlib"), (debian12_image, "glibc")}  # fmt: skip
    assert any(p.startswith(f"{busybox_image}: no /etc/os-release") for p in report["problems"])
    assert any("'casemate-test/none:1' is not in the Docker engine" in p
               for p in report["problems"])  # fmt: skip
    assert len(list((data / "vuln" / "inventories").glob("*.json"))) == 1  # debian12, once
