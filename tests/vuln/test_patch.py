"""``casemate vuln patch-image`` on the real test dockerd: advisories from the machine's Debian
security mirror (``vuln db update``), every fixable package of the Debian 12 test image
installed in one extra layer, the new image rescanned clean for them, labelled, and still
running its original command. The pure parts: what a patched image includes and refuses."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from casemate.testenv.docker import DockerEngine
from casemate.testenv.images import debian_mirror
from casemate.vuln.model import Finding, Inventory, OsRelease, Package
from casemate.vuln.patch import still_vulnerable
from casemate.vuln.remediate.plan import ContainerFacts, plan_container, plan_image
from tests.vuln.test_cli import casemate

DEBIAN = OsRelease("debian", "12", "bookworm")
TOOLS = ("bin/sh", "usr/bin/dpkg", "usr/bin/apt-get")


def inventory(tools: tuple[str, ...] = TOOLS, user: str = "app") -> Inventory:
    packages = (
        Package("libc6", "2.36-9+deb12u7", "glibc", "2.36-9+deb12u7", "dpkg"),
        Package("zlib1g", "1:1.2.13.dfsg-1", "zlib", "1:1.2.13.dfsg-1", "dpkg"),
    )
    return Inventory("img:1", None, DEBIAN, packages, tools=tools, user=user)


FINDINGS = [
    Finding("img:1", "glibc", "2.36-9+deb12u7", "2.36-9+deb12u10", "fixed", "DSA-1",
            ("CVE-1",), "high", "", ("libc6",)),
    Finding("img:1", "zlib", "1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1", "fixed", "DSA-2",
            ("CVE-2",), "high", "", ("zlib1g",)),
]  # fmt: skip


def test_a_patched_image_includes_what_a_running_pod_cannot_take() -> None:
    in_place = plan_container(ContainerFacts("c", "img:1"), inventory(user=""), FINDINGS)
    assert [f.binary for f in in_place.fixes] == ["zlib1g"]  # libc needs a restart
    patched = plan_image("img:1", inventory(), FINDINGS)  # a non-root image: patched as root
    assert patched.refusals == () and [f.binary for f in patched.fixes] == ["libc6", "zlib1g"]
    distroless = plan_image("img:1", inventory(tools=("usr/bin/dpkg",)), FINDINGS)
    assert distroless.refusals and "no shell" in distroless.refusals[0]
    assert "rebuild the image" in distroless.refusals[0]


def test_still_vulnerable_compares_versions() -> None:
    plan = plan_image("img:1", inventory(), FINDINGS)
    assert still_vulnerable(plan, inventory()) == [
        "libc6 2.36-9+deb12u7 < 2.36-9+deb12u10",
        "zlib1g 1:1.2.13.dfsg-1 < 1:1.2.13.dfsg-1+deb12u1",
    ]
    fixed = Inventory(
        "img:2",
        None,
        DEBIAN,
        (
            Package("libc6", "2.36-9+deb12u10", "glibc", "2.36-9+deb12u10", "dpkg"),
            Package("zlib1g", "1:1.2.13.dfsg-1+deb12u1", "zlib", "1.2.13.dfsg-1+deb12u1", "dpkg"),
        ),
    )
    assert still_vulnerable(plan, fixed) == []


@pytest.mark.docker
def test_patch_image_on_the_test_engine(docker_engine: DockerEngine, debian12_image: str,
                                        tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "data"
    mirror = debian_mirror("bookworm-security")
    updated = casemate(data, "vuln", "db", "update", "--mirror", mirror, "--changelogs-for", "none")
    assert updated.returncode == 0, updated.stderr
    env = {"DOCKER_HOST": docker_engine.host}
    before = json.loads(casemate(data, "vuln", "scan", debian12_image, "--format", "json",
                                 env=env).stdout)  # fmt: skip
    fixable = {f["component"]["name"] for f in before["findings"]}
    assert fixable, "the test image has no security update pending"
    tag = f"casemate-test/debian12:patched-{secrets.token_hex(3)}"
    try:
        done = casemate(data, "vuln", "patch-image", debian12_image, "--tag", tag,
                        "--security-mirror", mirror, "--network", "host", "--format", "json",
                        env=env)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        result = json.loads(done.stdout)
        assert result["layers_added"] == 1
        # resolved against the mirror's index: every fixed binary downloaded pinned, with the
        # index's SHA-256 (and any dependency the upgrade needed)
        downloaded = {d["package"]: d for d in result["downloaded"]}
        assert {i["binary"] for i in result["installed"]} <= set(downloaded)
        assert all(len(d["sha256"]) == 64 for d in downloaded.values())
        assert result["remaining"] == []
        after = json.loads(casemate(data, "vuln", "scan", tag, "--format", "json", env=env).stdout)
        assert after["findings"] == []
        inspected = json.loads(docker_engine.docker("image", "inspect", tag).stdout)[0]
        original = json.loads(docker_engine.docker("image", "inspect", debian12_image).stdout)[0]
        assert inspected["Config"]["Cmd"] == original["Config"]["Cmd"]
        assert (inspected["Config"]["Entrypoint"] or None) == original["Config"]["Entrypoint"]
        assert inspected["Config"]["User"] == original["Config"]["User"]
        assert "zlib1g>=" in inspected["Config"]["Labels"]["io.casemate.vuln.packages"]
        ran = docker_engine.docker("run", "--rm", "-i", tag, input=b"echo still-runs\n")
        assert ran.stdout.strip() == "still-runs"
    finally:
        docker_engine.docker("image", "rm", "-f", tag, check=False)
